"""Optuna + ASHA against random search at the full budget, same trial count, same space.

    python bench/asha.py [--model mlp] [--trials 16] [--epochs 9]

Runs the search phase of two one-arm studies on mnist-5k (2,000 training digits) over the quick
spec's space (lr and weight decay, log-uniform), on one local Ray instance started here:
  (a) Optuna TPE + ASHA (grace 1 epoch, reduction factor 3)
  (b) random search, every trial at the full budget
and prints the epochs each consumed and the best validation accuracy of a trial that ran the full
budget. Targets: (a) uses at most 40% of (b)'s epochs; its best is within 0.5 points of (b)'s.
"""
from __future__ import annotations

import argparse
import tempfile

import pandas as pd
import ray

from study import runner, tables
from study.spec import spec_from_dict
from study.spec_file import load_spec
from trainables.data import load_data

QUICK = "study/specs/quick.yaml"


def search_phase(name: str, storage: str, model: str, trials: int, epochs: int, asha: bool) -> pd.DataFrame:
    quick = load_spec(QUICK)
    spec = spec_from_dict({
        "name": name, "data": "mnist-5k", "subset": {"train": 2000}, "epochs": epochs, "seeds": [0],
        "width": quick.width, "storage": storage, "arms": [{"model": model}],
        "search": {"algorithm": "optuna" if asha else "random", "trials_per_arm": trials,
                   "max_concurrent": 2, "fixed": dict(quick.search.fixed),
                   "space": {k: {d.kind: list(d.args)} for k, d in quick.search.space.items()}},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 3} if asha else {"name": "none"},
        "wandb": {"mode": "disabled"}})
    study = runner.prepare(spec)
    study.search_tuner(load_data("mnist-5k").subset(train=2000)).fit()
    return tables.write_tables(study.out, spec)["trials"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp")
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=9)
    args = p.parse_args()
    runner.start_ray(None)
    with tempfile.TemporaryDirectory() as storage:
        rows = {}
        for label, asha in (("optuna+asha", True), ("random, full budget", False)):
            t = search_phase(label.split(",")[0].replace("+", "-"), storage, args.model, args.trials,
                             args.epochs, asha)
            full = t[t.status == "completed"]
            rows[label] = (int(t.epochs_run.sum()), full.final_val_acc.max(), len(full),
                           int((t.status == "pruned").sum()))
    print(f"{args.model} on mnist-5k, {args.trials} trials x {args.epochs} epochs, quick spec's space")
    for label, (epochs, best, completed, pruned) in rows.items():
        print(f"{label:<20} epochs {epochs:>4}  best val_acc {best:.4f}  completed {completed:>2}  pruned {pruned:>2}")
    (ea, ba, *_), (er, br, *_) = rows.values()
    print(f"epochs ratio {ea / er:.2f} (target <= 0.40); best difference {100 * (ba - br):+.2f} points "
          f"(target >= -0.5)")
    ray.shutdown()


if __name__ == "__main__":
    main()
