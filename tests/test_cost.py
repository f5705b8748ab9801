"""Cost beside accuracy: parameters and forward FLOPs per sample of every registered model
(trainables/cost.py, PyTorch's FlopCounterMode) against hand counts, the Trainer reporting them, the
per-arm cost table and its Pareto fronts (analysis/cost.py) on planted frames, and the figure; the
last test reads the cost columns of the tiny study's trials.parquet (a Ray study: run it after any
long measurement on this machine).

    python -m pytest tests/test_cost.py -k "not tiny"   # the pure tests, seconds
    python -m pytest tests/test_cost.py
"""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn as nn

import analysis
from analysis import figures
from analysis.cost import COSTS, cost_answer, cost_table, pareto_front
from trainables.cost import forward_flops, model_cost
from trainables.data import Data, Split
from trainables.models import REGISTRY, build_model, count_parameters, list_models
from trainables.train import Trainer


# ---- FLOPs and parameters ------------------------------------------------------------------------
def test_mlp_flops_are_two_per_multiply_add():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    assert forward_flops(mlp, torch.zeros(1, 1, 28, 28)) == 2 * 784 * 128 + 2 * 128 * 10
    # the registered MLP (hidden 128, 64) on MNIST, counted per sample whatever the batch
    registered = build_model("mlp", in_channels=1)
    assert forward_flops(registered, torch.zeros(5, 1, 28, 28)) == 2 * (784 * 128 + 128 * 64 + 64 * 10)


def test_conv_flops_are_two_per_multiply_add_per_output_position():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 4, 3, stride=2, padding=1))
    first = 2 * (3 * 3 * 3) * 8 * 32 * 32    # k*k*C_in multiply-adds per output value
    second = 2 * (3 * 3 * 8) * 4 * 16 * 16
    assert forward_flops(conv, torch.zeros(2, 3, 32, 32)) == first + second


def test_counting_leaves_the_model_as_it_was():
    model = build_model("resnet20", width=0.25)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model_cost(model, torch.randn(1, 3, 32, 32))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # BN stats too
    model.eval()
    forward_flops(model, torch.randn(1, 3, 32, 32))
    assert not model.training
    with pytest.raises(ValueError, match="example: an empty batch"):
        forward_flops(model, torch.zeros(0, 3, 32, 32))


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_has_a_cost(name):
    channels, size = (1, 28) if name == "mlp" else (3, 32)
    model = build_model(name, in_channels=channels, width=0.125)
    cost = model_cost(model, torch.zeros(1, channels, size, size))
    assert cost["parameters"] == count_parameters(model) > 0
    assert isinstance(cost["flops_per_sample"], int) and cost["flops_per_sample"] > 0


def test_deeper_nets_of_a_line_cost_more():
    lines: dict[tuple, list] = {}
    for entry in REGISTRY.values():
        if entry.depth is not None:
            lines.setdefault((entry.line, entry.family), []).append(entry)
    assert len(lines) == 5   # vgg; resnet and plain 18/34; resnet and plain 6n+2
    for (line, family), entries in lines.items():
        costs = [model_cost(build_model(e.name, width=0.125), torch.zeros(1, 3, 32, 32))
                 for e in sorted(entries, key=lambda e: e.depth)]
        for shallow, deep in zip(costs, costs[1:]):
            assert deep["parameters"] > shallow["parameters"], (line, family)
            assert deep["flops_per_sample"] > shallow["flops_per_sample"], (line, family)


def test_the_trainer_reports_its_models_cost_every_epoch():
    g = torch.Generator().manual_seed(0)
    def split(n):
        return Split(x=torch.randn(n, 3, 32, 32, generator=g), y=torch.randint(0, 10, (n,), generator=g))
    data = Data(name="synthetic", train=split(32), val=split(16), test=split(16), num_classes=10,
                in_channels=3, image_size=32, augment=False)
    trainer = Trainer({"model": "resnet20", "width": 0.125, "epochs": 2, "batch_size": 16}, data)
    expected = model_cost(build_model("resnet20", width=0.125), torch.zeros(1, 3, 32, 32))
    for metrics in trainer.run():
        assert {k: metrics[k] for k in expected} == expected


