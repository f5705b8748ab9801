"""Every command piped into `head` ends quietly (studyfiles/pipes.py, issue 12 item 8): no
BrokenPipeError traceback and no "Exception ignored" message, exit code 141 (as for a process that
SIGPIPE ended), through a real pipe into `head -n 1` that has gone (tests/processes.py). Each
command is a real subprocess; they start at once. `python -m analysis DIR | head` is in
test_value_types.py, which has a study folder to analyse.

    .venv/bin/python -m pytest tests/test_pipes.py -q
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from processes import start_into_closed_head

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "archstudy schema": ["-m", "study", "schema"],
    "archstudy models": ["-m", "study", "models"],
    "archstudy validate": ["-m", "study", "validate", str(REPO / "study/specs/quick.yaml")],
    "python -m trainables": ["-m", "trainables", "--model", "mlp", "--hidden", "[8]", "--epochs", "2",
                             "--limit", "64", "--grad-flow", "false"],
}


@pytest.fixture(scope="module")
def piped(data_root_5k):
    env = {**os.environ, "ARCHSTUDY_DATA": str(data_root_5k)}
    env.pop("RAY_ADDRESS", None)
    started = {name: start_into_closed_head([sys.executable, *args], cwd=REPO, env=env)
               for name, args in COMMANDS.items()}
    return {name: (proc.returncode, stderr) for name, proc in started.items()
            for _, stderr in [proc.communicate(timeout=300)]}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_command_piped_into_head_ends_quietly(piped, name):
    rc, stderr = piped[name]
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr[-3000:]
    assert "Exception ignored" not in stderr, stderr[-3000:]
    assert (rc, stderr) == (141, ""), (rc, stderr[-3000:])


def test_a_shell_pipeline_into_head_ends_quietly():
    """The plain shell pipeline (head may or may not have gone when the command writes): the first
    line arrives, and nothing but it, whichever way the race goes."""
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -m study schema | head -n 1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.stdout == "{\n" and proc.stderr == "", proc.stderr[-3000:]
    assert proc.returncode in (0, 141)
