"""Running a study on a Ray cluster.

    archstudy submit study/specs/lab_cnn_cifar10.yaml --address http://HEAD:8265 --storage s3://BUCKET/results
    archstudy run SPEC --address auto          # on a cluster node: the driver runs right there

`submit` sends the study as a Ray Job: the resolved spec travels in the job's working directory and
the job runs `python -m study run spec.yaml --address auto` on the head node; it prints the job id
and the commands to follow it. Before a driver on a cluster writes anything, `check_cluster` makes
sure every node can run the study: no trial asks for more CPUs or GPUs than a node has, and a
local storage path is one that every node sees (a shared filesystem); a path only the head sees is
an error naming s3://, gs:// or a shared filesystem.
"""
from __future__ import annotations

import os
import shlex
import tempfile
import time
import uuid
from pathlib import Path

from .errors import StudyError
from .spec import StudySpec, dump_spec

JOB_DONE = ("SUCCEEDED", "FAILED", "STOPPED")


# ---- checks on a running cluster (after ray.init(address=...)) ---------------------------------------
def alive_nodes() -> list[dict]:
    import ray
    return [n for n in ray.nodes() if n.get("Alive")]


def check_resources(spec: StudySpec, nodes: list[dict], autoscaling: bool) -> None:
    """A trial must fit on one node: resources.cpu and resources.gpu at most the largest node's."""
    for key, name in (("CPU", "cpu"), ("GPU", "gpu")):
        asked = getattr(spec.resources, name)
        largest = max((n["Resources"].get(key, 0) for n in nodes), default=0)
        if asked > largest and not autoscaling:
            raise StudyError(f"resources.{name}: {asked:g} per trial is more than any node of the "
                             f"cluster has (largest: {largest:g} {key}s)")


def check_shared_storage(root: Path, nodes: list[dict]) -> None:
    """Ask every node whether it sees a file the driver just wrote under `root` (then removed)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root.mkdir(parents=True, exist_ok=True)
    marker = root / f".archstudy-shared-check-{uuid.uuid4().hex}"
    marker.write_text("visible from every node?\n")

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return os.path.isfile(path)

    try:
        pending = {n["NodeID"]: sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(marker)) for n in nodes}
        blind = [node for node, ref in pending.items() if not ray.get(ref, timeout=120)]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise StudyError(f"storage: {str(root)!r} is a path that {len(blind)} of the cluster's "
                         f"{len(nodes)} nodes cannot see (node {blind[0][:12]}...); on a multi-node "
                         "cluster use s3://BUCKET/..., gs://BUCKET/... or a shared filesystem path")


def autoscaling_cluster() -> bool:
    """True when the cluster runs Ray's autoscaler (nodes may be added after the checks)."""
    from ray.experimental.internal_kv import _internal_kv_get
    try:
        return _internal_kv_get("__autoscaling_status", namespace="") is not None
    except Exception:   # an older GCS without the key: treat as a fixed cluster
        return False


def check_cluster(spec: StudySpec) -> None:
    nodes = alive_nodes()
    autoscaling = autoscaling_cluster()
    check_resources(spec, nodes, autoscaling)
    out = spec.out_dir()
    if isinstance(out, Path) and len(nodes) > 1:
        check_shared_storage(out.parent, nodes)


# ---- submission as a Ray Job -----------------------------------------------------------------------
def job_client(address: str):
    from ray.job_submission import JobSubmissionClient
    try:
        return JobSubmissionClient(address)
    except Exception as e:   # ConnectionError, or Ray's RuntimeError for a refused connection
        raise StudyError(f"--address: cannot reach a Ray job server at {address!r} "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None


def submit(spec: StudySpec, address: str, wait: bool = False, python: str = "python") -> str:
    """Submit `spec` as a Ray Job at `address` (http://HEAD:8265); returns the job id. The cluster
    must have archstudy installed (cluster.yaml's setup_commands do it)."""
    client = job_client(address)
    entrypoint = f"{shlex.quote(python)} -m study run spec.yaml --address auto"
    with tempfile.TemporaryDirectory(prefix="archstudy-job-") as folder:
        Path(folder, "spec.yaml").write_text(dump_spec(spec))
        job_id = client.submit_job(
            entrypoint=entrypoint, submission_id=f"archstudy-{spec.name}-{uuid.uuid4().hex[:8]}",
            runtime_env={"working_dir": folder},
            metadata={"archstudy_study": spec.name, "archstudy_storage": str(spec.storage)})
    if wait:
        status = wait_for(client, job_id)
        if status != "SUCCEEDED":
            raise StudyError(f"job {job_id} ended {status}; see `ray job logs --address {address} {job_id}`")
    return job_id


def wait_for(client, job_id: str, poll: float = 2.0, timeout: float | None = None) -> str:
    deadline = None if timeout is None else time.monotonic() + timeout
    while (status := str(client.get_job_status(job_id)).split(".")[-1]) not in JOB_DONE:
        if deadline is not None and time.monotonic() > deadline:
            return status
        time.sleep(poll)
    return status


def follow_up(spec: StudySpec, address: str, job_id: str) -> str:
    """What to type next: follow the job, see its status, fetch the results."""
    out = spec.out_dir()
    if isinstance(out, str) and out.startswith("s3://"):
        fetch = f"aws s3 sync {out} ./{spec.name}"
    elif isinstance(out, str):
        fetch = f"gsutil -m rsync -r {out} ./{spec.name}"
    else:
        fetch = f"ray rsync-down cluster.yaml {out} ./{spec.name}    # or read it on the shared filesystem"
    return "\n".join([
        f"submitted job {job_id}",
        f"  follow:  ray job logs --address {address} --follow {job_id}",
        f"  status:  ray job status --address {address} {job_id}",
        f"  stop:    ray job stop --address {address} {job_id}",
        f"  results: {out}",
        f"  fetch:   {fetch}",
    ])
