"""The study's five questions, answered from its tables: DataFrames in, DataFrames or dicts out.

    from analysis import questions
    result = questions.answers(trials, epochs, gradflow, metric="val_acc", mode="max",
                               epochs_budget=10, space={"lr": ("loguniform", [0.003, 0.3])})
    result["text"]                 # every verdict in words, with its numbers
    result["depth"]["depth_trend"] # the records behind them, section by section

1. ranking: which arm is best, beyond seed noise?        ranking, pairwise, selection_split
                                                         (ranking.py)
2. depth: does depth hurt plain nets more than residual? depth_trend, matched_pairs,
                                                         degradation_gap, holm_differs (depth.py)
3. why: vanishing gradients, optimisation or generalisation?  gradient_profile, attenuation,
                                                         diagnose (why.py)
4. convergence: how fast, and how far apart train and val? generalisation_gap, final_gap,
                                                         epochs_to_fraction (convergence.py)
5. search: what was found, what mattered, what it cost?   best_configs, asha_savings, importances,
                                                         costs (importance.py)
   (gradient_profile and attenuation live in attenuation.py)
6. evidence beyond one search: P(A > B) seed for seed,  prob_better_table, expected_best_table
   the expected best against the search budget,          (evidence.py), space_audit
   the search space's audit                               (space_audit.py)

This module re-exports those functions and adds results(), which runs them all: numbers, verdict
codes and flags, section by section. answers() hands those to analysis.sentences, the one module
that words them, and returns both as JSON-safe records (answers_with_frames() also hands back the
frames behind the figures, so that nothing is computed twice).

Tests: .venv/bin/python -m pytest tests/test_analysis_questions.py (and test_analysis_stats.py,
test_analysis_budget.py, test_analysis_headline.py)
"""
from __future__ import annotations

import pandas as pd

from . import budget, sentences, space_audit
from .common import jsonable, left_out, records, rows, unconfirmed_arms
from .convergence import epochs_to_fraction, final_gap, generalisation_gap
from .depth import degradation_gap, depth_trend, holm_differs, matched_pairs
from .evidence import expected_best_table, prob_better_table
from .ranking import pairwise, ranking, selection_split
from .importance import MIN_TRIALS_FOR_IMPORTANCE, asha_savings, best_configs, costs, importances
from .why import attenuation, diagnose, gradient_profile

__all__ = ["answers", "answers_with_frames", "results", "ranking", "pairwise", "selection_split",
           "depth_trend", "matched_pairs", "degradation_gap", "holm_differs", "gradient_profile",
           "attenuation", "diagnose", "generalisation_gap", "final_gap", "epochs_to_fraction",
           "best_configs", "asha_savings", "importances", "costs", "MIN_TRIALS_FOR_IMPORTANCE"]

# The tables of each section that answers.json holds, in order; the rest of a section's results are
# facts for its sentences (counts, what was left out) or frames for the figures.
TABLES = {"budget": ("undertrained",), "ranking": ("ranking",), "pairwise": ("pairwise",),
          "depth": ("depth_trend", "matched_pairs", "degradation_gap"),
          "why": ("attenuation", "degradations", "batchnorm"),
          "convergence": ("epochs_to_fraction", "final_generalisation_gap"),
          "search": ("best_configs", "asha_savings", "importances", "costs"),
          "evidence": ("prob_better", "expected_best", "space_audit")}


def answers(trials: pd.DataFrame, epochs: pd.DataFrame, gradflow: pd.DataFrame,
            metric: str = "val_acc", mode: str = "max", epochs_budget: int = 10,
            space: dict | None = None, level: float = 0.95) -> dict:
    """Every question, as a JSON-serialisable dict: keys budget, ranking, pairwise, depth, why,
    convergence, search, evidence (each {table name: records, "text": [sentences]}) and text (all sentences,
    in that order). NaN becomes None. Any of the frames may be empty; the columns each needs are
    those of the functions listed in the module docstring."""
    return answers_with_frames(trials, epochs, gradflow, metric, mode, epochs_budget, space, level)[0]


