"""Trials that fail before their first report, and arms with no result, on real components (a local
Ray on 127.0.0.1, Optuna in SQLite, W&B offline, the mnist-5k data):

    python -m pytest tests/test_failed_trials.py

- An arm too large for any machine's memory (one hidden layer of 2**40 units: the allocation fails in
  the trial's setup, which `validate` cannot foresee): `archstudy run` ends with exit code 2 and one
  line naming the arm and the cause; each failed trial is a row of trials.parquet with its cause
  and one line on the terminal, its traceback only in error.txt and driver.log; study.json stays at
  the search, and so does a `resume`.
- A file where the study's W&B folder goes (every trial of every arm fails in wandb.init): the study
  stops at the search; once the file is gone, `resume` runs the failed trials again and finishes.
- Every trial diverges (lr 1e6): a result, not a fault: the study finishes and its answers say that
  every search trial diverged, not that there were fewer than two arms.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest

from studies import spec_text
from study import cli, runner
from studyfiles.errors import StudyError
from study.searcher import study_name
from study.spec_file import load_spec

REPO = Path(__file__).resolve().parents[1]
TOO_BIG = "too-big"


def small_spec(storage: Path, name: str, arms: list[str], per_arm: int, extra: str = "") -> str:
    """tests/studies.py's template, 2 epochs, one confirmation seed, no retries by default."""
    text = spec_text(storage, name=name, epochs=2, seeds=[0], arms=arms)
    text = text.replace("trials_per_arm: 3", f"trials_per_arm: {per_arm}")
    return text + (extra or "failure: {max_retries: 0}\n")


def phase_of(out: Path) -> str:
    return json.loads((out / "study.json").read_text())["phase"]


@pytest.fixture(scope="module")
def too_big(study_env, tmp_path_factory):
    """`archstudy run` (a subprocess, as a user runs it), then `archstudy resume`."""
    root = tmp_path_factory.mktemp("too-big")
    path = root / "too-big.yaml"
    path.write_text(small_spec(root / "results", "toobig", [
        "model: mlp, hidden: [32]", f"model: mlp, hidden: [1099511627776], name: {TOO_BIG}"], 2,
        "failure: {max_retries: 1}\n"))   # a retry fails the same way: still one line per trial
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    out = root / "results" / "toobig"
    runs = []
    for command in (["run", str(path)], ["resume", str(out)]):
        done = subprocess.run([sys.executable, "-m", "study", *command], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=480)
        runs.append((done.returncode, done.stdout, done.stderr, phase_of(out),
                     pd.read_parquet(out / "trials.parquet")))
    return out, runs


def test_an_arm_whose_trials_all_failed_stops_the_study_with_one_line(too_big):
    out, runs = too_big
    for rc, stdout, stderr, phase, _ in runs:
        last = stderr.strip().splitlines()[-1]
        assert rc == 2, stderr[-3000:]
        assert last.startswith(f"error: search: every trial of arm '{TOO_BIG}' failed (first error: "
                               "RuntimeError: "), last
        assert "can't allocate memory" in last and f"archstudy resume {out}" in last
        assert phase == "search"   # not advanced past a phase without a result for every arm
    assert not (out / "confirm").exists() and not (out / "answers.md").exists()


def test_failed_trials_are_rows_with_their_cause(too_big):
    out, runs = too_big
    for *_, trials in runs:
        failed = trials[trials.arm == TOO_BIG]
        assert len(failed) == 2 and (failed.status == "error").all() and (failed.epochs_run == 0).all()
        assert all(e.startswith("RuntimeError: ") and "can't allocate memory" in e for e in failed.error)
        assert (failed.phase == "search").all() and failed.optuna_trial.notna().all()
        steady = trials[trials.arm != TOO_BIG]
        assert len(steady) == 2 and set(steady.status) <= {"completed", "pruned"}
        assert steady.error.isna().all()
    study = optuna.load_study(study_name=study_name("toobig", TOO_BIG),
                              storage=f"sqlite:///{out / 'optuna.db'}")
    assert [(t.state.name, t.user_attrs.get("status")) for t in study.trials] == [("FAIL", "error")] * 2


