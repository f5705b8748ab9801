"""Without --address, a trial that this machine cannot hold is refused in one line, with exit code
2, before Ray starts and before anything is written (study/resources.py `check_local_resources`;
issue 12 item 6: `resources: {cpu: 4}` on a 2-CPU machine printed "pending" for ever). The
machine's count is the one Ray would use. `validate`, which is machine independent, accepts such
a spec and prints the same fact as a warning. With a Ray instance already running in the process
(a notebook's, this session's), the check is against what that instance has.

    .venv/bin/python -m pytest tests/test_local_resources.py -q
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from processes import ray_sessions_of
from studies import one_trial_spec
from study.resources import local_resources

REPO = Path(__file__).resolve().parents[1]
TOO_MANY = {"cpu": "{cpu: 4096}", "gpu": "{gpu: 4096}"}   # more than any machine running these tests


def ray_cpus() -> float:
    from ray._private.utils import get_num_cpus
    return float(get_num_cpus(override_docker_cpu_warning=True))


@pytest.fixture(scope="module")
def calls(tmp_path_factory, data_root_5k):
    root = tmp_path_factory.mktemp("local-resources")
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
           "ARCHSTUDY_DATA": str(data_root_5k)}
    commands = {}
    for kind, resources in TOO_MANY.items():
        path = root / f"{kind}.yaml"
        path.write_text(one_trial_spec(root / f"storage-{kind}", kind, resources=resources))
        commands[f"run {kind}"] = ["run", str(path)]
        commands[f"validate {kind}"] = ["validate", str(path)]
    since = time.time()
    started = {name: subprocess.Popen([sys.executable, "-m", "study", *args], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, args in commands.items()}
    results = {}
    for name, proc in started.items():
        try:
            stdout, stderr = proc.communicate(timeout=240)   # the old code waited for ever here
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        results[name] = SimpleNamespace(rc=proc.returncode, stdout=stdout, stderr=stderr, pid=proc.pid)
    return SimpleNamespace(root=root, results=results, since=since)


def test_local_resources_are_what_ray_would_count():
    assert local_resources()["CPU"] == ray_cpus() <= (os.cpu_count() or 1)
    import torch
    assert local_resources()["GPU"] == torch.cuda.device_count()


@pytest.mark.parametrize("kind", list(TOO_MANY))
def test_more_than_this_machine_has_is_refused_before_ray_starts(calls, kind):
    result = calls.results[f"run {kind}"]
    lines = result.stderr.splitlines()
    assert result.rc == 2 and result.stdout == "" and len(lines) == 1, (result.rc, result.stderr[-3000:])
    have = local_resources()[kind.upper()]
    assert lines[0] == (f"error: resources.{kind}: 4096 per trial is more than this machine has "
                        f"({have:g} {kind.upper()}s), so no trial could ever start; lower "
                        f"resources.{kind}, or run on a cluster with --address")
    assert not (calls.root / f"storage-{kind}").exists()           # nothing written
    assert ray_sessions_of(result.pid, calls.since) == []           # no Ray started


@pytest.mark.parametrize("kind", list(TOO_MANY))
def test_validate_accepts_it_with_a_warning(calls, kind):
    result = calls.results[f"validate {kind}"]
    assert result.rc == 0 and result.stdout.startswith(f"{calls.root / kind}.yaml: ok: "), result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"warning: resources.{kind}: 4096 per trial is more "
                                                   "than this machine has"), result.stderr


def test_more_than_the_running_ray_instance_has_is_refused(ray_local, tmp_path, data_root_5k):
    """In a process whose Ray is already up (2 CPUs here), against that instance's nodes."""
    from study.cli import main
    path = tmp_path / "three.yaml"
    path.write_text(one_trial_spec(tmp_path / "storage", "three", resources="{cpu: 3}"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["run", str(path)])
    assert rc == 2 and err.getvalue() == (
        "error: resources.cpu: 3 per trial is more than any node of this process's Ray instance has "
        "(2 CPUs), so no trial could ever start; lower resources.cpu, or run on a cluster with --address\n")
    assert not (tmp_path / "storage").exists()