def answers_with_frames(trials: pd.DataFrame, epochs: pd.DataFrame, gradflow: pd.DataFrame,
                        metric: str = "val_acc", mode: str = "max", epochs_budget: int = 10,
                        space: dict | None = None, level: float = 0.95) -> tuple[dict, dict]:
    """(answers() of the tables, the frames behind the figures: ranking, importances,
    generalisation_gap (per arm and epoch), gradient_profile (completed trials only), and the
    evidence tables prob_better, expected_best and space_audit)."""
    found = results(trials, epochs, gradflow, metric, mode, epochs_budget, space, level)
    words = sentences.words(found, metric, mode, level)
    out = {}
    for key, names in TABLES.items():
        part = {name: found[key][name] for name in names if name in found[key]}
        part.update(words[key])   # tables with a column of words replace theirs; "text" comes last
        out[key] = {name: records(v) if isinstance(v, pd.DataFrame) else v for name, v in part.items()}
    out["text"] = [t for part in out.values() for t in part["text"]]
    frames = {"ranking": found["ranking"]["ranking"], "importances": found["search"]["importances"],
              "generalisation_gap": found["convergence"]["generalisation_gap"],
              "gradient_profile": found["why"]["gradient_profile"],
              **{name: found["evidence"][name] for name in TABLES["evidence"]}}
    return jsonable(out), frames


def results(trials: pd.DataFrame, epochs: pd.DataFrame, gradflow: pd.DataFrame,
            metric: str = "val_acc", mode: str = "max", epochs_budget: int = 10,
            space: dict | None = None, level: float = 0.95) -> dict:
    """Every question's numbers, no words: {section: {name: DataFrame, list of dicts or value}}
    for the sections budget, ranking, pairwise, depth, why, convergence, search and evidence. The
    tables of answers.json (TABLES) carry a `budget_limited` column (the under-trained arms they
    involve, see budget.py) where an arm's training could explain a verdict, and the ranking,
    pairwise and depth tables an `under_searched` one (the ranking's a flag, the others the arms
    whose search completed fewer than space_audit.MIN_COMPLETED trials); the other names are facts for
    analysis.sentences: "unconfirmed" (common.unconfirmed_arms), "left_out" (common.left_out),
    counts of arms, runs and lines, the ranking's "selection" (ranking.selection_split: is the
    metric the one the search chose by), the depth section's "holm_differs" (depth.holm_differs:
    pairs its single tests and the Holm-adjusted pairwise table decide differently) and
    "pairs_tested" (the pairwise table's Holm family), and the frames behind the figures
    (gradient_profile, generalisation_gap). Needs the columns of the functions listed in the module
    docstring."""
    audit = space_audit.space_audit(trials, space or {}, metric, mode)
    thin = space_audit.under_searched(audit)   # their verdicts get an `under_searched` mark
    rank = ranking(trials, metric, mode, level)
    rank["under_searched"] = rank["arm"].isin(thin)
    flags = budget.undertrained(trials, epochs, metric)
    missing = unconfirmed_arms(trials, metric)
    pairs = budget.mark(pairwise(trials, metric, mode, level, order=rank["arm"].tolist()),
                        ("arm_a", "arm_b"), flags)
    evidence = {"prob_better": prob_better_table(trials, metric, mode, level, rank["arm"].tolist(), pairs),
                "expected_best": expected_best_table(trials, metric, mode), "space_audit": audit,
                "space": space or {}}
    pairs = space_audit.mark(pairs, ("arm_a", "arm_b"), thin)
    depth = _depth(trials, metric, level, flags, thin)
    why = _why(trials, gradflow, metric, mode, level, flags)
    # depth and why test single comparisons, the pairwise table is Holm-adjusted: where they differ
    depth["holm_differs"] = holm_differs(depth["depth_trend"], depth.get("matched_pairs", pd.DataFrame()),
                                         why["degradations"], pairs, f"final_{metric}")
    depth["pairs_tested"] = int(pairs["p"].notna().sum())
    return {"budget": {"undertrained": flags},
            "ranking": {"ranking": rank, "unconfirmed": missing,
                        "left_out": left_out(trials, "confirm", (f"final_{metric}",)),
                        "selection": selection_split(trials, metric)},
            "pairwise": {"pairwise": pairs, "unconfirmed": missing, "arms": rows(trials)["arm"].nunique(),
                         "arms_in_confirmation": len(rank)},
            "depth": depth, "why": why,
            "convergence": _convergence(epochs, metric, level),
            "search": {"best_configs": best_configs(trials, metric, mode),
                       "asha_savings": asha_savings(trials, epochs_budget),
                       "importances": importances(trials, space or {}, metric, mode),
                       "costs": costs(trials), "space": bool(space)},
            "evidence": evidence}


