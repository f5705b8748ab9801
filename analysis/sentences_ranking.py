"""The ranking question's sentences (see sentences.py, which calls them): the ranking and the
pairwise tests of questions.results() in words, and the notes that every verdict sentence adds for
budget-limited and under-searched arms (limited, thin; the depth sentences use them too).

Tests: .venv/bin/python -m pytest tests/test_analysis_questions.py (and test_analysis_stats.py)
"""
from __future__ import annotations

import pandas as pd

from .common import ci, label, left_out_text, num, pval, test_column, unconfirmed_text
from .sentences_evidence import under_searched_note


def limited(arms: list) -> str:
    """The budget note of a verdict that involves under-trained `arms` ('' if none)."""
    return (f" Budget-limited: {', '.join(arms)} did not train within the budget, so this is not an "
            "architecture effect." if arms else "")


def thin(row) -> str:
    """The under-searched note of a table row (its `under_searched` arms; none without the column,
    nor for a 'too few ...' verdict, which claims nothing)."""
    if str(getattr(row, "verdict", "")).startswith("too few"):
        return ""
    return under_searched_note(getattr(row, "under_searched", None) or [])


def ranking(found: dict, metric: str, mode: str, level: float) -> list[str]:
    """The ranking section of questions.results(): the ranking table (ranking.ranking()), the
    arms without a result (unconfirmed), the runs left out (left_out) and whether the metric is
    the one the search chose configurations by (selection, ranking.selection_split())."""
    table = found["ranking"]
    scored = table[table["n"] > 0]
    if scored.empty:
        missing = unconfirmed_text(found["unconfirmed"])
        return [f"No completed confirmation trials: nothing to rank on {metric}"
                + (f" ({missing})." if missing else ".")]
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
        text.append(_shared_top(scored, level))
    thin = scored[scored["under_searched"]] if "under_searched" in scored else scored.iloc[:0]
    if len(thin):
        text.append(under_searched_note(list(thin["arm"])).strip())
    if found["left_out"]:
        text.append(f"Left out: confirmation trials that did not complete or have no final {metric} "
                    f"({left_out_text(found['left_out'])}).")
    tested = scored[scored["test_mean"].notna()]
    if len(tested) and found["selection"]["searched"]:
        text.append(_selection_bias(found["selection"], metric))
    if len(tested):
        text.append(f"On the test split ({test_column(metric)}): " + "; ".join(
            f"{r.arm} {num(r.test_mean)} ({ci(r.test_ci_lo, r.test_ci_hi, level)})"
            for r in tested.itertuples()) + ".")
    return text


def _selection_bias(selection: dict, metric: str) -> str:
    """The ranking's metric is what the search chose configurations by (ranking.selection_split);
    the test metric is not."""
    k, n, where = selection["on_search_split"], selection["runs"], ""
    if metric.startswith("val_") and k is not None and n:
        where = (" on the same validation split that every confirmation run here is scored on "
                 "(`split: fixed`)" if k == n else
                 f" on a validation split that {k} of the {n} confirmation runs here are scored on"
                 if k else " on another split of the same training and validation data")
    biased = "may be" if k == 0 and where else "are"   # another split: the bias is not certain
    return (f"The search chose each arm's configuration by its final {metric}{where}, so these "
            f"{metric} values {biased} optimistically biased; the test split took no part in the "
            f"choice, so the test values ({test_column(metric)}, the test_mean column) are not.")


def _shared_top(scored: pd.DataFrame, level: float) -> str:
    """The best arm's overlaps and the arms of rank 1, as the ranking table's columns give them:
    overlap is not transitive, so an arm can overlap the best arm yet rank lower."""
    best = scored.iloc[0]
    top = scored.loc[scored["rank"] == 1, "arm"].tolist()
    text = (f"{best.arm} has the best mean, but its {level:.0%} interval overlaps "
            f"{', '.join(best['tied_with'])}. By the table's rank (1 + the number of arms whose "
            "interval lies wholly above an arm's), "
            + (f"{', '.join(top)} share rank 1" if len(top) > 1 else f"{best.arm} alone has rank 1"))
    lower = scored[scored["arm"].isin(best["tied_with"]) & (scored["rank"] > 1)]
    for r in lower.itertuples():
        above = [a for a in scored["arm"].iloc[:r.position - 1] if a not in r.tied_with]
        text += (f"; {r.arm} overlaps {best.arm} yet ranks {r.rank}, as {', '.join(above)} "
                 f"lie{'s' if len(above) == 1 else ''} wholly above it")
    return text + (" (overlapping intervals are not transitive)." if len(lower) else ".")


def pairwise(found: dict, metric: str, level: float) -> list[str]:
    """The pairwise section of questions.results(): the pairwise table (ranking.pairwise(), with
    budget_limited), the arms counted (arms, arms_in_confirmation) and those without a result."""
    table = found["pairwise"]
    if table.empty:
        return ["Fewer than two arms: no pairs to compare." if found["arms"] < 2 else
                f"No pairs to compare: {found['arms_in_confirmation']} of the {found['arms']} arms have "
                f"confirmation runs ({unconfirmed_text(found['unconfirmed'])})."]
    counts = table["verdict"].value_counts()
    decided = table[table["verdict"].isin(["a better", "b better"])]
    text = [f"Of {len(table)} pairs of arms, {len(decided)} differ beyond seed noise (Welch's t-test, "
            f"Holm-adjusted over the {int(table['p'].notna().sum())} pairs tested: adjusted "
            f"p < {1 - level:.2g}), {counts.get('tied', 0)} are tied and "
            f"{counts.get('too few seeds', 0)} have too few seeds to tell. \"Tied\" in the ranking "
            f"means overlapping {level:.0%} intervals (conservative); these pairwise verdicts use "
            "Holm-adjusted Welch tests, so a pair can differ here and still share a rank there."]
    for r in decided.itertuples():
        win, lose = (r.arm_a, r.arm_b) if r.verdict == "a better" else (r.arm_b, r.arm_a)
        text.append(f"{win} beats {lose} on {metric}: difference {num(abs(r.diff))} "
                    f"(unadjusted {ci(r.diff_ci_lo, r.diff_ci_hi, level)} for {r.arm_a} - {r.arm_b}, "
                    f"{pval(r.p)}, Holm-adjusted {pval(r.p_holm)}, Hedges' g {num(r.hedges_g, 2)})."
                    + limited(r.budget_limited) + thin(r))
    return text
