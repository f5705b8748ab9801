"""Training runs for bench/gpu_check.py: learnable synthetic CIFAR-shaped data, and runs in separate
OS processes (GPU sharing; same-seed reproducibility across processes).

    python bench/gpu_check.py --dry-run      # uses everything here, on the CPU

Child processes (forked from a fork server, or spawned) import this module again, so it needs only
torch and trainables: no Ray, Optuna or W&B (the GPU machine has none of them).
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import time

import torch

from trainables.data import Data, Split
from trainables.train import Trainer

CIFAR_SHAPE = (3, 32, 32)   # channels, height, width of a CIFAR-10 image
NUM_CLASSES = 10            # CIFAR-10's classes
DATA_SEED = 1234            # fixed: every run and process sees the same images, whatever its seed
SIGNAL = 0.5                # amplitude of a class's template against unit noise: learnable, not trivial
BUSY_FRACTION = 0.9         # "keeps the GPU busy": aggregate rate within 10% of the best measured
BARRIER_TIMEOUT = 300.0     # seconds a child waits for its siblings' warm-up before giving up


def synthetic_data(n_train: int, n_val: int | None = None, augment: bool = False) -> Data:
    """CIFAR-shaped data whose labels are learnable: image = class template * SIGNAL + noise,
    scaled to unit variance like normalised CIFAR-10. Same images for the same sizes, always."""
    g = torch.Generator().manual_seed(DATA_SEED)
    templates = torch.randn(NUM_CLASSES, *CIFAR_SHAPE, generator=g)

    def split(n: int) -> Split:
        y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
        noise = torch.randn(n, *CIFAR_SHAPE, generator=g)
        return Split((SIGNAL * templates[y] + noise) / math.sqrt(1 + SIGNAL ** 2), y)

    train, val = split(n_train), split(n_val or max(1, n_train // 10))
    return Data("synthetic-cifar", train, val, val, num_classes=NUM_CLASSES, in_channels=3,
                image_size=32, augment=augment)


def trainer_config(job: dict) -> dict:
    """The Trainer config of a job: the lab's SGD at a constant lr, bf16 autocast on CUDA."""
    return {"model": job["model"], "width": job["width"], "batch_size": job["batch"],
            "seed": job.get("seed", 0), "device": job["device"], "precision": "auto",
            "lr": job.get("lr", 0.01), "schedule": "constant", "epochs": 1000,
            "grad_flow": job.get("grad_flow", True)}


def _share_job(job: dict, barrier) -> dict:
    trainer = Trainer(trainer_config(job), synthetic_data(job["steps"] * job["batch"]))
    trainer.train_epoch()   # warm-up: CUDA context, cuDNN autotuning, allocator
    barrier.wait(BARRIER_TIMEOUT)   # every process starts timing together
    start = time.time()   # wall clock, comparable across processes
    for _ in range(job["epochs"]):
        trainer.train_epoch()   # ends with a device synchronise
    end = time.time()
    samples = job["epochs"] * job["steps"] * job["batch"]
    return {"start": start, "end": end, "samples": samples, "samples_per_second": samples / (end - start)}


def _seed_job(job: dict, barrier) -> dict:
    trainer = Trainer(trainer_config(job), synthetic_data(job["steps"] * job["batch"]))
    barrier.wait(BARRIER_TIMEOUT)
    return {"train_loss": trainer.train_epoch()["train_loss"], "amp": trainer.amp}


JOBS = {"share": _share_job, "seed": _seed_job}


def run_job(job: dict, barrier, results) -> None:
    """Child process entry: run one job, put its result (or its error) on `results`."""
    if job["device"] == "cpu":   # share the cores instead of oversubscribing them
        torch.set_num_threads(job["threads"])
    try:
        results.put({"index": job["index"], **JOBS[job["kind"]](job, barrier)})
    except BaseException as e:   # reported to the parent, which raises it
        barrier.abort()
        results.put({"index": job["index"], "error": f"{type(e).__name__}: {e}"})


