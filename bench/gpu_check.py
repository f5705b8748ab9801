"""The GPU path measured, in one run: throughput, a bf16 training run, GPU sharing, same-seed
reproducibility and the specs' GPU-hours, printed as one JSON summary (issue 15).

    python3 bench/gpu_check.py --out gpu_check.json   # on a CUDA machine: at most ~7 min (--budget)
    python3 bench/gpu_check.py --dry-run              # the same code paths on the CPU, in seconds

With the `device` tool (H200, Python 3.12; no registry, no Ray, Optuna, W&B or pydantic there; this
repository travels), from the root: fetch pydantic's wheels for it here, then carry them:

    .venv/bin/pip download --only-binary=:all: --python-version 3.12 \
        --platform manylinux2014_x86_64 -d bench/wheels pydantic          # ~3 MB, git-ignored
    run(carry=["bench/wheels"], timeout_s=540, command="pip install -q --no-index --target /tmp/py
        bench/wheels/*.whl && PYTHONPATH=.:/tmp/py python3 bench/gpu_check.py --out $OUT/gpu_check.json")

Needs only torch, torchvision, numpy, pyyaml, pydantic (trainables/config.py's TrainingOptions, with
pydantic-core, annotated-types and typing-inspection) and trainables (the script puts the repository root on sys.path itself). Sections of the JSON:
  throughput   bench/throughput.py's comparison on CUDA: mlp, resnet18, vgg16 at full width on
               3x32x32 data, batch 64 and 128: samples/s of archstudy's loop (Trainer.train_epoch,
               gradient flow on) against the bare loop and the lab-style DataLoader; achieved
               TFLOP/s (FlopCounterMode, one step) against a bf16 matmul measured in this run
  convergence  resnet20 on learnable synthetic data, bf16 autocast + channels_last: the loss falls
  specs        per-epoch seconds of every arm of lab_cnn_cifar10.yaml and he2016_cifar10.yaml at
               its batch size (bench/gpu_specs.py)
  sharing      1, 2, 4, 8 processes of vgg16 (batch 64) at once: aggregate and per-process
               samples/s, and the fewest processes within 10% of the best aggregate
  same_seed    two processes, same seed: first-epoch losses equal within bf16's tolerance
  gpu_hours    each spec's estimated GPU-hours from the figures above
Every section also reports its wall seconds; a section that fails reports its error and the others
still run. Exit status 0 only if every section ran and every check passed. stdout gets the JSON on
one line (floats to 6 significant digits); --out gets it indented.

In the throughput section archstudy's loop trains as a trial does (bf16 autocast, channels_last on
CUDA), while the lab-style and bare loops train in fp32 as written in bench/throughput.py; the
ratios price the loop and its precision together, and "archstudy (no grad flow)" prices the
gradient-flow probes.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]   # the repository root: trainables/, bench/, study/
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.gpu_share import same_seed, sharing, start_early, synthetic_data, trainer_config  # noqa: E402
from bench.gpu_specs import gpu_hours, spec_estimates  # noqa: E402
from bench.throughput import bench_model, matmul_flops  # noqa: E402
from trainables.train import Trainer  # noqa: E402

# Settings per mode. GPU: sized for an H200 to finish well inside 8 minutes; dry run: tiny nets,
# few steps, so the same code paths finish in seconds on two CPU cores.
SETTINGS = {
    "gpu": {
        "device": "cuda",
        "threads": None,                    # CPU threads per process: torch's default
        "width": 1.0,                       # full-width models, as the specs train them
        "batches": [64, 128],               # samples per step in the throughput comparison
        "throughput_steps": 100,            # steps per timed pass (per loop, per repeat)
        "repeats": 3,                       # timed passes per loop; the best is kept
        "matmul_n": 8192,                   # square bf16 matmul size for the peak: ~1.1 TFLOP each
        "train": {"batch": 128, "steps": 100, "epochs": 4, "width": 1.0, "val": 1024},   # 400 steps
        "spec_steps": 50,                   # timed steps per spec model (after a warm-up epoch)
        "spec_batch_scale": 1.0,            # the specs' own batch sizes
        "share_counts": [1, 2, 4, 8],       # processes at once
        "share_seconds": 20.0,              # target timed seconds of the largest count if no overlap
        "share_steps": (50, 400),           # bounds on timed steps per process
        "share_first_round": 30.0,          # seconds the 1-process round needs (start-up included)
        "seed": {"batch": 128, "steps": 50, "width": 1.0},   # one epoch of 50 steps per process
    },
    "dry": {
        "device": "cpu",
        "threads": 1,                       # one per process: spin-waiting threads crawl on a busy box
        "width": 0.0625,                    # 1/16 of every channel count: tiny, same code
        "batches": [4, 8],
        "throughput_steps": 2,
        "repeats": 1,
        "matmul_n": 256,
        "train": {"batch": 16, "steps": 8, "epochs": 4, "width": 0.25, "val": 128},
        "spec_steps": 1,
        "spec_batch_scale": 0.0625,         # 4 and 8 instead of 64 and 128
        "share_counts": [1, 2],
        "share_seconds": 1.0,
        "share_steps": (2, 2),
        "share_first_round": 5.0,
        "seed": {"batch": 16, "steps": 2, "width": 0.125},
    },
}
THROUGHPUT_MODELS = ("mlp", "resnet18", "vgg16")   # bench/throughput.py's CUDA cases
SHARE_MODEL, SHARE_BATCH = "vgg16", 64             # the lab CNN at the lab's batch size
TRAIN_LR = 0.05                                    # resnet20 on synthetic data: falls fast, stays stable
LOSS_FALL = 0.75                                   # last epoch's loss must be below 75% of the first's


def section_throughput(s: dict, budget: "Budget") -> dict:
    """bench/throughput.py's comparison at each batch size; FLOP/s against a bf16 matmul."""
    peak = matmul_flops(s["device"], n=s["matmul_n"], reps=10, dtype=torch.bfloat16)
    cases, skipped = [], []
    for batch in s["batches"]:
        for name in THROUGHPUT_MODELS:
            if budget.left() < budget.reserve:   # keep time for the sections after this one
                skipped.append(f"{name}@{batch}")
                continue
            rates, flops = bench_model(name, s["width"], 3, 32, s["throughput_steps"], batch,
                                       s["device"], s["repeats"])
            a = rates["archstudy"]
            cases.append({"model": name, "width": s["width"], "batch_size": batch,
                          "samples_per_second": rates, "archstudy_over_lab": a / rates["lab style"],
                          "archstudy_over_bare": a / rates["bare"],
                          "grad_flow_cost": 1 - a / rates["archstudy (no grad flow)"],
                          "flops_per_sample": flops, "achieved_tflops": a * flops / 1e12,
                          "fraction_of_peak": a * flops / peak})
    return {"matmul_bf16_tflops": peak / 1e12, "cases": cases, "skipped": skipped}


