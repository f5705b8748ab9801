"""Interrupting `archstudy run` and `resume` with the signals a user or a scheduler sends, on real
components (each driver a subprocess with its own Ray on 127.0.0.1, Optuna in SQLite, W&B offline):

    python -m pytest tests/test_interrupt.py

One study, four drivers: `run` gets SIGINT in its process group (Ctrl+C) mid-search; `resume` gets
SIGTERM in its whole process group (Ray's processes too, as from `timeout` or Slurm) mid-search;
`resume` gets SIGTERM to the driver alone mid-confirmation; a last `resume` finishes the study.
Each interrupted driver must end by itself with exit code 130 or 143, its phase unfinished and
nothing confirmed or analysed from it, the resume command on its last line, no process of its Ray
left, and no trial counted as failed; the finished study must have lost and repeated nothing.
SIGKILLed drivers are in test_resume.py.
"""
from __future__ import annotations

import json
import os
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

from processes import reap, wait_until
from studies import read_results, spec_text
from study.search import study_name
from wandb_files import METRICS, trial_epochs

REPO = Path(__file__).resolve().parents[1]
SPEC = dict(name="interrupted", epochs=4, seeds=[0, 1], arms=["model: mlp, hidden: [32]",
                                                           "model: mlp, hidden: [16]"])
ARMS = ("mlp-h32", "mlp-h16")


