"""The search-variance evidence in words (analysis/search_variance.py has the numbers): answers.json's
`evidence.search_variance`, whose sentences answers.md shows under "Evidence". With one search per
arm it says that the search variance was not measured, and gives no numbers.

Tests: .venv/bin/python -m pytest tests/test_replicates.py
"""
from __future__ import annotations

import pandas as pd

from .common import ci, num, pval
from .search_variance import search_variance

LISTED = 4   # verdicts that do not hold, named one by one before "and N more"


def search_variance_answer(trials: pd.DataFrame, metric: str = "val_acc", mode: str = "max",
                           level: float = 0.95) -> dict:
    """search_variance() with its sentences under "text" (frames stay frames: the caller makes
    them JSON records)."""
    found = search_variance(trials, metric, mode, level)
    if not found["measured"]:
        return {**found, "text": [not_measured()]}
    return {**found, "text": [spread_sentence(found["spread"], found["replicates"], metric, level),
                              verdicts_sentence(found["verdicts"], found["replicates"])]}


def not_measured() -> str:
    return ("Search variance: not measured, since each arm was searched once (one search "
            "replicate); with search.replicates of 2 or more, each arm is searched that many times "
            "and each winner confirmed over the seeds, which shows how far an arm's result depends "
            "on which configuration its search happened to find.")


def spread_sentence(spread: pd.DataFrame, replicates: int, metric: str, level: float) -> str:
    """The variance decomposition of every arm, and which arms' searches disagree."""
    parts = [f"{r.arm} {num(r.var_between)} ({ci(r.var_between_lo, r.var_between_hi, level)}) vs "
             f"{num(r.var_within)} ({ci(r.var_within_lo, r.var_within_hi, level)})"
             for r in spread.itertuples()]
    found = spread[spread["verdict"] == "search spread"]
    untold = spread[spread["verdict"].isin(["too few replicates", "too few seeds"])]
    if len(found):
        verdict = ("the searches' confirmed means differ by more than the seeds explain for "
                   + ", ".join(f"{r.arm} ({r.share_between:.0%} of its variance, F test {pval(r.p)})"
                               for r in found.itertuples())
                   + " (the other answers pool every replicate's runs as independent ones, so their "
                   "intervals for these arms are too narrow)")
    elif len(untold) < len(spread):
        verdict = "no arm's searches differ by more than the seeds explain (F test)"
    else:
        verdict = "no arm has the runs to tell"
    if len(untold) and len(untold) < len(spread):
        verdict += "; too few runs to tell for " + ", ".join(untold["arm"])
    return (f"Search variance over {replicates} search replicates per arm, from the seeds every "
            f"replicate completed: between-search vs between-seed variance of the final {metric}: "
            + "; ".join(parts) + f". So {verdict}.")


def verdicts_sentence(table: pd.DataFrame, replicates: int) -> str:
    """Whether the ranking and depth verdicts of the pooled runs hold in each replicate alone."""
    if table.empty:
        return "No ranking or depth verdict to check against the search replicates."
    failing = table[~table["holds"]]
    if failing.empty:
        return (f"Every ranking and depth verdict ({len(table)}) holds in each of the {replicates} "
                "search replicates on its own.")
    text = (f"{len(table) - len(failing)} of {len(table)} ranking and depth verdicts hold in each of "
            f"the {replicates} search replicates on its own")
    reversed_, undecided = failing[failing["reversed"]], failing[~failing["reversed"]]
    if len(reversed_):
        text += ("; reversed by some replicate, so they depend on which configuration the search "
                 "found: " + _listed(reversed_))
    if len(undecided):
        text += (f"; left undecided by some replicate (each has 1/{replicates} of the runs, so less "
                 "power), not reversed: " + _listed(undecided))
    return text + "."


def _listed(table: pd.DataFrame) -> str:
    """'pairwise a vs b (tied overall; per replicate: a better, b better); ...', LISTED at most."""
    named = [f"{r.question} {r.item} ({r.overall} overall; per replicate: {', '.join(r.per_replicate)})"
             for r in table.head(LISTED).itertuples()]
    return "; ".join(named) + (f"; and {len(table) - LISTED} more" if len(table) > LISTED else "")
