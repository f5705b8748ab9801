"""Was each arm's search wide and long enough? Where its best configuration sits in each searched
range, and how many of its search trials completed.

    range_position(0.29, "loguniform", [0.001, 0.3])   # 0.99: near the top of the range (log scale)
    space_audit(trials, spec.space, "val_acc", "max")   # one row per arm
    under_searched(audit)                               # arms with fewer than 3 completed trials
    mark(frame, ("arm_a", "arm_b"), arms)               # an `under_searched` column for other tables

A best value in the outer EDGE (10%) of its range, measured on the log scale for loguniform, says
that the optimum may lie outside it: widen the range. An arm whose search completed fewer than
MIN_COMPLETED trials was barely tuned: its ranking and depth verdicts compare its (possibly poor)
configuration as much as its architecture, so the ranking and depth answers mark it.

Tests: .venv/bin/python -m pytest tests/test_analysis_evidence.py
"""
from __future__ import annotations

import math

import pandas as pd

from .common import rows
from optuna.distributions import CategoricalDistribution, FloatDistribution

from .importance import best_configs, to_distribution

EDGE = 0.10          # outer share of a range (each end) where a best value says "widen the range"
MIN_COMPLETED = 3    # completed search trials an arm needs not to be "under-searched"
STATUSES = ("completed", "pruned", "diverged", "error")
AUDIT_COLUMNS = ["arm", "trials", *STATUSES, "share_pruned", "share_diverged", "share_error",
                 "under_searched", "widen"]


def range_position(value, kind: str, args: list) -> float:
    """Where `value` lies in a search range (the spec's kind and args): 0 at the low bound, 1 at
    the high one, on the log scale for "loguniform" (linear for "uniform" and "int"). NaN for
    "choice", a missing or non-numeric value, or an empty range."""
    if kind not in ("uniform", "loguniform", "int") or value is None:
        return float("nan")
    try:
        x, low, high = float(value), float(args[0]), float(args[1])
    except (TypeError, ValueError):
        return float("nan")
    if kind == "loguniform":
        if min(x, low, high) <= 0:
            return float("nan")
        x, low, high = math.log(x), math.log(low), math.log(high)
    if not (math.isfinite(x) and high > low):
        return float("nan")
    return (x - low) / (high - low)


def dimension(dim) -> tuple[str, list]:
    """(kind, args) of a search dimension in any form importance.to_distribution() takes (a spec
    Distribution, a (kind, args) pair, {kind: args}, an Optuna distribution)."""
    dist = to_distribution(dim)
    if isinstance(dist, CategoricalDistribution):
        return "choice", list(dist.choices)
    kind = ("loguniform" if dist.log else "uniform") if isinstance(dist, FloatDistribution) else "int"
    return kind, [dist.low, dist.high]


def edge(position: float, margin: float = EDGE) -> str | None:
    """"low" or "high" when a range position lies in the outer `margin` of that end, else None."""
    if pd.isna(position):
        return None
    return "low" if position < margin else "high" if position > 1 - margin else None


def search_counts(trials: pd.DataFrame, metric: str = "val_acc") -> pd.DataFrame:
    """Per arm with search trials: trials, completed (with a final_<metric>), pruned, diverged,
    error (counts), their shares of the trials (share_pruned, share_diverged, share_error) and
    under_searched (completed < MIN_COMPLETED). Needs columns: phase, status, arm, final_<metric>."""
    col = f"final_{metric}"
    search = rows(trials, phase="search", need=(col,))
    table = []
    for arm, g in search.groupby("arm", sort=False):
        counts = {s: int((g["status"] == s).sum()) for s in STATUSES}
        counts["completed"] = int(((g["status"] == "completed") & g[col].notna()).sum())
        table.append({"arm": arm, "trials": len(g), **counts,
                      **{f"share_{s}": counts[s] / len(g) for s in ("pruned", "diverged", "error")},
                      "under_searched": counts["completed"] < MIN_COMPLETED})
    return pd.DataFrame(table, columns=AUDIT_COLUMNS[:-1])


def space_audit(trials: pd.DataFrame, space: dict, metric: str = "val_acc",
                mode: str = "max") -> pd.DataFrame:
    """One row per arm with search trials: search_counts(), then `widen` (the searched parameters
    whose best value lies in the outer EDGE of its range, as "lr (high end)") and, per parameter
    p of `space` ({name: dimension}, the spec's search.space; see dimension()), best_<p> (its
    value in the best completed search trial, importance.best_configs) and position_<p>
    (range_position(); NaN for a choice or without a completed trial). Needs the columns of search_counts() and param_<p>."""
    counts = search_counts(trials, metric)
    if counts.empty:
        return pd.DataFrame(columns=AUDIT_COLUMNS)
    best = best_configs(trials, metric, mode).set_index("arm")
    table = []
    for r in counts.to_dict("records"):
        row, widen = {**r, "widen": []}, []
        for p, dim in space.items():
            value = best.loc[r["arm"]].get(f"param_{p}") if r["arm"] in best.index else None
            position = range_position(value, *dimension(dim))
            row |= {f"best_{p}": value, f"position_{p}": position}
            if edge(position):
                widen.append(f"{p} ({edge(position)} end)")
        row["widen"] = widen
        table.append(row)
    return pd.DataFrame(table)


def under_searched(audit: pd.DataFrame) -> list[str]:
    """The arms space_audit() (or search_counts()) marks under-searched."""
    return audit.loc[audit["under_searched"].astype(bool), "arm"].tolist() if len(audit) else []


def mark(frame: pd.DataFrame, arm_columns: tuple[str, ...], arms: list[str]) -> pd.DataFrame:
    """`frame` with an `under_searched` column: per row, the arms of `arms` named in `arm_columns`
    (each a column holding an arm name or a list of them), in the order named."""
    thin = set(arms)

    def named(row) -> list[str]:
        names = []
        for col in arm_columns:
            value = row[col]
            names += list(value) if isinstance(value, (list, tuple)) else [value]
        return [a for a in dict.fromkeys(names) if a in thin]
    out = frame.copy()
    out["under_searched"] = [named(r) for _, r in out.iterrows()] if len(out) else []
    return out
