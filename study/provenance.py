"""What ran a study: every driver (`archstudy run`, each `archstudy resume`) adds one record of its
code and packages to study.json's "drivers" list, and says so when they differ from the first
driver's (a study resumed after a `git pull` or an upgrade pools results of two code versions).

    python -c "from study.provenance import environment; print(environment('run'))"

A record is the driver's environment, not the workers': on a cluster Ray requires the same Python
and Ray on every node, but not the same torch. No environment variable is recorded (W&B keys live
there). The record's keys are in studyfiles/provenance.py; analysis/provenance.py turns the records
into the report's last section.

Tests: .venv/bin/python -m pytest tests/test_provenance.py
"""
from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from studyfiles.provenance import PACKAGES, changed, describe

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, text=True, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit() -> str:
    """HEAD's commit of the checkout archstudy runs from; "unknown" when it is not run from its own
    git checkout (an installed wheel, or a virtual environment inside another project's
    repository: that repository's HEAD is not ours)."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != REPO:
        return "unknown"
    return _git("rev-parse", "HEAD") or "unknown"


def git_state() -> tuple[str, bool | None]:
    """(git_commit(), whether tracked files differ from it); the second is None when the commit is
    unknown or git status fails."""
    commit = git_commit()
    if commit == "unknown":
        return commit, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return commit, None if status is None else bool(status)


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def environment(command: str) -> dict:
    """One driver's record: command ("run" or "resume"), started (UTC, ISO 8601, seconds),
    archstudy (its version), git_commit and git_dirty (git_state), python, platform and packages
    ({name: version or None} for PACKAGES)."""
    commit, dirty = git_state()
    return {"command": command, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "archstudy": _version("archstudy"), "git_commit": commit, "git_dirty": dirty,
            "python": platform.python_version(), "platform": platform.platform(),
            "packages": {name: _version(name) for name in PACKAGES}}


def difference(first: dict, current: dict) -> str | None:
    """One line naming what differs between two drivers' code, or None when nothing does."""
    if not (names := changed(first, current)):
        return None
    return (f"this study started under other code ({', '.join(names)} differ): first driver "
            f"{describe(first)}; this driver {describe(current)}. Its results will pool both; "
            "the analysis says so under Provenance")
