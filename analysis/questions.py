"""The study's five questions, answered from its tables: DataFrames in, DataFrames or dicts out.

    from analysis import questions
    result = questions.answers(trials, epochs, gradflow, metric="val_acc", mode="max",
                               epochs_budget=10, space={"lr": ("loguniform", [0.003, 0.3])})
    result["text"]                 # every verdict in words, with its numbers
    result["depth"]["depth_trend"] # the records behind them, section by section

1. ranking: which arm is best, beyond seed noise?        ranking, pairwise (ranking.py)
2. depth: does depth hurt plain nets more than residual? depth_trend, matched_pairs,
                                                         degradation_gap (depth.py)
3. why: vanishing gradients, optimisation or generalisation?  gradient_profile, attenuation,
                                                         diagnose (why.py)
4. convergence: how fast, and how far apart train and val? generalisation_gap, epochs_to_fraction
                                                         (convergence.py)
5. search: what was found, what mattered, what it cost?   best_configs, asha_savings, importances,
                                                         costs (search.py)

This module re-exports those functions and adds answers(), which runs them all and writes the
verdicts as sentences. Every sentence makes only the claim its numbers support: with too few seeds,
depths or trials it says so instead.
"""
from __future__ import annotations

import pandas as pd

from .common import ci, jsonable, num, pval, records, test_column
from .convergence import epochs_to_fraction, generalisation_gap
from .depth import degradation_gap, depth_trend, matched_pairs
from .ranking import pairwise, ranking
from .search import asha_savings, best_configs, costs, importances
from .why import VANISHING_RATIO, attenuation, diagnose, gradient_profile

__all__ = ["answers", "ranking", "pairwise", "depth_trend", "matched_pairs", "degradation_gap",
           "gradient_profile", "attenuation", "diagnose", "generalisation_gap", "epochs_to_fraction",
           "best_configs", "asha_savings", "importances", "costs"]

MIN_TRIALS_FOR_IMPORTANCE = 10   # below this, fANOVA importances are reported but not claimed


def label(column: str) -> str:
    """'final_train_loss' -> 'final training loss'."""
    words = {"train": "training", "val": "validation", "acc": "accuracy"}
    return " ".join(words.get(w, w) for w in column.split("_"))


def answers(trials: pd.DataFrame, epochs: pd.DataFrame, gradflow: pd.DataFrame,
            metric: str = "val_acc", mode: str = "max", epochs_budget: int = 10,
            space: dict | None = None, level: float = 0.95) -> dict:
    """Every question, as a JSON-serialisable dict: keys ranking, pairwise, depth, why,
    convergence, search (each {table name: records, "text": [sentences]}) and text (all sentences,
    in that order). NaN becomes None. Any of the frames may be empty."""
    parts = {"ranking": _ranking(trials, metric, mode, level),
             "pairwise": _pairwise(trials, metric, mode, level),
             "depth": _depth(trials, metric, level),
             "why": _why(trials, gradflow, metric, mode, level),
             "convergence": _convergence(epochs, metric, level),
             "search": _search(trials, metric, mode, epochs_budget, space or {})}
    out = {key: {name: records(v) if isinstance(v, pd.DataFrame) else v for name, v in part.items()}
           for key, part in parts.items()}
    out["text"] = [t for part in out.values() for t in part["text"]]
    return jsonable(out)


# ---- 1. ranking ------------------------------------------------------------------------------------
def _ranking(trials, metric: str, mode: str, level: float) -> dict:
    table = ranking(trials, metric, mode, level)
    scored = table[table["n"] > 0]
    if scored.empty:
        return {"ranking": table, "text": [f"No completed confirmation trials: nothing to rank on {metric}."]}
    better = "higher" if mode == "max" else "lower"
    text = [f"Ranking on final {label(metric)} ({better} is better), mean over confirmation seeds: "
            + "; ".join(f"{r.position}. {r.arm} {num(r.mean)} ({ci(r.ci_lo, r.ci_hi, level)}, n={r.n})"
                        for r in scored.itertuples()) + "."]
    few = scored[scored["n"] < 2]
    if len(few):
        text.append(f"Too few seeds for an interval (fewer than 2): {', '.join(few['arm'])}; "
                    "their place in the ranking is not settled.")
    best = scored.iloc[0]
    if len(scored) == 1:
        text.append(f"Only one arm ({best.arm}) has completed confirmation runs: nothing to compare it with.")
    elif best["n"] >= 2 and not best["tied_with"]:
        text.append(f"{best.arm} is clearly best: its interval does not overlap any other arm's.")
    elif best["n"] >= 2:
        text.append(f"{best.arm} has the best mean, but its interval overlaps "
                    f"{', '.join(best['tied_with'])}: they share rank 1.")
    if table["excluded"].sum():
        lost = ", ".join(f"{r.arm} {r.excluded}" for r in table.itertuples() if r.excluded)
        text.append(f"Left out: confirmation trials that did not complete ({lost}).")
    tested = scored[scored["test_mean"].notna()]
    if len(tested):
        text.append(f"On the test split ({test_column(metric)}): " + "; ".join(
            f"{r.arm} {num(r.test_mean)} ({ci(r.test_ci_lo, r.test_ci_hi, level)})"
            for r in tested.itertuples()) + ".")
    return {"ranking": table, "text": text}


