"""Training-loop tests on the real embedded mnist-5k data and small synthetic CIFAR-shaped data."""
import json
import math
import subprocess
import sys

import pytest
import torch

from trainables.config import TrainingOptions
from trainables.data import Data, Split, load_data
from trainables.gradflow import probe_steps
from trainables.train import Trainer, lr_factor, train

TIMING = {"epoch_seconds", "train_seconds", "samples_per_second"}


@pytest.fixture(scope="module")
def mnist(data_root_5k):
    return load_data("mnist-5k", data_root_5k).subset(train=1000, val=300, test=300)


def cifar_like(n=256, seed=0) -> Data:
    """Random 3x32x32 images with a learnable signal, and augmentation on (as for CIFAR-10)."""
    g = torch.Generator().manual_seed(seed)
    def split(k):
        y = torch.randint(0, 10, (k,), generator=g)
        x = torch.randn(k, 3, 32, 32, generator=g) * 0.5 + y[:, None, None, None] / 5
        return Split(x=x, y=y)
    return Data(name="synthetic", train=split(n), val=split(64), test=split(64), num_classes=10,
                in_channels=3, image_size=32, augment=True)


def strip(history):
    return [{k: v for k, v in m.items() if k not in TIMING} for m in history]


def test_loss_falls_on_mnist_5k(mnist):
    history = list(train({"model": "mlp", "epochs": 4, "lr": 0.05, "schedule": "constant"}, mnist))
    losses = [m["train_loss"] for m in history]
    assert losses == sorted(losses, reverse=True)
    assert history[-1]["val_acc"] > 0.8
    assert [m["status"] for m in history] == ["running"] * 3 + ["completed"]


def test_epoch_metrics_are_complete(mnist):
    (m,) = list(train({"model": "resnet20", "width": 0.25, "epochs": 1}, mnist.subset(train=128), test=True))
    for key in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds",
                "samples_per_second", "test_loss", "test_acc", "status", "gf_first_last_ratio"):
        assert key in m
    assert m["epoch"] == 1 and 0 <= m["val_acc"] <= 1 and m["samples_per_second"] > 0


def test_same_seed_gives_identical_metrics():
    data = cifar_like()
    cfg = {"model": "resnet20", "width": 0.25, "epochs": 2, "batch_size": 32}
    first = strip(train(cfg, data))
    assert strip(train(cfg, data)) == first
    assert strip(train({**cfg, "seed": 1}, data)) != first


def test_resume_from_state_dict_continues_exactly(tmp_path):
    data = cifar_like()
    cfg = {"model": "vgg11", "width": 0.125, "epochs": 3, "batch_size": 32, "schedule": "cosine"}
    uninterrupted = strip(train(cfg, data))
    first = Trainer(cfg, data)
    head = strip([next(iter(first.run()))])
    torch.save(first.state_dict(), tmp_path / "ckpt.pt")
    torch.manual_seed(1234)   # disturb global RNG: the resumed run must not depend on it
    resumed = Trainer(cfg, data)
    resumed.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    assert head + strip(resumed.run()) == uninterrupted


def test_non_finite_loss_ends_with_diverged(mnist):
    history = list(train({"model": "mlp", "epochs": 5, "lr": 1e6, "momentum": 0.99, "weight_decay": 0.0,
                          "schedule": "constant"}, mnist))
    assert history[-1]["status"] == "diverged"
    assert len(history) < 5 or not math.isfinite(history[-1]["train_loss"])
    assert not math.isfinite(history[-1]["train_loss"])
    assert all(m["status"] == "running" for m in history[:-1])


def test_gradient_flow_structure(mnist):
    (m,) = list(train({"model": "resnet20", "width": 0.25, "epochs": 1, "grad_flow_batches": 4},
                      mnist.subset(train=256)))
    layers = m["grad_flow"]
    # 19 convs on the main path (stem + 18 in blocks) + fc; option-A shortcuts have no weights.
    assert [row["layer"] for row in layers][0] == "stem.0" and layers[-1]["layer"] == "fc"
    assert len(layers) == 20 and [row["index"] for row in layers] == list(range(20))
    for row in layers:
        assert set(row) == {"layer", "index", "grad_mean_abs", "grad_max_abs", "grad_norm",
                            "weight_norm", "update_ratio"}
        assert 0 < row["grad_mean_abs"] <= row["grad_max_abs"] <= row["grad_norm"]
        assert row["weight_norm"] > 0 and 0 < row["update_ratio"] < 1
    assert m["gf_first_last_ratio"] == pytest.approx(layers[0]["grad_norm"] / layers[-1]["grad_norm"])
    assert m["gf_grad_norm_min"] == min(r["grad_norm"] for r in layers)


