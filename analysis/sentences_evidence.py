"""The evidence section's sentences (see sentences.py, which calls them): the numbers of
questions.results()["evidence"] (evidence.py, space_audit.py) in words, and the note that the
ranking and depth sentences add for an under-searched arm. Numbers in, sentences out.

Tests: .venv/bin/python -m pytest tests/test_analysis_evidence.py
"""
from __future__ import annotations

import pandas as pd

from .common import ci, num
from .evidence import MEANINGFUL, MIN_PAIRED_RUNS, RESAMPLES
from .figures_evidence import INDEPENDENCE
from .space_audit import EDGE, MIN_COMPLETED, dimension, edge

FEW_RUNS = "too few paired runs for the bootstrap to mean much"
MAX_LISTED = 6   # pairs: up to this many, each gets a sentence; beyond, the decided and matched ones


def under_searched_note(arms) -> str:
    """' Under-searched: ...' for a sentence whose verdict involves `arms` (a list; '' if empty)."""
    return (f" Under-searched: {', '.join(arms)} completed fewer than {MIN_COMPLETED} search "
            "trials; a barely tuned configuration may explain this as much as the architecture."
            if arms else "")


def evidence(found: dict, metric: str, mode: str, level: float) -> list[str]:
    """The evidence section of questions.results(): prob_better, expected_best, space_audit (the
    frames of evidence.py and space_audit.py) and space (the spec's search space)."""
    return (prob_better(found["prob_better"], level) + expected_best(found["expected_best"], metric, mode)
            + space_audit(found["space_audit"], found["space"]))


# ---- P(A > B) ------------------------------------------------------------------------------------
def prob_better(table: pd.DataFrame, level: float) -> list[str]:
    """Every pair's P(A > B) from evidence.prob_better_table(), and where it and Welch disagree."""
    if table.empty:
        return ["No two arms of a study have completed confirmation runs: no paired comparison."]
    keys = " and ".join(k.replace("_", " ") for k in table["keys"].iloc[0])
    counts = table["verdict"].value_counts()
    decided = int(counts.get("a better", 0) + counts.get("b better", 0))
    few = int(counts.get("too few paired runs", 0))
    text = [f"Seed for seed (confirmation runs paired on the same {keys}; a tie counts 1/2), P(A "
            f"better than B) with its {level:.0%} percentile bootstrap interval over the paired "
            f"runs ({RESAMPLES} resamples): of {len(table)} pair(s), {decided} decided (interval "
            f"above or below 0.5), {counts.get('tied', 0)} holding 0.5"
            + (f", {few} with fewer than {MIN_PAIRED_RUNS} paired runs: {FEW_RUNS}" if few else "")
            + f". Bouthillier et al. (2021) call P(A > B) > {MEANINGFUL:g} meaningful"
            + (f"; with fewer than {MIN_PAIRED_RUNS} paired runs the table leaves that rule "
               "(`meaningful`) and the comparison with Welch's verdict (`agree`) empty" if few else "")
            + "."]
    shown = table if len(table) <= MAX_LISTED else table[
        table["verdict"].isin(["a better", "b better"]) | table["matched"]]
    text += [_pair(r, level) for r in shown.itertuples()]
    text += [f"{r.arm_a} vs {r.arm_b}: the paired P(A > B) says \"{r.verdict}\" but Welch's "
             f"Holm-adjusted test says \"{r.welch_verdict}\"; the two tests disagree (the paired "
             "one counts wins per seed, Welch's weighs the size of the differences)."
             for r in table[table["agree"].eq(False)].itertuples()]   # None: nothing compared
    return text


def _pair(r, level: float) -> str:
    name = f"{r.arm_a} vs {r.arm_b}{' (matched depth: plain vs residual)' if r.matched else ''}"
    runs = f"n={r.n} paired runs{f', {r.ties} tied' if r.ties else ''}"
    if r.verdict == "too few paired runs":   # its interval (often "1 to 1") would read as a claim
        return (f"{name}: P({r.arm_a} better) = {num(r.p_better)} ({runs}): {FEW_RUNS} (fewer than "
                f"{MIN_PAIRED_RUNS}): its bootstrap interval decides nothing, and neither a verdict "
                f"nor the P > {MEANINGFUL:g} rule is given.")
    head = f"{name}: P({r.arm_a} better) = {num(r.p_better)} ({ci(r.ci_lo, r.ci_hi, level)}, {runs})"
    said = {"a better": f"{r.arm_a} better", "b better": f"{r.arm_b} better", "tied": "tied"}
    rule = {"a better": f"{r.arm_a} better", "b better": f"{r.arm_b} better",
            "neither": "neither"}.get(r.meaningful, r.meaningful)
    return f"{head}: {said[r.verdict]}; by Bouthillier et al.'s P > {MEANINGFUL:g} rule: {rule}."


