"""Tests of study/cluster.py on a real two-node Ray cluster, started on this machine.

    .venv/bin/python -m pytest tests/test_cluster.py -q

The cluster (fixture `cluster`, once for the module) lives in private namespaces, so it can clash
with no other Ray on the machine and reaches nothing but its own loopback:
- `unshare --net --pid --mount-proc --kill-child bash -c HOLDER`: the holder bash is PID 1 of a new
  PID namespace with its own network (only `lo`, brought up) and mount namespace. It starts the
  head (`ray start --head`, GCS 127.0.0.1:6390, dashboard/Jobs API 127.0.0.1:8265, 1 CPU, no GPU)
  and a second node (`ray start --address`, 1 CPU, no GPU), each with its own --temp-dir.
- The second node runs in a mount namespace of its own (`unshare --mount`) in which <base>/hidden is
  covered by an empty tmpfs: a real "this node cannot see that path" folder, while <base>/shared is
  seen by both nodes (the same machine: a shared filesystem).
- Every Ray process and client gets: the venv first on PATH (so `ray start` and the job's `python`
  are the venv's), RAY_AUTH_MODE=token with RAY_AUTH_TOKEN_PATH=<base>/auth_token (a fresh 64-hex
  token, never ~/.ray/auth_token), RAY_USAGE_STATS_ENABLED=0, and no RAY_ADDRESS, RAY_AUTH_TOKEN or
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER (with the latter =0, as conftest sets it for the local Ray of the
  other tests, a second node refuses to start). The nodes also get conftest's study_env
  (ARCHSTUDY_DATA = the session's mnist-5k root, W&B's folders), which a job's driver inherits.
- Clients run from this process with `nsenter --target <holder pid> --net`: the namespace's
  127.0.0.1 is the cluster's. Drivers (`archstudy run --address`) also get
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which only stops Ray from looking for this host's network
  address (in the namespace there is none, and Ray's C++ core would print a warning about it).
- Stop: SIGTERM to the holder, whose trap runs `ray stop --force` inside; when PID 1 exits the
  kernel kills whatever is left; SIGKILL to unshare (--kill-child) if it hangs. The last test
  asserts that no process of the namespace (nor any that names <base>) is left.

The tests:
- `archstudy submit --wait` runs a two-arm study as a Ray Job: it succeeds, trials ran on both
  nodes, every output is in the storage folder, and the printed follow-up commands work as printed.
- storage that only the head sees, and resources.gpu on a cluster without GPUs, are refused by
  `archstudy run --address` with one line before anything is written.
- a job client without the token, or with a wrong one, gets one line naming RAY_AUTH_MODE / the
  token.
- unreachable addresses (127.0.0.1:1, in this process's own network namespace) fail at once.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from studies import spec_text

VENV_BIN = Path(sys.executable).parent
GCS_PORT, DASHBOARD_PORT = 6390, 8265
GCS = f"127.0.0.1:{GCS_PORT}"
DASHBOARD = f"http://127.0.0.1:{DASHBOARD_PORT}"
RAY_TEMP = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"
START_TIMEOUT = 180

# Two small mlp arms, 2 epochs, 2 seeds (3 search trials per arm, then 2 confirmation runs per arm).
STUDY = dict(epochs=2, seeds=[0, 1], arms=["model: mlp, hidden: [32]", "model: mlp, hidden: [16]"])
ARMS = ("mlp-h32", "mlp-h16")

HOLDER = r"""
set -euo pipefail
ip link set lo up
trap 'ray stop --force >"$BASE/stop.log" 2>&1; exit 0' TERM
ray start --head --node-ip-address=127.0.0.1 --port=$GCS_PORT --dashboard-host=127.0.0.1 \
    --dashboard-port=$DASHBOARD_PORT --num-cpus=1 --num-gpus=0 --resources='{"head": 1}' \
    --temp-dir="$BASE/h" --disable-usage-stats >"$BASE/head.log" 2>&1 || { cat "$BASE/head.log"; exit 1; }
echo HEAD-UP
# The second node, in a mount namespace of its own where $BASE/hidden is an empty tmpfs.
unshare --mount --propagation private bash -c '
    mount -t tmpfs -o size=1m archstudy-hidden "$BASE/hidden"
    exec ray start --address=127.0.0.1:$GCS_PORT --node-ip-address=127.0.0.1 --num-cpus=1 \
        --num-gpus=0 --resources="{\"worker\": 1}" --temp-dir="$BASE/w" --disable-usage-stats' \
    >"$BASE/worker.log" 2>&1 || { cat "$BASE/worker.log"; exit 1; }
echo WORKER-UP
python - <<'EOF'
import json, os, time, ray
ray.init(address="127.0.0.1:" + os.environ["GCS_PORT"], logging_level="ERROR", log_to_driver=False)
for _ in range(120):
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) >= 2:
        break
    time.sleep(0.5)
