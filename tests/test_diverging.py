"""Fault injection (issue 6, item 4): a diverging arm, on real components: a local Ray instance on
127.0.0.1 (conftest.ray_local), Optuna in SQLite, W&B offline, the mnist-5k data.

    python -m pytest tests/test_diverging.py

A tiny study with a fixed lr of 7.0 (x0.01 for epoch 2: one multistep cut at 50%), three MLP arms,
confirmation seeds 4 and 11 (so the search trials train with seed 12, replicates.search_seed). One hidden layer of 32 never diverges (its ReLUs die
instead); [40, 40] completes with seeds 12 and 4 and diverges in epoch 2 with seed 11; [64, 64, 64]
diverges in epoch 1. Each of these outcomes stays the same for any lr from 6.3 to 7.7 (checked at
17 points) and with 1 or 2 torch threads, so it is no knife-edge that another CPU's rounding could
flip. The study must finish, record the diverged trials truthfully (tables, Optuna), confirm the
arms that have a completed search trial, and the analysis must report the diverged trials and leave
them out of its statistics. Damaged checkpoints are in test_checkpoints.py, killed processes in
test_resume.py and test_tables.py, a lost node in test_cluster.py.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from analysis import questions
from study import replicates, runner
from study.searcher import study_name
from study.spec_file import load_spec

from studies import spec_text


# ---- a diverging arm ----------------------------------------------------------------------------
DIVERGING_SPEC = dict(name="diverging", epochs=2, seeds=[4, 11],
                      arms=["model: mlp, hidden: [32], name: steady",
                            "model: mlp, hidden: [40, 40], name: edge",
                            "model: mlp, hidden: [64, 64, 64], name: boom"])


def diverging_spec_text(storage: Path) -> str:
    """tests/studies.py's template with one trial per arm and no searched option: lr is fixed at
    7.0, so each arm's one search trial is its best configuration as it stands."""
    text = spec_text(storage, **DIVERGING_SPEC)
    for old, new in (("trials_per_arm: 3", "trials_per_arm: 1"),
                     ("  space:\n    lr: {loguniform: [0.001, 0.3]}\n", "  space: {}\n"),
                     ("    batch_size: 32\n", "    batch_size: 32\n    lr: 7.0\n"
                                             "    milestones: [0.5]\n    gamma: 0.01\n")):
        assert text.count(old) == 1, f"tests/studies.py's template changed: no {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def diverging(ray_local, study_env, tmp_path_factory):
    root = tmp_path_factory.mktemp("diverging")
    path = root / "diverging.yaml"
    path.write_text(diverging_spec_text(root / "results"))
    spec = load_spec(path)
    assert replicates.search_seed(spec) == 12, "the arms' outcomes above were checked for search seed 12"
    study = runner.prepare(spec)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):   # the runner's own lines (not Ray's or Tune's logs)
        study.run()
    out = study.out
    trials = pd.read_parquet(out / "trials.parquet")
    epochs = pd.read_parquet(out / "epochs.parquet")
    gradflow = pd.read_parquet(out / "gradflow.parquet")
    answers = questions.answers(trials, epochs, gradflow, metric=spec.metric, mode=spec.mode,
                                epochs_budget=spec.epochs, space={})
    return dict(out=out, spec=spec, trials=trials, epochs=epochs, gradflow=gradflow, answers=answers,
                storage=f"sqlite:///{out / 'optuna.db'}", stderr=stderr.getvalue())


def trial_rows(trials: pd.DataFrame, phase: str, arm: str) -> pd.DataFrame:
    return trials[(trials.phase == phase) & (trials.arm == arm)].sort_values("seed")


def test_diverging_arm_study_finishes_and_confirms_the_others(diverging):
    d = diverging
    assert json.loads((d["out"] / "study.json").read_text())["phase"] == "done"
    trials = d["trials"]
    assert (trials.phase == "search").sum() == 3
    search = {arm: trial_rows(trials, "search", arm) for arm in ("steady", "edge", "boom")}
    assert {arm: (r.status.tolist(), r.epochs_run.tolist()) for arm, r in search.items()} == {
        "steady": (["completed"], [2]), "edge": (["completed"], [2]), "boom": (["diverged"], [1])}
    # boom has no completed search trial: it is not confirmed; the others are, with every seed
    confirm = {arm: trial_rows(trials, "confirm", arm) for arm in ("steady", "edge", "boom")}
    assert confirm["boom"].empty
    assert "warning: arm 'boom' has no completed search trial; it is not confirmed" in d["stderr"]
    assert confirm["steady"].status.tolist() == ["completed", "completed"]
    # edge's best configuration diverges with seed 11, in its last epoch
    assert confirm["edge"].status.tolist() == ["completed", "diverged"]
    assert confirm["edge"].epochs_run.tolist() == [2, 2]


