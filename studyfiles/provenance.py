"""The driver records in study.json's "drivers" list: what code ran a study. study/provenance.py
writes one per driver (`run`, each `resume`); analysis/provenance.py reads them. A record:

    {"command": "run" | "resume", "started": "2026-11-29T22:40:01+00:00" (UTC),
     "archstudy": "0.1.0", "git_commit": "<40 hex>" | "unknown", "git_dirty": true | false | null,
     "python": "3.13.5", "platform": "Linux-...", "packages": {"torch": "2.14.1", ...}}

Tests: .venv/bin/python -m pytest tests/test_provenance.py
"""
from __future__ import annotations

PACKAGES = ("torch", "torchvision", "ray", "optuna", "wandb", "numpy", "pandas")
# what makes two drivers' code differ (not when or where they ran)
CODE_KEYS = ("archstudy", "git_commit", "git_dirty", "python", "packages")


def code_of(record: dict) -> dict:
    """The record's CODE_KEYS (None where it lacks one): equal for drivers that ran the same code."""
    return {key: record.get(key) for key in CODE_KEYS}


def changed(first: dict, other: dict) -> list[str]:
    """The names of what differs between two records' code: CODE_KEYS other than packages, then
    package names, sorted."""
    a, b = code_of(first), code_of(other)
    pa, pb = a["packages"] or {}, b["packages"] or {}
    return ([key for key in CODE_KEYS if key != "packages" and a[key] != b[key]]
            + [name for name in sorted({*pa, *pb}) if pa.get(name) != pb.get(name)])


def describe(record: dict) -> str:
    """'archstudy 0.1.0, commit 1a2b3c4 (uncommitted changes), Python 3.13.5, torch 2.14.1, ...'."""
    commit = record.get("git_commit") or "unknown"
    parts = [f"archstudy {record.get('archstudy')}",
             f"commit {commit[:7]}" + (" (uncommitted changes)" if record.get("git_dirty") else ""),
             f"Python {record.get('python')}"]
    return ", ".join(parts + [f"{name} {v}" for name, v in (record.get("packages") or {}).items() if v])