def section_convergence(s: dict) -> dict:
    """resnet20 for a few hundred steps (bf16 autocast + channels_last on CUDA): the loss falls."""
    t = s["train"]
    job = {"model": "resnet20", "width": t["width"], "batch": t["batch"], "device": s["device"],
           "lr": TRAIN_LR}
    trainer = Trainer(trainer_config(job), synthetic_data(t["steps"] * t["batch"], n_val=t["val"]))
    epochs = [trainer.train_epoch() for _ in range(t["epochs"])]
    losses = [e["train_loss"] for e in epochs]
    return {"model": "resnet20", "width": t["width"], "batch_size": t["batch"],
            "steps": t["steps"] * t["epochs"], "bf16_autocast": trainer.amp,
            "channels_last": trainer.channels_last, "epoch_train_loss": losses,
            "samples_per_second": [e["samples_per_second"] for e in epochs],
            **trainer.evaluate("val"), "loss_fall_required": LOSS_FALL,
            "loss_falls": all(map(math.isfinite, losses)) and losses[-1] < LOSS_FALL * losses[0]}


def share_steps(s: dict, specs: dict | None) -> int:
    """Timed steps per sharing process: sized so the largest count's round takes about
    share_seconds even if sharing gained nothing (from the specs section's vgg16 rate)."""
    low, high = s["share_steps"]
    rates = [m["train_samples_per_second"] for m in (specs or {}).get("models", [])
             if m["model"] == SHARE_MODEL and m["batch_size"] == SHARE_BATCH]
    if not rates:
        return low
    steps = s["share_seconds"] * rates[0] / (max(s["share_counts"]) * SHARE_BATCH)
    return int(min(high, max(low, steps)))