print("NODES " + json.dumps({("head" if "head" in n["Resources"] else "worker"): n["NodeID"]
                             for n in nodes}), flush=True)
EOF
echo READY
sleep infinity & wait $!
"""


# ---- processes ---------------------------------------------------------------------------------------
def pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def processes(where) -> list[str]:
    """'pid cmdline' of every live (not zombie) process for which where(pid, cmdline) holds."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state != "Z" and where(int(entry), cmdline):
            found.append(f"{entry} {cmdline[:160]}")
    return found


def wait_until(condition, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := condition()):
            return value
        time.sleep(step)
    return condition()


def one_line_error(result) -> str:
    """The single stderr line of a CLI call that must fail with exit code 2 and one line."""
    assert result.rc == 2, f"exit {result.rc}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-3000:]}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


# ---- the cluster -------------------------------------------------------------------------------------
def cluster_env(base: Path, study_env: dict) -> dict:
    """Environment of every Ray process of the cluster and of its clients: this process's, with
    conftest's study_env (ARCHSTUDY_DATA, W&B's folders: a job's driver and the trials inherit
    them from the nodes) and the cluster's settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}}
    env.update({k: v for k, v in study_env.items() if k != "home"})
    env.update(PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN_PATH=str(base / "auth_token"), RAY_USAGE_STATS_ENABLED="0",
               PYTHONUNBUFFERED="1", BASE=str(base), GCS_PORT=str(GCS_PORT),
               DASHBOARD_PORT=str(DASHBOARD_PORT))
    return env


class Cluster:
    def __init__(self, base: Path, env: dict):
        self.base, self.env = base, env
        self.holder: subprocess.Popen | None = None
        self.inner: int | None = None        # the holder bash: PID 1 of the namespace
        self.namespace: str | None = None    # its pid namespace, 'pid:[inode]'
        self.nodes: dict[str, str] = {}      # 'head'/'worker' -> node id
        self.started_in = self.stopped_in = None
        self.left: list[str] | None = None   # what was alive after stop()

    def start(self) -> None:
        t0 = time.monotonic()
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--pid", "--mount-proc", "--kill-child", "bash", "-c", HOLDER],
            env=self.env, cwd=self.base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        output = []
        for line in self.holder.stdout:   # until READY, or the holder's end
            output.append(line)
            if line.startswith("NODES "):
                self.nodes = json.loads(line[6:])
            if line.startswith("READY") or time.monotonic() - t0 > START_TIMEOUT:
                break
        with contextlib.suppress(OSError, IndexError, ValueError):
            pid = self.holder.pid
            self.inner = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
            self.namespace = pid_namespace(self.inner)
        if not (output and output[-1].startswith("READY")) or set(self.nodes) != {"head", "worker"}:
            raise RuntimeError(f"the two-node cluster did not start in {START_TIMEOUT} s:\n"
                               + "".join(output)[-4000:])
        self.started_in = time.monotonic() - t0

    def run(self, args: list[str], env: dict | None = None, timeout: float = 120) -> SimpleNamespace:
        """A command in the cluster's network namespace (its 127.0.0.1), from this process."""
        return execute(["nsenter", f"--target={self.inner}", "--net", "--", *args],
                       self.env if env is None else env, timeout, cwd=self.base)

    def driver_env(self) -> dict:
        return {**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

    def leftovers(self) -> list[str]:
        """Live processes of the cluster's namespace, or of any namespace, that name its base folder."""
        return processes(lambda pid, cmd: (self.namespace is not None and pid_namespace(pid) == self.namespace)
                         or str(self.base) in cmd)

    def stop(self) -> None:
        if self.holder is None or self.left is not None:
            return
        t0 = time.monotonic()
        if self.inner is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.inner, signal.SIGTERM)   # -> `ray stop --force` inside, then exit
        try:
            self.holder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.holder.kill()                        # --kill-child: SIGKILL to the namespace's PID 1
            self.holder.wait()
        self.holder.stdout.close()
        wait_until(lambda: not self.leftovers(), timeout=15)
        self.left = self.leftovers()
        for line in self.left:   # clean up, then the test says so
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
        self.stopped_in = time.monotonic() - t0


def execute(cmd: list[str], env: dict, timeout: float, cwd: Path) -> SimpleNamespace:
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        stderr += f"\n[killed after {timeout} s]"
    return SimpleNamespace(rc=proc.returncode, stdout=stdout, stderr=stderr, pid=proc.pid,
                           seconds=time.monotonic() - started)


def archstudy(*args: str) -> list[str]:
    return [sys.executable, "-m", "study", *args]


