"""The layers and their contract (studyfiles/__init__.py): imports point one way, `analysis` loads
neither torch nor Ray, and what `study` writes is what `studyfiles.contract` names.

    python -m pytest tests/test_layers.py
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from studyfiles import contract
from studyfiles.spec_data import read_spec
from study.spec_file import dump_spec, load_spec, spec_hash

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("studyfiles", "trainables", "analysis", "study")
# What each package may import of ours: the layers, bottom up.
ALLOWED = {"studyfiles": set(), "trainables": {"studyfiles"}, "analysis": {"studyfiles"},
           "study": {"studyfiles", "trainables", "analysis"}}


def our_imports(path: Path) -> set[str]:
    """The top-level packages of ours that a module imports (at any depth of its code)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        found |= {n.split(".")[0] for n in names} & set(PACKAGES)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down_the_layers(package):
    wrong = {f"{p.relative_to(REPO)} imports {sorted(bad)}"
             for p in (REPO / package).rglob("*.py")
             if (bad := our_imports(p) - ALLOWED[package] - {package})}
    assert not wrong, wrong


@pytest.mark.parametrize("package, forbidden", [("analysis", ("torch", "ray", "study", "trainables", "wandb")),
                                                 ("studyfiles", ("torch", "ray", "study", "trainables",
                                                                 "analysis", "wandb"))])
def test_analysis_and_the_contract_load_neither_torch_nor_ray(package, forbidden):
    """Every module of the package imported (but __main__, which runs the command): none of
    `forbidden` is loaded (wandb is imported only when a study logs to it)."""
    code = (f"import sys, importlib, pkgutil, {package}\n"
            f"for m in pkgutil.iter_modules({package}.__path__):\n"
            f"    if m.name != '__main__': importlib.import_module('{package}.' + m.name)\n"
            f"print(sorted(m for m in {forbidden!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_python_m_analysis_has_its_own_parser():
    done = subprocess.run([sys.executable, "-m", "analysis", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m analysis"), done.stderr
    missing = subprocess.run([sys.executable, "-m", "analysis", str(REPO / "no-such-study")], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("error: ") and "no-such-study" in missing.stderr


@pytest.mark.parametrize("spec_file", sorted((REPO / "study" / "specs").glob("*.yaml")), ids=lambda p: p.name)
def test_the_analysis_reads_the_spec_the_study_wrote(spec_file, tmp_path):
    spec = load_spec(spec_file)
    (tmp_path / "spec.yaml").write_text(dump_spec(spec))
    data = read_spec(tmp_path / "spec.yaml")
    assert data.hash == spec_hash(spec)
    assert (data.name, data.metric, data.mode, data.epochs, data.seeds, data.arm_names) == \
        (spec.name, spec.metric, spec.mode, spec.epochs, spec.seeds, spec.arm_names)
    assert data.space == {k: (d.kind, d.args) for k, d in spec.search.space.items()}
    for env in ({}, {"WANDB_API_KEY": "x" * 40}):
        assert data.wandb_mode(env) == spec.wandb.resolved_mode(env)


def test_a_folder_without_a_resolved_spec_is_one_line(tmp_path):
    from studyfiles.errors import StudyError
    (tmp_path / "spec.yaml").write_text("name: x\n")
    with pytest.raises(StudyError, match=r"not a resolved study spec \(no metric, mode, epochs"):
        read_spec(tmp_path / "spec.yaml")


def test_the_tables_hold_the_contracts_columns(tiny):
    frames = {t: pd.read_parquet(contract.table_path(tiny.out, t)) for t in contract.TABLES}
    space = [f"param_{p}" for p in read_spec(tiny.out / contract.SPEC_FILE).space]
    expected = {"trials": [*contract.TRIAL_COLUMNS, *space], "epochs": contract.EPOCH_COLUMNS,
                "gradflow": contract.GRADFLOW_COLUMNS, "signalprop": contract.SIGNALPROP_COLUMNS}
    for table, columns in expected.items():
        assert set(columns) <= set(frames[table].columns), (table, set(columns) - set(frames[table].columns))
    assert set(frames["trials"]["status"]) <= {s.value for s in contract.Status}
    assert set(frames["trials"]["phase"]) == {p.value for p in contract.Phase}
    assert dict(zip(frames["trials"]["model"], frames["trials"]["line"])) == {"mlp": "mlp", "resnet20": "6n+2"}
    assert json.loads(frames["trials"]["config"].iloc[0])   # the trial's training options