def section_sharing(s: dict, budget: "Budget", specs: dict | None) -> dict:
    steps_per_epoch = min(50, share_steps(s, specs))   # each process's data: this many batches
    epochs = max(1, round(share_steps(s, specs) / steps_per_epoch))
    job = {"model": SHARE_MODEL, "width": s["width"], "batch": SHARE_BATCH, "device": s["device"],
           "steps": steps_per_epoch, "epochs": epochs, "threads": s["threads"]}
    return sharing(job, s["share_counts"], deadline=budget.deadline - budget.reserve / 2,
                   first_round=s["share_first_round"])


def section_same_seed(s: dict, budget: "Budget") -> dict:
    job = {"model": "resnet20", "device": s["device"], "seed": 0, "lr": TRAIN_LR, "threads": s["threads"],
           **s["seed"]}
    return same_seed(job, timeout=max(30.0, budget.left()))


def section_gpu_hours(specs: dict, share: dict | None) -> dict:
    share = share or {}
    busy = share.get("processes_to_keep_busy")
    return {"per_spec": [gpu_hours(spec, share.get("speedup", {}), busy) for spec in specs["specs"]],
            "assumptions": "one trial per GPU: runs x epochs x measured epoch seconds, no start-up "
                           "or checkpoint time; search trials at full budget (upper) or ASHA's ideal "
                           "halving (lower); shared: divided by the aggregate speedup measured for "
                           "vgg16 batch 64 at the spec's trials per GPU (1/resources.gpu), or at the "
                           "measured count that keeps the GPU busy"}


class Budget:
    """Wall-clock budget of the whole run, in seconds; `reserve` is held back for later sections."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.reserve = seconds * 0.45   # sharing, same-seed and the specs need about this much

    def left(self) -> float:
        return self.deadline - time.monotonic()


def run_section(summary: dict, name: str, fn, *args):
    """Run one section, recording its result (or error) and wall seconds; returns the result."""
    start = time.perf_counter()
    try:
        result = fn(*args)
    except Exception as e:   # a failed section must not lose the others' figures
        traceback.print_exc()
        result, summary["errors"][name] = None, f"{type(e).__name__}: {e}"
    summary[name] = result
    summary["wall_seconds"][name] = time.perf_counter() - start
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()   # this process's cached blocks back to the GPU for the next section
    return result


def rounded(obj):
    """Floats to 6 significant digits (far finer than run-to-run noise), everywhere in a JSON value."""
    if isinstance(obj, dict):
        return {k: rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rounded(v) for v in obj]
    return float(f"{obj:.6g}") if isinstance(obj, float) else obj


def device_info(device: str) -> dict:
    info = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": sys.version.split()[0], "cpu_threads": torch.get_num_threads()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, memory_gib=props.total_memory / 2 ** 30, gpus=torch.cuda.device_count())
    else:
        info["name"] = "cpu"
    return info


def checks(summary: dict) -> dict:
    """The pass/fail checks of the run: every section ran, the loss fell, same seed, same loss."""
    return {"all_sections_ran": not summary["errors"],
            "loss_falls": bool((summary["convergence"] or {}).get("loss_falls")),
            "same_seed_passes": bool((summary["same_seed"] or {}).get("passes"))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny nets, few steps: seconds")
    p.add_argument("--budget", type=float, default=420.0, help="seconds for the whole run (default 7 min)")
    p.add_argument("--out", type=Path, help="also write the JSON summary to this file")
    args = p.parse_args(argv)
    s = SETTINGS["dry" if args.dry_run else "gpu"]
    if s["device"] == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device here; use --dry-run for the CPU")
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    start, budget = time.perf_counter(), Budget(args.budget)
    start_early()   # the sharing processes' fork server imports torch while the sections below run
    summary = {"mode": "dry-run" if args.dry_run else "gpu", **device_info(s["device"]),
               "budget_seconds": args.budget, "wall_seconds": {}, "errors": {}}
    run_section(summary, "throughput", section_throughput, s, budget)
    run_section(summary, "convergence", section_convergence, s)
    specs = run_section(summary, "specs", spec_estimates, ROOT / "study" / "specs", s["spec_steps"],
                        s["device"], None if s["width"] == 1.0 else s["width"], s["spec_batch_scale"])
    share = run_section(summary, "sharing", section_sharing, s, budget, specs)
    run_section(summary, "same_seed", section_same_seed, s, budget)
    if specs is not None:
        run_section(summary, "gpu_hours", section_gpu_hours, specs, share)
    summary["checks"] = checks(summary)
    summary["wall_seconds"]["total"] = time.perf_counter() - start
    summary = rounded(summary)
    print(json.dumps(summary, separators=(",", ":")))   # one line: fits the device tool's output tail
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if all(summary["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
