"""Resuming, on real components (a local Ray on 127.0.0.1, Optuna in SQLite, W&B offline):

    python -m pytest tests/test_resume.py

- a trial whose worker process is SIGKILLed mid-run is restarted by Ray from its checkpoint and
  must reproduce an uninterrupted twin exactly.
- the session's `stopped` study (tests/stopped.py, shared with test_interrupt.py): its drivers
  (subprocesses, each with its own Ray) are SIGKILLed mid-search, between the phases and
  mid-confirmation; each `archstudy resume` must go on without losing or repeating anything, and
  the planted W&B API key is in none of the files those drivers wrote.
- a confirmation whose saved Tune state a killed driver left damaged runs again from the start.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import optuna
import pandas as pd
from ray import tune

from processes import files_containing, not_loopback
from stopped import ARMS, CONFIRMATIONS, SPEC, phase_of
from studies import read_results
from study import runner, tables
from study.searcher import study_name
from study.trainable import EpochTrainable
from trainables.data import load_data
from wandb_files import METRICS, trial_epochs

# ---- a trial restarted from its checkpoint ----------------------------------------------------------
class KillWorkerOnce(tune.Callback):
    """SIGKILLs the worker process of the trial with config arm == `arm` when it reports `epoch`."""

    def __init__(self, arm: str, epoch: int):
        self.arm, self.epoch, self.killed_pid = arm, epoch, None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if trial.config["arm"] == self.arm and result["epoch"] == self.epoch and self.killed_pid is None:
            self.killed_pid = result["pid"]
            os.kill(self.killed_pid, signal.SIGKILL)


def test_killed_trial_resumes_exactly_from_its_checkpoint(ray_local, study_env, tmp_path):
    """Two identical trials run side by side; the worker process of one is SIGKILLed when it has
    reported epoch 3 of 4. Ray restarts it (FailureConfig) from the last checkpoint Tune holds (the
    one study/trainable.py wrote after epoch 2: Tune had no time to take epoch 3's from the dead
    worker), and every epoch's metrics must equal the uninterrupted trial's, bit for bit (CPU, same
    seed): the checkpoint restores model, optimiser, schedule and RNG exactly."""
    data = load_data("mnist-5k").subset(train=300, val=100, test=100)
    killer = KillWorkerOnce("killed", epoch=3)
    trainable = tune.with_resources(
        tune.with_parameters(EpochTrainable, data=data, wandb_settings={"mode": "disabled"}), {"cpu": 1})
    config = {"model": "resnet20", "width": 0.125, "epochs": 4, "lr": 0.05, "batch_size": 32,
              "seed": 0, "phase": "confirm", "arm": tune.grid_search(["steady", "killed"])}
    tuner = tune.Tuner(trainable, param_space=config,
                       tune_config=tune.TuneConfig(trial_dirname_creator=lambda t: t.config["arm"]),
                       run_config=tune.RunConfig(
                           name="restart", storage_path=str(tmp_path), verbose=0,
                           failure_config=tune.FailureConfig(max_failures=1),
                           callbacks=[killer, tables.ResultLog()]))
    grid = tuner.fit()
    assert not grid.errors and killer.killed_pid is not None
    steady = read_results(tmp_path / "restart" / "steady")
    killed = read_results(tmp_path / "restart" / "killed")
    assert [r["epoch"] for r in steady] == [1, 2, 3, 4]
    before = [r for r in killed if r["pid"] == killer.killed_pid]
    after = [r for r in killed if r["pid"] != killer.killed_pid]
    assert [r["epoch"] for r in before] == [1, 2, 3] and killed[:3] == before
    # one new process, continuing from a checkpoint (epoch 2's or 3's), not from scratch
    assert len({r["pid"] for r in after}) == 1 and after[0]["iterations_since_restore"] == 1
    first = after[0]["epoch"]
    assert first in (3, 4) and [r["epoch"] for r in after] == list(range(first, 5))
    keys = [k for k in steady[-1] if k.startswith(("train_", "val_", "test_", "gf_")) and k != "train_seconds"]
    keys += ["epoch", "lr", "status", "grad_flow"]
    assert {"train_loss", "val_acc", "test_acc", "gf_first_last_ratio"} <= set(keys)
    for row in killed:   # the epoch run again after the restart reproduces its first run too
        assert {k: row.get(k) for k in keys} == {k: steady[row["epoch"] - 1].get(k) for k in keys}
    # the result tables keep one row per epoch (the last report of an epoch wins)
    assert [{k: r.get(k) for k in keys} for r in tables.read_results(tmp_path / "restart" / "killed")] \
        == [{k: r.get(k) for k in keys} for r in steady]


# ---- drivers SIGKILLed, then `archstudy resume` (the session's `stopped` study) ----------------------------
def kills(stopped) -> dict:
    """The SIGKILLed drivers of tests/stopped.py by name: mid-search, between the phases,
    mid-confirmation."""
    return {stop.name: stop for stop in stopped.stops if stop.signum == signal.SIGKILL}


def test_resume_finishes_a_study_whose_driver_was_killed(stopped):
    k, killed = stopped, kills(stopped)
    assert list(killed) == ["kill-search", "kill-between", "kill-confirm"]
    for kill in killed.values():
        assert kill.ray_sessions, "a killed driver had started no Ray session"
        assert kill.sockets and not_loopback(kill.sockets) == []   # its Ray stayed on 127.0.0.1
        assert kill.left_alive == [], "processes of a killed driver survived its process group's SIGKILL"
    assert len(killed["kill-search"].ended_in_optuna) < 6   # the first kill was mid-search
    assert killed["kill-between"].phase_at_signal == "confirm"
    assert 1 <= killed["kill-confirm"].finished_in_confirm < CONFIRMATIONS   # mid-confirmation
    assert k.final.rc == 0, f"resume failed:\n{k.final.stderr[-4000:]}"
    assert k.final.left_alive == [], "the resumed run left Ray processes behind"
    state = json.loads((k.out / "study.json").read_text())
    assert state["phase"] == "done"
    # every driver left its record (study/provenance.py), the killed ones too, and all ran one code
    assert [d["command"] for d in state["drivers"]] == ["run"] + ["resume"] * len(k.stops)
    assert "note: this study started under other code" not in k.final.stderr
    trials = pd.read_parquet(k.out / "trials.parquet")
    assert (trials.phase == "confirm").sum() == CONFIRMATIONS   # every seed of every arm
    assert (trials[trials.phase == "confirm"].status == "completed").all()


def test_resume_loses_and_repeats_nothing(stopped):
    k = stopped
    assert k.final.rc == 0, f"resume failed:\n{k.final.stderr[-4000:]}"
    trials = pd.read_parquet(k.out / "trials.parquet")
    epochs = pd.read_parquet(k.out / "epochs.parquet")
    search = trials[trials.phase == "search"]
    storage = f"sqlite:///{k.out / 'optuna.db'}"
    problems = []
    if len(search) != 6 or search.groupby("arm").size().to_dict() != {a: 3 for a in ARMS}:
        problems.append(f"search trials per arm: {search.groupby('arm').size().to_dict()}")
    if dup := epochs[epochs.duplicated(["phase", "trial_id", "epoch"])].trial_id.tolist():
        problems.append(f"epochs reported twice in epochs.parquet: {dup}")
    for row in trials.itertuples():
        got = trial_epochs(epochs, row.phase, row.trial_id).epoch.tolist()
        if got != list(range(1, row.epochs_run + 1)) or row.status not in ("completed", "pruned"):
            problems.append(f"{row.phase} {row.trial_id}: status {row.status}, epochs {got}")
    # trials seen before the kill keep their ids, and what they had reported is kept, not re-run
    for name, rows_before in kills(k)["kill-search"].search.items():
        trial_id = name.rsplit("_", 1)[1]
        after = read_results(k.out / "search" / name)
        if trial_id not in set(search.trial_id):
            problems.append(f"{trial_id} (in the killed run) is missing from trials.parquet")
        if after[:len(rows_before)] != rows_before:
            problems.append(f"{trial_id}: result.json lines of the killed run were changed")
        if rows_before and rows_before[-1]["status"] == "completed" and len(after) != len(rows_before):
            problems.append(f"{trial_id}: completed before the kill, ran again on resume")
        # A trial running at the kill continues from the checkpoint in Tune's last saved experiment
        # state; an epoch it reported after that save (Tune copies result.json to storage a moment
        # after it saves the state) runs again, and must compute exactly what it did the first time.
        first = {}
        for r in after:
            if r["epoch"] in first and any(r[m] != first[r["epoch"]][m] for m in METRICS):
                problems.append(f"{trial_id}: epoch {r['epoch']} ran again with other results")
            first.setdefault(r["epoch"], r)
    for arm in ARMS:
        study = optuna.load_study(study_name=study_name(SPEC["name"], arm), storage=storage)
        states = [t.state.name for t in study.trials]
        mine = search[search.arm == arm]
        if len(states) != 3 or "RUNNING" in states:
            problems.append(f"Optuna {arm}: trial states {states}")
        if sorted(mine.optuna_trial.astype(int)) != sorted(t.number for t in study.trials):
            problems.append(f"Optuna {arm}: numbers {[t.number for t in study.trials]}, table "
                            f"{sorted(mine.optuna_trial)}")
        lrs = [t.params.get("lr") for t in study.trials]
        if None in lrs or len(set(lrs)) != len(lrs):   # the same configuration searched twice
            problems.append(f"Optuna {arm}: lr of its trials {lrs}")
        for t in study.trials:
            row = mine[mine.optuna_trial == t.number]
            if len(row) == 1 and sorted(t.intermediate_values) != list(range(1, row.epochs_run.iloc[0] + 1)):
                problems.append(f"Optuna {arm} #{t.number}: intermediate values at epochs "
                                f"{sorted(t.intermediate_values)}, table has {row.epochs_run.iloc[0]}")
    assert problems == [], "\n".join(problems)


def test_progress_view_prints_trial_counts(stopped):
    # stdout is a file here, not a terminal: progress lines, and each arm's summary once a phase ends
    k = stopped
    every = "".join(stop.output for stop in k.stops) + k.final.stdout
    best = r"best final val_acc \d\.\d{4} \(mlp-h(16|32)\)"
    assert re.search(r"^\[search\] \d/6 trials finished \(running \d\), elapsed \d+m\d\ds, ETA ", every, re.M)
    # The search's last line counts Ray Tune's trials. A trial that ended after Tune's last saved
    # state, just before a stop that ended Ray at once (the group SIGTERM), is missing from Tune's
    # list after the resume: the study counts it from Optuna and does not run it again
    # (test_resume_finishes_a_study_whose_driver_was_killed), but this view shows 5/6 then.
    assert re.search(rf"^\[search\] [56]/6 trials finished, elapsed \d+m\d\ds, {best}$", every, re.M)
    for arm in ARMS:
        summary = re.findall(rf"^  {arm} +done (\d)/3, epochs \d+/12, (best|mean) final val_acc "
                             rf"\d\.\d{{4}}$", every, re.M)
        assert [kind for _, kind in summary] == ["best", "mean"], f"{arm}: summary lines {summary}"
        assert summary[0][0] in "23" and summary[1][0] == "3"   # every seed of the confirmation
    top = r"top mean final val_acc \d\.\d{4} \(mlp-h(16|32)\)"
    assert re.search(rf"^\[confirm\] {CONFIRMATIONS}/{CONFIRMATIONS} trials finished, elapsed \d+m\d\ds, "
                     rf"{top}$", k.final.stdout, re.M)
    assert re.search(r"^  mlp-h16 +done 3/3, epochs 12/12, mean final val_acc ", k.final.stdout, re.M)
    # `run` warns once that its 3 TPE trials are all random start-up ones (spec_checks.warnings)
    warned = "warning: search.trials_per_arm: 3 trials are all among TPE's 10 random start-up trials"
    assert k.stops[0].output.count(warned) == 1 and warned not in every.replace(k.stops[0].output, "")


def test_api_key_is_never_written(tiny, stopped, study_env, tmp_path):
    key = study_env["WANDB_API_KEY"].encode()
    # the study folders, W&B's folders, and the Ray session folders (logs) of every driver started
    sessions = [path for driver in (*stopped.stops, stopped.final) for path in driver.ray_sessions]
    roots = [tiny.out, stopped.out, study_env["home"], *sessions]
    files = [p for root in roots for p in Path(root).rglob("*") if p.is_file()]
    assert len(files) > 100 and any(p.suffix == ".wandb" for p in files)
    (tmp_path / "planted.txt").write_bytes(b"x" + key + b"y")   # the scan itself finds a key
    assert files_containing([tmp_path], key) == [tmp_path / "planted.txt"]
    assert files_containing(roots, key) == []


def test_a_confirmation_whose_saved_state_was_cut_runs_again(stopped, ray_local, tmp_path, capsys):
    """Tune copies its saved state into a local study folder in place: a driver SIGKILLed during the
    copy can leave files of it empty (seen in this module's chain of kills: confirm/search_gen_state-*.json and
    searcher-state-*.pkl at 0 bytes), and Tune's restore then failed and ran the confirmation again
    beside its old trials. A copy of the finished study, set back to its confirmation with those two
    files emptied: `resume` sets the old confirmation aside and runs it again, to the same results."""
    old = pd.read_parquet(stopped.out / "trials.parquet")
    out = tmp_path / "stopped"
    shutil.copytree(stopped.out, out)
    runner.reopen(out).mark(phase="confirm")
    emptied = [max((out / "confirm").glob(p)) for p in ("search_gen_state-*.json", "searcher-state-*.pkl")]
    for path in emptied:
        path.write_bytes(b"")
    runner.reopen(out).run()
    assert f"warning: {emptied[0]} is damaged" in capsys.readouterr().err
    assert phase_of(out) == "done"
    new = pd.read_parquet(out / "trials.parquet")
    [aside] = out.glob("confirm.interrupted-*")
    assert {p.name for p in aside.iterdir() if p.is_dir()} == set(old[old.phase == "confirm"].path.str[8:])
    keys, values = ["arm", "seed"], ["status", "epochs_run", "config", "best_val_acc", "final_train_loss",
                                     "final_val_acc", "final_test_acc"]
    again, before = (t[t.phase == "confirm"].sort_values(keys)[keys + values].reset_index(drop=True)
                     for t in (new, old))
    assert len(again) == CONFIRMATIONS and (again.status == "completed").all()
    pd.testing.assert_frame_equal(again, before)   # the same runs, trained again
    assert set(new[new.phase == "confirm"].trial_id).isdisjoint(old.trial_id)
    pd.testing.assert_frame_equal(new[new.phase == "search"].reset_index(drop=True),
                                  old[old.phase == "search"].reset_index(drop=True))