def test_diverged_trials_are_recorded_truthfully(diverging):
    d = diverging
    trials, epochs = d["trials"], d["epochs"]
    for row in trials[trials.status == "diverged"].itertuples():
        mine = epochs[(epochs.phase == row.phase) & (epochs.trial_id == row.trial_id)]
        mine = mine.sort_values("epoch")
        last = mine.iloc[-1]
        # the diverged epoch is kept, with its non-finite loss and without validation metrics
        assert last.status == "diverged" and last.epoch == row.epochs_run
        assert not math.isfinite(last.train_loss)
        assert pd.isna(last.val_acc) and pd.isna(row.final_val_acc)
        assert (mine.status.iloc[:-1] == "running").all()
    # Optuna: the diverged search trial is FAIL (not PRUNED, not COMPLETE with a made-up score)
    # and its diverged epoch reported no intermediate value (it has no val_acc); the completed
    # trials are COMPLETE with their final val_acc and one intermediate value per epoch
    states = {}
    for arm in ("steady", "edge", "boom"):
        study = optuna.load_study(study_name=study_name("diverging", arm), storage=d["storage"])
        states[arm] = [(t.state, t.value, t.intermediate_values) for t in study.trials]
    assert states["boom"] == [(TrialState.FAIL, None, {})]
    for arm in ("steady", "edge"):
        (state, value, intermediate), = states[arm]
        row = trial_rows(trials, "search", arm).iloc[0]
        mine = epochs[(epochs.phase == "search") & (epochs.trial_id == row.trial_id)]
        assert state == TrialState.COMPLETE and value == row.final_val_acc
        assert intermediate == dict(zip(mine.epoch, mine.val_acc))


def test_analysis_reports_diverged_trials_and_leaves_them_out(diverging):
    d = diverging
    ranking = questions.ranking(d["trials"], d["spec"].metric, d["spec"].mode).set_index("arm")
    assert set(ranking.index) == {"steady", "edge"}   # boom never reached the confirmation phase
    assert ranking.loc["steady", ["n", "excluded"]].tolist() == [2, 0]
    assert ranking.loc["edge", ["n", "excluded"]].tolist() == [1, 1]
    completed = trial_rows(d["trials"], "confirm", "edge").query("status == 'completed'")
    assert ranking.loc["edge", "mean"] == completed.final_val_acc.iloc[0]   # the diverged seed is out
    assert pd.isna(ranking.loc["edge", "ci_lo"])   # one seed left: no interval is claimed

    answers = d["answers"]
    json.dumps(answers, allow_nan=False)   # NaN from diverged rows becomes null, not invalid JSON
    ranked = {r["arm"]: r for r in answers["ranking"]["ranking"]}
    assert ranked["edge"]["excluded"] == 1 and ranked["edge"]["n"] == 1
    # the sentences say so (their wording is analysis/questions.py's; only the gist is checked)
    text = answers["text"]
    assert any(t.startswith("Left out") and "edge 1" in t for t in text), text
    assert any(t.startswith("Too few seeds") and "edge" in t for t in text), text
    savings = {r["arm"]: r for r in answers["search"]["asha_savings"]}
    assert (savings["boom"]["diverged"], savings["boom"]["completed"]) == (1, 0)
    assert any(re.search(r"\b1 diverged\b", t) for t in answers["search"]["text"]), text
    best = {r["arm"]: r for r in answers["search"]["best_configs"]}
    assert best["boom"]["n_completed"] == 0 and best["edge"]["n_completed"] == 1
    assert any(t.startswith("boom: no completed search trial") for t in text), text
    pairs = answers["pairwise"]["pairwise"]
    assert [(p["arm_a"], p["arm_b"], p["n_a"] + p["n_b"], p["verdict"]) for p in pairs] \
        in ([("steady", "edge", 3, "too few seeds")], [("edge", "steady", 3, "too few seeds")])


def test_gradient_flow_statistics_leave_diverged_trials_out(diverging):
    """edge's diverged seed has infinite or NaN gradient norms at its last epoch; like the ranking
    and convergence, the gradient-flow answers rest on edge's one completed seed only."""
    attenuation = {r["arm"]: r for r in diverging["answers"]["why"]["attenuation"]}
    assert attenuation["edge"]["n"] == 1 and attenuation["steady"]["n"] == 2
    assert "boom" not in attenuation
