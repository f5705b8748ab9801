"""What did the search find, what did it cost, and which hyperparameters mattered?

    best_configs(trials, "val_acc", "max")           # per arm: the best completed search trial
    asha_savings(trials, epochs_budget=10)           # per arm: epochs ASHA saved
    importances(trials, spec.search.space, "val_acc", "max")   # per arm and param: fANOVA importance
    costs(trials)                                    # per arm and phase: trials, epochs, seconds

All read the `trials` table (one row per trial). A search trial's score is final_<metric>, the value
the study told Optuna for a completed trial; pruned (stopped by ASHA), diverged and errored trials
have no comparable score and are left out of best_configs and importances.

Tests: .venv/bin/python -m pytest tests/test_analysis_questions.py
"""
from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

from .common import rows

SAVINGS_COLUMNS = ["arm", "trials", "completed", "pruned", "diverged", "error", "epochs_used",
                   "full_budget", "fraction_used"]
IMPORTANCE_COLUMNS = ["arm", "param", "importance", "n_trials"]
COST_COLUMNS = ["arm", "phase", "trials", "epochs", "wall_seconds", "reserved_cpu_seconds",
                "reserved_gpu_seconds"]
MIN_TRIALS_FOR_IMPORTANCE = 10   # fewer completed search trials: no fANOVA importance at all


def param_columns(trials: pd.DataFrame) -> list[str]:
    return [c for c in trials.columns if c.startswith("param_")]


def best_configs(trials: pd.DataFrame, metric: str = "val_acc", mode: str = "max") -> pd.DataFrame:
    """Per arm (every arm with search trials): the best completed search trial by final_<metric>.

    Needs columns: phase, status, arm, trial_id, optuna_trial, final_<metric>, param_*.
    Columns: arm, n_completed, trial_id, optuna_trial, score, then every param_* column. An arm with
    no completed search trial gets n_completed 0 and NaN elsewhere.
    """
    col = f"final_{metric}"
    search = rows(trials, phase="search", need=(col, "trial_id", "optuna_trial"))
    params = param_columns(search)
    table = []
    for arm, g in search.groupby("arm", sort=False):
        done = g[(g["status"] == "completed") & g[col].notna()]
        row = {"arm": arm, "n_completed": len(done), "trial_id": None, "optuna_trial": np.nan,
               "score": np.nan, **{p: np.nan for p in params}}
        if len(done):
            best = done.loc[done[col].idxmax() if mode == "max" else done[col].idxmin()]
            row.update(trial_id=best["trial_id"], optuna_trial=best["optuna_trial"], score=best[col],
                       **{p: best[p] for p in params})
        table.append(row)
    return pd.DataFrame(table, columns=["arm", "n_completed", "trial_id", "optuna_trial", "score",
                                        *params])


def asha_savings(trials: pd.DataFrame, epochs_budget: int) -> pd.DataFrame:
    """Per arm, the search phase's epochs against running every trial to the full budget.

    Needs columns: phase, status, arm, epochs_run, and (optional) epochs_budget: each trial's own
    study's epoch budget (io.load_studies adds it, so that studies compared together each use
    theirs); where it is missing or NaN, the `epochs_budget` argument. Columns: arm, trials,
    completed, pruned, diverged, error (counts by status), epochs_used, full_budget (the sum of the
    trials' budgets), fraction_used (epochs_used / full_budget; 1.0 means ASHA saved nothing).
    """
    search = rows(trials, phase="search", need=("epochs_run", "epochs_budget"))
    table = []
    for arm, g in search.groupby("arm", sort=False):
        counts = g["status"].value_counts()
        used = float(g["epochs_run"].sum())
        full = float(g["epochs_budget"].astype(float).fillna(epochs_budget).sum())
        table.append({"arm": arm, "trials": len(g),
                      **{s: int(counts.get(s, 0)) for s in ("completed", "pruned", "diverged", "error")},
                      "epochs_used": used, "full_budget": full,
                      "fraction_used": used / full if full else np.nan})
    return pd.DataFrame(table, columns=SAVINGS_COLUMNS)


def costs(trials: pd.DataFrame) -> pd.DataFrame:
    """Per arm and phase: trials, epochs (sum of epochs_run), wall_seconds and the reserved CPU and
    GPU seconds (the trials table's cpu_seconds / gpu_seconds: wall time x the CPUs / GPUs reserved
    for the trial, not measured use). Needs those columns plus phase and arm."""
    frame = rows(trials, need=("epochs_run", "wall_seconds", "cpu_seconds", "gpu_seconds"))
    if frame.empty:
        return pd.DataFrame(columns=COST_COLUMNS)
    out = frame.groupby(["arm", "phase"], sort=False).agg(
        trials=("arm", "size"), epochs=("epochs_run", "sum"), wall_seconds=("wall_seconds", "sum"),
        reserved_cpu_seconds=("cpu_seconds", "sum"), reserved_gpu_seconds=("gpu_seconds", "sum"))
    return out.reset_index()[COST_COLUMNS]


