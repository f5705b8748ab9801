"""What each arm costs beside what it scores, and which arms no other arm beats on both.

    from analysis.cost import cost_table, cost_answer
    table = cost_table(trials, metric="val_acc", mode="max")   # one row per arm
    cost_answer(table, "val_acc")                             # {"cost": table, "text": [...]}

Costs, from the trials table (study/tables.py; studyfiles/contract.py COST_COLUMNS): the model's
parameters, its forward FLOPs per sample (torch's FlopCounterMode: 2 per multiply-add of the
convolutions and matrix products; a training step costs about 3x: trainables/cost.py), and the
seconds per epoch (training and evaluation, as the Trainer times them) with the CPU- and
GPU-seconds per epoch they reserve. Each is the mean over the arm's completed confirmation runs,
as is the final metric (with its t-interval over seeds, stats.mean_ci).

An arm is on the Pareto front of a cost when no other arm is at least as good in the metric and at
least as cheap in that cost, and strictly better in one of the two: the arms worth their price.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .common import confirmed, num
from .stats import mean_ci, value_range

# (column, in words): the costs a front is drawn along, cheapest first on each.
COSTS = (("parameters", "parameters"), ("flops_per_sample", "forward FLOPs per sample"),
         ("cpu_seconds_per_epoch", "reserved CPU-seconds per epoch"),
         ("gpu_seconds_per_epoch", "reserved GPU-seconds per epoch"))
PER_RUN = ("seconds_per_epoch", *(c for c, _ in COSTS))
INTEGERS = ("parameters", "flops_per_sample")


def cost_table(trials: pd.DataFrame, metric: str, mode: str = "max", level: float = 0.95) -> pd.DataFrame:
    """One row per arm with a completed confirmation run, in the trials' arm order: arm, model,
    parameters, flops_per_sample (ints, or NaN where no run reported them), seconds_per_epoch,
    cpu_seconds_per_epoch, gpu_seconds_per_epoch (means over the runs; studies from before these
    columns existed have NaN), mean, ci_lo, ci_hi, n (the final `metric` over seeds, NaN bounds when
    n < 2) and `front_<cost>` for each of COSTS (bool: see pareto_front)."""
    runs = confirmed(trials, need=("model", f"final_{metric}", *PER_RUN))
    rows = []
    for arm, g in runs.groupby("arm", sort=False):
        mean, lo, hi, n = mean_ci(g[f"final_{metric}"].to_numpy(), level, value_range(metric))
        costs = {c: _mean(g[c]) for c in PER_RUN}
        costs.update({c: costs[c] if math.isnan(costs[c]) else int(round(costs[c])) for c in INTEGERS})
        rows.append({"arm": arm, "model": g["model"].iloc[0], **costs,
                     "mean": mean, "ci_lo": lo, "ci_hi": hi, "n": n})
    table = pd.DataFrame(rows, columns=["arm", "model", *PER_RUN, "mean", "ci_lo", "ci_hi", "n"])
    for cost, _ in COSTS:
        table[f"front_{cost}"] = pareto_front(table[cost], table["mean"], mode)
    return table


def _mean(values: pd.Series) -> float:
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def pareto_front(cost, score, mode: str = "max") -> list[bool]:
    """For each point (cost, score), whether it is on the Pareto front: no other point has a cost at
    most its own and a score at least as good (higher for mode "max", lower for "min"), with one of
    the two strictly so. Identical points are all on it; a point with a NaN is never."""
    cost = np.asarray(cost, dtype=float)
    good = np.asarray(score, dtype=float) * (1 if mode == "max" else -1)
    known = np.isfinite(cost) & np.isfinite(good)
    front = []
    for i in range(len(cost)):
        dominated = known & (cost <= cost[i]) & (good >= good[i]) & ((cost < cost[i]) | (good > good[i]))
        front.append(bool(known[i] and not dominated.any()))
    return front


def shown_costs(table: pd.DataFrame) -> list[tuple[str, str]]:
    """The COSTS with a positive value for some arm: the others (GPU-seconds of a CPU-only study,
    any cost of a study from before the cost columns) have nothing to draw on a log axis."""
    return [(c, label) for c, label in COSTS if c in table and (pd.to_numeric(table[c]) > 0).any()]


def cost_answer(table: pd.DataFrame, metric: str) -> dict:
    """{"cost": table, "text": one sentence per cost naming its front, cheapest arm first}."""
    if table.empty:
        return {"cost": table, "text": [f"Cost: no completed confirmation run, so no arm's final "
                                        f"{metric} to set against its cost."]}
    shown = shown_costs(table)
    if not shown:
        return {"cost": table, "text": ["Cost: no completed confirmation run reported its parameters, "
                                        "FLOPs or seconds (a study run before the cost columns)."]}
    text = []
    for cost, label in shown:
        front = table[table[f"front_{cost}"]].sort_values(cost)
        unknown = table[table[cost].isna() | table["mean"].isna()]["arm"].tolist()
        text.append(f"Cost against final {metric} (mean over seeds), {label}: the Pareto front is "
                    + ", ".join(f"{r.arm} ({amount(getattr(r, cost), cost)}, {num(r.mean)})"
                                for r in front.itertuples())
                    + ("; every other arm costs at least as much as one of these and scores no better"
                       if len(front) + len(unknown) < len(table) else " (every arm)")
                    + (f" (without this cost: {', '.join(unknown)})." if unknown else "."))
    return {"cost": table, "text": text}


def amount(x: float, cost: str) -> str:
    """A cost for a sentence: '853k', '251M' (counts, 3 significant digits) or '1.2 s'."""
    if "seconds" in cost:
        return f"{num(x)} s"
    for power, prefix in ((12, "T"), (9, "G"), (6, "M"), (3, "k")):
        if abs(x) >= 10 ** power:
            return f"{num(x / 10 ** power)}{prefix}"
    return num(x)
