"""One study whose drivers are stopped in every way a driver gets stopped, then finished: conftest's
`stopped` fixture runs it once per session for test_interrupt.py (SIGINT and SIGTERM: the driver
ends by itself, cleanly) and test_resume.py (SIGKILL: nothing of the driver survives; `resume`
loses and repeats nothing). Each driver is `python -m study` in a session of its own, with its own
Ray on 127.0.0.1 (Optuna in SQLite, W&B offline). In order:

  1. `run`: SIGKILL to its process group once a search trial has ended (mid-search);
  2. `resume`: SIGINT to its process group (Ctrl+C) once another search trial has ended;
  3. `resume`: SIGTERM to its whole process group (Ray's processes too, as from `timeout` or Slurm)
     once a search trial has reported again;
  4. `resume`: SIGKILL to its process group as soon as study.json says confirm (between the phases);
  5. `resume`: SIGKILL to its process group once a confirmation run has ended;
  6. `resume`: SIGTERM to the driver alone once another confirmation run has ended;
  7. a last `resume` finishes the study.
Trials take about as long as their setup, so they end soon after each other: the search moments
are read from optuna.db, which the driver writes at once (result.json reaches the study folder only
with Tune's saved state, every few seconds), and three confirmation seeds per arm leave runs to do
after each of the two stops in the confirmation. The first kill is of `run`, as in a study's life:
the trial whose end it waits for was started before Tune first saved its state (one started and
ended between two saves would be lost to Tune, which then counts 5 of 6 at the search's end), and
no stop before it has left a trial that ran to its end in Tune's state as running (a resume then
runs its last epoch again, which the kill checks count as repeated work).
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

import pandas as pd

from processes import descendants, listening_sockets, ray_sessions_of, reap, wait_until
from studies import read_results, spec_text

REPO = Path(__file__).resolve().parents[1]
SPEC = dict(name="stopped", epochs=4, seeds=[0, 1, 2], arms=["model: mlp, hidden: [32]",
                                                             "model: mlp, hidden: [16]"])
ARMS = ("mlp-h32", "mlp-h16")
CONFIRMATIONS = len(ARMS) * len(SPEC["seeds"])   # runs in the confirmation


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
    except sqlite3.Error:   # not created yet, or locked by the writer
        return []


def ended_in_optuna(out: Path) -> list[tuple[str, int, str]]:
    return [(study, number, state) for study, number, state, _ in optuna_states(out / "optuna.db")
            if state != "RUNNING"]


def reported_in_optuna(out: Path) -> int:
    """How many epochs the search's trials have reported to Optuna; 0 while unreadable."""
    try:
        with sqlite3.connect(f"file:{out / 'optuna.db'}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT count(*) FROM trial_intermediate_values").fetchone()[0]
    except sqlite3.Error:   # not created yet, or locked by the writer
        return 0


def finished_in_confirm(out: Path) -> int:
    folder = out / "confirm"
    return sum(1 for d in folder.iterdir() if (rows := read_results(d)) and rows[-1]["status"] == "completed") \
        if folder.is_dir() else 0


def phase_of(out: Path) -> str | None:
    try:
        return json.loads((out / "study.json").read_text())["phase"]
    except (OSError, ValueError, KeyError):
        return None


def signalled(command: list[str], out: Path, log: Path, env: dict, moment, signum: int,
              group: bool) -> SimpleNamespace:
    """Start `python -m study ...` in a session of its own, send `signum` when `moment()` is true (to
    its process group or to the driver alone), and let it end (SIGKILLed after 120 s, which fails
    the tests). Before a SIGKILL, its processes and their listening sockets are noted; after it
    ends, the processes of its Ray session (and for a SIGKILL those noted) still alive are."""
    ns = SimpleNamespace(rc=None, seconds=float("inf"), signum=signum, family=[], sockets=[])
    since = time.time()
    with open(log, "wb") as log_file:
        run = subprocess.Popen([sys.executable, "-m", "study", *command], cwd=REPO, env=env, stdout=log_file,
                               stderr=subprocess.STDOUT, start_new_session=True)
        try:
            ns.reached = wait_until(lambda: run.poll() is not None or moment(), timeout=300, step=0.1)
            ns.exit_before_signal = run.poll()
            ns.phase_at_signal = phase_of(out)
            ns.ray_sessions = ray_sessions_of(run.pid, since)
            if signum == signal.SIGKILL:
                ns.family = descendants(run.pid)
                ns.sockets = listening_sockets(ns.family)
            if ns.exit_before_signal is None:
                (os.killpg if group else os.kill)(run.pid, signum)
            started = time.monotonic()
            ns.rc = run.wait(timeout=120)
            ns.seconds = time.monotonic() - started
        except subprocess.TimeoutExpired:
            pass
        finally:   # the process group held the driver and its Ray: nothing of them may be left
            ns.left_alive = reap(run, timeout=20, family=ns.family)
    ns.output = log.read_text(errors="replace")
    ns.wall = time.time() - since
    assert ns.reached and ns.exit_before_signal is None, \
        f"`{' '.join(command)}` ended before the signal:\n{ns.output[-3000:]}"
    return ns


