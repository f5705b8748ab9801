"""Per-trial overhead: archstudy's trials against a bare Ray Tune function trainable, same work.

    python bench/overhead.py [--trials 12]

Both sides run N one-epoch MLP trials on 512 mnist-5k digits, one trial at a time, on one local
Ray instance started here, in this one run:
  (a) bare Tune: a function trainable that builds the Trainer, trains, and calls tune.report per
      epoch; no checkpoints, no W&B, actors not reused (Tune's default)
  (b) archstudy: the search phase of a one-arm study (study.runner): per-arm Optuna search in
      SQLite, a checkpoint per epoch, an offline W&B run per trial, actors reused; and once more
      with W&B disabled, to price W&B
Per-trial overhead = (phase wall time - the trials' own epoch seconds) / N.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback

from study import runner
from study.spec import spec_from_dict
from trainables.data import load_data
from trainables.train import Trainer

EPOCHS, SUBSET = 1, 512
CONFIG = {"model": "mlp", "epochs": EPOCHS, "batch_size": 64, "lr": 0.05}


def bare_trial(config, data):
    for metrics in Trainer({**CONFIG, "seed": config["seed"]}, data).run():
        metrics.pop("grad_flow", None)
        tune.report(metrics)


def bare(data, trials: int, storage: str) -> tuple[float, float]:
    tuner = tune.Tuner(tune.with_parameters(bare_trial, data=data),
                       param_space={"seed": tune.grid_search(list(range(trials)))},
                       tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=False),
                       run_config=tune.RunConfig(name="bare", storage_path=storage, verbose=0,
                                                 callbacks=[JsonLoggerCallback()]))
    start = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - start
    work = sum(r.metrics_dataframe["epoch_seconds"].sum() for r in results)
    return wall, work


def harness(trials: int, storage: str, wandb_mode: str = "offline") -> tuple[float, float]:
    spec = spec_from_dict({
        "name": f"overhead-{wandb_mode}", "data": "mnist-5k", "subset": {"train": SUBSET}, "epochs": EPOCHS,
        "seeds": [0], "storage": storage, "arms": [{"model": "mlp"}],
        "search": {"algorithm": "random", "trials_per_arm": trials, "max_concurrent": 1,
                   "space": {"lr": {"loguniform": [0.01, 0.1]}}, "fixed": {"batch_size": 64}},
        "scheduler": {"name": "none"}, "wandb": {"mode": wandb_mode}})
    study = runner.prepare(spec)
    data = load_data("mnist-5k").subset(train=SUBSET)
    start = time.perf_counter()
    study.search_tuner(data).fit()
    wall = time.perf_counter() - start
    epochs = pd.concat(pd.read_json(p, lines=True) for p in Path(study.out, "search").glob("*/result.json"))
    return wall, epochs["epoch_seconds"].sum()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=12)
    args = p.parse_args()
    runner.start_ray(None)
    data = load_data("mnist-5k").subset(train=SUBSET)
    with tempfile.TemporaryDirectory() as storage:
        b_wall, b_work = bare(data, args.trials, storage)
        h_wall, h_work = harness(args.trials, storage)
        n_wall, n_work = harness(args.trials, storage, wandb_mode="disabled")
        wandb_runs = len(list(Path(storage, "overhead-offline", "wandb").glob("offline-run-*")))
    b_over, h_over = (b_wall - b_work) / args.trials, (h_wall - h_work) / args.trials
    n_over = (n_wall - n_work) / args.trials
    print(f"{args.trials} trials x {EPOCHS} epoch, one at a time, {os.cpu_count()} CPUs")
    print(f"bare Tune   : wall {b_wall:6.1f} s, work {b_work:5.1f} s, overhead {b_over:.2f} s/trial")
    print(f"archstudy   : wall {h_wall:6.1f} s, work {h_work:5.1f} s, overhead {h_over:.2f} s/trial "
          f"(W&B offline runs written: {wandb_runs})")
    print(f"archstudy, W&B disabled: wall {n_wall:6.1f} s, work {n_work:5.1f} s, overhead {n_over:.2f} s/trial")
    print(f"ratio archstudy/bare overhead: {h_over / b_over:.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