# ---- hyperparameter importance ------------------------------------------------------------------
def to_distribution(dim) -> BaseDistribution:
    """An Optuna distribution from a search dimension as the spec gives it: a spec `Distribution`
    (with .kind and .args), a (kind, args) pair, a one-key dict {kind: args}, or an Optuna
    distribution. kind: loguniform, uniform, int or choice."""
    if isinstance(dim, BaseDistribution):
        return dim
    if isinstance(dim, dict):
        (kind, args), = dim.items()
    elif hasattr(dim, "kind") and hasattr(dim, "args"):
        kind, args = dim.kind, dim.args
    else:
        kind, args = dim
    if kind in ("loguniform", "uniform"):
        return FloatDistribution(float(args[0]), float(args[1]), log=kind == "loguniform")
    if kind == "int":
        return IntDistribution(int(args[0]), int(args[1]))
    if kind == "choice":
        return CategoricalDistribution([_choice(v) for v in args])
    raise ValueError(f"search dimension {dim!r}: kind {kind!r} is not one of loguniform, uniform, "
                     "int, choice")


def _choice(value):
    """A value Optuna accepts as a category: lists and other objects become their JSON text."""
    if isinstance(value, np.generic):
        value = value.item()
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


def _fit(dist: BaseDistribution, values: list) -> tuple[BaseDistribution, list]:
    """(distribution widened to hold every observed value, the values in its type). Rounding can
    put a sampled value a hair outside the spec's range; Optuna would reject the trial."""
    if isinstance(dist, CategoricalDistribution):
        values = [_choice(v) for v in values]
        extra = [v for v in dict.fromkeys(values) if v not in dist.choices]
        return CategoricalDistribution([*dist.choices, *extra]), values
    cast = int if isinstance(dist, IntDistribution) else float
    values = [cast(v) for v in values]
    low, high = min(dist.low, *values), max(dist.high, *values)
    if isinstance(dist, IntDistribution):
        return IntDistribution(low, high, log=dist.log), values
    return FloatDistribution(low, high, log=dist.log), values


def importances(trials: pd.DataFrame, space: dict, metric: str = "val_acc", mode: str = "max",
                seed: int = 0, min_trials: int = MIN_TRIALS_FOR_IMPORTANCE) -> pd.DataFrame:
    """Per arm and searched parameter: the fANOVA importance (Optuna's FanovaImportanceEvaluator,
    seeded; normalised to sum to 1 per arm) of the parameter for final_<metric>.

    Needs columns: phase, status, arm, final_<metric>, param_<name> for each name in `space`.
    `space` maps a parameter name to its search dimension (see to_distribution), e.g. the spec's
    `search.space`. Only completed search trials with a score and every parameter count. An arm
    with fewer than `min_trials` (MIN_TRIALS_FOR_IMPORTANCE, 10; at least 2) such trials gets no
    rows: a fANOVA forest on fewer says nothing worth showing; a parameter with a single observed value in an arm
    is left out of that arm; an arm with no varied parameter, or whose trials all score the same,
    gets no rows.
    Columns: arm, param, importance, n_trials (completed trials used). Sorted by arm, then importance.
    """
    col = f"final_{metric}"
    search = rows(trials, phase="search", status="completed", need=(col,))
    table = []
    for arm, g in search.groupby("arm", sort=False):
        present = [p for p in space if f"param_{p}" in g]
        g = g[g[[col, *(f"param_{p}" for p in present)]].notna().all(axis=1)]
        names = [p for p in present if g[f"param_{p}"].map(_choice).nunique() >= 2]
        if len(g) < max(2, min_trials) or g[col].nunique() < 2 or not names:   # nothing to explain, or to explain it
            continue
        scores = _fanova(g, {p: to_distribution(space[p]) for p in names}, col, mode, seed)
        table += [{"arm": arm, "param": p, "importance": v, "n_trials": len(g)} for p, v in scores.items()]
    return pd.DataFrame(table, columns=IMPORTANCE_COLUMNS)


def _fanova(done: pd.DataFrame, dists: dict, col: str, mode: str, seed: int) -> dict[str, float]:
    fitted = {p: _fit(d, done[f"param_{p}"].tolist()) for p, d in dists.items()}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
        for i, value in enumerate(done[col].astype(float)):
            study.add_trial(optuna.trial.create_trial(
                params={p: values[i] for p, (_, values) in fitted.items()},
                distributions={p: d for p, (d, _) in fitted.items()}, value=value))
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    finally:
        optuna.logging.set_verbosity(verbosity)
