"""Signal propagation (Brock, De & Smith 2021): the forward hooks of trainables/signalprop.py on the
real models, the training loop with the probe on, the analysis of analysis/signalprop.py on planted
tables, and the tiny study's signalprop.parquet.

    python -m pytest tests/test_signalprop.py

- the hooks' figures equal a direct computation (module by module, numpy) on the same batch;
- at initialisation a ResNet-56 without BatchNorm grows its activation variance geometrically
  (about x2 per block, as Brock et al. describe), with BatchNorm linearly;
- the probe changes nothing of the training run (losses, weights, BatchNorm statistics, RNG);
- the analysis classifies planted explosion, collapse and stable profiles;
- the tiny study (conftest's `tiny`, a Ray study) writes signalprop.parquet with the contract's
  columns, and an older folder without it still analyses.
"""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import analysis
from analysis import figures, io
from analysis import signalprop as sp
from studyfiles.contract import SIGNALPROP_COLUMNS, SIGNALPROP_STATS, table_path
from test_train import cifar_like, strip
from trainables.models import build_model, init_weights
from trainables.models.vgg import pad_to_32
from trainables.signalprop import SignalProp
from trainables.train import Trainer


def gaussian(n: int = 64, seed: int = 0, shape=(3, 32, 32)) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def model(name: str, batchnorm: bool = True, width: float = 0.25, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    net = build_model(name, width=width, batchnorm=batchnorm, **kwargs)
    init_weights(net)
    return net


def direct(a: torch.Tensor) -> tuple[float, float]:
    """(avg_sq_mean, avg_var) of an (N, C, ...) activation, in float64 numpy, the long way round."""
    a = a.detach().double().numpy()
    axes = tuple(i for i in range(a.ndim) if i != 1)
    return float((a.mean(axis=axes) ** 2).mean()), float(a.var(axis=axes).mean())


def direct_rows(net, x: torch.Tensor) -> list[tuple]:
    """(block name, avg_sq_mean, avg_var, residual branch's avg_var or None) by running the model's
    modules one by one, in training mode (BatchNorm on the batch's statistics, as the probe)."""
    net.train()
    out = []
    with torch.no_grad():
        if hasattr(net, "blocks"):   # the ResNets and their plain twins
            h = net.stem(pad_to_32(x))
            for i, block in enumerate(net.blocks):
                branch = direct(block.main(h))[1] if block.residual else None
                h = block(h)
                out.append((f"blocks.{i}", *direct(h), branch))
            return out
        layers, prefix, h = (net.features, "features", pad_to_32(x)) if hasattr(net, "features") \
            else (net.net, "net", x)
        for i, layer in enumerate(layers):
            h = layer(h)
            if isinstance(layer, torch.nn.ReLU):
                out.append((f"{prefix}.{i}", *direct(h), None))
    return out


@pytest.mark.parametrize("name, batchnorm", [("resnet20", True), ("resnet20", False), ("plain20", True),
                                             ("resnet18", True), ("vgg11", False), ("vgg11", True),
                                             ("mlp", True)])
def test_the_hooks_equal_a_direct_computation_on_the_same_batch(name, batchnorm):
    x = gaussian(32, shape=(1, 28, 28)) if name == "mlp" else gaussian(32)
    net = model(name, batchnorm, **({"in_channels": 1, "hidden": [64, 32, 16]} if name == "mlp" else {}))
    rows = SignalProp(net, x).measure(epoch=3)
    expected = direct_rows(net, x)
    assert [r["block"] for r in rows] == [e[0] for e in expected]
    assert [r["index"] for r in rows] == list(range(len(rows))) and {r["epoch"] for r in rows} == {3}
    assert len(rows) == {"resnet20": 9, "plain20": 9, "resnet18": 8, "vgg11": 8, "mlp": 3}[name]
    for row, (_, sq_mean, var, branch) in zip(rows, expected):
        assert set(row) == {"epoch", "block", "index", *SIGNALPROP_STATS}
        assert row["avg_sq_mean"] == pytest.approx(sq_mean, rel=1e-4)
        assert row["avg_var"] == pytest.approx(var, rel=1e-4)
        assert row["residual_var"] == (branch if branch is None else pytest.approx(branch, rel=1e-4))
    assert all((r["residual_var"] is None) != name.startswith("resnet") for r in rows)


def fit_r2(y: np.ndarray) -> float:
    """R^2 of a straight line through y against 0, 1, 2, ..."""
    x = np.arange(len(y), dtype=float)
    predicted = np.polyval(np.polyfit(x, y, 1), x)
    return 1 - ((y - predicted) ** 2).sum() / ((y - y.mean()) ** 2).sum()


def test_variance_grows_geometrically_without_batchnorm_and_linearly_with_it():
    """Brock et al. at initialisation, on ResNet-56 (3 stages of 9 blocks): without normalisation
    every block doubles the variance (each branch adds what it receives), so log(avg_var) is a
    straight line in depth; with BatchNorm each branch adds a unit variance, so avg_var itself is a
    straight line within each stage (the zero-padded channels of a new stage restart it)."""
    x = gaussian(128)
    var = {bn: np.array([r["avg_var"] for r in SignalProp(model("resnet56", bn, width=0.5), x).measure(0)])
           for bn in (False, True)}
    stages = {bn: v.reshape(3, 9) for bn, v in var.items()}
    per_block = {bn: float(np.exp(np.diff(np.log(v)).mean())) for bn, v in var.items()}

    # without BatchNorm: geometric, about x2 per block
    assert fit_r2(np.log(var[False])) > 0.95 > fit_r2(var[False])
    assert 1.5 < per_block[False] < 3, per_block
    assert fit_r2(np.log(stages[False][0])) > fit_r2(stages[False][0])   # exponential beats linear
    # with BatchNorm: linear in every stage, and far slower
    for stage in stages[True]:
        assert fit_r2(stage) > 0.95 and np.polyfit(np.arange(9), stage, 1)[0] > 0
    assert fit_r2(stages[True][0]) > fit_r2(np.log(stages[True][0]))     # linear beats exponential
    assert per_block[True] < 1.25 < per_block[False]
    assert var[True][-1] / var[True][0] < 20 < 1e5 < var[False][-1] / var[False][0]


def test_batchnorm_branches_have_unit_variance_and_unnormalised_ones_grow():
    x = gaussian(64)
    bn = SignalProp(model("resnet20", True), x).measure(0)
    assert [r["residual_var"] for r in bn] == pytest.approx([1.0] * 9, rel=1e-3)   # ends in BatchNorm
    raw = [r["residual_var"] for r in SignalProp(model("resnet20", False, width=0.5), x).measure(0)]
    assert raw[-1] > 10 * raw[0]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_the_probe_leaves_the_model_as_it_was(mode):
    net = model("resnet20", True)
    net.train(mode == "train")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    SignalProp(net, gaussian(32)).measure(0)
    assert net.training == (mode == "train")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())   # BN buffers included
    assert torch.equal(rng, torch.get_rng_state())
    assert not any(m._forward_hooks for m in net.modules())