def stop(command: list[str], out: Path, log: Path, env: dict, moment, signum: int, group: bool) -> SimpleNamespace:
    """signalled(...), and what the stopped driver left in the study folder."""
    ns = signalled(command, out, log, env, moment, signum, group)
    ns.phase_after = phase_of(out)
    ns.optuna = optuna_states(out / "optuna.db")
    ns.files = {p.name for p in out.iterdir()}
    trials = out / "trials.parquet"
    ns.confirm_rows = pd.read_parquet(trials).phase.eq("confirm").sum() if trials.exists() else None
    # the reports so far of every trial in Tune's saved state (a folder with params.json): none may
    # change or go missing later. (A folder without is a trial that a killed driver had started
    # after Tune last saved its state: on resume its Optuna trial runs again under a new id.)
    ns.snapshot = {f"{p}/{d.name}": read_results(d) for p in ("search", "confirm")
                   if (out / p).is_dir() for d in (out / p).iterdir() if (d / "params.json").exists()}
    return ns


def finish(out: Path, env: dict) -> SimpleNamespace:
    """The last `resume`, to the end (its stdout and stderr apart)."""
    since, started = time.time(), time.monotonic()
    resume = subprocess.Popen([sys.executable, "-m", "study", "resume", str(out)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = (b.decode(errors="replace") for b in resume.communicate(timeout=480))
    finally:
        left_alive = reap(resume, timeout=15)
    return SimpleNamespace(rc=resume.returncode, stdout=stdout, stderr=stderr, left_alive=left_alive,
                           seconds=time.monotonic() - started, ray_sessions=ray_sessions_of(resume.pid, since))


def stop_and_finish(root: Path) -> SimpleNamespace:
    """Run the module docstring's seven drivers on a study under `root`."""
    spec_path = root / "stopped.yaml"
    spec_path.write_text(spec_text(root / "results", **SPEC))
    out = root / "results" / "stopped"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    ns = SimpleNamespace(out=out, stops=[])

    def driver(command, name, moment, signum, group=True):
        ns.stops.append(stop(command, out, root / f"{name}.out", env, moment, signum, group))
        ns.stops[-1].name = name
        return ns.stops[-1]

    resume = ["resume", str(out)]
    kill = driver(["run", str(spec_path)], "kill-search", lambda: ended_in_optuna(out), signal.SIGKILL)
    kill.ended_in_optuna = ended_in_optuna(out)
    kill.search = {name[len("search/"):]: rows for name, rows in kill.snapshot.items()
                   if name.startswith("search/")}
    ended = len(kill.ended_in_optuna)
    driver(resume, "ctrl-c", lambda: len(ended_in_optuna(out)) > ended, signal.SIGINT)
    reported = reported_in_optuna(out)
    driver(resume, "timeout", lambda: reported_in_optuna(out) > reported, signal.SIGTERM)
    driver(resume, "kill-between", lambda: phase_of(out) == "confirm", signal.SIGKILL)
    kill = driver(resume, "kill-confirm", lambda: finished_in_confirm(out) >= 1, signal.SIGKILL)
    kill.finished_in_confirm = finished_in_confirm(out)
    driver(resume, "sigterm", lambda: finished_in_confirm(out) > kill.finished_in_confirm, signal.SIGTERM,
           group=False)
    ns.final = finish(out, env)
    return ns
