"""The one module that puts the answers into words: questions.results() (numbers, verdict codes and
flags, section by section) in, sentences out; the ranking's, why's and evidence's sentences are
in sentences_ranking.py, sentences_why.py and sentences_evidence.py (called from here), to keep
files short. Each sentence makes only the claim its numbers support:
with too few seeds, depths or trials it says so instead, and missing data is never worded as a
null result.

    from analysis import questions, sentences
    found = questions.results(trials, epochs, gradflow, "val_acc", "max", 10, space)
    words = sentences.words(found, "val_acc", "max", 0.95)
    words["depth"]["text"]              # the depth question's sentences
    words["why"]["degradations"][0]     # a diagnosis with its own one-sentence "text"

Tests: .venv/bin/python -m pytest tests/test_analysis_questions.py (and test_analysis_stats.py,
test_analysis_budget.py)
"""
from __future__ import annotations

import pandas as pd

from .budget import CHANCE_MARGIN
from .common import ci, label, left_out_text, line_name, num, pval
from .importance import MIN_TRIALS_FOR_IMPORTANCE
from .sentences_evidence import evidence
from .sentences_ranking import limited as _limited, pairwise, ranking, thin as _thin
from .sentences_why import batchnorm, degradation, why

__all__ = ["words", "label", "reason", "budget", "ranking", "pairwise", "depth", "convergence",
           "search"]


def words(found: dict, metric: str = "val_acc", mode: str = "max", level: float = 0.95) -> dict:
    """{section: {"text": [sentences]}} for every section of questions.results(); the tables that
    gain words come too: budget "undertrained" with a `reason` column, why "degradations" and
    "batchnorm" with a `text` per entry."""
    flags = found["budget"]["undertrained"]
    degradations = [_with_text(e, degradation(e, level) + _limited(e["budget_limited"]))
                    for e in found["why"]["degradations"]]
    with_bn = [{**e, "text": batchnorm(e, level)} for e in found["why"]["batchnorm"]]
    return {"budget": {"undertrained": flags.assign(reason=[reason(r) for r in flags.itertuples()]),
                       "text": budget(flags)},
            "ranking": {"text": ranking(found["ranking"], metric, mode, level)},
            "pairwise": {"text": pairwise(found["pairwise"], metric, level)},
            "depth": {"text": depth(found["depth"], level, metric)},
            "why": {"degradations": degradations, "batchnorm": with_bn,
                    "text": why(found["why"], degradations, with_bn, metric)},
            "convergence": {"text": convergence(found["convergence"], metric, level)},
            "search": {"text": search(found["search"], metric)},
            "evidence": {"text": evidence(found["evidence"], metric, mode, level)}}


def _with_text(entry: dict, text: str) -> dict:
    """`entry` with its sentence as "text", before budget_limited (answers.json's order)."""
    rest = {k: v for k, v in entry.items() if k != "budget_limited"}
    return {**rest, "text": text, "budget_limited": entry["budget_limited"]}


# ---- 0. budget -------------------------------------------------------------------------------------
def reason(r) -> str:
    """Why an arm of budget.undertrained() is flagged, '' when it is not (one row, as a namedtuple)."""
    parts = []
    if r.near_chance:
        parts.append(f"validation accuracy {r.val_acc:.3g} is near chance ({r.chance:.2g})")
    if r.still_improving:
        parts.append(f"still improving steeply at the last epoch in all {r.n_censored} seeds")
    return "; ".join(parts)


def budget(flags: pd.DataFrame) -> list[str]:
    """Which arms did not train, from budget.undertrained()'s table (no sentence when it is empty)."""
    if flags.empty:
        return []
    bad = flags[flags["undertrained"]]
    if bad.empty:
        chance = flags["chance"].iloc[0]
        return [f"Every arm trained: none is near chance (validation accuracy below "
                f"{num(chance + CHANCE_MARGIN * (1 - chance))}) "
                "or still improving steeply at its last epoch in every seed."]
    return ["Not trained within the budget: " + "; ".join(f"{r.arm} ({reason(r)})" for r in bad.itertuples())
            + ". Depth and pair verdicts involving these arms are budget-limited: they measure how far "
            "each arm got in the epochs given, not an architecture effect (more epochs, data or a "
            "schedule that fits the budget would change them)."]