def _context():
    """Processes forked from a fork server that imported torch and trainables once but never touched
    CUDA (so no CUDA state is inherited, and a child starts in a moment); spawn where there is none."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])   # read when the server starts: the first run_processes
    return ctx


def start_early() -> None:
    """Start the fork server now, so that its imports overlap the work before the first run_processes."""
    if _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver
        forkserver.ensure_running()


def run_processes(jobs: list[dict], timeout: float) -> list[dict]:
    """Run the jobs at once, one spawned process each; their results in job order. Raises
    RuntimeError if a child fails or `timeout` seconds pass without all results."""
    ctx = _context()
    threads = max(1, (os.cpu_count() or 1) // len(jobs))   # CPU threads per child, unless a job sets them
    barrier, results = ctx.Barrier(len(jobs)), ctx.Queue()
    procs = [ctx.Process(target=run_job, args=({**job, "index": i, "threads": job.get("threads") or threads},
                                                   barrier, results))
             for i, job in enumerate(jobs)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    out = []
    try:
        for _ in jobs:
            out.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
    except queue.Empty:
        missing = len(jobs) - len(out)
        raise RuntimeError(f"{missing} of {len(jobs)} processes gave no result in {timeout:.0f} s") from None
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
    errors = [r["error"] for r in out if "error" in r]
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(jobs)} processes failed: {errors[0]}")
    return sorted(out, key=lambda r: r["index"])


def sharing(job: dict, counts: list[int], deadline: float, first_round: float) -> dict:
    """Aggregate and per-process samples/s with 1, 2, 4, ... identical training processes at once.

    Aggregate = all samples / (last end - first start) of the timed steps. A count whose round would
    not fit before `deadline` (time.monotonic()) is skipped and listed: the first count needs
    `first_round` seconds, a later one twice the last round's seconds per process times its count."""
    rows, skipped, last = [], [], None
    for n in counts:
        left = deadline - time.monotonic()
        need = first_round if last is None else last["round_seconds"] * 2 * n / last["processes"]
        if left < need:
            skipped.append(n)
            continue
        start = time.monotonic()
        res = run_processes([{**job, "kind": "share"}] * n, timeout=max(1.0, left))
        span = max(r["end"] for r in res) - min(r["start"] for r in res)
        per = [r["samples_per_second"] for r in res]
        last = {"processes": n, "aggregate_samples_per_second": sum(r["samples"] for r in res) / span,
                "per_process_samples_per_second": per, "mean_per_process": sum(per) / n,
                "timed_seconds": span, "round_seconds": time.monotonic() - start}
        rows.append(last)
    best = max((r["aggregate_samples_per_second"] for r in rows), default=None)
    busy = min((r["processes"] for r in rows if r["aggregate_samples_per_second"] >= BUSY_FRACTION * best),
               default=None)
    one = rows[0]["aggregate_samples_per_second"] if rows else None   # the first count's (1 process)
    return {"model": job["model"], "width": job["width"], "batch_size": job["batch"],
            "steps_per_process": job["epochs"] * job["steps"], "rows": rows, "skipped": skipped,
            "best_aggregate_samples_per_second": best, "busy_fraction": BUSY_FRACTION,
            "processes_to_keep_busy": busy,
            "speedup": {str(r["processes"]): r["aggregate_samples_per_second"] / one for r in rows}}


def same_seed(job: dict, timeout: float) -> dict:
    """Two processes, same seed and data, one epoch each, at once: their first-epoch train losses.

    Tolerance: exact for fp32 on the CPU (deterministic kernels, same thread count). With bf16
    autocast on CUDA, 2% relative: cuDNN autotuning (benchmark=True; two runs may time and pick
    different algorithms) and atomic-add backward kernels change fp32 summation order, and a
    change that flips one bf16 rounding moves that activation by 2^-8 (0.4%); SGD carries such
    differences through the epoch, so about five bf16 spacings are allowed."""
    a, b = run_processes([{**job, "kind": "seed"}] * 2, timeout)
    bf16 = a["amp"]
    tolerance = 2e-2 if bf16 else 1e-6   # relative; fp32: round-off only
    diff = abs(a["train_loss"] - b["train_loss"])
    rel = diff / abs(a["train_loss"])
    return {"model": job["model"], "width": job["width"], "batch_size": job["batch"],
            "steps": job["steps"], "seed": job.get("seed", 0), "bf16": bf16,
            "train_loss": [a["train_loss"], b["train_loss"]], "abs_diff": diff, "rel_diff": rel,
            "identical": diff == 0.0, "tolerance_rel": tolerance, "passes": rel <= tolerance}