# ---- the cost table and its Pareto fronts ----------------------------------------------------------
def run(arm, seed, score, parameters, flops=None, seconds=10.0, status="completed", phase="confirm"):
    """One completed confirmation run of the trials table, with its cost columns (CPU-only)."""
    return {"study": "s", "phase": phase, "arm": arm, "model": arm, "seed": seed, "status": status,
            "final_val_acc": score, "final_val_loss": 1 - score, "parameters": parameters,
            "flops_per_sample": parameters * 10 if flops is None else flops, "seconds_per_epoch": seconds,
            "cpu_seconds_per_epoch": 2 * seconds, "gpu_seconds_per_epoch": 0.0}


def planted() -> pd.DataFrame:
    """cheap (100 parameters, 0.80), mid (200, 0.90), worse (300, 0.85: mid beats it on both),
    best (400, 0.95), twin (identical to mid), nocost (no cost columns: a study from before them);
    seconds run the other way round (the deep nets here are fast) except for twin."""
    rows = []
    for seed, noise in enumerate((-0.01, 0.0, 0.01)):
        rows += [run("cheap", seed, 0.80 + noise, 100, seconds=40),
                 run("mid", seed, 0.90 + noise, 200, seconds=30),
                 run("worse", seed, 0.85 + noise, 300, seconds=20),
                 run("best", seed, 0.95 + noise, 400, seconds=10),
                 run("twin", seed, 0.90 + noise, 200, seconds=30),
                 {**run("nocost", seed, 0.99, 1), "parameters": None, "flops_per_sample": None,
                  "seconds_per_epoch": math.nan, "cpu_seconds_per_epoch": math.nan,
                  "gpu_seconds_per_epoch": math.nan}]
    rows += [run("best", 9, 0.1, 400, status="diverged"), run("cheap", 9, 0.99, 100, phase="search")]
    return pd.DataFrame(rows)


def test_cost_table_is_per_arm_with_the_metrics_interval():
    table = cost_table(planted(), "val_acc", "max").set_index("arm")
    assert list(table.index) == ["cheap", "mid", "worse", "best", "twin", "nocost"]
    assert table.loc["mid", "parameters"] == 200 and table.loc["mid", "flops_per_sample"] == 2000
    assert table.loc["mid", "cpu_seconds_per_epoch"] == 60.0 and table.loc["best", "n"] == 3
    assert table.loc["best", "mean"] == pytest.approx(0.95)   # the diverged run is left out
    assert table.loc["best", "ci_lo"] < 0.95 < table.loc["best", "ci_hi"]
    assert math.isnan(table.loc["nocost", "parameters"])


def test_pareto_fronts_on_planted_arms():
    table = cost_table(planted(), "val_acc", "max").set_index("arm")
    on = lambda cost: set(table.index[table[f"front_{cost}"]])
    assert on("parameters") == on("flops_per_sample") == {"cheap", "mid", "twin", "best"}
    assert on("cpu_seconds_per_epoch") == {"best"}       # fastest and best
    assert on("gpu_seconds_per_epoch") == {"best"}       # all zero: only the best scores
    # lower is better for a loss: the same front, read the other way
    by_loss = cost_table(planted(), "val_loss", "min").set_index("arm")
    assert set(by_loss.index[by_loss["front_parameters"]]) == on("parameters")


def test_pareto_front_definition():
    assert pareto_front([1, 2, 3], [0.5, 0.7, 0.6]) == [True, True, False]
    assert pareto_front([1, 1], [0.5, 0.5]) == [True, True]                 # identical: both
    assert pareto_front([1, 1], [0.5, 0.6]) == [False, True]                # same cost, better
    assert pareto_front([1, 2], [0.6, 0.6]) == [True, False]                # same score, cheaper
    assert pareto_front([1, 2], [0.4, 0.5], mode="min") == [True, False]     # lower is better
    assert pareto_front([1, 2], [0.5, 0.4], mode="min") == [True, True]
    assert pareto_front([math.nan, 2], [0.9, 0.4]) == [False, True]


