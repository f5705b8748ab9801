"""`archstudy resume` on a study folder whose spec.yaml was edited after the study started, or whose
own files are damaged: one line, exit code 2, before Ray starts, nothing changed.

    python -m pytest tests/test_spec_changed.py

The folders are made by runner.prepare (what `archstudy run` writes before its first trial); no
study runs here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from processes import ray_sessions_of
from studies import spec_text
from study import runner
from studyfiles.errors import StudyError
from study.spec_file import load_spec

REPO = Path(__file__).resolve().parents[1]
SPEC = dict(name="edited", epochs=2, seeds=[0], arms=["model: mlp, hidden: [32]", "model: mlp, hidden: [16]"])


@pytest.fixture
def folder(study_env, tmp_path) -> Path:
    path = tmp_path / "edited.yaml"
    path.write_text(spec_text(tmp_path / "results", **SPEC))
    return runner.prepare(load_spec(path)).out


def edit(out: Path, change) -> None:
    spec = yaml.safe_load((out / "spec.yaml").read_text())
    change(spec)
    (out / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def resume(out: Path) -> tuple[int, str, str, list]:
    """`archstudy resume out` in a subprocess: (exit code, stdout, stderr, its Ray sessions)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    since = time.time()
    run = subprocess.Popen([sys.executable, "-m", "study", "resume", str(out)], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:   # it went on with the study: a failure, cut short
            run.kill()
            run.communicate()
    return run.returncode, stdout, stderr, ray_sessions_of(run.pid, since)


def add_arm_and_trials(spec: dict) -> None:
    spec["arms"].append({"model": "mlp", "hidden": [8]})
    spec["search"]["trials_per_arm"] = 4


def test_resume_refuses_an_edited_spec_naming_what_changed(folder):
    state = (folder / "study.json").read_text()
    edit(folder, add_arm_and_trials)
    rc, stdout, stderr, sessions = resume(folder)
    lines = stderr.strip().splitlines()
    assert rc == 2 and stdout == "" and len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(f"error: {folder / 'spec.yaml'} has changed since the study started "
                               "(spec hash "), lines[0]
    assert "arm 'mlp-h8' added; search.trials_per_arm 3 -> 4." in lines[0]
    assert 'the original is under "spec" in study.json' in lines[0]
    assert sessions == []   # refused before Ray started
    assert (folder / "study.json").read_text() == state and not (folder / "search").exists()


def test_a_folder_without_the_original_spec_is_checked_by_its_hash(folder):
    state = json.loads((folder / "study.json").read_text())
    del state["spec"]   # as written before study.json kept the spec
    (folder / "study.json").write_text(json.dumps(state))
    # written again with other formatting and key order, same content: not a change
    edit(folder, lambda spec: [spec.update({key: spec.pop(key)}) for key in reversed(list(spec))])
    assert runner.reopen(folder).spec.arm_names == ["mlp-h32", "mlp-h16"]
    edit(folder, lambda spec: spec["arms"].pop())
    rc, _, stderr, sessions = resume(folder)
    assert rc == 2 and len(stderr.strip().splitlines()) == 1 and sessions == []
    assert "this folder keeps only the original's hash, so what changed cannot be named" in stderr


def test_a_cosmetic_edit_is_not_a_change(folder):
    text = (folder / "spec.yaml").read_text()
    (folder / "spec.yaml").write_text("# my notes\n" + text.replace("epochs: 2", "epochs: 2   # short"))
    assert runner.reopen(folder).spec.epochs == 2


@pytest.mark.parametrize("content, expected", [
    ('{"phase": ', "study.json cannot be read (JSONDecodeError"),
    ('{"phase": "later"}', 'study.json is not a study state: expected {"phase": one of search, confirm, done'),
    ('["search"]', "study.json is not a study state"),
])
def test_a_damaged_study_json_is_one_line(folder, content, expected):
    (folder / "study.json").write_text(content)
    with pytest.raises(StudyError) as raised:
        runner.reopen(folder)
    assert expected in str(raised.value) and "\n" not in str(raised.value)


def test_a_lost_optuna_db_is_one_line_not_a_key_error(folder):
    study = runner.reopen(folder)
    study.mark(phase="confirm")   # as if the search had run, but optuna.db is gone
    with pytest.raises(StudyError) as raised:
        study.best_configs()
    assert str(raised.value) == (f"{folder / 'optuna.db'} holds no search of arm 'mlp-h32'; the "
                                 "confirmation needs each arm's search results")
