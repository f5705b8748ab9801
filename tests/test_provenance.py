"""What code ran a study: study.json's driver records (study/provenance.py) and the analysis's
Provenance section (analysis/provenance.py).

    .venv/bin/python -m pytest tests/test_provenance.py
"""
from __future__ import annotations

import json
import subprocess
from importlib.metadata import version

import pytest

from analysis.provenance import provenance_answer
from studies import TINY_SPEC, spec_text
from study import provenance, runner
from study.spec_file import load_spec

REPO = provenance.REPO


def test_a_record_names_this_checkout_and_its_packages_and_no_secret(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "local-0123456789abcdef0123456789abcdef01234567")
    record = provenance.environment("run")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, text=True, capture_output=True).stdout
    assert record["git_commit"] == head.strip() and isinstance(record["git_dirty"], bool)
    assert record["packages"]["torch"] == version("torch") and record["packages"]["ray"] == version("ray")
    assert record["command"] == "run" and record["started"].endswith("+00:00")
    assert "0123456789abcdef" not in json.dumps(record)


def test_another_projects_repository_is_not_taken_for_archstudys(tmp_path, monkeypatch):
    """archstudy installed into a virtual environment inside the user's own repository: git finds
    that repository from the package's folder, but its HEAD is not archstudy's commit."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    package = tmp_path / "venv" / "site-packages"
    package.mkdir(parents=True)
    monkeypatch.setattr(provenance, "REPO", package)
    assert provenance.git_state() == ("unknown", None)


def test_a_resume_under_other_code_is_said_and_the_answer_names_both(tmp_path, study_env, capsys):
    path = tmp_path / "p.yaml"
    path.write_text(spec_text(tmp_path / "results", name="prov", epochs=1, seeds=[0], arms=TINY_SPEC["arms"]))
    study = runner.prepare(load_spec(path))
    study.record_driver()
    assert capsys.readouterr().err == ""
    state = study.state()
    first = state["drivers"][0]
    first["packages"]["torch"] = "1.0.0"   # as if the study started before an upgrade
    study.mark(drivers=[first])
    study.record_driver()
    note = capsys.readouterr().err.strip()
    assert note.startswith("note: this study started under other code (torch differ)")
    assert len(note.splitlines()) == 1 and "torch 1.0.0" in note
    drivers = study.state()["drivers"]
    assert [d["command"] for d in drivers] == ["run", "resume"]
    answer = provenance_answer([("prov", study.state())])
    assert answer["code_versions"] == {"prov": 2} and len(answer["drivers"]) == 2
    assert "prov ran under 2 code versions over 2 drivers (1 of them resumes) (torch differ)" in answer["text"][0]
    assert answer["drivers"][0]["torch"] == "1.0.0" and answer["drivers"][1]["torch"] == version("torch")


@pytest.mark.parametrize("state, words", [
    ({}, "not recorded (its study.json predates the driver records)"),
    ({"error": "study.json: Expecting value"}, "unknown (study.json: Expecting value)"),
    ({"drivers": [{"command": "run", "git_commit": "unknown", "git_dirty": None, "packages": {}}]},
     "the commit is unknown"),
    ({"drivers": [{"command": "run", "git_commit": "ab" * 20, "git_dirty": True, "packages": {}}]},
     "uncommitted changes"),
])
def test_what_is_not_known_is_said(state, words):
    answer = provenance_answer([("s", state)])
    assert words in answer["text"][0]
    assert answer["code_versions"] == {"s": len(state.get("drivers", []))}


def test_the_tiny_study_records_its_driver_and_the_report_shows_it(tiny, analysed):
    drivers = json.loads((tiny.out / "study.json").read_text())["drivers"]
    assert [d["command"] for d in drivers] == ["run"] and drivers[0]["git_commit"] == tiny.git_commit
    out, code, _printed = analysed
    answers = json.loads((out / "answers.json").read_text())
    assert code == 0 and answers["provenance"]["code_versions"] == {"tiny": 1}
    assert answers["provenance"]["text"][0].startswith("tiny ran under one code version over 1 driver: ")
    assert answers["provenance"]["text"][0] in answers["text"]
    html = (out / "report.html").read_text()
    assert html.index("6. Evidence beyond one search") < html.index("7. Provenance: what code ran the study")
    assert "7. Provenance" in (out / "answers.md").read_text()


def test_studies_compared_that_differ_in_their_setup_are_named():
    a = {"data": "mnist-5k", "subset": {"train": 2000}, "epochs": 5, "search": {"trials_per_arm": 3}}
    b = {**a, "subset": {"train": 300}, "epochs": 3}
    answer = provenance_answer([("a", {}), ("b", {})], [a, b])
    assert answer["differences"] == ['subset ({"train": 2000} vs {"train": 300})', "epochs (5 vs 3)"]
    assert answer["text"][0].startswith('The 2 studies compared differ in subset ({"train": 2000} vs '
                                        '{"train": 300}); epochs (5 vs 3): a difference between arms')
    assert provenance_answer([("a", {}), ("c", {})], [a, dict(a)])["differences"] == []


def test_an_unreadable_study_json_makes_the_provenance_unknown_not_the_analysis_fail(tmp_path):
    from analysis.io import study_state
    assert study_state(tmp_path) == {}
    (tmp_path / "study.json").write_text('{"phase": ')
    state = study_state(tmp_path)
    assert state["error"].startswith(f"{tmp_path / 'study.json'} cannot be read (JSONDecodeError")
    assert provenance_answer([("s", state)])["text"][0].startswith("Provenance of s: unknown (")