def test_cost_answer_names_each_front_cheapest_first():
    text = cost_answer(cost_table(planted(), "val_acc", "max"), "val_acc")["text"]
    assert len(text) == 3   # parameters, FLOPs, CPU-seconds: no GPU-seconds in a CPU-only study
    assert text[0].startswith("Cost against final val_acc (mean over seeds), parameters: the Pareto front "
                              "is cheap (100, 0.8), mid (200, 0.9), twin (200, 0.9), best (400, 0.95)")
    assert text[0].endswith("(without this cost: nocost).")
    assert "forward FLOPs per sample" in text[1] and "cheap (1k, 0.8)" in text[1]
    assert "best (20 s, 0.95)" in text[2]
    two = cost_answer(cost_table(planted()[lambda f: f.arm.isin(["cheap", "best"])], "val_acc"), "val_acc")
    assert two["text"][0].endswith("is cheap (100, 0.8), best (400, 0.95) (every arm).")
    none = cost_answer(cost_table(planted()[lambda f: f.arm == "nocost"], "val_acc"), "val_acc")
    assert none["text"] == ["Cost: no completed confirmation run reported its parameters, FLOPs or "
                            "seconds (a study run before the cost columns)."]
    nothing = cost_answer(cost_table(pd.DataFrame(), "val_acc"), "val_acc")
    assert "no completed confirmation run" in nothing["text"][0]


def test_cost_figure_has_a_front_per_cost_and_a_marker_per_arm():
    table = cost_table(planted(), "val_acc", "max")
    fig = figures.cost_pareto(table, "val_acc", figures.arm_colors(list(table.arm)))
    fronts = [t for t in fig.data if t.name == "Pareto front"]
    assert len(fronts) == 3 == len(COSTS) - 1   # GPU-seconds are all zero: no panel
    assert list(fronts[0].x) == [100, 200, 200, 400]   # through the front, cheapest first
    markers = [t for t in fig.data if t.mode == "markers"]
    assert len(markers) == 3 * 5   # every arm with a cost, in each panel; nocost in none
    assert {fig.layout[f"xaxis{i or ''}"].type for i in ("", 2, 3)} == {"log"}
    assert markers[0].error_y.array[0] > 0   # the interval over three seeds
    empty = figures.cost_pareto(cost_table(pd.DataFrame(), "val_acc"), "val_acc", {})
    assert not empty.data and "no completed confirmation run" in empty.layout.annotations[0].text


def test_compute_answers_cost_as_strict_json_with_its_figure_and_frame():
    trials = planted().assign(depth=3, family="mlp", line="mlp", batchnorm=True, width=1.0,
                              trial_id=range(20), final_train_loss=0.1, epochs_run=4)
    spec = SimpleNamespace(name="s", raw={}, metric="val_acc", mode="max", epochs=4)
    tables = SimpleNamespace(spec=spec, specs=[spec], states=[{}], trials=trials,
                             epochs=pd.DataFrame(), gradflow=pd.DataFrame(), signalprop=pd.DataFrame(),
                             space={}, arms=list(dict.fromkeys(trials.arm)))
    answers, figs, frames = analysis.compute(tables)
    decoded = json.loads(json.dumps(answers, allow_nan=False))["cost"]
    assert [r["arm"] for r in decoded["cost"]] == list(frames["cost"]["arm"]) == tables.arms
    assert decoded["cost"][-1]["parameters"] is None and decoded["cost"][1]["front_parameters"] is True
    assert decoded["text"] and set(decoded["text"]) <= set(answers["text"])
    assert [t.name for t in figs["cost_pareto"].data].count("Pareto front") == 3


# ---- the tables of a real study (Ray) -----------------------------------------------------------------
def test_tiny_trials_have_their_cost(tiny):
    trials, epochs = tiny.trials, tiny.epochs
    done = trials[trials.status == "completed"]
    assert len(done) and (done.parameters > 0).all() and (done.flops_per_sample > 0).all()
    per_arm = done.groupby("arm")[["parameters", "flops_per_sample"]].nunique()
    assert (per_arm == 1).all().all()   # an arm's architecture is fixed: one cost, whatever its lr
    assert done.groupby("arm").flops_per_sample.first().nunique() == 2   # the mlp and resnet20 differ
    last = epochs.sort_values("epoch").groupby(["phase", "trial_id"]).last()
    reported = last.loc[list(zip(done.phase, done.trial_id)), ["parameters", "flops_per_sample"]]
    assert reported.to_numpy().tolist() == done[["parameters", "flops_per_sample"]].to_numpy().tolist()
    mean = epochs.groupby(["phase", "trial_id"]).epoch_seconds.mean()
    assert done.seconds_per_epoch.to_numpy() == pytest.approx(mean.loc[list(zip(done.phase, done.trial_id))])
    assert (done.seconds_per_epoch * done.epochs_run <= done.wall_seconds).all()   # Tune's holds more
    assert (done.cpu_seconds_per_epoch == done.seconds_per_epoch * tiny.spec.resources.cpu).all()