def _pairwise(trials, metric: str, mode: str, level: float) -> dict:
    table = pairwise(trials, metric, mode, level)
    if table.empty:
        return {"pairwise": table, "text": ["Fewer than two arms: no pairs to compare."]}
    counts = table["verdict"].value_counts()
    decided = table[table["verdict"].isin(["a better", "b better"])]
    text = [f"Of {len(table)} pairs of arms, {len(decided)} differ beyond seed noise (Welch's t-test: "
            f"the {level:.0%} interval of the difference excludes 0), {counts.get('tied', 0)} are tied "
            f"and {counts.get('too few seeds', 0)} have too few seeds to tell."]
    for r in decided.itertuples():
        win, lose = (r.arm_a, r.arm_b) if r.verdict == "a better" else (r.arm_b, r.arm_a)
        text.append(f"{win} beats {lose} on {metric}: difference {num(abs(r.diff))} "
                    f"({ci(r.diff_ci_lo, r.diff_ci_hi, level)} for {r.arm_a} - {r.arm_b}, {pval(r.p)}, "
                    f"Hedges' g {num(r.hedges_g, 2)}).")
    return {"pairwise": table, "text": text}


# ---- 2. depth --------------------------------------------------------------------------------------
def _depth(trials, metric: str, level: float) -> dict:
    columns = list(dict.fromkeys(["final_train_loss", f"final_{metric}"]))
    trend = pd.concat([depth_trend(trials, c, level).assign(column=c) for c in columns])
    pairs = pd.concat([matched_pairs(trials, c, level).assign(column=c) for c in columns])
    gap = pd.concat([degradation_gap(trials, c, level).assign(column=c) for c in columns])
    if trend.empty:
        return {"depth_trend": trend, "text": ["No plain or residual arms with completed confirmation "
                                               "runs: depth is not studied."]}
    text = [_trend_text(r, level) for r in trend.itertuples()]
    text += [f"At depth {r.depth}, {r.plain_arm} vs {r.residual_arm} on {label(r.column)}: "
             f"{num(r.plain_mean)} vs {num(r.residual_mean)} (difference {num(r.diff)}, "
             f"{ci(r.diff_ci_lo, r.diff_ci_hi, level)}, {pval(r.p)}): {r.verdict}."
             for r in pairs.itertuples()]
    text += [_gap_text(r, level) for r in gap.itertuples()]
    if pairs.empty:
        text.append("No plain and residual arms share a depth: no matched comparison of skip connections.")
    return {"depth_trend": trend, "matched_pairs": pairs, "degradation_gap": gap, "text": text}


def _trend_text(r, level: float) -> str:
    name = r.series if r.series.startswith(r.family) else f"{r.family} {r.series}"
    head = f"{name} ({', '.join(map(str, r.arms))}): {label(r.column)}"
    if r.verdict == "too few depths to tell":
        return f"{head}: too few depths to tell ({r.n_depths} depth(s), {r.n_runs} run(s))."
    return (f"{head} changes by {r.slope:+.3g} per layer ({ci(r.ci_lo, r.ci_hi, level)}, "
            f"{pval(r.p)}, {r.n_runs} runs): {r.verdict}.")


def _gap_text(r, level: float) -> str:
    depths = ", ".join(map(str, r.depths))
    if r.verdict.startswith("too few"):
        return f"Plain vs residual trend in {label(r.column)} (matched depths {depths}): {r.verdict}."
    return (f"Plain vs residual trend in {label(r.column)} over matched depths {depths}: plain "
            f"{r.plain_slope:+.3g} vs residual {r.residual_slope:+.3g} per layer (difference "
            f"{r.diff:+.3g}, {ci(r.ci_lo, r.ci_hi, level)}, {pval(r.p)}): {r.verdict}.")


