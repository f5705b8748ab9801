"""Integration tests of the study launcher (study/) on real components: a local Ray instance on
127.0.0.1 (conftest.ray_local), Optuna in SQLite, W&B in offline mode, the mnist-5k data.

    python -m pytest tests/test_study.py

- `tiny` (conftest): one small two-arm study (mlp, resnet20), search and confirmation, run ONCE per
  session; these tests check its outputs against each other (tables, Ray's results, Optuna, W&B).
- W&B offline runs stay whole under four concurrent trials.
Killed drivers and workers are in test_resume.py, the command line's errors in test_cli.py.
"""
from __future__ import annotations

import json
import shutil
import os

import optuna
import pandas as pd
from optuna.trial import TrialState
from ray import tune

from processes import descendants, listening_sockets, not_loopback
from studies import TINY_ARMS, spec_text
from study import runner
from study.searcher import study_name
from study.spec_file import load_spec
from wandb_files import METRICS, trial_epochs, wandb_problems

STATUSES = {"completed", "pruned", "diverged", "error"}


def test_ray_runs_on_loopback_only(ray_local):
    context = ray_local.get_runtime_context()
    assert context.gcs_address.startswith("127.0.0.1:")
    assert {node["NodeManagerAddress"] for node in ray_local.nodes()} == {"127.0.0.1"}
    sockets = listening_sockets(descendants(os.getpid()))
    assert sockets, "found no listening socket of this process's Ray instance"
    assert not_loopback(sockets) == []


def test_both_phases_ran(tiny):
    t = tiny.trials
    assert json.loads((tiny.out / "study.json").read_text())["phase"] == "done"
    search, confirm = t[t.phase == "search"], t[t.phase == "confirm"]
    assert len(search) == 6 and len(confirm) == 4
    assert set(t.status) <= STATUSES
    assert search.groupby("arm").size().to_dict() == {arm: 3 for arm in TINY_ARMS}
    assert confirm.groupby("arm").size().to_dict() == {arm: 2 for arm in TINY_ARMS}
    assert (confirm.status == "completed").all() and (confirm.epochs_run == 3).all()
    # ASHA (grace 1, reduction 2, rungs at epochs 1 and 2) stops the weaker of 3 trials per arm: in
    # resnet20's arm the third trial (lr 0.001) is compared at epoch 1 with a finished better one.
    assert (search.status == "pruned").sum() >= 1
    assert (search[search.status == "pruned"].epochs_run < 3).all()
    assert (search[search.status == "completed"].epochs_run == 3).all()
    assert t.trial_id.is_unique


def test_optuna_holds_every_search_trial_truthfully(tiny):
    summaries = optuna.get_all_study_summaries(tiny.storage)
    assert sorted(s.study_name for s in summaries) == sorted(study_name("tiny", a) for a in TINY_ARMS)
    search = tiny.trials[tiny.trials.phase == "search"]
    for arm in TINY_ARMS:
        study = optuna.load_study(study_name=study_name("tiny", arm), storage=tiny.storage)
        rows = search[search.arm == arm].assign(optuna_trial=lambda d: d.optuna_trial.astype(int))
        assert sorted(t.number for t in study.trials) == sorted(rows.optuna_trial) == [0, 1, 2]
        for trial in study.trials:
            row = rows[rows.optuna_trial == trial.number].iloc[0]
            values = trial_epochs(tiny.epochs, "search", row.trial_id).set_index("epoch").val_acc
            assert trial.params == {"lr": row.param_lr}
            assert dict(trial.intermediate_values) == values.to_dict()   # every epoch run, once
            assert sorted(trial.intermediate_values) == list(range(1, row.epochs_run + 1))
            if row.status == "pruned":
                assert trial.state == TrialState.PRUNED
            else:
                assert row.status == "completed" and trial.state == TrialState.COMPLETE
                assert trial.value == row.final_val_acc and row.epochs_run == 3
        assert sum(t.state == TrialState.PRUNED for t in study.trials) == (rows.status == "pruned").sum()
        assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_tables_agree_with_rays_own_results(tiny):
    for phase in ("search", "confirm"):
        analysis = tune.ExperimentAnalysis(str(tiny.out / phase))
        ray_trials = {trial.trial_id: trial for trial in analysis.trials}
        rows = tiny.trials[tiny.trials.phase == phase]
        assert set(ray_trials) == set(rows.trial_id)
        for row in rows.itertuples():
            trial, epochs = ray_trials[row.trial_id], trial_epochs(tiny.epochs, phase, row.trial_id)
            assert trial.status == "TERMINATED" and trial.config["arm"] == row.arm
            assert trial.last_result["epoch"] == row.epochs_run == trial.last_result["training_iteration"]
            assert trial.last_result["val_acc"] == row.final_val_acc
            assert epochs.epoch.tolist() == list(range(1, row.epochs_run + 1))   # each epoch once
            assert epochs.val_acc.iloc[-1] == row.final_val_acc
            frame = analysis.trial_dataframes[trial.trial_id]   # Ray's own per-epoch record
            assert frame.epoch.tolist() == epochs.epoch.tolist()
            for metric in METRICS:
                assert frame[metric].tolist() == epochs[metric].tolist()


def test_gradient_flow_rows(tiny):
    g = tiny.gradflow
    assert not g.duplicated(["phase", "trial_id", "epoch", "layer"]).any()
    assert (g.grad_norm > 0).all() and g.grad_norm.notna().all()
    for row in tiny.trials.itertuples():
        mine = g[(g.phase == row.phase) & (g.trial_id == row.trial_id)]
        assert sorted(mine.epoch.unique()) == list(range(1, row.epochs_run + 1))
        assert mine.groupby("epoch").size().eq(TINY_ARMS[row.arm]).all()
        assert sorted(mine[mine.epoch == 1]["index"]) == list(range(TINY_ARMS[row.arm]))