# ---- expected best against the budget ------------------------------------------------------------
def expected_best(curve: pd.DataFrame, metric: str, mode: str) -> list[str]:
    """Per arm, evidence.expected_best_table() at 1 trial, half the trials and all of them."""
    if curve.empty:
        return ["No completed search trial with a score: no expected-best curve."]
    parts, sign = [], 1.0 if mode == "max" else -1.0
    for arm, g in curve.groupby("arm", sort=False):
        last = g.iloc[-1]
        half = g[g["trials"] == max(1, (len(g) + 1) // 2)].iloc[0]
        gain = (f", a gain of {num(sign * (last['expected'] - half['expected']))} over "
                f"{int(half['trials'])}")
        cost = (f" (about {num(last['cpu_seconds'])} reserved CPU-s)"
                if pd.notna(last["cpu_seconds"]) and last["cpu_seconds"] > 0 else "")
        if len(g) == 1:
            parts.append(f"{arm} {num(last['expected'])} from its only completed trial{cost}")
            continue
        parts.append(f"{arm} {num(g['expected'].iloc[0])} with 1 trial (the mean), "
                     f"{num(last['expected'])} +- {num(last['std'])} with all {int(last['trials'])} "
                     f"trials{cost}{gain}")
    best = "maximum" if mode == "max" else "minimum"
    return [f"Expected best final {metric} of a search of n completed trials (Dodge et al. 2019: the "
            f"expected {best} of n draws from the arm's completed search scores): " + "; ".join(parts)
            + f"; +- is the SD of the best of n, the spread of one search's outcome. This is "
            f"{INDEPENDENCE}; a search with `search.algorithm: random` and `scheduler: {{name: none}}` "
            "draws the independent, unpruned trials it assumes. Even then the n draws are made with "
            "replacement from the N scores found, so the curve is biased low as n nears N: at n = N "
            "it lies below the best score found (Dodge et al. 2021)."]


# ---- search-space audit --------------------------------------------------------------------------
def space_audit(audit: pd.DataFrame, space: dict) -> list[str]:
    """Best values near a range's end, the shares of pruned, diverged and failed search trials,
    and the under-searched arms, from space_audit.space_audit()."""
    if audit.empty:
        return []
    text = []
    for r in audit.to_dict("records"):
        for p, dim in space.items():
            kind, args = dimension(dim)
            position = r.get(f"position_{p}")
            if edge(position):
                scale = " on the log scale" if kind == "loguniform" else ""
                few = (f" (from only {r['completed']} completed trial(s): weak evidence)"
                       if r["under_searched"] else "")
                text.append(f"{r['arm']}: its best {p} {num(r[f'best_{p}'])} lies at position "
                            f"{num(position, 2)} of its range [{args[0]}, {args[1]}]{scale}, in the "
                            f"outer {EDGE:.0%}{few}: widen the range.")
    text.append("Search trials stopped early by ASHA (pruned), diverged and failed, per arm: " + "; ".join(
        f"{r['arm']} {r['pruned']} pruned ({r['share_pruned']:.0%}), {r['diverged']} diverged "
        f"({r['share_diverged']:.0%}), {r['error']} failed ({r['share_error']:.0%}) of {r['trials']}"
        for r in audit.to_dict("records")) + ".")
    thin = audit[audit["under_searched"].astype(bool)]
    if len(thin):
        text.append(f"Under-searched (fewer than {MIN_COMPLETED} completed search trials): "
                    + "; ".join(f"{r.arm} ({r.completed} completed of {r.trials})" for r in thin.itertuples())
                    + ". The ranking and depth answers mark their verdicts: a barely tuned arm may "
                    "lose to its configuration, not its architecture.")
    elif space:
        text.append(f"Every arm completed at least {MIN_COMPLETED} search trials.")
    return text
