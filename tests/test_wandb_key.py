"""W&B online mode without an API key is refused in one line before anything runs
(studyfiles/wandb_key.py): `run` and `resume` exit 2 before Ray starts and before a study folder is
written (they used to run every trial into wandb's "No API key configured"), `analyze` exits 2
before it computes or writes anything (it used to end in a 37-line traceback), and `validate`
prints it as a warning. Where the key is looked for is checked against wandb's own lookup, a real
wandb in a subprocess, on homes with and without a (fake) key; no test goes online.

    .venv/bin/python -m pytest tests/test_wandb_key.py -q
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from processes import ray_sessions_of
from studies import one_trial_spec
from studyfiles.wandb_key import credentials_source, missing_key

REPO = Path(__file__).resolve().parents[1]
KEY = secrets.token_hex(20)   # a fake key of a real key's length (40 characters)
REFUSED = "wandb.mode: 'online' needs a W&B API key, and none is set (no WANDB_API_KEY, no entry for "
# wandb's own answer (wandb 0.31's internal lookup: wandb.sdk.lib.wbauth), for each environment in
# argv[1]: the settings read again from that environment, no prompt, nothing stored, no network
WANDB_LOOKUP = """\
import json, os, sys
import wandb
from wandb.sdk import wandb_setup
from wandb.sdk.lib import wbauth
found = []
for env in json.loads(sys.argv[1]):
    os.environ.clear()
    os.environ.update(env)
    wandb.teardown()
    host = wandb_setup.singleton().settings.base_url
    found.append(wbauth.authenticate_session(host=host, source="test", prompt=False,
                                             update_session=False) is not None)
print(json.dumps(found))
"""


def entry(machine: str) -> str:
    return f"machine {machine}\n  login user\n  password {KEY}\n"


def home(root: Path, name: str, netrc: str | None = None, settings: str | None = None) -> str:
    """A home folder with this .netrc and this W&B settings file (~/.config/wandb/settings)."""
    path = root / name
    path.mkdir()
    if netrc is not None:
        (path / ".netrc").write_text(netrc)
    if settings is not None:
        (path / ".config" / "wandb").mkdir(parents=True)
        (path / ".config" / "wandb" / "settings").write_text(settings)
    return str(path)


KEY_VARIABLES = ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "NETRC")


def without_key(home_dir: Path) -> dict:
    """This process's environment with no W&B credentials but what `home_dir` holds: no key
    variables, `home_dir` as the home and W&B's config folder under it, no Ray address."""
    return {**{k: v for k, v in os.environ.items() if k not in (*KEY_VARIABLES, "RAY_ADDRESS")},
            "HOME": str(home_dir), "WANDB_CONFIG_DIR": str(home_dir / ".config" / "wandb")}


def use_home(monkeypatch, home_dir: Path) -> None:
    """This process's environment as `without_key` (monkeypatch restores it after the test)."""
    for key in KEY_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    for key, value in without_key(home_dir).items():
        monkeypatch.setenv(key, value)


