"""A real two-node Ray cluster on this machine, for tests/test_cluster.py (`two_node_cluster`).

The cluster lives in private namespaces, so it can clash with no other Ray on the machine and
reaches nothing but its own loopback:
- `unshare --net --pid --mount-proc --kill-child bash -c HOLDER`: the holder bash is PID 1 of a new
  PID namespace with its own network (only `lo`, brought up) and mount namespace. It starts the
  head (`ray start --head`, GCS 127.0.0.1:6390, dashboard/Jobs API 127.0.0.1:8265, 1 CPU, no GPU)
  and a second node (`ray start --address`, 1 CPU, no GPU), each with its own --temp-dir (<base>/h,
  <base>/w).
- The second node runs in a mount namespace of its own (`unshare --mount`) in which <base>/hidden is
  covered by an empty tmpfs: a real "this node cannot see that path" folder, while <base>/shared is
  seen by both nodes (the same machine: a shared filesystem). That mount namespace is also how its
  processes (raylet, agents, workers) are told from the head's: `Cluster.second_node()`.
- Every Ray process and client gets: the venv first on PATH (so `ray start` and the job's `python`
  are the venv's), RAY_AUTH_MODE=token with RAY_AUTH_TOKEN_PATH=<base>/auth_token (a fresh 64-hex
  token, never ~/.ray/auth_token), RAY_USAGE_STATS_ENABLED=0, and no RAY_ADDRESS, RAY_AUTH_TOKEN or
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER (with the latter =0, as conftest sets it for the local Ray of the
  other tests, a second node refuses to start). The nodes also get conftest's study_env
  (ARCHSTUDY_DATA = the session's mnist-5k root, W&B's folders), which a job's driver inherits.
- Losing a node: `Cluster.kill_second_node()` SIGKILLs its processes at once, as a machine that
  loses power. Tune hears of a trial actor lost with it at once (its connection closes: "RpcError:
  Socket closed"); the head's GCS declares the node dead by its health checks, Ray's defaults here:
  5 missed checks, one every 3 s (RAY_health_check_failure_threshold, RAY_health_check_period_ms),
  so ~15 s later. The tests do not wait for that: the lost trial's retry waits for the head's one
  CPU anyway. (RAY_health_check_period_ms=1000 in the head's `ray start` environment made it ~5 s,
  but the node-loss study was no faster: 74 and 87 s, against 71 s with the defaults, on a busy
  machine.)
- Clients run from the test process with `nsenter --target <holder pid> --net`: the namespace's
  127.0.0.1 is the cluster's. Drivers (`archstudy run --address`) also get
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which only stops Ray from looking for this host's network
  address (in the namespace there is none, and Ray's C++ core would print a warning about it).
- Stop: SIGTERM to the holder, whose trap runs `ray stop --force` inside; when PID 1 exits the
  kernel kills whatever is left; SIGKILL to unshare (--kill-child) if it hangs. `Cluster.left` is
  what was still alive after that (then killed).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from processes import namespace_of, processes, wait_until

VENV_BIN = Path(sys.executable).parent
GCS_PORT, DASHBOARD_PORT = 6390, 8265
GCS = f"127.0.0.1:{GCS_PORT}"
DASHBOARD = f"http://127.0.0.1:{DASHBOARD_PORT}"
START_TIMEOUT = 180

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
        self.second_node_killed = False      # by kill_second_node(): the cluster is the head alone
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
            self.namespace = namespace_of(self.inner)
        if not (output and output[-1].startswith("READY")) or set(self.nodes) != {"head", "worker"}:
            raise RuntimeError(f"the two-node cluster did not start in {START_TIMEOUT} s:\n"
                               + "".join(output)[-4000:])
        self.started_in = time.monotonic() - t0

    def run(self, args: list[str], env: dict | None = None, timeout: float = 120) -> SimpleNamespace:
        """A command in the cluster's network namespace (its 127.0.0.1), from this process."""
        return execute(self.command(args), self.env if env is None else env, timeout, cwd=self.base)

    def command(self, args: list[str]) -> list[str]:
        return ["nsenter", f"--target={self.inner}", "--net", "--", *args]

    def driver_env(self) -> dict:
        return {**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

    def leftovers(self) -> list[str]:
        """Live processes of the cluster's namespace, or of any namespace, that name its base folder."""
        return processes(lambda pid, cmd: (self.namespace is not None and namespace_of(pid) == self.namespace)
                         or str(self.base) in cmd)

    def node(self, node_id: str, state: str | None = None) -> dict | None:
        """The node as `ray list nodes --detail` shows it (None if it is not there, or not in `state`)."""
        listed = self.run(["ray", "list", "nodes", "--address", DASHBOARD, "--detail", "--format", "json"])
        with contextlib.suppress(ValueError):
            return next((n for n in json.loads(listed.stdout) if n["node_id"] == node_id
                         and state in (None, n["state"])), None)
        return None

    def second_node(self) -> list[str]:
        """Live processes of the second node: those of the cluster's PID namespace in a mount
        namespace other than the holder's (the second node's `unshare --mount`)."""
        head_mounts = namespace_of(self.inner, "mnt")
        return processes(lambda pid, cmd: namespace_of(pid) == self.namespace
                         and namespace_of(pid, "mnt") not in (head_mounts, None))

    def kill_second_node(self) -> list[str]:
        """SIGKILL every process of the second node (its raylet, agents and workers) at once, as a
        machine that loses power; returns them. The head is not told: its GCS finds out by its
        health checks."""
        victims = self.second_node()
        self.second_node_killed = True
        for line in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
        return victims

    def kill_second_node_during(self, args: list[str], env: dict, when, log: Path,
                                timeout: float) -> SimpleNamespace:
        """Run `args` (in the cluster's network namespace, output to `log`) in the background; the
        first time when() returns something true (polled every 0.1 s) while it runs, SIGKILL the
        second node; then wait for the command to end, `timeout` s from its start at most (else its
        process group is SIGKILLed). Returns rc, seconds, output, when's value (found; None if the
        command ended first), the processes killed (victims), killed_at (time.time()) and gone
        (whether they had all died 10 s later)."""
        started = time.monotonic()
        k = SimpleNamespace(found=None, victims=[], killed_at=None, gone=None)
        with open(log, "w+") as out:
            proc = subprocess.Popen(self.command(args), env=env, cwd=self.base, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                found = wait_until(lambda: proc.poll() is not None or when(), timeout, step=0.1)
                if found is not True and found:   # not the command's end: when()'s value
                    k.found, k.killed_at, k.victims = found, time.time(), self.kill_second_node()
                    k.gone = wait_until(lambda: not self.second_node(), timeout=10)
                proc.wait(timeout=max(1.0, timeout - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            out.seek(0)
            k.output = out.read()
        k.rc, k.seconds = proc.returncode, time.monotonic() - started
        return k

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


@contextlib.contextmanager
def two_node_cluster(study_env: dict):
    """A started Cluster in a fresh base folder (removed afterwards), stopped at the end; skips
    the test where this machine cannot make private namespaces."""
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