def test_gradient_flow_forward_order_includes_projection_shortcuts():
    (m,) = list(train({"model": "resnet18", "width": 0.125, "epochs": 1, "batch_size": 32},
                      cifar_like(n=64)))
    names = [row["layer"] for row in m["grad_flow"]]
    assert names.index("blocks.2.main.0") < names.index("blocks.2.shortcut.0") < names.index("blocks.3.main.0")
    assert len(names) == 17 + 3 + 1     # 17 main-path convs, 3 projections, fc


def test_gradient_flow_can_be_off(mnist):
    (m,) = list(train({"model": "mlp", "epochs": 1, "grad_flow": False}, mnist))
    assert "grad_flow" not in m and "gf_first_last_ratio" not in m


def test_probe_steps():
    steps = probe_steps(100, 8)
    assert len(steps) == 8 and {0, 1} <= steps and max(steps) < 100
    assert probe_steps(3, 8) == {0, 1, 2}
    assert probe_steps(1, 8) == {0}


@pytest.mark.parametrize("schedule", ["constant", "multistep", "cosine", "onecycle"])
def test_every_schedule_runs_and_reports_lr(schedule, mnist):
    cfg = {"model": "mlp", "epochs": 4, "lr": 0.1, "schedule": schedule}
    lrs = [m["lr"] for m in train(cfg, mnist.subset(train=256))]
    expected = {"constant": [0.1] * 4, "multistep": [0.1, 0.1, 0.01, 0.001]}
    if schedule in expected:
        assert lrs == pytest.approx(expected[schedule])
    elif schedule == "cosine":
        assert lrs[0] == pytest.approx(0.1) and lrs == sorted(lrs, reverse=True)
    else:
        assert lrs[0] == pytest.approx(0.1 / 25) and max(lrs) > lrs[0] and lrs[-1] < max(lrs)


def test_lr_factor_shapes():
    cfg = TrainingOptions(schedule="multistep", epochs=10, milestones=[0.5, 0.75], gamma=0.1)
    assert [lr_factor(cfg, s, 100) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    # one epoch of 10 steps: the cuts fall inside it (rounded to whole epochs, both were at step 0)
    short = cfg.model_copy(update={"epochs": 1})
    assert [lr_factor(short, s, 10) for s in (0, 4, 5, 7, 8)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    cos = cfg.model_copy(update={"schedule": "cosine"})
    assert lr_factor(cos, 0, 100) == 1 and lr_factor(cos, 100, 100) == pytest.approx(0)
    one = cfg.model_copy(update={"schedule": "onecycle"})
    assert lr_factor(one, 30, 100) == pytest.approx(1)
    assert lr_factor(one, 0, 100) == pytest.approx(1 / 25)


@pytest.mark.parametrize("opt", [{"optimizer": "adamw", "lr": 1e-3}, {"nesterov": True}])
def test_optimizers(opt, mnist):
    history = list(train({"model": "mlp", "epochs": 2, **opt}, mnist))
    assert history[-1]["train_loss"] < history[0]["train_loss"] or history[-1]["val_acc"] > 0.7


def test_bad_option_is_a_one_line_error(mnist):
    with pytest.raises(ValueError, match=r"^lr: -1 is not allowed; expected a number > 0$"):
        Trainer({"model": "mlp", "lr": -1}, mnist)
    with pytest.raises(ValueError, match="unknown option"):
        Trainer({"model": "mlp", "learning_rate": 0.1}, mnist)


def run_cli(*args, env_root):
    return subprocess.run([sys.executable, "-m", "trainables", "--data-root", str(env_root), *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_json_lines(data_root_5k):
    proc = run_cli("--model", "resnet20", "--width", "0.25", "--epochs", "2", "--limit", "200",
                   "--json", env_root=data_root_5k)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and lines[-1]["status"] == "completed"
    assert len(lines[0]["grad_flow"]) == 20


def test_cli_text_and_errors(data_root_5k, tmp_path):
    proc = run_cli("--model", "mlp", "--epochs", "1", "--test", env_root=data_root_5k)
    assert proc.returncode == 0 and proc.stdout.startswith("epoch   1/1  train_loss") and "test_acc" in proc.stdout
    bad = run_cli("--model", "mlp", "--lr", "zero", env_root=data_root_5k)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: lr: 'zero' is not allowed; expected a number > 0"
    missing = run_cli("--data", "cifar10", env_root=tmp_path)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "cifar10" in missing.stderr and "mnist-5k" in missing.stderr
