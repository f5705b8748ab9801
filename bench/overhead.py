"""Per-trial overhead: archstudy's trials against a bare Ray Tune function trainable, same work.

    python bench/overhead.py [--trials 12]

Both sides run N one-epoch MLP trials on 512 mnist-5k digits, one trial at a time, on one local
Ray instance started here, in this one run:
  (a) bare Tune: a function trainable that builds the Trainer, trains, and calls tune.report per
      epoch; no checkpoints, no W&B, actors not reused (Tune's default)
  (b) archstudy: the search phase of a one-arm study (study.runner): per-arm Optuna search in
      SQLite, a checkpoint per epoch, an offline W&B run per trial, actors reused; and once more
      with W&B disabled, to price W&B
Figures per side:
  - amortised overhead = (phase wall time - the trials' own epoch seconds) / N;
  - first trial: seconds from the start of fit() until the first trial ends, minus its work (the
    one-time costs: starting a worker, importing torch, wandb's service);
  - steady state: the median, over trials 2..N, of the time between two consecutive trial ends
    minus the later trial's work: what each further trial costs (the per-trial overhead).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback

from study import runner
from study.spec import spec_from_dict
from trainables.data import load_data
from trainables.train import Trainer

EPOCHS, SUBSET = 1, 512
CONFIG = {"model": "mlp", "epochs": EPOCHS, "batch_size": 64, "lr": 0.05}


class TrialEnds(tune.Callback):
    """Records, on the driver, when each trial ends (perf_counter seconds) and its work (the sum
    of its epochs' own seconds, as the trial reported them)."""

    def __init__(self):
        self.ends: list[tuple[float, str]] = []
        self.work: dict[str, float] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.work[trial.trial_id] = self.work.get(trial.trial_id, 0.0) + result["epoch_seconds"]

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ends.append((time.perf_counter(), trial.trial_id))


def split(start: float, ends: list[tuple[float, str]], work: dict[str, float]) -> tuple[float, float]:
    """(first-trial overhead, steady-state per-trial overhead) from the trial end times."""
    first = ends[0][0] - start - work[ends[0][1]]
    gaps = [t1 - t0 - work[tid] for (t0, _), (t1, tid) in zip(ends, ends[1:])]
    return first, statistics.median(gaps)


def bare_trial(config, data):
    for metrics in Trainer({**CONFIG, "seed": config["seed"]}, data).run():
        metrics.pop("grad_flow", None)
        metrics.pop("signal_prop", None)
        tune.report(metrics)


def bare(data, trials: int, storage: str) -> dict:
    ends = TrialEnds()
    tuner = tune.Tuner(tune.with_parameters(bare_trial, data=data),
                       param_space={"seed": tune.grid_search(list(range(trials)))},
                       tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=False),
                       run_config=tune.RunConfig(name="bare", storage_path=storage, verbose=0,
                                                 callbacks=[JsonLoggerCallback(), ends]))
    start = time.perf_counter()
    tuner.fit()
    return figures(trials, start, time.perf_counter() - start, ends.ends, ends.work)


def figures(trials: int, start: float, wall: float, ends, work: dict) -> dict:
    first, steady = split(start, ends, work)
    return {"wall": wall, "work": sum(work.values()), "amortised": (wall - sum(work.values())) / trials,
            "first": first, "steady": steady}


def harness(trials: int, storage: str, wandb_mode: str = "offline") -> tuple[float, float]:
    spec = spec_from_dict({
        "name": f"overhead-{wandb_mode}", "data": "mnist-5k", "subset": {"train": SUBSET}, "epochs": EPOCHS,
        "seeds": [0], "storage": storage, "arms": [{"model": "mlp"}],
        "search": {"algorithm": "random", "trials_per_arm": trials, "max_concurrent": 1,
                   "space": {"lr": {"loguniform": [0.01, 0.1]}}, "fixed": {"batch_size": 64}},
        "scheduler": {"name": "none"}, "wandb": {"mode": wandb_mode}})
    study = runner.prepare(spec)
    data = load_data("mnist-5k").subset(train=SUBSET)
    ends = TrialEnds()
    study.callbacks.append(ends)
    tuner = study.search_tuner(data)
    start = time.perf_counter()
    tuner.fit()
    return figures(trials, start, time.perf_counter() - start, ends.ends, ends.work)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=12)
    args = p.parse_args()
    runner.start_ray(None)
    data = load_data("mnist-5k").subset(train=SUBSET)
    with tempfile.TemporaryDirectory() as storage:
        rows = {"bare Tune (no actor reuse, no checkpoints, no W&B)": bare(data, args.trials, storage),
                "archstudy, W&B offline": harness(args.trials, storage),
                "archstudy, W&B disabled": harness(args.trials, storage, wandb_mode="disabled")}
        wandb_runs = len(list(Path(storage, "overhead-offline", "wandb").glob("offline-run-*")))
    print(f"{args.trials} trials x {EPOCHS} epoch, one at a time, {os.cpu_count()} CPUs; "
          f"W&B offline runs written: {wandb_runs}")
    print(f"{'':52} {'wall s':>7} {'work s':>7} {'amortised':>9} {'first':>7} {'steady':>7}  (s/trial)")
    for name, r in rows.items():
        print(f"{name:52} {r['wall']:7.1f} {r['work']:7.1f} {r['amortised']:9.2f} {r['first']:7.2f} "
              f"{r['steady']:7.2f}")
    base, ours = rows["bare Tune (no actor reuse, no checkpoints, no W&B)"], rows["archstudy, W&B offline"]
    print(f"ratio archstudy (W&B offline) / bare Tune: amortised {ours['amortised'] / base['amortised']:.2f}, "
          f"steady state {ours['steady'] / base['steady']:.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
