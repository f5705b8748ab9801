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

import signal

import optuna
import pandas as pd

from studies import read_results
from stopped import ARMS, CONFIRMATIONS, SPEC, phase_of
from study.searcher import study_name
from wandb_files import METRICS, trial_epochs

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
