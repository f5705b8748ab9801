"""Interrupting a study's driver with the signals a user or a scheduler sends, on real components
(each driver a subprocess with its own Ray on 127.0.0.1, Optuna in SQLite, W&B offline):

    python -m pytest tests/test_interrupt.py

The session's `stopped` study (tests/stopped.py, shared with test_resume.py, whose SIGKILLs come
between these stops): `resume` gets SIGINT in its process group (Ctrl+C) mid-search; `resume` gets
SIGTERM in its whole process group (Ray's processes too, as from `timeout` or Slurm) mid-search;
`resume` gets SIGTERM to the driver alone mid-confirmation; a last `resume` finishes the study.
(`archstudy run` stops the same way: both are Study.run.) Each interrupted driver must end by
itself with exit code 130 or 143, its phase unfinished and nothing confirmed or analysed from it,
the resume command on its last line, no process of its Ray left, and no trial counted as failed;
the finished study must have lost and repeated nothing.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd

from processes import reap, wait_until
from studies import read_results
from stopped import ARMS, CONFIRMATIONS, SPEC, phase_of
from study.searcher import study_name
from wandb_files import METRICS, trial_epochs

REPO = Path(__file__).resolve().parents[1]

def interrupted(stopped) -> list:
    """The drivers stopped by SIGINT or SIGTERM, in order."""
    return [stop for stop in stopped.stops if stop.signum != signal.SIGKILL]


def test_interrupted_drivers_stop_cleanly(stopped):
    k, stops = stopped, interrupted(stopped)
    assert [stop.name for stop in stops] == ["ctrl-c", "timeout", "sigterm"]
    problems = []
    for stop, phase, code in zip(stops, ("search", "search", "confirm"), (130, 143, 143)):
        last = stop.output.strip().splitlines()[-1]
        if stop.rc != code:
            problems.append(f"{stop.name}: exit code {stop.rc}, not {code}:\n{stop.output[-2500:]}")
        if not last.endswith(f"continue with: archstudy resume {k.out}") or "interrupted by" not in last:
            problems.append(f"{stop.name}: last line {last!r}")
        if (stop.phase_at_signal, stop.phase_after) != (phase, phase):
            problems.append(f"{stop.name}: phase {stop.phase_at_signal} -> {stop.phase_after}, not {phase}")
        if stop.files & {"answers.md", "answers.json", "report.html"}:
            problems.append(f"{stop.name}: the partial study was analysed: {sorted(stop.files)}")
        if stop.confirm_rows not in ((None,) if phase == "search" else (0,)):
            problems.append(f"{stop.name}: tables of the unfinished phase: {stop.confirm_rows} rows")
        if any(state == "FAIL" or status == '"error"' for *_, state, status in stop.optuna):
            problems.append(f"{stop.name}: a trial counted as failed in Optuna: {stop.optuna}")
        if "Traceback" in stop.output:
            problems.append(f"{stop.name}: a traceback on the terminal:\n{stop.output[-2500:]}")
        if stop.left_alive:
            problems.append(f"{stop.name}: processes of its Ray left: {stop.left_alive}")
    assert stops[0].seconds < 60 and stops[2].seconds < 60   # Tune stopped and saved, then exit
    assert stops[1].seconds < 15   # Ray was gone: no waiting for it
    assert problems == [], "\n".join(problems)


def test_resume_finishes_the_interrupted_study_losing_and_repeating_nothing(stopped):
    k = stopped
    assert k.final.rc == 0, f"the last resume failed:\n{k.final.stderr[-4000:]}"
    assert phase_of(k.out) == "done" and (k.out / "answers.md").exists()
    trials = pd.read_parquet(k.out / "trials.parquet")
    epochs = pd.read_parquet(k.out / "epochs.parquet")
    search, confirm = trials[trials.phase == "search"], trials[trials.phase == "confirm"]
    problems = []
    if search.groupby("arm").size().to_dict() != {a: 3 for a in ARMS}:
        problems.append(f"search trials per arm: {search.groupby('arm').size().to_dict()}")
    if len(confirm) != CONFIRMATIONS or not (confirm.status == "completed").all():
        problems.append(f"confirm trials: {confirm[['arm', 'seed', 'status']].values.tolist()}")
    if dup := epochs[epochs.duplicated(["phase", "trial_id", "epoch"])].trial_id.tolist():
        problems.append(f"epochs twice in epochs.parquet: {dup}")
    for row in trials.itertuples():   # the interrupted trials are not errors
        got = trial_epochs(epochs, row.phase, row.trial_id).epoch.tolist()
        if row.status not in ("completed", "pruned") or got != list(range(1, row.epochs_run + 1)):
            problems.append(f"{row.phase} {row.trial_id}: status {row.status}, epochs {got}")
    # what each interrupted driver had reported is still there, unchanged; an epoch reported after
    # Tune's last save ran again, with the same results
    for stop in interrupted(k):
        for name, before in stop.snapshot.items():
            after = read_results(k.out / name)
            if name.rsplit("_", 1)[1] not in set(trials.trial_id):
                problems.append(f"{stop.name}: {name} missing from trials.parquet")
            if after[:len(before)] != before:
                problems.append(f"{stop.name}: {name}'s reports changed")
            first = {}
            for r in after:
                if r["epoch"] in first and any(r[m] != first[r["epoch"]][m] for m in METRICS):
                    problems.append(f"{name}: epoch {r['epoch']} ran again with other results")
                first.setdefault(r["epoch"], r)
    storage = f"sqlite:///{k.out / 'optuna.db'}"
    for arm in ARMS:
        study = optuna.load_study(study_name=study_name(SPEC["name"], arm), storage=storage)
        mine = search[search.arm == arm]
        states = [(t.number, t.state.name, t.user_attrs.get("status")) for t in study.trials]
        if len(states) != 3 or any(s not in ("COMPLETE", "PRUNED") or a == "error" for _, s, a in states):
            problems.append(f"Optuna {arm}: {states}")
        if sorted(mine.optuna_trial.astype(int)) != sorted(t.number for t in study.trials):
            problems.append(f"Optuna {arm}: numbers {states}, table {sorted(mine.optuna_trial)}")
        for t in study.trials:
            row = mine[mine.optuna_trial == t.number]
            if len(row) == 1 and sorted(t.intermediate_values) != list(range(1, row.epochs_run.iloc[0] + 1)):
                problems.append(f"Optuna {arm} #{t.number}: values at {sorted(t.intermediate_values)}")
    assert problems == [], "\n".join(problems)


BLOCKED_DRIVER = """
import ctypes, sys
import ray
from study import interrupt, runner
runner.keep_ray_on_loopback()
with interrupt.catching():
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    interrupt.reinstall()
    with interrupt.fitting():
        print("blocked", flush=True)
        # a call that never returns to the interpreter, as Ray's synchronous calls to a GCS the
        # same signal stopped: the main thread's Python handler cannot run
        mutex = ctypes.create_string_buffer(64)
        libc = ctypes.CDLL(None)
        libc.pthread_mutex_lock(mutex)
        libc.pthread_mutex_lock(mutex)
"""


def test_a_group_sigterm_stops_a_driver_blocked_in_c(study_env, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "driver.out"
    with open(log, "wb") as out:
        driver = subprocess.Popen([sys.executable, "-c", BLOCKED_DRIVER], cwd=REPO, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            assert wait_until(lambda: b"blocked" in log.read_bytes() or driver.poll() is not None, 120)
            time.sleep(1)   # inside the blocking call
            os.killpg(driver.pid, signal.SIGTERM)
            started, rc = time.monotonic(), None
            try:
                rc = driver.wait(timeout=60)
            except subprocess.TimeoutExpired:   # the fault: the driver waits for its blocked main thread
                pass
            seconds = time.monotonic() - started
        finally:
            left = reap(driver, timeout=20)
    output = log.read_text(errors="replace")
    assert rc == 143, f"exit code {rc}:\n{output[-2000:]}"
    assert seconds < 20, f"{seconds:.0f} s to stop"
    assert "the signal stopped Ray's own processes too" in output.splitlines()[-1], output[-2000:]
    assert left == [], left