# ---- 2. depth --------------------------------------------------------------------------------------
def depth(found: dict, level: float, metric: str = "val_acc") -> list[str]:
    """The depth section of questions.results(): depth_trend, matched_pairs and degradation_gap
    (depth.py, with a `column` and budget_limited), the plain and residual arms counted (arms),
    the runs left out (left_out), and holm_differs and pairs_tested (how its single tests relate
    to the Holm-adjusted pairwise table)."""
    trend, lost = found["depth_trend"], found["left_out"]
    lost_text = [f"Left out of the depth analysis: plain and residual confirmation runs that did not "
                 f"complete or lack a value ({left_out_text(lost)})."] if lost else []
    if trend.empty:
        return ["No plain or residual arms: depth is not studied." if not found["arms"] else
                "No completed confirmation runs of plain or residual arms: depth cannot be studied "
                "(missing data, not a null result)."] + lost_text
    pairs, gap = found["matched_pairs"], found["degradation_gap"]
    several = trend["study"].nunique() > 1
    text = [_trend(r, level, several) + _thin(r) for r in trend.itertuples()]
    if (trend["n_depths"] < 2).all():
        text.append("No line of plain or residual arms has completed runs at 2 or more depths: no "
                    "depth trend can be estimated (missing data, not a null result).")
    text += [f"At depth {r.depth}, {r.plain_arm} vs {r.residual_arm} on {label(r.column)}: "
             f"{num(r.plain_mean)} vs {num(r.residual_mean)} (difference {num(r.diff)}, "
             f"{ci(r.diff_ci_lo, r.diff_ci_hi, level)}, {pval(r.p)}): {r.verdict}."
             + _limited(r.budget_limited) + _thin(r) for r in pairs.itertuples()]
    text += [_degradation_gap(r, level) + _thin(r) for r in gap.itertuples()]
    if pairs.empty:
        text.append("No plain and residual arms share a depth: no matched comparison of skip connections.")
    decided = (trend["verdict"].isin(["degrades", "improves"]).any()
               or pairs["verdict"].isin(["plain better", "residual better"]).any()
               or gap["verdict"].str.contains("degrades more").any())
    if found.get("pairs_tested", 0) > 1 and (decided or len(found["holm_differs"])):
        text.append(_unadjusted(found["holm_differs"], found["pairs_tested"], level, metric))
    return text + lost_text


def _unadjusted(differs: pd.DataFrame, tested: int, level: float, metric: str) -> str:
    """The depth and why tests are single comparisons; the pairwise table is Holm-adjusted over
    every pair (depth.holm_differs names the pairs this makes differ)."""
    text = (f"These depth verdicts, like the why diagnoses, each test one planned comparison at "
            f"{level:.0%} (a line's slope, a matched pair, a deeper arm against a shallower one), not "
            f"adjusted for the {tested} pairs that the ranking's pairwise table Holm-adjusts over, so "
            "a pair can differ here and be tied there")
    tied = differs["pairwise_verdict"] == "tied"
    if tied.any():
        text += f": on {metric}, {_named(differs[tied])} differ here but are tied in the pairwise table"
    if (~tied).any():
        text += (f"{';' if tied.any() else ':'} on {metric}, {_named(differs[~tied])} are tied here but "
                 "differ in the pairwise table")
    return text + "."


def _named(differs: pd.DataFrame) -> str:
    """'a vs b (depth trend, why), c vs d (matched pair)' from depth.holm_differs() rows."""
    return ", ".join(f"{r.arm_a} vs {r.arm_b} ({', '.join(r.sources)})" for r in differs.itertuples())


def _trend(r, level: float, several: bool) -> str:
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


def _degradation_gap(r, level: float) -> str:
    depths = ", ".join(map(str, r.depths))
    if r.verdict.startswith("too few"):
        return (f"Plain vs residual trend in {label(r.column, running=True)} (matched depths {depths}, "
                f"{r.n_replicated_depths} with 2 or more runs per family): {r.verdict}.")
    return (f"Plain vs residual trend in {label(r.column, running=True)} over matched depths "
            f"{depths}: plain {r.plain_slope:+.3g} vs residual {r.residual_slope:+.3g} per layer "
            f"(difference {r.diff:+.3g}, {ci(r.ci_lo, r.ci_hi, level)}, {pval(r.p)}): {r.verdict}."
            + _limited(r.budget_limited))


