"""The command line (study/cli.py), each call a real subprocess: a bad spec exits 2 with one line
for `validate` and for `run`, before Ray starts or anything is written; so do unusable folders and
missing data; `schema`, `models` and `validate` of a good spec work.

    python -m pytest tests/test_cli.py
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from processes import ray_sessions_of

REPO = Path(__file__).resolve().parents[1]


# ---- the command line ------------------------------------------------------------------------------
BAD_SPECS = {
    "arms[1].model": "name: bad\nstorage: {storage}\narms: [{{model: mlp}}, {{model: resnet99}}]\n",
    "search.space.lr.loguniform[0]": ("name: bad\nstorage: {storage}\narms: [{{model: mlp}}]\n"
                                      "search: {{space: {{lr: {{loguniform: [0, 0.1]}}}}}}\n"),
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Every CLI call of the tests below, started at once (each pays Python's and torch's start-up)."""
    root = tmp_path_factory.mktemp("cli")
    calls = {"schema": ["schema"], "models": ["models"],
             "quick": ["validate", str(REPO / "study/specs/quick.yaml")]}
    for i, (where, text) in enumerate(BAD_SPECS.items()):
        path = root / f"bad{i}.yaml"
        path.write_text(text.format(storage=root / f"storage{i}"))
        calls[f"validate:{where}"] = ["validate", str(path)]
        calls[f"run:{where}"] = ["run", str(path)]
    (root / "not-a-study").mkdir()
    calls["resume:not-a-study"] = ["resume", str(root / "not-a-study")]
    no_data = root / "no-data.yaml"
    no_data.write_text(f"name: offline\ndata: cifar10\ndata_root: {root / 'empty'}\n"
                       f"storage: {root / 'storage-no-data'}\narms: [{{model: resnet20}}]\n")
    calls["run:no-data"] = ["run", str(no_data)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    since = time.time()   # Ray sessions of these calls' pids from before are other processes'
    started = {name: (time.monotonic(), subprocess.Popen(
        [sys.executable, "-m", "study", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)) for name, args in calls.items()}
    results = {}
    for name, (start, proc) in started.items():
        stdout, stderr = proc.communicate(timeout=180)
        results[name] = SimpleNamespace(rc=proc.returncode, stdout=stdout.decode(), stderr=stderr.decode(),
                                        seconds=time.monotonic() - start, pid=proc.pid)
    return SimpleNamespace(root=root, results=results, since=since)


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("where", list(BAD_SPECS))
def test_spec_error_exits_2_with_one_line_before_anything_starts(cli, command, where):
    result = cli.results[f"{command}:{where}"]
    assert result.rc == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {where}: "), result.stderr
    i = list(BAD_SPECS).index(where)
    assert not (cli.root / f"storage{i}").exists()          # nothing written
    assert ray_sessions_of(result.pid, cli.since) == []      # no Ray started (the killed run's check
    # above, test_resume_finishes..., shows that a started Ray leaves session_*_<pid>)


@pytest.mark.parametrize("call, expected", [
    ("resume:not-a-study", "is not a study folder"),
    ("run:no-data", "cifar10"),
])
def test_unusable_folders_and_missing_data_exit_2_with_one_line(cli, call, expected):
    result = cli.results[call]
    lines = result.stderr.splitlines()
    assert result.rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], \
        result.stderr[-2000:]
    assert ray_sessions_of(result.pid, cli.since) == []   # refused before Ray started
    assert not (cli.root / "storage-no-data").exists() and list((cli.root / "not-a-study").iterdir()) == []


def test_validate_schema_and_models(cli):
    quick = cli.results["quick"]
    assert quick.rc == 0 and quick.stdout.startswith(f"{REPO / 'study/specs/quick.yaml'}: ok: study 'quick', 8 arms")
    schema = cli.results["schema"]
    assert schema.rc == 0
    parsed = json.loads(schema.stdout)
    assert parsed["title"] == "archstudy study spec" and {"name", "arms", "search"} <= set(parsed["properties"])
    models = cli.results["models"]
    assert models.rc == 0
    assert re.search(r"^resnet20 +residual +depth 20$", models.stdout, re.M), models.stdout