def test_tracebacks_go_to_the_log_and_one_line_per_failed_trial_to_the_terminal(too_big):
    out, runs = too_big
    for _, stdout, stderr, *_ in runs:
        assert "Traceback" not in stdout + stderr and "Trials did not complete" not in stderr
        lines = [line for line in stderr.splitlines() if line.startswith(f"search: trial {TOO_BIG}_")]
        assert len(lines) == 2, stderr[-3000:]   # one per failed trial, retries included
        for line in lines:
            assert " failed: RuntimeError: " in line and "can't allocate memory" in line
            assert Path(line.rsplit("(traceback: ", 1)[1].rstrip(")")).is_file()
    log = (out / "driver.log").read_text()
    assert "Traceback" in log and "can't allocate memory" in log


def test_resume_runs_failed_trials_again_once_the_cause_is_gone(ray_local, study_env, tmp_path):
    path = tmp_path / "blocked.yaml"
    path.write_text(small_spec(tmp_path / "results", "blocked",
                               ["model: mlp, hidden: [32]", "model: mlp, hidden: [16]"], 1))
    study = runner.prepare(load_spec(path))
    (study.out / "wandb").write_text("a file where the W&B runs go\n")   # wandb.init fails
    with pytest.raises(StudyError) as raised:
        study.run()
    assert str(raised.value).startswith("search: every trial of arms 'mlp-h32', 'mlp-h16' failed "
                                        "(first error in 'mlp-h32': NotADirectoryError: ")
    assert phase_of(study.out) == "search"
    (study.out / "wandb").unlink()
    again = runner.reopen(study.out)
    again.run()
    assert phase_of(study.out) == "done"
    trials = pd.read_parquet(study.out / "trials.parquet")
    assert trials.groupby(["phase", "status"]).size().to_dict() == {("search", "completed"): 2,
                                                                    ("confirm", "completed"): 2}
    # each arm confirms the configuration its (re-run) search trial had
    for row in trials[trials.phase == "confirm"].itertuples():
        searched = trials[(trials.phase == "search") & (trials.arm == row.arm)].iloc[0]
        assert json.loads(row.config)["lr"] == json.loads(searched.config)["lr"]


def test_a_study_in_which_every_trial_diverged_finishes_and_says_so(ray_local, study_env, tmp_path,
                                                                     capsys):
    path = tmp_path / "boom.yaml"
    text = small_spec(tmp_path / "results", "boom",
                      ["model: mlp, hidden: [32]", "model: mlp, hidden: [16]"], 1)
    text = text.replace("    batch_size: 32\n", "    batch_size: 32\n    lr: 1.0e6\n")
    path.write_text(text.replace("    lr: {loguniform: [0.001, 0.3]}\n",
                                 "    momentum: {uniform: [0.0, 0.9]}\n"))
    assert cli.main(["run", str(path)]) == 0   # a result, not a fault
    out = tmp_path / "results" / "boom"
    assert phase_of(out) == "done"
    trials = pd.read_parquet(out / "trials.parquet")
    assert (trials.phase == "search").all() and (trials.status == "diverged").all() and len(trials) == 2
    answers = json.loads((out / "answers.json").read_text())
    text = " ".join(answers["text"])
    printed = capsys.readouterr().out
    assert "Fewer than two arms" not in text + printed
    assert "  mlp-h32            no result: every search trial diverged (1), so it was not confirmed" \
        in printed.splitlines()
    for arm in ("mlp-h32", "mlp-h16"):
        assert f"{arm}: every search trial diverged (1), so it was not confirmed" in text
    assert "No pairs to compare: 0 of the 2 arms have confirmation runs" in text