# ---- 4. convergence --------------------------------------------------------------------------------
def convergence(found: dict, metric: str, level: float) -> list[str]:
    """The convergence section of questions.results(): epochs_to_fraction and
    final_generalisation_gap (convergence.py), absent when no confirmation run completed."""
    if "epochs_to_fraction" not in found:
        return ["No completed confirmation epochs: nothing to say about convergence."]
    return [f"Epochs to reach 95% of the final {metric} (median over seeds, range min-max; "
            "censored: reached only at the last epoch, so still improving): "
            + "; ".join(_reach(r) for r in found["epochs_to_fraction"].itertuples()) + ".",
            "Generalisation gap at the last epoch (training minus validation accuracy per seed, "
            f"mean with its {level:.0%} CI; training accuracy is a running average over the epoch): "
            + "; ".join(f"{r.arm} {num(r.acc_gap)} ({ci(r.acc_gap_ci_lo, r.acc_gap_ci_hi, level)}, "
                        f"epoch {r.epoch}, n={r.n})" for r in found["final_generalisation_gap"].itertuples())
            + "."]


def _reach(r) -> str:
    out = f"{r.arm} {num(r.epochs_median)} ({num(r.epochs_min)}-{num(r.epochs_max)}, n={r.n}"
    if r.all_censored:
        return out + ", censored in every seed)"
    return out + (f", {r.n_censored} of {r.n} seeds censored)" if r.n_censored else ")")


# ---- 5. search -------------------------------------------------------------------------------------
def search(found: dict, metric: str) -> list[str]:
    """The search section of questions.results(): best_configs, asha_savings, importances and
    costs (importance.py), and whether a search space was given (space)."""
    best, savings, imp, cost = (found[k] for k in ("best_configs", "asha_savings", "importances", "costs"))
    if best.empty:
        text = ["No search trials."]
    else:
        text = [_best(r, metric) for r in best.to_dict("records")]
        used, full = savings["epochs_used"].sum(), savings["full_budget"].sum()
        text.append(f"The search ran {num(used)} of {num(full)} epochs ({used / full:.0%} of running "
                    f"every trial to its study's full budget); {savings['pruned'].sum()} of "
                    f"{savings['trials'].sum()} trials were stopped early, "
                    f"{savings['diverged'].sum()} diverged, {savings['error'].sum()} failed.")
        text += [_importance(arm, g) for arm, g in imp.groupby("arm", sort=False)]
        if found["space"]:
            text += [_no_importance(r) for r in best.itertuples() if r.arm not in set(imp["arm"])]
    for phase, g in cost.groupby("phase", sort=False):
        text.append(f"Cost of the {phase} phase: {len(g)} arm(s), {g['trials'].sum()} trials, "
                    f"{num(g['epochs'].sum())} epochs, {num(g['wall_seconds'].sum())} s wall, "
                    f"{num(g['reserved_cpu_seconds'].sum())} reserved CPU-s, "
                    f"{num(g['reserved_gpu_seconds'].sum())} reserved GPU-s (wall time x the CPUs "
                    "and GPUs reserved per trial, not measured use).")
    return text


def _best(r: dict, metric: str) -> str:
    if not r["n_completed"]:
        return f"{r['arm']}: no completed search trial, so no best configuration."
    params = ", ".join(f"{k[len('param_'):]}={v:.3g}" if isinstance(v, float) else f"{k[len('param_'):]}={v}"
                       for k, v in r.items() if k.startswith("param_"))
    return (f"{r['arm']}: best completed search trial has final {metric} {num(r['score'])}"
            f"{' with ' + params if params else ''} (of {r['n_completed']} completed).")


def _importance(arm: str, g: pd.DataFrame) -> str:
    top = g.sort_values("importance", ascending=False).iloc[0]
    return (f"{arm}: {top['param']} matters most for the search score (fANOVA importance "
            f"{top['importance']:.2f} of 1, from {int(top['n_trials'])} completed trials).")


def _no_importance(r) -> str:
    if r.n_completed < MIN_TRIALS_FOR_IMPORTANCE:
        return (f"{r.arm}: only {r.n_completed} completed search trial(s), too few (under "
                f"{MIN_TRIALS_FOR_IMPORTANCE}) to say which hyperparameter matters; no importance "
                "is computed or shown.")
    return (f"{r.arm}: no hyperparameter importance ({r.n_completed} completed search trials, but no "
            "searched parameter varied or every score was the same).")