def test_training_is_unchanged_with_the_probe_on(tmp_path):
    """Two runs of a BatchNorm ResNet, the probe on in one only: identical losses, accuracies,
    weights and BatchNorm statistics; the probe's rows are at init (0) and after each epoch."""
    data = cifar_like(n=64)
    cfg = {"model": "resnet20", "width": 0.25, "epochs": 2, "batch_size": 32}
    probed, plain = Trainer(cfg, data), Trainer(cfg, data)
    plain.signalprop = None
    run = probed.run()
    with_probe = [next(run)]
    torch.save(probed.state_dict(), tmp_path / "ckpt.pt")   # after epoch 1, for the resumed run below
    with_probe += list(run)
    without = list(plain.run())
    assert strip([{k: v for k, v in m.items() if k != "signal_prop"} for m in with_probe]) == strip(without)
    state, other = probed.state_dict(), plain.state_dict()
    assert all(torch.equal(v, other["model"][k]) for k, v in state["model"].items())
    assert torch.equal(state["generator"], other["generator"])
    assert [sorted({r["epoch"] for r in m["signal_prop"]}) for m in with_probe] == [[0, 1], [2]]
    assert all(len(m["signal_prop"]) == 9 * len({r["epoch"] for r in m["signal_prop"]}) for m in with_probe)
    # a resumed run reports no rows at initialisation again; gradient flow off turns the probe off
    resumed = Trainer(cfg, data)
    resumed.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    (last,) = list(resumed.run())
    assert last["signal_prop"] == with_probe[-1]["signal_prop"]
    (off,) = list(Trainer({**cfg, "epochs": 1, "grad_flow": False}, data).run())
    assert "signal_prop" not in off