def _depth(trials, metric: str, level: float, flags, thin: list) -> dict:
    """Depth trend, matched pairs and degradation gap on the final training loss and the metric;
    the pairs and the gap only when some line has runs. Each table marks its budget-limited and
    its under-searched arms (`thin`)."""
    columns = list(dict.fromkeys(["final_train_loss", f"final_{metric}"]))
    trend = budget.mark(pd.concat([depth_trend(trials, c, level).assign(column=c) for c in columns]),
                        ("arms",), flags)
    trend = space_audit.mark(trend, ("arms",), thin)
    confirm = rows(trials, phase="confirm", need=("family",))
    arms = set(confirm.loc[confirm["family"].isin(["plain", "residual"]), "arm"])   # completed or not
    out = {"depth_trend": trend, "arms": len(arms),
           "left_out": left_out(trials, "confirm", tuple(columns), arms)}
    if trend.empty:
        return out
    pairs = budget.mark(pd.concat([matched_pairs(trials, c, level).assign(column=c) for c in columns]),
                        ("plain_arm", "residual_arm"), flags)
    pairs = space_audit.mark(pairs, ("plain_arm", "residual_arm"), thin)
    gap = pd.concat([degradation_gap(trials, c, level).assign(column=c) for c in columns])
    gap = budget.mark(gap.assign(arms=[_gap_arms(pairs, r) for _, r in gap.iterrows()]), ("arms",), flags)
    gap = space_audit.mark(gap, ("arms",), thin)
    return {**out, "matched_pairs": pairs, "degradation_gap": gap}


def _gap_arms(pairs: pd.DataFrame, gap_row) -> list:
    """The matched arms behind one degradation_gap row (same study, BatchNorm, width and column)."""
    same = pairs[(pairs["study"] == gap_row["study"]) & (pairs["batchnorm"] == gap_row["batchnorm"])
                 & (pairs["column"] == gap_row["column"])
                 & ((pairs["width"] == gap_row["width"]) | (pairs["width"].isna() & pd.isna(gap_row["width"])))]
    return list(dict.fromkeys([*same["plain_arm"], *same["residual_arm"]]))


def _why(trials, gradflow, metric: str, mode: str, level: float, flags) -> dict:
    """diagnose() with each degradation's budget-limited arms, attenuation, the gradient profile,
    and whether gradient flow was recorded for the confirmation phase at all."""
    found = diagnose(trials, gradflow, metric, mode, level)
    for entry in found["degradations"]:
        entry["budget_limited"] = budget.flagged_in([entry["arm"], entry["reference"]], flags)
    recorded = gradflow is not None and not gradflow.empty and "phase" in gradflow \
        and bool((gradflow["phase"] == "confirm").any())
    return {"attenuation": attenuation(gradflow, "confirm", level, trials), **found,
            "recorded": recorded, "gradient_profile": gradient_profile(gradflow, "confirm", trials)}


def _convergence(epochs, metric: str, level: float) -> dict:
    """The generalisation gap per arm and epoch (for the figure), and when there is one, the
    epochs to 95% of the final metric and the final gap per seed."""
    gap = generalisation_gap(epochs)
    if gap.empty:
        return {"generalisation_gap": gap}
    return {"generalisation_gap": gap,
            "epochs_to_fraction": epochs_to_fraction(epochs, 0.95, metric, "confirm"),
            "final_generalisation_gap": final_gap(epochs, "confirm", level)}