@pytest.fixture(scope="module")
def cluster(study_env):
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("needs util-linux's unshare and nsenter (private network/PID/mount namespaces)")
    probe = subprocess.run(["unshare", "--net", "--pid", "--mount-proc", "--fork", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create private namespaces here: {probe.stderr.strip()[:200]}")
    # A short base: Ray's unix sockets live under <temp-dir>/session_*/sockets/ (paths < 108 bytes).
    base = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    (base / "auth_token").write_text(secrets.token_hex(32))
    (base / "auth_token").chmod(0o600)
    for folder in ("hidden", "shared", "specs"):
        (base / folder).mkdir()
    cluster = Cluster(base, cluster_env(base, study_env))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def write_spec(cluster: Cluster, name: str, storage: Path, extra: str = "") -> Path:
    path = cluster.base / "specs" / f"{name}.yaml"
    path.write_text(spec_text(storage, name=name, **STUDY) + extra)
    return path


# ---- a study submitted as a Ray Job (started first; the refusal tests run while it runs) -----------------
@pytest.fixture(scope="module")
def job(cluster):
    """`archstudy submit SPEC --address DASHBOARD --wait`, started in the background."""
    spec = write_spec(cluster, "twonode", cluster.base / "shared")
    logs = [open(cluster.base / f"submit.{name}", "w+") for name in ("out", "err")]
    proc = subprocess.Popen(
        ["nsenter", f"--target={cluster.inner}", "--net", "--",
         *archstudy("submit", str(spec), "--address", DASHBOARD, "--wait")],
        env=cluster.env, cwd=cluster.base, text=True, stdout=logs[0], stderr=logs[1],
        start_new_session=True)
    job = SimpleNamespace(proc=proc, logs=logs, started=time.monotonic(),
                          out=cluster.base / "shared" / "twonode")
    yield job
    if proc.poll() is None:   # a test run that did not wait for it (-k)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for log in logs:
        log.close()


@pytest.fixture(scope="module")
def submitted(cluster, job):
    """The submission, waited for (up to 7 minutes from its start); the job's logs if it failed."""
    try:
        job.proc.wait(timeout=max(1.0, 420 - (time.monotonic() - job.started)))
    except subprocess.TimeoutExpired:
        os.killpg(job.proc.pid, signal.SIGKILL)
        job.proc.wait()
    stdout, stderr = (log.seek(0) or log.read() for log in job.logs)
    result = SimpleNamespace(rc=job.proc.returncode, stdout=stdout, stderr=stderr,
                             seconds=time.monotonic() - job.started)
    match = re.search(r"^submitted job (\S+)$", stdout, re.M)
    job_id = match and match.group(1)
    if result.rc != 0 and job_id:
        logs = cluster.run(["ray", "job", "logs", "--address", DASHBOARD, job_id], timeout=60)
        result.stderr += f"\n---- ray job logs {job_id} ----\n{logs.stdout[-6000:]}{logs.stderr[-2000:]}"
    return SimpleNamespace(result=result, job_id=job_id, out=job.out)


# ---- refused before anything runs -------------------------------------------------------------------------
def test_storage_only_the_head_sees_is_refused(cluster, job):
    hidden = cluster.base / "hidden"
    spec = write_spec(cluster, "blind", hidden)
    result = cluster.run(archstudy("run", str(spec), "--address", GCS), cluster.driver_env(), timeout=180)
    line = one_line_error(result)
    assert line.startswith("error: storage: ") and str(hidden) in line, line
    assert "s3://" in line and "gs://" in line and "shared filesystem" in line, line
    assert "1 of the cluster's 2 nodes" in line and cluster.nodes["worker"][:12] in line, line
    assert list(hidden.iterdir()) == []   # no study folder, and the check's marker was removed


def test_a_gpu_per_trial_on_a_cluster_without_gpus_is_refused(cluster, job):
    storage = cluster.base / "gpu-storage"
    spec = write_spec(cluster, "gpu", storage, extra="resources: {gpu: 1}\n")
    result = cluster.run(archstudy("run", str(spec), "--address", GCS), cluster.driver_env(), timeout=180)
    line = one_line_error(result)
    assert line.startswith("error: resources.gpu: 1 per trial is more than any node of the cluster has"), line
    assert not storage.exists()


@pytest.mark.parametrize("token", ["none", "wrong"])
def test_a_job_client_without_the_right_token_is_told_so(cluster, job, token):
    env = dict(cluster.env)
    if token == "none":
        del env["RAY_AUTH_MODE"]
    else:
        wrong = cluster.base / "wrong_token"
        wrong.write_text(secrets.token_hex(32))
        wrong.chmod(0o600)
        env["RAY_AUTH_TOKEN_PATH"] = str(wrong)
    storage = cluster.base / f"auth-{token}"
    spec = write_spec(cluster, f"auth-{token}", storage)
    result = cluster.run(archstudy("submit", str(spec), "--address", DASHBOARD), env=env, timeout=120)
    line = one_line_error(result)
    assert "token authentication" in line and "cannot reach" not in line, line
    if token == "none":
        assert "RAY_AUTH_MODE is unset" in line and "set RAY_AUTH_MODE=token" in line, line
    else:
        assert "refused this process's token" in line, line
    assert "RAY_AUTH_TOKEN_PATH" in line and "~/.ray/auth_token" in line, line
    assert result.stdout == "" and not storage.exists()


# ---- unreachable addresses (this process's own network namespace, where nothing listens on port 1) --
@pytest.mark.parametrize("command,address", [("run", "127.0.0.1:1"), ("submit", "http://127.0.0.1:1")])
def test_an_unreachable_address_fails_at_once(study_env, tmp_path, command, address):
    storage = tmp_path / "storage"
    spec = tmp_path / "unreachable.yaml"
    spec.write_text(spec_text(storage, name="unreachable", **STUDY))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"   # Ray must not swap 127.0.0.1 for this host's address
    result = execute(archstudy(command, str(spec), "--address", address), env, timeout=60, cwd=tmp_path)
    line = one_line_error(result)
    assert line.startswith("error: --address: cannot reach a Ray ") and f"'{address}'" in line, line
    assert "connection refused" in line, line
    assert result.seconds < 40, f"took {result.seconds:.0f} s"
    assert not storage.exists() and result.stdout == ""
    assert list(RAY_TEMP.glob(f"session_*_{result.pid}")) == []   # no Ray started


# ---- the submitted study's results -------------------------------------------------------------------
def test_submit_runs_the_study_as_a_job_on_both_nodes(cluster, submitted):
    r = submitted.result
    assert r.rc == 0, f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-9000:]}"
    job = submitted.job_id
    assert job and job.startswith("archstudy-twonode-"), r.stdout
    assert f"\njob {job}: SUCCEEDED" in r.stdout
    # the follow-up commands, in a form that works with token authentication
    for verb in ("logs", "status", "stop"):
        assert f"RAY_AUTH_MODE=token ray job {verb} --address {DASHBOARD}" in r.stdout, r.stdout
    assert re.search(r"^  auth: .*RAY_AUTH_TOKEN_PATH", r.stdout, re.M), r.stdout
    assert f"  results: {submitted.out}\n" in r.stdout
    # trials ran on both nodes, and only there
    trials = pd.read_parquet(submitted.out / "trials.parquet")
    assert set(trials.node_id) == set(cluster.nodes.values()), (trials.node_id.tolist(), cluster.nodes)
    assert len(trials) == 2 * 3 + 2 * 2 and set(trials.arm) == set(ARMS)
    assert (trials[trials.phase == "confirm"].status == "completed").all()