def optuna_states(db: Path) -> list[tuple[str, int, str, str | None]]:
    """(study, number, state, user attribute "status") of every Optuna trial; [] while unreadable."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute(
                "SELECT s.study_name, t.number, t.state, a.value_json FROM trials t JOIN studies s "
                "USING (study_id) LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                "AND a.key = 'status'").fetchall()
    except sqlite3.Error:
        return []


def reports_in(out: Path, phase: str) -> int:
    folder = out / phase
    return sum(len(read_results(d)) for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else 0


def finished_in_confirm(out: Path) -> int:
    folder = out / "confirm"
    if not folder.is_dir():
        return 0
    return sum(1 for d in folder.iterdir() if (rows := read_results(d)) and rows[-1]["status"] == "completed")


def phase_of(out: Path) -> str | None:
    try:
        return json.loads((out / "study.json").read_text())["phase"]
    except (OSError, ValueError, KeyError):
        return None


def interrupt(command: list[str], out: Path, log: Path, env: dict, moment, signum: int,
              group: bool) -> SimpleNamespace:
    """Start `python -m study ...` in a session of its own, send `signum` when `moment()` is true (to
    the whole process group or to the driver only), and let it end by itself (SIGKILLed after
    120 s, which fails the test)."""
    ns = SimpleNamespace(rc=None, seconds=float("inf"))
    with open(log, "wb") as log_file:
        run = subprocess.Popen([sys.executable, "-m", "study", *command], cwd=REPO, env=env, stdout=log_file,
                               stderr=subprocess.STDOUT, start_new_session=True)
        try:
            ns.reached = wait_until(lambda: run.poll() is not None or moment(), timeout=300, step=0.1)
            ns.exit_before_signal = run.poll()
            ns.phase_at_signal = phase_of(out)
            (os.killpg if group else os.kill)(run.pid, signum)
            started = time.monotonic()
            ns.rc = run.wait(timeout=120)
            ns.seconds = time.monotonic() - started
        except subprocess.TimeoutExpired:
            pass
        finally:
            ns.left_alive = reap(run, timeout=20)
    ns.output = log.read_text(errors="replace")
    assert ns.reached and ns.exit_before_signal is None, f"ended before the signal:\n{ns.output[-3000:]}"
    return ns


@pytest.fixture(scope="module")
def interrupted(study_env, tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt")
    spec_path = root / "interrupted.yaml"
    spec_path.write_text(spec_text(root / "results", **SPEC))
    out = root / "results" / "interrupted"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    ns = SimpleNamespace(out=out, stops=[], snapshots=[])

    def stop(command, name, moment, signum, group):
        result = interrupt(command, out, root / f"{name}.out", env, moment, signum, group)
        result.name, result.signum = name, signum
        result.phase_after = phase_of(out)
        result.optuna = optuna_states(out / "optuna.db")
        result.files = {p.name for p in out.iterdir()}
        result.confirm_rows = (pd.read_parquet(out / "trials.parquet").phase.eq("confirm").sum()
                               if (out / "trials.parquet").exists() else None)
        ns.stops.append(result)
        # every trial's reports so far: none may change or go missing later
        ns.snapshots.append({f"{p}/{d.name}": read_results(d) for p in ("search", "confirm")
                             if (out / p).is_dir() for d in (out / p).iterdir() if d.is_dir()})

    finished = lambda: sum(s != "RUNNING" for _, _, s, _ in optuna_states(out / "optuna.db"))  # noqa: E731
    stop(["run", str(spec_path)], "ctrl-c", lambda: finished() >= 1, signal.SIGINT, group=True)
    before = reports_in(out, "search")
    stop(["resume", str(out)], "timeout", lambda: reports_in(out, "search") > before, signal.SIGTERM,
         group=True)
    stop(["resume", str(out)], "sigterm", lambda: finished_in_confirm(out) >= 1, signal.SIGTERM,
         group=False)
    final = subprocess.run([sys.executable, "-m", "study", "resume", str(out)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=480)
    ns.final_rc, ns.final_err = final.returncode, final.stderr
    return ns


def test_interrupted_drivers_stop_cleanly(interrupted):
    k = interrupted
    problems = []
    for stop, phase, code in zip(k.stops, ("search", "search", "confirm"), (130, 143, 143)):
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
    assert k.stops[0].seconds < 60 and k.stops[2].seconds < 60   # Tune stopped and saved, then exit
    assert k.stops[1].seconds < 15   # Ray was gone: no waiting for it
    assert problems == [], "\n".join(problems)


def test_resume_finishes_the_interrupted_study_losing_and_repeating_nothing(interrupted):
    k = interrupted
    assert k.final_rc == 0, f"the last resume failed:\n{k.final_err[-4000:]}"
    assert phase_of(k.out) == "done" and (k.out / "answers.md").exists()
    trials = pd.read_parquet(k.out / "trials.parquet")
    epochs = pd.read_parquet(k.out / "epochs.parquet")
    search, confirm = trials[trials.phase == "search"], trials[trials.phase == "confirm"]
    problems = []
    if search.groupby("arm").size().to_dict() != {a: 3 for a in ARMS}:
        problems.append(f"search trials per arm: {search.groupby('arm').size().to_dict()}")
    if len(confirm) != 4 or not (confirm.status == "completed").all():
        problems.append(f"confirm trials: {confirm[['arm', 'seed', 'status']].values.tolist()}")
    if dup := epochs[epochs.duplicated(["phase", "trial_id", "epoch"])].trial_id.tolist():
        problems.append(f"epochs twice in epochs.parquet: {dup}")
    for row in trials.itertuples():   # the interrupted trials are not errors
        got = trial_epochs(epochs, row.phase, row.trial_id).epoch.tolist()
        if row.status not in ("completed", "pruned") or got != list(range(1, row.epochs_run + 1)):
            problems.append(f"{row.phase} {row.trial_id}: status {row.status}, epochs {got}")
    # what each interrupted driver had reported is still there, unchanged; an epoch reported after
    # Tune's last save ran again, with the same results
    for i, snapshot in enumerate(k.snapshots):
        for name, before in snapshot.items():
            after = read_results(k.out / name)
            if name.rsplit("_", 1)[1] not in set(trials.trial_id):
                problems.append(f"stop {i + 1}: {name} missing from trials.parquet")
            if after[:len(before)] != before:
                problems.append(f"stop {i + 1}: {name}'s reports changed")
            first = {}
            for r in after:
                if r["epoch"] in first and any(r[m] != first[r["epoch"]][m] for m in METRICS):
                    problems.append(f"{name}: epoch {r['epoch']} ran again with other results")
                first.setdefault(r["epoch"], r)
    storage = f"sqlite:///{k.out / 'optuna.db'}"
    for arm in ARMS:
        study = optuna.load_study(study_name=study_name("interrupted", arm), storage=storage)
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
