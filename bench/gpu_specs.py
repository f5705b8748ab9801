"""GPU-hour estimates of the cluster specs from measured throughput, for bench/gpu_check.py.

    python bench/gpu_check.py --dry-run      # the "specs" section of its JSON comes from here

The specs are read as plain YAML: only the fields that size the compute, so that the GPU check needs
no part of the study package. Each arm's model is timed with the spec's batch size and archstudy's
own loop (Trainer.train_epoch with CIFAR augmentation and gradient flow, then evaluate on the
validation split) on synthetic CIFAR-shaped data; an epoch's seconds scale those rates to the
spec's split sizes.

Assumptions of the GPU-hour figures (also written into the JSON):
  - one trial per GPU: the sum over runs of epochs x epoch seconds (no start-up, checkpoint or W&B
    time; bench/overhead.py prices those, seconds per trial);
  - search trials at full budget (upper bound) or with ASHA's ideal halving (lower bound: a fraction
    1/reduction_factor of the trials goes on at each rung); confirmation runs always at full budget;
  - k trials sharing one GPU run faster in aggregate only as far as the sharing measurement of the
    lab CNN (vgg16, batch 64) shows: GPU-hours = serial / speedup(k), reported for k = the spec's
    1 / resources.gpu and for k = the fewest processes that keep the GPU busy (the nearest measured
    count at or below k is used).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import yaml

from trainables.config import TrainingOptions

from bench.gpu_share import synthetic_data, trainer_config
from trainables.train import Trainer

SPECS = ("lab_cnn_cifar10.yaml", "he2016_cifar10.yaml")   # the specs written for GPUs
SPLIT_SIZES = {"cifar10": (45000, 5000)}   # train / validation images per epoch (trainables/data.py)
DEFAULT = TrainingOptions()                # the options a spec leaves out
PROBES = DEFAULT.grad_flow_batches         # gradient-flow probe batches in a real epoch


def read_spec(path: Path) -> dict:
    """The fields of a spec that size its compute: epochs, seeds, arms (model, batch), search, GPU."""
    raw = yaml.safe_load(path.read_text())
    fixed = raw.get("search", {}).get("fixed", {})
    arms = [{"model": a["model"], "batch": {**fixed, **a}.get("batch_size", DEFAULT.batch_size),
             "width": {**fixed, **a}.get("width", DEFAULT.width)} for a in raw["arms"]]
    return {"file": path.name, "name": raw["name"], "data": raw["data"], "epochs": raw["epochs"],
            "seeds": len(raw["seeds"]), "arms": arms, "trials_per_arm": raw["search"]["trials_per_arm"],
            "scheduler": raw.get("scheduler", {"name": "none"}),
            "gpu": raw.get("resources", {}).get("gpu", 0), "gradient_flow": raw.get("gradient_flow", True)}


def asha_epochs(max_t: int, grace: int, factor: float) -> float:
    """Expected epochs of one trial under ideal asynchronous successive halving: rungs at
    grace * factor^i below max_t, and 1/factor of the trials at a rung go on to the next."""
    rungs = []
    while grace * factor ** len(rungs) < max_t:
        rungs.append(grace * factor ** len(rungs))
    bounds = [0, *rungs, max_t]
    return sum((bounds[i + 1] - bounds[i]) / factor ** i for i in range(len(bounds) - 1))


def epoch_time(model: str, batch: int, width: float, steps: int, device: str, sizes: tuple[int, int],
               grad_flow: bool = True) -> dict:
    """Samples/s of one training epoch of `steps` batches (after a warm-up epoch) and of evaluation,
    and the seconds of one epoch of `sizes` = (train, val) images at those rates."""
    n_train, n_val = sizes
    real_steps = -(-n_train // batch)   # optimiser steps in a real epoch
    job = {"model": model, "width": width, "batch": batch, "device": device, "grad_flow": grad_flow}
    config = {**trainer_config(job), "grad_flow_batches": max(1, round(PROBES * steps / real_steps))}
    trainer = Trainer(config, synthetic_data(steps * batch, n_val=min(n_val, 2 * batch), augment=True))
    trainer.train_epoch()   # warm-up: allocator, cuDNN autotuning
    train_rate = trainer.train_epoch()["samples_per_second"]
    start = time.perf_counter()
    trainer.evaluate("val")   # ends with .item(): synchronised
    eval_rate = len(trainer.data.val.y) / (time.perf_counter() - start)
    return {"model": model, "batch_size": batch, "width": width, "train_samples_per_second": train_rate,
            "eval_samples_per_second": eval_rate, "epoch_seconds": n_train / train_rate + n_val / eval_rate}


def spec_estimates(specs_dir: Path, steps: int, device: str, width: float | None = None,
                   batch_scale: float = 1.0) -> dict:
    """Per-epoch seconds of every arm of SPECS (each model and batch timed once), at the specs' own
    widths and batch sizes unless `width` and `batch_scale` shrink them (the dry run's tiny nets)."""
    specs = [read_spec(specs_dir / f) for f in SPECS]
    timed: dict[tuple, dict] = {}
    for spec in specs:
        for arm in spec["arms"]:
            key = (arm["model"], max(1, round(arm["batch"] * batch_scale)), width or arm["width"])
            if key not in timed:
                timed[key] = epoch_time(*key, steps, device, SPLIT_SIZES[spec["data"]], spec["gradient_flow"])
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()   # the next model starts from a clean allocator
            arm["epoch_seconds"] = timed[key]["epoch_seconds"]
    return {"models": list(timed.values()), "specs": specs}


def gpu_hours(spec: dict, speedup: dict[str, float], busy: int | None = None) -> dict:
    """GPU-hours of one spec from its arms' epoch seconds and the sharing speedups ({"k": x}), with
    one trial per GPU, with the spec's trials per GPU (1 / resources.gpu) and with `busy` per GPU."""
    epochs = spec["epochs"]
    sched = spec["scheduler"]
    search_low = (asha_epochs(epochs, sched.get("grace_period", 1), sched.get("reduction_factor", 2.0))
                  if sched.get("name") == "asha" else epochs)
    serial = {"upper": 0.0, "lower": 0.0}   # GPU-seconds, one trial per GPU
    for arm in spec["arms"]:
        confirm = spec["seeds"] * epochs * arm["epoch_seconds"]
        serial["upper"] += spec["trials_per_arm"] * epochs * arm["epoch_seconds"] + confirm
        serial["lower"] += spec["trials_per_arm"] * search_low * arm["epoch_seconds"] + confirm
    k = round(1 / spec["gpu"]) if spec["gpu"] else 1   # trials per GPU in the spec
    out = {"spec": spec["file"], "resources_gpu": spec["gpu"], "trials_per_gpu": k,
           "search_epochs_per_trial": {"upper": epochs, "lower": search_low},
           "runs": len(spec["arms"]) * (spec["trials_per_arm"] + spec["seeds"]),
           "gpu_hours_one_trial_per_gpu": {b: s / 3600 for b, s in serial.items()}}
    for label, count in (("spec", k), ("busy", busy or 1)):
        used = max([int(c) for c in speedup if int(c) <= count] or [1])   # nearest measured count
        factor = speedup.get(str(used), 1.0)
        out[f"gpu_hours_{label}_sharing"] = {"trials_per_gpu": count, "measured_at": used,
                                             "speedup": factor,
                                             **{b: s / 3600 / factor for b, s in serial.items()}}
    return out