# ---- the analysis on planted tables -----------------------------------------------------------------
def planted(arm: str, var, seeds: int = 2, epochs=(0, 3), family: str = "residual", depth: int = 56,
            batchnorm: bool = True, phase: str = "confirm") -> pd.DataFrame:
    """signalprop rows: avg_var[block] = var(block, seed, epoch) for every seed and epoch."""
    out = []
    for seed in range(seeds):
        for epoch in epochs:
            values = [var(i, seed, epoch) for i in range(27)] if callable(var) else var
            out += [{"study": "s", "phase": phase, "trial_id": f"{arm}-{seed}", "arm": arm, "model": arm,
                     "family": family, "line": "6n+2", "depth": depth, "batchnorm": batchnorm,
                     "width": 1.0, "seed": seed, "epoch": epoch, "block": f"blocks.{i}", "index": i,
                     "avg_sq_mean": v / 2, "avg_var": v,
                     "residual_var": v / 3 if family == "residual" else math.nan}
                    for i, v in enumerate(values)]
    return pd.DataFrame(out)


def planted_study() -> pd.DataFrame:
    return pd.concat([
        planted("resnet56-nobn", lambda i, s, e: 2.0 ** i * (1 + s), batchnorm=False),
        planted("resnet56", lambda i, s, e: 1 + 0.4 * i),
        planted("plain56-nobn", lambda i, s, e: 0.5 ** i if e == 0 else 1.0, family="plain", batchnorm=False),
        planted("seeds-disagree", lambda i, s, e: (2.0 if s == 0 else 1.0) ** i),
        planted("mlp", [0.7], family="mlp", depth=2),
    ], ignore_index=True)


def test_analysis_classifies_planted_profiles():
    growth = sp.signal_growth(planted_study()).set_index("arm")
    assert list(growth.columns) == sp.GROWTH_COLUMNS[1:]
    assert growth.loc["resnet56-nobn", "growth_first"] == pytest.approx(2.0 ** 26)
    assert growth.loc["resnet56-nobn", "per_block_first"] == pytest.approx(2.0)
    assert growth.loc["resnet56", "growth_first"] == pytest.approx(11.4)   # over 10x, but linear
    verdicts = growth[["verdict_first", "verdict_last"]].apply(tuple, axis=1).to_dict()
    assert verdicts == {"resnet56-nobn": ("explodes", "explodes"), "resnet56": ("stable", "stable"),
                        "plain56-nobn": ("collapses", "stable"), "seeds-disagree": ("mixed", "mixed"),
                        "mlp": ("unknown", "unknown")}
    assert growth.loc["plain56-nobn", ["epoch_first", "epoch_last", "n", "blocks"]].tolist() == [0, 3, 2, 27]
    assert sp.verdict([math.inf], 27) == "explodes" and sp.verdict([0.0], 27) == "collapses"
    assert sp.verdict([math.nan], 27) == "unknown"


