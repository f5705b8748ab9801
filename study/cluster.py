"""Running a study on a Ray cluster.

    archstudy submit study/specs/lab_cnn_cifar10.yaml --address http://HEAD:8265 --storage s3://BUCKET/results
    archstudy run SPEC --address auto          # on a cluster node: the driver runs right there

`submit` sends the study as a Ray Job: the resolved spec travels in the job's working directory and
the job runs `python -m study run spec.yaml --address auto` on the head node; it prints the job id
and the commands to follow it. Before a driver on a cluster writes anything, `check_cluster` makes
sure every node can run the study: no trial asks for more CPUs or GPUs than a node has, and a
local storage path is one that every node sees (a shared filesystem); a path only the head sees is
an error naming s3://, gs:// or a shared filesystem. Without --address the same check runs against
this machine (study/resources.py), before the local Ray starts and again after.

Addresses are probed before Ray or the Jobs API is asked (`check_reachable`): Ray's own connect loop
retries an unreachable GCS for about 14 minutes (20 tries of 5 + 5 + 30 s; the knobs are
RAY_gcs_server_port_wait_time_s, RAY_gcs_rpc_server_connect_timeout_s and
RAY_py_gcs_connect_timeout_s), and requests waits on an unanswered SYN for minutes. A cluster with
token authentication (Ray's default) refuses a client that sends no token or the wrong one: that is
a one-line error naming RAY_AUTH_MODE=token and where the token is read from.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import socket
import tempfile
import time
import uuid
from pathlib import Path

from studyfiles.errors import StudyError
from studyfiles.files import first_line

from .resources import too_large
from .spec import StudySpec
from .spec_file import dump_spec

JOB_DONE = ("SUCCEEDED", "FAILED", "STOPPED")
TOKEN_SOURCES = "~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN"


# ---- reaching a cluster ------------------------------------------------------------------------------
def target_of(address: str) -> tuple[str, int] | None:
    """(host, port) that a connection to `address` goes to, or None where that is not known here.
    GCS addresses (HOST:PORT, auto) are resolved as ray.init resolves them (which may swap a loopback
    address for this machine's address); ray://HOST[:PORT] and http(s)://HOST[:PORT] are taken as is."""
    scheme = re.match(r"^([a-z]+)://", address)
    if scheme is None:
        # Ray has no public resolver for a GCS address (`auto` is read from the file `ray start`
        # writes, a loopback host is swapped for this machine's address): its own, private one.
        from ray._private import services
        try:
            address = services.canonicalize_bootstrap_address(address)
        except Exception:   # a malformed address: ray.init says what is wrong with it
            return None
        if address is None:   # `auto` with no cluster recorded here: ray.init says so at once
            return None
    else:
        address = address[len(scheme.group(0)):]
    ports = {"ray": 10001, "http": 80, "https": 443, None: None}
    match = re.match(r"^(\[[^\]]+\]|[^:/\[\]]+)(?::(\d+))?(?:/.*)?$", address)
    if match is None:
        return None
    port = match.group(2) or ports.get(scheme and scheme.group(1))
    return (match.group(1).strip("[]"), int(port)) if port else None


def check_reachable(address: str, what: str = "a Ray cluster", timeout: float = 10.0) -> None:
    """A one-line StudyError unless something accepts a TCP connection at `address` within
    `timeout` seconds (the connection is closed at once)."""
    target = target_of(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as e:
        reason = ("connection refused" if isinstance(e, ConnectionRefusedError) else
                  f"no answer in {timeout:g} s" if isinstance(e, TimeoutError) else
                  e.strerror or type(e).__name__)
        where = "" if f"{target[0]}:{target[1]}" in address else f" ({target[0]}:{target[1]})"
        raise StudyError(f"--address: cannot reach {what} at {address!r}{where}: {reason}; is the "
                         "cluster up, and is this its address?") from None


def token_found() -> bool:
    """Whether Ray has a token to send: RAY_AUTH_TOKEN, or the file RAY_AUTH_TOKEN_PATH names (which
    takes the place of ~/.ray/auth_token), or ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token"
    try:
        return bool(Path(path).expanduser().read_text().strip())
    except OSError:
        return False


def auth_problem(address: str, what: str, refused_token: bool | None = None) -> StudyError:
    """The one-line error for a cluster with token authentication that refused this process.
    refused_token: the server said the token it got is wrong (True), that it got none (False), or
    cannot tell (None: the GCS says 'missing or incorrect')."""
    mode = os.environ.get("RAY_AUTH_MODE", "")
    if mode != "token":
        detail = (f"this process sends no token (RAY_AUTH_MODE is {mode or 'unset'}): set "
                  f"RAY_AUTH_MODE=token and give it the cluster's token ({TOKEN_SOURCES})")
    elif not token_found():
        detail = f"RAY_AUTH_MODE=token is set, but no token was found ({TOKEN_SOURCES})"
    elif refused_token is False:
        detail = f"it got no token from this process; check {TOKEN_SOURCES}"
    else:
        detail = (f"it refused this process's token: RAY_AUTH_MODE=token is set, but the token "
                  f"({TOKEN_SOURCES}) is not the cluster's")
    return StudyError(f"--address: {what} at {address!r} uses token authentication; {detail}")


def connect(address: str) -> None:
    """ray.init(address=...) for a driver on a cluster (`archstudy run/resume --address`), with
    one-line errors: nothing answers there (probed first, since Ray retries for minutes), the
    cluster wants a token this process did not send or has another one, or what Ray says."""
    import ray
    check_reachable(address)
    try:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.AuthenticationError) as e:
        chain, cause = [], e
        while cause is not None and len(chain) < 5:
            chain.append(f"{type(cause).__name__}: {cause}")
            cause = cause.__cause__ or cause.__context__
        if any("InvalidAuthToken" in text or "AuthenticationError" in text for text in chain):
            raise auth_problem(address, "the Ray cluster") from None
        raise StudyError(f"--address: cannot connect to a Ray cluster at {address!r} "
                         f"({type(e).__name__}: {first_line(e)})") from None


# ---- checks on a running cluster (after ray.init(address=...)) ---------------------------------------
def alive_nodes() -> list[dict]:
    import ray
    return [n for n in ray.nodes() if n.get("Alive")]


def check_resources(spec: StudySpec, nodes: list[dict], autoscaling: bool) -> None:
    """On a cluster (--address): every trial fits on its largest node, unless the autoscaler may
    add a larger one."""
    problem = None if autoscaling else too_large(spec, nodes)
    if problem:
        name, asked, largest, key = problem
        raise StudyError(f"resources.{name}: {asked:g} per trial is more than any node of the "
                         f"cluster has (largest: {largest:g} {key}s)")


def check_shared_storage(root: Path, nodes: list[dict]) -> None:
    """Ask every node whether it sees a file the driver just wrote under `root` (then removed)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    created = [folder for folder in (root, *root.parents) if not folder.exists()]
    marker = root / f".archstudy-shared-check-{uuid.uuid4().hex}"

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return os.path.isfile(path)

    try:
        root.mkdir(parents=True, exist_ok=True)
        marker.write_text("visible from every node?\n")
        pending = {n["NodeID"]: sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(marker)) for n in nodes}
        try:
            blind = [node for node, ref in pending.items() if not ray.get(ref, timeout=120)]
        except ray.exceptions.GetTimeoutError:
            raise StudyError(f"storage: could not check that every node of the cluster sees "
                             f"{str(root)!r}: a node did not answer within 120 s") from None
    finally:   # leave nothing behind: the marker, and the folders made for it
        marker.unlink(missing_ok=True)
        for folder in created:   # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
    if blind:
        raise StudyError(f"storage: {str(root)!r} is a path that {len(blind)} of the cluster's "
                         f"{len(nodes)} nodes cannot see (node {blind[0][:12]}...); on a multi-node "
                         "cluster use s3://BUCKET/..., gs://BUCKET/... or a shared filesystem path")


def autoscaling_cluster() -> bool:
    """True when Ray's autoscaler may add nodes after the checks (a `ray up` or KubeRay cluster).
    Every head started by `ray start --head` runs the autoscaler's monitor and publishes its status,
    but on a cluster of hand-started nodes it uses a read-only provider that only mirrors the nodes
    there are, each typed `node_<its id>`: such a cluster is fixed."""
    from ray.experimental.internal_kv import _internal_kv_get
    try:
        status = _internal_kv_get("__autoscaling_status", namespace="")
    except Exception:   # an older GCS without the key: treat as a fixed cluster
        return False
    if status is None:
        return False
    try:
        types = json.loads(status)["autoscaler_report"]["node_type_mapping"]
        return any(kind != f"node_{node}" for node, kind in types.items())
    except (ValueError, KeyError, TypeError, AttributeError):   # a format we do not know: do not refuse
        return True


def check_cluster(spec: StudySpec) -> None:
    nodes = alive_nodes()
    autoscaling = autoscaling_cluster()
    check_resources(spec, nodes, autoscaling)
    out = spec.out_dir()
    if isinstance(out, Path) and len(nodes) > 1:
        check_shared_storage(out.parent, nodes)


# ---- submission as a Ray Job -----------------------------------------------------------------------
def job_client(address: str):
    """A JobSubmissionClient for `address` (http://HEAD:8265), or a one-line StudyError: nothing
    answers there, the server wants a token this process did not send (HTTP 401) or refused the
    one it sent (403), or it is not a Ray job server."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient
    check_reachable(address, "a Ray job server")
    try:
        return JobSubmissionClient(address)
    except AuthenticationError as e:   # raised on 401 ("Authentication required") and 403
        raise auth_problem(address, "the Ray job server", refused_token=e.message.startswith(
            "Authentication failed")) from None
    except Exception as e:   # ConnectionError; RuntimeError for a server that is not Ray's
        raise StudyError(f"--address: cannot use {address!r} as a Ray job server "
                         f"({type(e).__name__}: {first_line(e)})") from None


def submit(spec: StudySpec, address: str, python: str = "python") -> str:
    """Submit `spec` as a Ray Job at `address` (http://HEAD:8265); returns the job id. The cluster
    must have archstudy installed (cluster.yaml's setup_commands do it)."""
    client = job_client(address)
    entrypoint = f"{shlex.quote(python)} -m study run spec.yaml --address auto"
    with tempfile.TemporaryDirectory(prefix="archstudy-job-") as folder:
        Path(folder, "spec.yaml").write_text(dump_spec(spec))
        try:
            job_id = client.submit_job(
                entrypoint=entrypoint, submission_id=f"archstudy-{spec.name}-{uuid.uuid4().hex[:8]}",
                runtime_env={"working_dir": folder},
                metadata={"archstudy_study": spec.name, "archstudy_storage": str(spec.storage)})
        except (RuntimeError, ConnectionError) as e:   # Ray's errors for a rejected request
            raise StudyError(f"--address: the Ray job server at {address!r} did not take the job "
                             f"({type(e).__name__}: {first_line(e)})") from None
    return job_id


def wait_for(client, job_id: str, poll: float = 2.0, timeout: float | None = None) -> str:
    deadline = None if timeout is None else time.monotonic() + timeout
    while (status := str(client.get_job_status(job_id)).split(".")[-1]) not in JOB_DONE:
        if deadline is not None and time.monotonic() > deadline:
            return status
        time.sleep(poll)
    return status


def job_command(address: str) -> str:
    """`ray job` as it must be typed to work like this process's job client: with token
    authentication (RAY_AUTH_MODE=token here) the ray CLI sends the token only when told to."""
    return "RAY_AUTH_MODE=token ray job" if os.environ.get("RAY_AUTH_MODE") == "token" else "ray job"


def follow_up(spec: StudySpec, address: str, job_id: str) -> str:
    """What to type next: follow the job, see its status, fetch the results. The `ray job` commands
    work where this process's submission worked (the same token, where the cluster wants one)."""
    out = spec.out_dir()
    if isinstance(out, str) and out.startswith("s3://"):
        fetch = f"aws s3 sync {out} ./{spec.name}"
    elif isinstance(out, str):
        fetch = f"gsutil -m rsync -r {out} ./{spec.name}"
    else:
        fetch = f"ray rsync-down cluster.yaml {out} ./{spec.name}    # or read it on the shared filesystem"
    ray_job = job_command(address)
    if ray_job.startswith("RAY_AUTH_MODE"):
        auth = f"  auth:    the `ray job` commands send the cluster's token, read from {TOKEN_SOURCES}"
    else:
        auth = (f"  auth:    if the cluster uses token authentication (Ray's default), run them with "
                f"RAY_AUTH_MODE=token and the cluster's token ({TOKEN_SOURCES})")
    return "\n".join([
        f"submitted job {job_id}",
        f"  follow:  {ray_job} logs --address {address} --follow {job_id}",
        f"  status:  {ray_job} status --address {address} {job_id}",
        f"  stop:    {ray_job} stop --address {address} {job_id}",
        auth,
        f"  results: {out}",
        f"  fetch:   {fetch}",
    ])
