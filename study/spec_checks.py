"""Checks of a spec against what other systems will make of it, run by StudySpec's validators
(study/spec.py) so that `archstudy validate` and `run` refuse it before Ray starts:

- W&B (study/wandb_rules.py): the project, the entity, and the group, run ids, run names and tags
  built from the study's and the arms' names;
- Ray's GPUs: a cuda device that the trial's resources.gpu cannot show it.

Each failure is a `bad(...)` error: one line naming the key, the value and what is allowed.
"""
from __future__ import annotations

import math
import re

from studyfiles.wandb_names import analysis_values
from trainables.models import model_depth, model_family

from . import wandb_rules
from .spec_errors import bad


def check_wandb_config(w) -> None:
    """The spec's `wandb` section: project and entity."""
    if wandb_rules.wandb_refusal(project=w.project) is not None:
        size = f" (this one has {len(w.project)})" if len(w.project) > 128 else ""
        raise bad(("project",), w.project, wandb_rules.ALLOWED["project"] + size)
    if w.entity is not None and (reason := wandb_rules.entity_refusal(w.entity)):
        raise bad(("entity",), w.entity, reason)


def check_wandb_values(spec) -> None:
    """Group, run ids, run names and tags, as the trials and the analysis build them."""
    for i, arm in enumerate(spec.arms):
        values = wandb_rules.arm_values(spec.name, arm.name, model_family(arm.model),
                                        model_depth(arm.model, arm.hidden))
        refused = wandb_rules.first_refused(spec.wandb.project, values)
        if refused is None:
            continue
        field, reason = refused
        if field in ("run_group", "run_id", "project"):
            raise bad(("name",), spec.name, f"{wandb_rules.ALLOWED[field]} ({reason})")
        if field == "run_tags" and len(arm.name) > wandb_rules.TAG_MAX:
            raise bad(("arms", i, "name"), arm.name,
                      f"{wandb_rules.ALLOWED[field]} (this one has {len(arm.name)})")
        raise bad(("arms", i, "name"), arm.name, f"{wandb_rules.ALLOWED[field]} ({reason})")
    values = analysis_values(spec.name)
    if (reason := wandb_rules.wandb_refusal(project=spec.wandb.project, **values)) is not None:
        raise bad(("name",), spec.name, f"W&B refuses the analysis run's values: {reason}")


def devices(spec) -> list[tuple[tuple, str]]:
    """(key path, device) of every device a trial may get: the fixed one, or each choice."""
    if "device" in spec.search.fixed:
        return [(("search", "fixed", "device"), spec.search.fixed["device"])]
    dist = spec.search.space.get("device")
    if dist is None:
        return []
    return [(("search", "space", "device", dist.kind, i), d) for i, d in enumerate(dist.args)]


def check_devices(spec) -> None:
    """A device the trial's resources cannot provide: Ray shows a trial only the GPUs it asked for
    (CUDA_VISIBLE_DEVICES, numbered from 0; a fraction of a GPU shows that one GPU), so `cuda` needs
    resources.gpu > 0 and `cuda:N` needs N < the GPUs a trial gets. auto and cpu always run. mps is
    left alone: Ray does not count Apple's GPU as a GPU, so it is no resource a trial asks for. A
    GPU reserved for a cpu trial is waste, not a failure: `warnings` says so."""
    gpus = math.ceil(spec.resources.gpu)   # 0.5 -> 1 GPU visible
    for where, device in devices(spec):
        match = re.fullmatch(r"cuda(?::(\d+))?", device)
        if match is None:
            continue
        if gpus == 0:
            raise bad(where, device, "a trial sees no GPU with resources.gpu 0 (Ray hides them): "
                                      "set resources.gpu (e.g. 1), or use device cpu or auto")
        if int(match.group(1) or 0) >= gpus:
            raise bad(where, device, f"a trial with resources.gpu {spec.resources.gpu:g} sees "
                                      f"{gpus} GPU{'s' * (gpus != 1)}, numbered from cuda:0")


def warnings(spec) -> list[str]:
    """Allowed but probably not meant, one line each: GPUs reserved for trials that train on cpu,
    a TPE search whose every trial is one of its random start-up trials."""
    found = []
    search = spec.search
    if search.algorithm == "optuna" and search.space and search.trials_per_arm <= search.startup_trials:
        found.append(f"search.trials_per_arm: {search.trials_per_arm} trials are all among TPE's "
                     f"{search.startup_trials} random start-up trials (search.startup_trials), so "
                     "TPE never models the results: lower search.startup_trials below "
                     "trials_per_arm, or say algorithm: random")
    chosen = [d for _, d in devices(spec)]
    if spec.resources.gpu > 0 and chosen and all(d == "cpu" for d in chosen):
        found.append(f"resources.gpu: {spec.resources.gpu:g} GPU per trial is reserved, but every "
                     "trial trains on device cpu: the GPU stays idle")
    return found