def test_analysis_keeps_completed_confirmation_trials_and_survives_nothing():
    flow = pd.concat([planted("a", lambda i, s, e: 1.0), planted("a", lambda i, s, e: 2.0 ** i, seeds=1)
                      .assign(trial_id="a-diverged"), planted("a", lambda i, s, e: 2.0 ** i, phase="search")])
    trials = pd.DataFrame([{"study": "s", "phase": "confirm", "arm": "a", "trial_id": t, "status": status}
                           for t, status in (("a-0", "completed"), ("a-1", "completed"),
                                             ("a-diverged", "diverged"))])
    growth = sp.signal_growth(flow, trials=trials)
    assert growth[["arm", "n", "growth_first", "verdict_first"]].values.tolist() == [["a", 2, 1.0, "stable"]]
    profile = sp.signal_profile(flow, trials=trials)
    assert list(profile.columns) == sp.PROFILE_COLUMNS and set(profile["n"]) == {2}
    assert set(profile["avg_var"]) == {1.0} and profile["residual_var"].tolist() == pytest.approx([1 / 3] * 54)
    for nothing in (None, pd.DataFrame()):
        assert sp.signal_growth(nothing).empty and sp.signal_profile(nothing).empty
        assert sp.signal_answer(nothing) == []
    assert "not recorded" in sp.sentences(sp.signal_growth(None), recorded=False)[0]


def test_answer_sentence_and_figure_on_the_planted_study():
    frame = planted_study()
    answer = sp.signal_answer(frame)
    json.dumps(answer, allow_nan=False)
    assert {r["arm"]: r["verdict_first"] for r in answer}["resnet56-nobn"] == "explodes"
    assert next(r for r in answer if r["arm"] == "mlp")["per_block_first"] is None   # one block
    (sentence,) = sp.sentences(sp.signal_growth(frame))
    assert "resnet56-nobn x6.71e+07 at initialisation (explodes; x2 per block)" in sentence
    colors = figures.arm_colors(sorted(set(frame["arm"])))
    fig = figures.signal_propagation(sp.signal_profile(frame), colors)
    traces = [t for t in fig.data if t.name == "resnet56-nobn"]
    assert len(traces) == 4 and {t.line.dash for t in traces} == {"dot", "solid"}   # 2 epochs x 2 panels
    first = next(t for t in traces if t.line.dash == "dot" and t.xaxis == "x")
    assert list(first.y) == pytest.approx([2.0 ** i * 1.5 for i in range(27)])   # mean over 2 seeds
    assert figures.signal_propagation(sp.signal_profile(None), colors).layout.annotations


# ---- the tiny study (a Ray study: after the wait rule) ----------------------------------------------
def test_the_tiny_study_writes_signalprop_with_the_contracts_columns(tiny):
    table = pd.read_parquet(table_path(tiny.out, "signalprop"))
    assert set(SIGNALPROP_COLUMNS) <= set(table.columns), set(SIGNALPROP_COLUMNS) - set(table.columns)
    assert "signal_prop" not in pd.read_parquet(table_path(tiny.out, "epochs")).columns
    blocks = {"mlp-w1-h32": 1, "resnet20-w0.125": 9}
    for trial in tiny.trials.itertuples():
        rows = table[(table.phase == trial.phase) & (table.trial_id == trial.trial_id)]
        assert sorted(set(rows.epoch)) == list(range(trial.epochs_run + 1)), trial.trial_id   # 0: init
        assert (rows.groupby("epoch")["index"].count() == blocks[trial.arm]).all()
        assert rows["residual_var"].isna().all() == (trial.family == "mlp")
        assert (rows["avg_var"] > 0).all()


def test_an_older_folder_without_signalprop_still_analyses(tiny, tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    for name in ("spec.yaml", "trials.parquet", "epochs.parquet", "gradflow.parquet"):
        shutil.copy(tiny.out / name, folder / name)
    tables = io.load_studies([folder])
    assert tables.signalprop.empty
    answers, figs, frames = analysis.compute(tables)
    assert answers["why"]["signal_propagation"] == [] and figs["signal_propagation"].layout.annotations
    new = analysis.compute(io.load_studies([tiny.out]))[0]["why"]["signal_propagation"]
    assert {r["arm"] for r in new} == set(tiny.trials.arm) and all(r["n"] == 2 for r in new)