# ---- 3. why ----------------------------------------------------------------------------------------
def _why(trials, gradflow, metric: str, mode: str, level: float) -> dict:
    att = attenuation(gradflow, "confirm", level)
    found = diagnose(trials, gradflow, metric, mode, level)
    text = list(found["text"])
    if att.empty:
        text.append("Gradient flow was not recorded for the confirmation runs, so vanishing "
                    "gradients can be neither claimed nor ruled out.")
    else:
        vanish = att[att["vanishing"]]
        text.append("Gradients vanish (first/last-layer gradient-norm ratio below "
                    f"{VANISHING_RATIO:g} in every seed) in: {', '.join(vanish['arm']) or 'no arm'}; "
                    "first/last ratio at the first epoch, geometric mean over seeds: "
                    + "; ".join(f"{r.arm} {num(r.ratio_first)}" for r in att.itertuples()) + ".")
    return {"attenuation": att, "degradations": found["degradations"],
            "batchnorm": found["batchnorm"], "text": text}


# ---- 4. convergence --------------------------------------------------------------------------------
def _convergence(epochs, metric: str, level: float) -> dict:
    gap = generalisation_gap(epochs)
    reach = epochs_to_fraction(epochs, 0.95, metric, "confirm", level)
    if gap.empty:
        return {"text": ["No completed confirmation epochs: nothing to say about convergence."]}
    final_gap = gap.sort_values("epoch").groupby("arm").tail(1)
    text = [f"Epochs to reach 95% of the final {metric} (mean over seeds): " + "; ".join(
        f"{r.arm} {num(r.epochs_mean)} ({ci(r.ci_lo, r.ci_hi, level)})" for r in reach.itertuples()) + ".",
        "Generalisation gap at the last epoch (training minus validation accuracy, mean over seeds): "
        + "; ".join(f"{r.arm} {num(r.acc_gap)} (epoch {r.epoch}, n={r.n})"
                    for r in final_gap.itertuples()) + "."]
    return {"epochs_to_fraction": reach, "final_generalisation_gap": final_gap, "text": text}


# ---- 5. search -------------------------------------------------------------------------------------
def _search(trials, metric: str, mode: str, epochs_budget: int, space: dict) -> dict:
    best = best_configs(trials, metric, mode)
    savings = asha_savings(trials, epochs_budget)
    imp = importances(trials, space, metric, mode)
    cost = costs(trials)
    if best.empty:
        text = ["No search trials."]
    else:
        text = [_best_text(r, metric) for r in best.to_dict("records")]
        used, full = savings["epochs_used"].sum(), savings["full_budget"].sum()
        text.append(f"The search ran {num(used)} of {num(full)} epochs ({used / full:.0%} of running "
                    f"every trial to the full budget); {savings['pruned'].sum()} of "
                    f"{savings['trials'].sum()} trials were stopped early, "
                    f"{savings['diverged'].sum()} diverged, {savings['error'].sum()} failed.")
        text += [_importance_text(arm, g) for arm, g in imp.groupby("arm", sort=False)]
        if space:
            text += [f"{r.arm}: no hyperparameter importance ({r.n_completed} completed search "
                     "trial(s); it needs 2 and a parameter that varied)."
                     for r in best.itertuples() if r.arm not in set(imp["arm"])]
    for phase, g in cost.groupby("phase", sort=False):
        text.append(f"Cost of the {phase} phase: {len(g)} arm(s), {g['trials'].sum()} trials, "
                    f"{num(g['epochs'].sum())} epochs, {num(g['wall_seconds'].sum())} s wall, "
                    f"{num(g['cpu_seconds'].sum())} CPU-s, {num(g['gpu_seconds'].sum())} GPU-s.")
    return {"best_configs": best, "asha_savings": savings, "importances": imp, "costs": cost,
            "text": text}


def _best_text(r: dict, metric: str) -> str:
    if not r["n_completed"]:
        return f"{r['arm']}: no completed search trial, so no best configuration."
    params = ", ".join(f"{k[len('param_'):]}={v:.3g}" if isinstance(v, float) else f"{k[len('param_'):]}={v}"
                       for k, v in r.items() if k.startswith("param_"))
    return (f"{r['arm']}: best completed search trial has final {metric} {num(r['score'])}"
            f"{' with ' + params if params else ''} (of {r['n_completed']} completed).")


def _importance_text(arm: str, g: pd.DataFrame) -> str:
    top = g.sort_values("importance", ascending=False).iloc[0]
    n = int(top["n_trials"])
    if n < MIN_TRIALS_FOR_IMPORTANCE:
        return (f"{arm}: only {n} completed search trials, too few (under {MIN_TRIALS_FOR_IMPORTANCE}) "
                "to say which hyperparameter matters; the fANOVA figures are in the table.")
    return (f"{arm}: {top['param']} matters most for the search score (fANOVA importance "
            f"{top['importance']:.2f} of 1, from {n} completed trials).")
