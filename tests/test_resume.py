"""Resuming, on real components (a local Ray on 127.0.0.1, Optuna in SQLite, W&B offline):

    python -m pytest tests/test_resume.py

- a trial whose worker process is SIGKILLed mid-run is restarted by Ray from its checkpoint and
  must reproduce an uninterrupted twin exactly.
- `archstudy run` (a subprocess with its own Ray) is SIGKILLed mid-search, between the phases and
  mid-confirmation; each `archstudy resume` must go on without losing or repeating anything, and
  the planted W&B API key is in none of the files those drivers wrote.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
from ray import tune

from processes import (descendants, files_containing, listening_sockets, not_loopback, ray_sessions_of,
                       reap, wait_until)
from studies import read_results, spec_text
from study import runner, tables
from study.search import study_name
from study.trainable import Trial
from trainables.data import load_data
from wandb_files import METRICS, trial_epochs

REPO = Path(__file__).resolve().parents[1]

# Slow enough to be killed mid-search (the first finished trial leaves at least 3 to go), and with
# two confirmation seeds per arm, so that a driver can be killed after the first confirmation trial.
RESUME_SPEC = dict(name="resumable", epochs=4, seeds=[0, 1], arms=["model: mlp, hidden: [32]",
                                                               "model: mlp, hidden: [16]"])
RESUME_ARMS = ("mlp-h32", "mlp-h16")


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
        tune.with_parameters(Trial, data=data, wandb_settings={"mode": "disabled"}), {"cpu": 1})
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


# ---- `archstudy run` killed, then `archstudy resume` ---------------------------------------------------
def finished_optuna_trials(db: Path) -> list[tuple[str, int, str]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT s.study_name, t.number, t.state FROM trials t "
                               "JOIN studies s USING (study_id) WHERE t.state != 'RUNNING'").fetchall()
    except sqlite3.Error:   # not created yet, or locked by the writer
        return []


def confirm_trials_finished(out: Path) -> int:
    folder = out / "confirm"
    return sum(1 for d in folder.iterdir() if (rows := read_results(d)) and rows[-1]["status"] == "completed") \
        if folder.is_dir() else 0


def phase_of(out: Path) -> str | None:
    try:
        return json.loads((out / "study.json").read_text())["phase"]
    except (OSError, ValueError, KeyError):
        return None


def run_until_killed(command: list[str], log_path: Path, env: dict, moment) -> SimpleNamespace:
    """Start `python -m study ...`, SIGKILL its process group (the driver and its Ray instance) as
    soon as `moment()` is true, and check that nothing of it survives."""
    ns, since = SimpleNamespace(), time.time()
    with open(log_path, "wb") as log:
        run = subprocess.Popen([sys.executable, "-m", "study", *command], cwd=REPO, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
        family = []
        try:
            ns.reached = wait_until(lambda: run.poll() is not None or moment(), timeout=300, step=0.1)
            ns.exit_before_kill = run.poll()
            family = descendants(run.pid)
            ns.sockets = listening_sockets(family)
            ns.ray_sessions = ray_sessions_of(run.pid, since)
        finally:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    # the process group held the driver and its whole Ray instance: nothing of it may be left
    ns.left_alive = reap(run, timeout=15, family=family)   # cleaned up; the tests fail on them
    ns.stdout = log_path.read_text(errors="replace")
    assert ns.reached and ns.exit_before_kill is None, \
        f"`{' '.join(command)}` ended before it could be killed:\n{ns.stdout[-3000:]}"
    return ns


@pytest.fixture(scope="module")
def killed_and_resumed(study_env, tmp_path_factory):
    """`archstudy run` SIGKILLed mid-search; `resume` killed between the phases (as soon as
    study.json says confirm); `resume` killed during confirmation (after its first trial ended);
    then a last `resume` finishes the study."""
    root = tmp_path_factory.mktemp("resume")
    spec_path = root / "resumable.yaml"
    spec_path.write_text(spec_text(root / "results", **RESUME_SPEC))
    out = root / "results" / "resumable"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    ns = SimpleNamespace(out=out, root=root)

    ns.kills = [run_until_killed(["run", str(spec_path)], root / "run.out", env,
                                 lambda: finished_optuna_trials(out / "optuna.db"))]
    ns.killed_after = finished_optuna_trials(out / "optuna.db")
    # what the killed driver left: every result.json line, every trial's Optuna state
    ns.before = {d.name: read_results(d) for d in (out / "search").iterdir() if (d / "params.json").exists()}
    ns.kills.append(run_until_killed(["resume", str(out)], root / "resume1.out", env,
                                     lambda: phase_of(out) == "confirm"))
    ns.kills.append(run_until_killed(["resume", str(out)], root / "resume2.out", env,
                                     lambda: confirm_trials_finished(out) >= 1))
    ns.confirm_done_at_kill = confirm_trials_finished(out)
    ns.run_stdout = "".join(k.stdout for k in ns.kills)
    ns.ray_sessions = [s for k in ns.kills for s in k.ray_sessions]

    started, since = time.monotonic(), time.time()
    resume = subprocess.Popen([sys.executable, "-m", "study", "resume", str(out)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        ns.resume_stdout, ns.resume_stderr = (b.decode(errors="replace") for b in resume.communicate(timeout=480))
    finally:
        ns.resume_left_alive = reap(resume, timeout=15)
    ns.ray_sessions += ray_sessions_of(resume.pid, since)
    ns.resume_seconds, ns.resume_rc = time.monotonic() - started, resume.returncode
    return ns


def test_resume_finishes_a_study_whose_driver_was_killed(killed_and_resumed):
    k = killed_and_resumed
    for kill in k.kills:
        assert kill.ray_sessions, "a killed driver had started no Ray session"
        assert kill.sockets and not_loopback(kill.sockets) == []   # its Ray stayed on 127.0.0.1
        assert kill.left_alive == [], "processes of a killed driver survived its process group's SIGKILL"
    assert len(k.killed_after) < 6   # the first kill was mid-search
    assert 1 <= k.confirm_done_at_kill < 2 * len(RESUME_ARMS)   # the third, mid-confirmation
    assert k.resume_rc == 0, f"resume failed:\n{k.resume_stderr[-4000:]}"
    assert k.resume_left_alive == [], "the resumed run left Ray processes behind"
    assert json.loads((k.out / "study.json").read_text())["phase"] == "done"
    trials = pd.read_parquet(k.out / "trials.parquet")
    assert (trials.phase == "confirm").sum() == 2 * len(RESUME_ARMS)   # two seeds per arm
    assert (trials[trials.phase == "confirm"].status == "completed").all()


def test_resume_loses_and_repeats_nothing(killed_and_resumed):
    k = killed_and_resumed
    assert k.resume_rc == 0, f"resume failed:\n{k.resume_stderr[-4000:]}"
    trials = pd.read_parquet(k.out / "trials.parquet")
    epochs = pd.read_parquet(k.out / "epochs.parquet")
    search = trials[trials.phase == "search"]
    storage = f"sqlite:///{k.out / 'optuna.db'}"
    problems = []
    if len(search) != 6 or search.groupby("arm").size().to_dict() != {a: 3 for a in RESUME_ARMS}:
        problems.append(f"search trials per arm: {search.groupby('arm').size().to_dict()}")
    if dup := epochs[epochs.duplicated(["phase", "trial_id", "epoch"])].trial_id.tolist():
        problems.append(f"epochs reported twice in epochs.parquet: {dup}")
    for row in trials.itertuples():
        got = trial_epochs(epochs, row.phase, row.trial_id).epoch.tolist()
        if got != list(range(1, row.epochs_run + 1)) or row.status not in ("completed", "pruned"):
            problems.append(f"{row.phase} {row.trial_id}: status {row.status}, epochs {got}")
    # trials seen before the kill keep their ids, and what they had reported is kept, not re-run
    for name, rows_before in k.before.items():
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
    for arm in RESUME_ARMS:
        study = optuna.load_study(study_name=study_name("resumable", arm), storage=storage)
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


def test_progress_view_prints_trial_counts(killed_and_resumed):
    k = killed_and_resumed
    assert re.search(r"^\[search\] \d/6 trials finished, elapsed \d+m\d\ds, ETA ", k.run_stdout, re.M)
    assert re.search(r"^  mlp-h32 +done \d/3 +running \d +pending \d +epochs \d+/12", k.run_stdout, re.M)
    assert re.search(r"^\[search\] 6/6 trials finished, elapsed \d+m\d\ds$", k.run_stdout, re.M)
    assert re.search(r"^  mlp-h16 +done 3/3 +running 0 +pending 0 ", k.run_stdout, re.M)
    assert re.search(r"^\[confirm\] 4/4 trials finished, elapsed \d+m\d\ds$", k.resume_stdout, re.M)


def test_api_key_is_never_written(tiny, killed_and_resumed, study_env, tmp_path):
    key = study_env["WANDB_API_KEY"].encode()
    # the study folders, W&B's folders, and the Ray session folders (logs) of every driver started
    roots = [tiny.out, killed_and_resumed.out, study_env["home"], *killed_and_resumed.ray_sessions]
    files = [p for root in roots for p in Path(root).rglob("*") if p.is_file()]
    assert len(files) > 100 and any(p.suffix == ".wandb" for p in files)
    (tmp_path / "planted.txt").write_bytes(b"x" + key + b"y")   # the scan itself finds a key
    assert files_containing([tmp_path], key) == [tmp_path / "planted.txt"]
    assert files_containing(roots, key) == []


def test_a_confirmation_whose_saved_state_was_cut_runs_again(killed_and_resumed, ray_local, tmp_path,
                                                              capsys):
    """Tune copies its saved state into a local study folder in place: a driver SIGKILLed during the
    copy can leave files of it empty (seen in this chain: confirm/search_gen_state-*.json and
    searcher-state-*.pkl at 0 bytes), and Tune's restore then failed and ran the confirmation again
    beside its old trials. A copy of the finished study, set back to its confirmation with those two
    files emptied: `resume` sets the old confirmation aside and runs it again, to the same results."""
    old = pd.read_parquet(killed_and_resumed.out / "trials.parquet")
    out = tmp_path / "resumable"
    shutil.copytree(killed_and_resumed.out, out)
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
    assert len(again) == 2 * len(RESUME_ARMS) and (again.status == "completed").all()
    pd.testing.assert_frame_equal(again, before)   # the same runs, trained again
    assert set(new[new.phase == "confirm"].trial_id).isdisjoint(old.trial_id)
    pd.testing.assert_frame_equal(new[new.phase == "search"].reset_index(drop=True),
                                  old[old.phase == "search"].reset_index(drop=True))