def test_confirmation_reruns_each_arms_best_config(tiny):
    t = tiny.trials
    for arm in TINY_ARMS:
        study = optuna.load_study(study_name=study_name("tiny", arm), storage=tiny.storage)
        complete = [trial for trial in study.trials if trial.state == TrialState.COMPLETE]
        best = max(trial.value for trial in complete)
        best_lrs = {trial.params["lr"] for trial in complete if trial.value == best}
        rows = t[(t.phase == "confirm") & (t.arm == arm)].sort_values("seed")
        assert rows.seed.tolist() == [0, 1]
        assert rows.param_lr.nunique() == 1 and rows.param_lr.iloc[0] in best_lrs
        for config in rows.config.map(json.loads):
            assert config["lr"] == rows.param_lr.iloc[0]
            assert (config["batch_size"], config["epochs"]) == (32, 3)
        assert rows.final_test_acc.between(0, 1).all() and rows.final_test_loss.notna().all()
        # the search trains with seed 2 (max(seeds) + 1): each confirmation run is a new run of the
        # winning configuration, not a replay of the search trial that won
        search = t[(t.phase == "search") & (t.arm == arm) & (t.param_lr == rows.param_lr.iloc[0])]
        assert (t[t.phase == "search"].seed == 2).all()
        original = trial_epochs(tiny.epochs, "search", search.trial_id.iloc[0])
        for trial_id in rows.trial_id:
            rerun = trial_epochs(tiny.epochs, "confirm", trial_id)
            assert rerun["train_loss"].tolist() != original["train_loss"].tolist()
    assert t[t.phase == "search"].final_test_acc.isna().all()   # the search never sees the test split


# ---- W&B ---------------------------------------------------------------------------------------------
def tiny_wandb_problems(tiny, phase: str) -> list[str]:
    spec_hash = json.loads((tiny.out / "study.json").read_text())["spec_hash"]
    trials = tiny.trials[tiny.trials.phase == phase]
    return wandb_problems(tiny.out, spec_hash, tiny.git_commit, trials, tiny.epochs, tiny.gradflow)


def test_wandb_runs_are_complete_under_four_concurrent_trials(ray_local, study_env, tmp_path):
    """Eight trials, four at a time (half a CPU each on the session's 2-CPU Ray), each writing its
    own offline W&B run: every run file is whole and holds every epoch of its trial."""
    text = spec_text(tmp_path / "results", name="crowded", epochs=2, seeds=[0],
                     arms=["model: mlp, hidden: [16]"])
    text = text.replace("trials_per_arm: 3\n  max_concurrent: 2", "trials_per_arm: 8\n  max_concurrent: 4\n  max_concurrent_per_arm: 4")
    text = text.replace("scheduler: {name: asha, grace_period: 1, reduction_factor: 2}",
                        "scheduler: {name: none}\nresources: {cpu: 0.5}")
    path = tmp_path / "crowded.yaml"
    path.write_text(text)
    study = runner.prepare(load_spec(path))
    study.run_phase("search", runner.study_data(study.spec))
    trials, epochs, gradflow = (pd.read_parquet(study.out / f"{t}.parquet") for t in ("trials", "epochs", "gradflow"))
    assert len(trials) == 8 and (trials.epochs_run == 2).all()
    # trials overlapped in time: at least 3 ran at once
    spans = [(e.timestamp.min() - 2, e.timestamp.max()) for _, e in epochs.groupby("trial_id")]
    assert max(sum(a <= t <= b for a, b in spans) for t, _ in spans) >= 3
    spec_hash = json.loads((study.out / "study.json").read_text())["spec_hash"]
    assert wandb_problems(study.out, spec_hash, runner.git_commit(), trials, epochs, gradflow) == []


def test_wandb_confirm_runs_hold_the_full_history(tiny):
    assert tiny_wandb_problems(tiny, "confirm") == []


def test_wandb_search_runs_hold_the_full_history(tiny):
    assert tiny_wandb_problems(tiny, "search") == []


def test_run_exits_1_when_an_arm_is_left_without_an_answer(tiny, tmp_path, capsys):
    """An arm with no completed search trial that did not simply diverge (here: its search trials
    made pruned, its confirmation runs removed) is a missing answer: run's last step says so and
    exits 1; an arm whose every search trial diverged, or whose every confirmation run diverged,
    is a result (exit 0)."""
    from study.cli import finish
    out = tmp_path / "tiny"
    shutil.copytree(tiny.out, out)
    trials = pd.read_parquet(out / "trials.parquet")
    arm = "resnet20-w0.125"
    trials = trials[~((trials.phase == "confirm") & (trials.arm == arm))]
    for status, code in (("pruned", 1), ("diverged", 0)):
        trials.loc[(trials.phase == "search") & (trials.arm == arm), "status"] = status
        trials.to_parquet(out / "trials.parquet", index=False)
        assert finish(runner.reopen(out)) == code
        err = capsys.readouterr().err
        assert (f"error: no answer for arm {arm}: no completed search trial (pruned 3)" in err) == (code == 1)
    # every confirmation run diverged at the arm's best searched configuration: a result too
    confirm = pd.read_parquet(tiny.out / "trials.parquet")
    confirm = confirm[(confirm.phase == "confirm") & (confirm.arm == arm)].assign(status="diverged")
    trials.loc[(trials.phase == "search") & (trials.arm == arm), "status"] = "completed"
    pd.concat([trials, confirm]).to_parquet(out / "trials.parquet", index=False)
    assert finish(runner.reopen(out)) == 0
    assert f"{arm:<18} no result: its confirmation runs diverged 2" in capsys.readouterr().out
