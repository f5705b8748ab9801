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
4. convergence: how fast, and how far apart train and val? generalisation_gap, final_gap,
                                                         epochs_to_fraction (convergence.py)
5. search: what was found, what mattered, what it cost?   best_configs, asha_savings, importances,
                                                         costs (search.py)
   (gradient_profile and attenuation live in gradflow.py)

This module re-exports those functions and adds answers(), which runs them all and writes the
verdicts as sentences (answers_with_frames() also hands back the frames behind the figures, so
that nothing is computed twice). Every sentence makes only the claim its numbers support: with too
few seeds, depths or trials it says so instead, and missing data is never worded as a null result.
"""
from __future__ import annotations

import pandas as pd

from . import budget
from .common import (TRAIN_LOSS, ci, jsonable, left_out, left_out_text, line_name, num, pval,
                     records, rows, sci, test_column, unconfirmed)
from .convergence import epochs_to_fraction, final_gap, generalisation_gap
from .depth import degradation_gap, depth_trend, matched_pairs
from .ranking import pairwise, ranking
from .search import MIN_TRIALS_FOR_IMPORTANCE, asha_savings, best_configs, costs, importances
from .why import EXPLODING_RATIO, VANISHING_RATIO, attenuation, diagnose, gradient_profile

__all__ = ["answers", "answers_with_frames", "ranking", "pairwise", "depth_trend", "matched_pairs",
           "degradation_gap", "gradient_profile", "attenuation", "diagnose", "generalisation_gap",
           "final_gap", "epochs_to_fraction", "best_configs", "asha_savings", "importances", "costs",
           "MIN_TRIALS_FOR_IMPORTANCE"]


def label(column: str, running: bool = False) -> str:
    """'final_train_loss' -> 'final training loss'; with `running`, a training column says that it
    is a running average over the epoch."""
    if running and "train_" in column:
        return column.split("train_")[0].replace("_", " ") + TRAIN_LOSS.replace(
            "loss", "loss" if column.endswith("loss") else "accuracy")
    words = {"train": "training", "val": "validation", "acc": "accuracy"}
    return " ".join(words.get(w, w) for w in column.split("_"))


def answers(trials: pd.DataFrame, epochs: pd.DataFrame, gradflow: pd.DataFrame,
            metric: str = "val_acc", mode: str = "max", epochs_budget: int = 10,
            space: dict | None = None, level: float = 0.95) -> dict:
    """Every question, as a JSON-serialisable dict: keys ranking, pairwise, depth, why,
    convergence, search (each {table name: records, "text": [sentences]}) and text (all sentences,
    in that order). NaN becomes None. Any of the frames may be empty."""
    return answers_with_frames(trials, epochs, gradflow, metric, mode, epochs_budget, space, level)[0]


def answers_with_frames(trials: pd.DataFrame, epochs: pd.DataFrame, gradflow: pd.DataFrame,
                        metric: str = "val_acc", mode: str = "max", epochs_budget: int = 10,
                        space: dict | None = None, level: float = 0.95) -> tuple[dict, dict]:
    """(answers() of the tables, the frames behind the figures: ranking, importances,
    generalisation_gap (per arm and epoch) and gradient_profile (completed trials only))."""
    rank = ranking(trials, metric, mode, level)
    flags = budget.undertrained(trials, epochs, metric)
    parts = {"budget": _budget(flags),
             "ranking": _ranking(rank, trials, metric, mode, level),
             "pairwise": _pairwise(trials, metric, mode, level, rank["arm"].tolist(), flags),
             "depth": _depth(trials, metric, level, flags),
             "why": _why(trials, gradflow, metric, mode, level, flags),
             "convergence": _convergence(epochs, metric, level),
             "search": _search(trials, metric, mode, epochs_budget, space or {})}
    frames = {"ranking": rank, "importances": parts["search"]["importances"],
              "generalisation_gap": parts["convergence"].pop("_gap"),
              "gradient_profile": parts["why"].pop("_profile")}
    out = {key: {name: records(v) if isinstance(v, pd.DataFrame) else v for name, v in part.items()}
           for key, part in parts.items()}
    out["text"] = [t for part in out.values() for t in part["text"]]
    return jsonable(out), frames


# ---- 0. budget -------------------------------------------------------------------------------------
def _budget(flags: pd.DataFrame) -> dict:
    if flags.empty:
        return {"undertrained": flags, "text": []}
    bad = flags[flags["undertrained"]]
    if bad.empty:
        return {"undertrained": flags, "text": [
            f"Every arm trained: none is near chance (validation accuracy below "
            f"{num(flags['chance'].iloc[0] + budget.CHANCE_MARGIN * (1 - flags['chance'].iloc[0]))}) "
            "or still improving steeply at its last epoch in every seed."]}
    return {"undertrained": flags, "text": [
        f"Not trained within the budget: " + "; ".join(f"{r.arm} ({r.reason})" for r in bad.itertuples())
        + ". Depth and pair verdicts involving these arms are budget-limited: they measure how far "
        "each arm got in the epochs given, not an architecture effect (more epochs, data or a "
        "schedule that fits the budget would change them)."]}


def _limited(arms: list) -> str:
    return (f" Budget-limited: {', '.join(arms)} did not train within the budget, so this is not an "
            "architecture effect." if arms else "")


# ---- 1. ranking ------------------------------------------------------------------------------------
def _ranking(table, trials, metric: str, mode: str, level: float) -> dict:
    scored = table[table["n"] > 0]
    if scored.empty:
        why = unconfirmed(trials, metric)
        return {"ranking": table, "text": [f"No completed confirmation trials: nothing to rank on "
                                           f"{metric}" + (f" ({why})." if why else ".")]}
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
    lost = left_out(trials, "confirm", (f"final_{metric}",))
    if lost:
        text.append(f"Left out: confirmation trials that did not complete or have no final {metric} "
                    f"({left_out_text(lost)}).")
    tested = scored[scored["test_mean"].notna()]
    if len(tested):
        text.append(f"On the test split ({test_column(metric)}): " + "; ".join(
            f"{r.arm} {num(r.test_mean)} ({ci(r.test_ci_lo, r.test_ci_hi, level)})"
            for r in tested.itertuples()) + ".")
    return {"ranking": table, "text": text}


def _pairwise(trials, metric: str, mode: str, level: float, order: list, flags) -> dict:
    table = budget.mark(pairwise(trials, metric, mode, level, order=order), ("arm_a", "arm_b"), flags)
    if table.empty:
        arms, why = rows(trials)["arm"].nunique(), unconfirmed(trials, metric)
        return {"pairwise": table, "text": ["Fewer than two arms: no pairs to compare." if arms < 2 else
                                            f"No pairs to compare: {len(order)} of the {arms} arms have "
                                            f"confirmation runs ({why})."]}
    counts = table["verdict"].value_counts()
    decided = table[table["verdict"].isin(["a better", "b better"])]
    alpha = 1 - level
    text = [f"Of {len(table)} pairs of arms, {len(decided)} differ beyond seed noise (Welch's t-test, "
            f"Holm-adjusted over the {int(table['p'].notna().sum())} pairs tested: adjusted "
            f"p < {alpha:.2g}), {counts.get('tied', 0)} are tied and "
            f"{counts.get('too few seeds', 0)} have too few seeds to tell. \"Tied\" in the ranking "
            f"means overlapping {level:.0%} intervals (conservative); these pairwise verdicts use "
            "Holm-adjusted Welch tests, so a pair can differ here and still share a rank there."]
    for r in decided.itertuples():
        win, lose = (r.arm_a, r.arm_b) if r.verdict == "a better" else (r.arm_b, r.arm_a)
        text.append(f"{win} beats {lose} on {metric}: difference {num(abs(r.diff))} "
                    f"({ci(r.diff_ci_lo, r.diff_ci_hi, level)} for {r.arm_a} - {r.arm_b}, {pval(r.p)}, "
                    f"Holm-adjusted {pval(r.p_holm)}, Hedges' g {num(r.hedges_g, 2)})."
                    + _limited(r.budget_limited))
    return {"pairwise": table, "text": text}


# ---- 2. depth --------------------------------------------------------------------------------------
def _depth(trials, metric: str, level: float, flags) -> dict:
    columns = list(dict.fromkeys(["final_train_loss", f"final_{metric}"]))
    trend = budget.mark(pd.concat([depth_trend(trials, c, level).assign(column=c) for c in columns]),
                        ("arms",), flags)
    pairs = budget.mark(pd.concat([matched_pairs(trials, c, level).assign(column=c) for c in columns]),
                        ("plain_arm", "residual_arm"), flags)
    gap = pd.concat([degradation_gap(trials, c, level).assign(column=c) for c in columns])
    gap = budget.mark(gap.assign(arms=[_gap_arms(pairs, r) for _, r in gap.iterrows()]), ("arms",), flags)
    confirm = _depth_arms(trials)
    lost = left_out(trials, "confirm", tuple(columns), confirm)
    lost_text = (f"Left out of the depth analysis: plain and residual confirmation runs that did not "
                 f"complete or lack a value ({left_out_text(lost)}).") if lost else None
    if trend.empty:
        why = ("No plain or residual arms: depth is not studied." if not confirm else
               "No completed confirmation runs of plain or residual arms: depth cannot be studied "
               "(missing data, not a null result).")
        return {"depth_trend": trend, "text": [why] + ([lost_text] if lost_text else [])}
    several = trend["study"].nunique() > 1
    text = [_trend_text(r, level, several) for r in trend.itertuples()]
    if (trend["n_depths"] < 2).all():
        text.append("No line of plain or residual arms has completed runs at 2 or more depths: no "
                    "depth trend can be estimated (missing data, not a null result).")
    text += [f"At depth {r.depth}, {r.plain_arm} vs {r.residual_arm} on {label(r.column)}: "
             f"{num(r.plain_mean)} vs {num(r.residual_mean)} (difference {num(r.diff)}, "
             f"{ci(r.diff_ci_lo, r.diff_ci_hi, level)}, {pval(r.p)}): {r.verdict}."
             + _limited(r.budget_limited) for r in pairs.itertuples()]
    text += [_gap_text(r, level) for r in gap.itertuples()]
    if pairs.empty:
        text.append("No plain and residual arms share a depth: no matched comparison of skip connections.")
    if lost_text:
        text.append(lost_text)
    return {"depth_trend": trend, "matched_pairs": pairs, "degradation_gap": gap, "text": text}


def _gap_arms(pairs: pd.DataFrame, gap_row) -> list:
    """The matched arms behind one degradation_gap row (same study, BatchNorm, width and column)."""
    same = pairs[(pairs["study"] == gap_row["study"]) & (pairs["batchnorm"] == gap_row["batchnorm"])
                 & (pairs["column"] == gap_row["column"])
                 & ((pairs["width"] == gap_row["width"]) | (pairs["width"].isna() & pd.isna(gap_row["width"])))]
    return list(dict.fromkeys([*same["plain_arm"], *same["residual_arm"]]))


def _depth_arms(trials) -> set:
    """The plain and residual arms of the confirmation phase, completed or not."""
    confirm = rows(trials, phase="confirm", need=("family",))
    return set(confirm.loc[confirm["family"].isin(["plain", "residual"]), "arm"])


def _trend_text(r, level: float, several: bool) -> str:
    name = (f"{r.study}: " if several else "") + line_name(r.family, r.series)
    head = f"{name} ({', '.join(map(str, r.arms))}): {label(r.column, running=True)}"
    if r.verdict == "too few depths to tell":
        return f"{head}: too few depths to tell ({r.n_depths} depth(s), {r.n_runs} run(s))."
    if r.verdict == "too few seeds to tell":
        return (f"{head}: too few seeds to tell ({r.n_replicated_depths} of {r.n_depths} depths have "
                f"2 or more runs; a trend needs 2 such depths).")
    if r.budget_limited:
        return (f"{head} changes by {r.slope:+.3g} per layer ({ci(r.ci_lo, r.ci_hi, level)}): "
                f"{r.verdict}, but budget-limited: {', '.join(r.budget_limited)} did not train within "
                "the budget, so this is not an architecture effect.")
    return (f"{head} changes by {r.slope:+.3g} per layer ({ci(r.ci_lo, r.ci_hi, level)}, "
            f"{pval(r.p)}, {r.n_runs} runs): {r.verdict}.")


def _gap_text(r, level: float) -> str:
    depths = ", ".join(map(str, r.depths))
    if r.verdict.startswith("too few"):
        return (f"Plain vs residual trend in {label(r.column, running=True)} (matched depths {depths}, "
                f"{r.n_replicated_depths} with 2 or more runs per family): {r.verdict}.")
    return (f"Plain vs residual trend in {label(r.column, running=True)} over matched depths "
            f"{depths}: plain {r.plain_slope:+.3g} vs residual {r.residual_slope:+.3g} per layer "
            f"(difference {r.diff:+.3g}, {ci(r.ci_lo, r.ci_hi, level)}, {pval(r.p)}): {r.verdict}."
            + _limited(r.budget_limited))


# ---- 3. why ----------------------------------------------------------------------------------------
def _why(trials, gradflow, metric: str, mode: str, level: float, flags) -> dict:
    att = attenuation(gradflow, "confirm", level, trials)
    found = diagnose(trials, gradflow, metric, mode, level)
    limited = {}   # a degradation's sentence -> the same with its budget caveat
    for entry in found["degradations"]:
        entry["budget_limited"] = budget.flagged_in([entry["arm"], entry["reference"]], flags)
        old = entry["text"]
        entry["text"] = limited[old] = old + _limited(entry["budget_limited"])
    text = [limited.get(t, t) for t in found["text"]]
    recorded = gradflow is not None and not gradflow.empty and "phase" in gradflow \
        and (gradflow["phase"] == "confirm").any()
    if att.empty:
        text.append("Gradient flow was recorded for no completed confirmation run, so vanishing "
                    "gradients can be neither claimed nor ruled out." if recorded else
                    "Gradient flow was not recorded for the confirmation runs, so vanishing "
                    "gradients can be neither claimed nor ruled out.")
    else:
        vanish, explode = att[att["vanishing"]], att[att["exploding"]]
        text.append("Completed confirmation runs only: gradients vanish (first/last-layer "
                    f"gradient-norm ratio below {sci(VANISHING_RATIO)} in every seed) in: "
                    f"{', '.join(vanish['arm']) or 'no arm'}; they explode towards the input (ratio "
                    f"above {sci(EXPLODING_RATIO)} in every seed) in: {', '.join(explode['arm']) or 'no arm'}; "
                    "first/last ratio at the first epoch, geometric mean over seeds: "
                    + "; ".join(f"{r.arm} {num(r.ratio_first)}" for r in att.itertuples()) + ".")
    return {"attenuation": att, "degradations": found["degradations"],
            "batchnorm": found["batchnorm"], "text": text,
            "_profile": gradient_profile(gradflow, "confirm", trials)}


# ---- 4. convergence --------------------------------------------------------------------------------
def _convergence(epochs, metric: str, level: float) -> dict:
    gap = generalisation_gap(epochs)
    if gap.empty:
        return {"text": ["No completed confirmation epochs: nothing to say about convergence."], "_gap": gap}
    reach = epochs_to_fraction(epochs, 0.95, metric, "confirm", level)
    final = final_gap(epochs, "confirm", level)
    text = [f"Epochs to reach 95% of the final {metric} (median over seeds, range min-max; "
            "censored: reached only at the last epoch, so still improving): "
            + "; ".join(_reach_text(r) for r in reach.itertuples()) + ".",
            "Generalisation gap at the last epoch (training minus validation accuracy per seed, "
            f"mean with its {level:.0%} CI; training accuracy is a running average over the epoch): "
            + "; ".join(f"{r.arm} {num(r.acc_gap)} ({ci(r.acc_gap_ci_lo, r.acc_gap_ci_hi, level)}, "
                        f"epoch {r.epoch}, n={r.n})" for r in final.itertuples()) + "."]
    return {"epochs_to_fraction": reach, "final_generalisation_gap": final, "text": text, "_gap": gap}


def _reach_text(r) -> str:
    out = f"{r.arm} {num(r.epochs_median)} ({num(r.epochs_min)}-{num(r.epochs_max)}, n={r.n}"
    if r.censored:
        return out + ", censored in every seed)"
    return out + (f", {r.n_censored} of {r.n} seeds censored)" if r.n_censored else ")")


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
                    f"every trial to its study's full budget); {savings['pruned'].sum()} of "
                    f"{savings['trials'].sum()} trials were stopped early, "
                    f"{savings['diverged'].sum()} diverged, {savings['error'].sum()} failed.")
        text += [_importance_text(arm, g) for arm, g in imp.groupby("arm", sort=False)]
        if space:
            text += [_no_importance_text(r) for r in best.itertuples() if r.arm not in set(imp["arm"])]
    for phase, g in cost.groupby("phase", sort=False):
        text.append(f"Cost of the {phase} phase: {len(g)} arm(s), {g['trials'].sum()} trials, "
                    f"{num(g['epochs'].sum())} epochs, {num(g['wall_seconds'].sum())} s wall, "
                    f"{num(g['reserved_cpu_seconds'].sum())} reserved CPU-s, "
                    f"{num(g['reserved_gpu_seconds'].sum())} reserved GPU-s (wall time x the CPUs "
                    "and GPUs reserved per trial, not measured use).")
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
    return (f"{arm}: {top['param']} matters most for the search score (fANOVA importance "
            f"{top['importance']:.2f} of 1, from {int(top['n_trials'])} completed trials).")


def _no_importance_text(r) -> str:
    if r.n_completed < MIN_TRIALS_FOR_IMPORTANCE:
        return (f"{r.arm}: only {r.n_completed} completed search trial(s), too few (under "
                f"{MIN_TRIALS_FOR_IMPORTANCE}) to say which hyperparameter matters; no importance "
                "is computed or shown.")
    return (f"{r.arm}: no hyperparameter importance ({r.n_completed} completed search trials, but no "
            "searched parameter varied or every score was the same).")
