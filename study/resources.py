"""Does a trial fit where it will run? Ray keeps a trial that asks for more CPUs or GPUs than any
node has pending for ever (its only sign: "Ignore this message if the cluster is autoscaling",
once a minute), so archstudy refuses it in one line before anything is written:

- on a cluster (`--address`): study/cluster.py `check_resources`, against the live nodes;
- without --address: `check_local_resources`, against this machine, before the local Ray starts
  (what Ray would count, `local_resources`) and again once it has (what it counts). `archstudy
  validate`, which is machine independent, prints the same line as a warning (`local_problem`).

Both use `too_large`.
"""
from __future__ import annotations

import os

from studyfiles.errors import StudyError

from .spec import StudySpec


def too_large(spec: StudySpec, nodes: list[dict]) -> tuple[str, float, float, str] | None:
    """A trial must fit on one node: the first of resources.cpu and resources.gpu that is more than
    the largest node's, as (name, asked, largest, Ray's resource key), or None."""
    for key, name in (("CPU", "cpu"), ("GPU", "gpu")):
        asked = getattr(spec.resources, name)
        largest = max((n["Resources"].get(key, 0) for n in nodes), default=0)
        if asked > largest:
            return name, asked, largest, key
    return None


def local_resources() -> dict[str, float]:
    """The CPUs and GPUs a local Ray instance started by this process would have, before it starts.
    CPUs: Ray's own count (ray._private.utils.get_num_cpus: os.cpu_count(), or a container's CPU
    quota where one is set; not the affinity mask, which Ray ignores: with `taskset -c 0,1` on an
    8-core machine Ray offers 8 CPUs). Ray has no public API for it before it starts
    (ray.available_resources needs a running instance; os.sched_getaffinity counts the affinity
    mask), so this is its private function; where it is missing os.cpu_count() stands in: never
    fewer CPUs than Ray counts, so nothing that runs is refused. GPUs:
    torch.cuda.device_count(), which honours CUDA_VISIBLE_DEVICES as Ray does. After Ray starts,
    check_local_resources checks again against what it really has."""
    try:
        from ray._private.utils import get_num_cpus
        cpus = float(get_num_cpus(override_docker_cpu_warning=True))
    except Exception:   # moved or renamed in another Ray version
        cpus = float(os.cpu_count() or 1)
    import torch
    return {"CPU": cpus, "GPU": float(torch.cuda.device_count())}


def local_problem(spec: StudySpec) -> str | None:
    """Without --address, what a trial asks for and this machine does not have (one line), or None.
    Against the running Ray instance when there is one (a notebook's, the tests'), else against
    local_resources(). Ray would keep such a trial pending for ever ("Ignore this message if the
    cluster is autoscaling")."""
    import sys
    ray = sys.modules.get("ray")   # not imported yet: not started either
    running = ray is not None and ray.is_initialized()
    from .cluster import alive_nodes
    nodes = alive_nodes() if running else [{"Resources": local_resources()}]
    problem = too_large(spec, nodes)
    if problem is None:
        return None
    name, asked, largest, key = problem
    where = "any node of this process's Ray instance has" if running else "this machine has"
    return (f"resources.{name}: {asked:g} per trial is more than {where} ({largest:g} {key}s), so "
            f"no trial could ever start; lower resources.{name}, or run on a cluster with --address")


def check_local_resources(spec: StudySpec) -> None:
    """`archstudy run/resume` without --address: refuse, in one line, a trial this machine cannot
    hold (before Ray starts, and again once it has started)."""
    problem = local_problem(spec)
    if problem:
        raise StudyError(problem)