def test_the_key_is_found_where_wandb_finds_it(tmp_path):
    cloud = home(tmp_path, "cloud", netrc=entry("api.wandb.ai"))
    forge = home(tmp_path, "forge", netrc=entry("api.forge.coreweave.com"))
    default = home(tmp_path, "default", netrc=f"default login user password {KEY}\n")
    no_password = home(tmp_path, "no-password", netrc="machine api.wandb.ai login user\n")
    broken = home(tmp_path, "broken", netrc=entry("api.wandb.ai") + "bogus token\n")
    corp = home(tmp_path, "corp", netrc=entry("wandb.corp:8443"))
    logged_in = home(tmp_path, "login-host", netrc=entry("wandb.corp:8443"),   # wandb login --host
                     settings="[default]\nbase_url = https://wandb.corp:8443\n")
    in_settings = home(tmp_path, "settings", settings=f"[default]\napi_key = {KEY}\n")
    nothing = home(tmp_path, "nothing")
    corp_url = "https://wandb.corp:8443"
    cases = {   # name: (environment, whether wandb finds credentials)
        "nothing": ({"HOME": nothing}, False),
        "cloud entry": ({"HOME": cloud}, True),
        "forge entry": ({"HOME": forge}, True),
        "default entry": ({"HOME": default}, True),
        "entry without password": ({"HOME": no_password}, False),
        "netrc that does not parse": ({"HOME": broken}, False),
        "another server's entry": ({"HOME": corp}, False),
        "its entry and URL": ({"HOME": corp, "WANDB_BASE_URL": corp_url}, True),
        "cloud entry, another URL": ({"HOME": cloud, "WANDB_BASE_URL": corp_url}, False),
        "URL in the settings file": ({"HOME": logged_in}, True),
        "key in the settings file": ({"HOME": in_settings}, True),
        "NETRC": ({"HOME": nothing, "NETRC": str(Path(cloud) / ".netrc")}, True),
        "WANDB_API_KEY": ({"HOME": nothing, "WANDB_API_KEY": KEY}, True),
    }
    envs = [{"PATH": os.environ["PATH"], **env} for env, _ in cases.values()]
    done = subprocess.run([sys.executable, "-c", WANDB_LOOKUP, json.dumps(envs)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    wandb_found = dict(zip(cases, json.loads(done.stdout)))
    ours = {name: credentials_source(env) is not None for name, env in zip(cases, envs)}
    expected = {name: found for name, (_, found) in cases.items()}
    assert wandb_found == expected and ours == expected
    for env in envs:
        assert KEY not in (missing_key("online", env) or "") + (credentials_source(env) or "")
    assert missing_key("offline", envs[0]) is None and missing_key("disabled", envs[0]) is None
    assert missing_key("online", envs[0]).startswith(REFUSED)


@pytest.fixture(scope="module")
def refused(tmp_path_factory, study_env):
    """`run` (spec in online mode) and `resume` (a study folder started online), both with no key,
    as subprocesses started together: (folder, results, time started)."""
    from study import runner
    from study.spec_file import load_spec
    root = tmp_path_factory.mktemp("wandb-key")
    (root / "home").mkdir()
    (root / "run.yaml").write_text(one_trial_spec(root / "run-storage", "keyless", mode="online"))
    (root / "resume.yaml").write_text(one_trial_spec(root / "storage", "started", mode="online"))
    started = runner.prepare(load_spec(root / "resume.yaml")).out   # spec.yaml and study.json only
    before = {p: p.read_bytes() for p in started.iterdir()}
    since = time.time()
    commands = {"run": ["run", str(root / "run.yaml")], "resume": ["resume", str(started)]}
    procs = {name: subprocess.Popen([sys.executable, "-m", "study", *args], cwd=REPO,
                                    env=without_key(root / "home"), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, args in commands.items()}
    results = {name: (proc.pid, *proc.communicate(timeout=120), proc.returncode)
               for name, proc in procs.items()}
    assert {p: p.read_bytes() for p in started.iterdir()} == before   # resume changed nothing
    return root, results, since


@pytest.mark.parametrize("command", ["run", "resume"])
def test_online_without_a_key_is_refused_before_ray_starts(refused, command):
    root, results, since = refused
    pid, stdout, stderr, rc = results[command]
    assert rc == 2 and stdout == "" and len(stderr.splitlines()) == 1, (rc, stderr[-3000:])
    assert stderr.startswith("error: " + REFUSED) and stderr.endswith(
        "; set WANDB_API_KEY or run `wandb login`, or use --wandb-mode offline\n")
    assert f" in {root / 'home' / '.netrc'})" in stderr
    assert ray_sessions_of(pid, since) == []
    assert not (root / "run-storage").exists()


def test_validate_warns_only_where_no_key_is_found(tmp_path, monkeypatch, study_env):
    from study.cli import main
    path = tmp_path / "online.yaml"
    path.write_text(one_trial_spec(tmp_path / "storage", "online", mode="online"))
    keyless, with_key = tmp_path / "keyless", tmp_path / "with-key"
    keyless.mkdir(), with_key.mkdir()
    (with_key / ".netrc").write_text(entry("api.wandb.ai"))
    outputs = {}
    for name, folder in {"keyless": keyless, "with key": with_key}.items():
        use_home(monkeypatch, folder)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            outputs[name] = (main(["validate", str(path)]), out.getvalue(), err.getvalue())
    rc, out, err = outputs["keyless"]
    assert rc == 0 and out.startswith(f"{path}: ok: ") and err.count("\n") == 1
    assert err.startswith("warning: " + REFUSED)
    assert outputs["with key"] == (0, out, "")   # the same, and no warning
    assert KEY not in str(outputs)


def test_analyze_online_without_a_key_is_refused_before_it_writes(tiny, tmp_path, monkeypatch):
    from study.cli import main
    folder = tmp_path / "tiny"
    shutil.copytree(tiny.out, folder)
    files = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    (tmp_path / "home").mkdir()
    use_home(monkeypatch, tmp_path / "home")
    for extra, ending in [([], ", or use --wandb-mode offline\n"), (["--wandb-report"], "`wandb login`\n")]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["analyze", str(folder), "--wandb-mode", "online", *extra])
        assert rc == 2 and out.getvalue() == "" and err.getvalue().count("\n") == 1, err.getvalue()[-3000:]
        assert err.getvalue().startswith("error: " + REFUSED) and err.getvalue().endswith(ending)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == files