def test_submitted_study_left_every_result_in_storage(submitted):
    assert submitted.result.rc == 0, submitted.result.stderr[-3000:]
    out = submitted.out
    for name in ("spec.yaml", "study.json", "trials.parquet", "epochs.parquet", "gradflow.parquet",
                 "optuna.db", "report.html", "answers.json", "answers.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "study.json").read_text())["phase"] == "done"
    runs = sorted((out / "wandb").glob("offline-run-*"))
    trials = pd.read_parquet(out / "trials.parquet")
    assert {run.name.rsplit("-", 1)[1] for run in runs} >= set(trials.trial_id), [r.name for r in runs]
    assert all(list(run.glob("*.wandb")) for run in runs)
    assert (out / "search").is_dir() and (out / "confirm").is_dir()
    assert sorted(p.name for p in out.parent.iterdir()) == ["twonode"]   # no check marker left


def test_follow_up_commands_work_as_printed(cluster, submitted):
    """The printed `status` command, run as printed by a shell whose environment lacks RAY_AUTH_MODE
    (the printed prefix supplies it; the token comes from RAY_AUTH_TOKEN_PATH)."""
    line = re.search(r"^  status:  (.+)$", submitted.result.stdout, re.M)
    assert line, submitted.result.stdout
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_MODE"}
    result = cluster.run(["bash", "-c", line.group(1)], env=env, timeout=60)
    assert result.rc == 0 and f"Job '{submitted.job_id}' succeeded" in result.stdout, \
        f"{line.group(1)}\nexit {result.rc}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"


# ---- last: the cluster stops and leaves nothing behind ------------------------------------------------------
def test_cluster_stops_and_leaves_no_process(cluster):
    assert cluster.namespace and cluster.inner
    inside = cluster.leftovers()
    assert len(inside) >= 6, inside   # the holder, two raylets, the GCS, the dashboard, ...
    cluster.stop()
    assert cluster.left == [], "processes of the cluster outlived its stop:\n" + "\n".join(cluster.left)
    assert cluster.holder.returncode is not None
