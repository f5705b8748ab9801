"""Which arm is best, and which differences are bigger than the seed-to-seed spread?

    ranking(trials, metric="val_acc", mode="max")    # one row per arm, best first
    pairwise(trials, metric="val_acc", mode="max")   # one row per pair of arms, Welch's t-test
    selection_split(trials, metric="val_acc")        # how many runs share the search's split

Both read the confirmation phase of the `trials` table (one row per trial) and score an arm by the
final-epoch value of the metric (`final_<metric>`), the value the search also optimised: the
search chose each arm's configuration by it, so it is optimistically biased (on the search's own
validation split under `split: fixed`), while the test metric beside it is not. Only completed
trials with a value count; diverged, errored (or interrupted) confirmation trials, and completed
ones without a final metric, are left out and counted in `excluded`.

Two tests of "is this arm better", on purpose of different strength: the ranking's ties are
overlapping 95% intervals (conservative: two arms can overlap yet differ), while `pairwise` gives
each difference a Welch test, Holm-adjusted over all pairs, and bases its verdicts on that.

Tests: .venv/bin/python -m pytest tests/test_analysis_stats.py
"""
from __future__ import annotations

import itertools

import pandas as pd

from .common import rows, test_column
from .stats import NAN, clean, hedges_g, holm, mean_ci, value_range, welch

# the test columns next to the metric's: the search chose configurations by the metric, not the test
RANKING_COLUMNS = ["arm", "family", "depth", "n", "mean", "ci_lo", "ci_hi", "test_mean", "test_ci_lo",
                   "test_ci_hi", "std", "excluded", "position", "rank", "tied_with"]
PAIRWISE_COLUMNS = ["arm_a", "arm_b", "n_a", "n_b", "mean_a", "mean_b", "diff", "diff_ci_lo",
                    "diff_ci_hi", "test", "t", "p", "p_holm", "df", "hedges_g", "verdict"]


def arm_scores(trials: pd.DataFrame, metric: str) -> dict[str, list[float]]:
    """arm -> the final metric of each completed confirmation trial (NaNs dropped). Needs columns:
    phase, status, arm, final_<metric>."""
    col = f"final_{metric}"
    confirm = rows(trials, phase="confirm", status="completed", need=(col,))
    return {arm: list(clean(g[col])) for arm, g in confirm.groupby("arm", sort=False)}


def ranking(trials: pd.DataFrame, metric: str = "val_acc", mode: str = "max",
            level: float = 0.95) -> pd.DataFrame:
    """One row per arm, sorted by mean, best first.

    Needs columns: phase, status, arm, family, depth, final_<metric> and (optional) the final test
    column of the same kind (final_test_acc for *_acc metrics, final_test_loss for *_loss).

    Columns: arm, family, depth, n (completed seeds), mean, ci_lo, ci_hi (t-interval at `level`),
    test_mean, test_ci_lo, test_ci_hi (NaN when there is no test metric), std, excluded
    (confirmation trials not completed, or completed without final_<metric>), position (1 = best
    mean), rank and tied_with.

    tied_with lists the arms whose interval overlaps this arm's. An arm with a single seed has no
    interval and counts as overlapping every arm. `rank` is 1 + the number of arms that are clearly
    better (their whole interval lies on the better side of this arm's): the best rank the data
    cannot rule out, shared by every arm that no other arm clearly beats. Overlap is not
    transitive, so an arm can overlap the best arm and still rank below 1 (another arm clearly
    beats it): rank 1 is not "tied with the best". Overlapping 95% intervals is a conservative
    test; `pairwise` gives the Welch test of each difference.
    Arms with no completed seed come last with n = 0 and NaN rank.
    """
    col, test = f"final_{metric}", test_column(metric)
    confirm = rows(trials, phase="confirm", need=(col, test, "family", "depth"))
    table = [_arm_row(arm, g, col, test, level) for arm, g in confirm.groupby("arm", sort=False)]
    if not table:
        return pd.DataFrame(columns=RANKING_COLUMNS)
    frame = pd.DataFrame(table)
    sign = 1.0 if mode == "max" else -1.0
    frame = frame.assign(_key=-sign * frame["mean"]).sort_values("_key", na_position="last",
                                                                kind="stable").drop(columns="_key")
    frame["position"] = range(1, len(frame) + 1)
    frame["rank"], frame["tied_with"] = _ranks(frame, sign)
    return frame.reset_index(drop=True)[RANKING_COLUMNS]


def _arm_row(arm: str, g: pd.DataFrame, col: str, test: str, level: float) -> dict:
    done = g[g["status"] == "completed"]
    mean, lo, hi, n = mean_ci(done[col], level, value_range(col))
    test_mean, test_lo, test_hi, _ = mean_ci(done[test], level, value_range(test))
    values = clean(done[col])
    return {"arm": arm, "family": g["family"].iloc[0], "depth": g["depth"].iloc[0], "n": n,
            "mean": mean, "ci_lo": lo, "ci_hi": hi, "std": float(values.std(ddof=1)) if n > 1 else NAN,
            "test_mean": test_mean, "test_ci_lo": test_lo, "test_ci_hi": test_hi,
            "excluded": int((g["status"] != "completed").sum() + done[col].isna().sum())}


def _ranks(frame: pd.DataFrame, sign: float) -> tuple[list, list]:
    """(rank, tied_with) for each row of a ranking frame; see ranking()."""
    arms = list(frame.itertuples(index=False))
    ranks, ties = [], []
    for me in arms:
        if me.n == 0:
            ranks.append(NAN)
            ties.append([])
            continue
        others = [o for o in arms if o.arm != me.arm and o.n > 0]
        better = {o.arm for o in others if _clearly_better(o, me, sign)}
        worse = {o.arm for o in others if _clearly_better(me, o, sign)}
        ranks.append(1 + len(better))
        ties.append([o.arm for o in others if o.arm not in better | worse])
    return ranks, ties


def _clearly_better(a, b, sign: float) -> bool:
    """a's whole interval lies on the better side of b's (False when either has no interval)."""
    if sign > 0:
        return bool(a.ci_lo > b.ci_hi)   # NaN compares False
    return bool(a.ci_hi < b.ci_lo)


def selection_split(trials: pd.DataFrame, metric: str = "val_acc") -> dict:
    """How far the ranking's final_<metric> is the score the search chose each arm's configuration
    by (a chosen configuration's score on the data it was chosen on is optimistically biased; the
    test split takes no part in the choice).

    Needs trials columns: phase, status, arm, final_<metric>, split_seed (the tables fill it in).
    Returns {"searched": completed search trials with the metric, "runs": completed confirmation
    runs with it, "on_search_split": how many of those runs are scored on a split their arm's
    search trials also used (all of them under `split: fixed`; under `per_seed`, the seeds whose
    split seed is the search's), or None without a split_seed column}.
    """
    col = f"final_{metric}"
    scored = rows(trials, need=(col, "split_seed"))
    scored = scored[(scored["status"] == "completed") & scored[col].notna()]
    search, confirm = scored[scored["phase"] == "search"], scored[scored["phase"] == "confirm"]
    same = None
    if trials is not None and "split_seed" in trials and scored["split_seed"].notna().all():
        used = search.groupby("arm")["split_seed"].agg(set)
        same = int(sum(r.split_seed in used.get(r.arm, set()) for r in confirm.itertuples()))
    return {"searched": len(search), "runs": len(confirm), "on_search_split": same}


def pairwise(trials: pd.DataFrame, metric: str = "val_acc", mode: str = "max",
             level: float = 0.95, order: list | None = None) -> pd.DataFrame:
    """Every pair of arms (arm_a ranked above arm_b by mean): Welch's t-test of the difference,
    with Holm's adjustment over every pair that has a p-value.

    Needs the same columns as ranking(); `order` is the ranking's arm order when the caller already
    has it. Columns: arm_a, arm_b, n_a, n_b, mean_a, mean_b, diff (mean a - mean b), diff_ci_lo,
    diff_ci_hi (unadjusted Welch interval at `level`), test ("welch"), t, p (unadjusted), p_holm,
    df, hedges_g, verdict: "a better" / "b better" (by the sign of the difference) when
    p_holm < 1 - level, "tied" otherwise, "too few seeds" when either arm has fewer than 2 seeds
    (p is NaN and the pair is not in the Holm family).
    """
    if order is None:
        order = ranking(trials, metric, mode, level)["arm"].tolist()
    scores = arm_scores(trials, metric)
    table = []
    for a, b in itertools.combinations(order, 2):
        xa, xb = scores.get(a, []), scores.get(b, [])
        test = welch(xa, xb, level)
        table.append({"arm_a": a, "arm_b": b, "n_a": test["n_a"], "n_b": test["n_b"],
                      "mean_a": mean_ci(xa)[0], "mean_b": mean_ci(xb)[0], "diff": test["diff"],
                      "diff_ci_lo": test["lo"], "diff_ci_hi": test["hi"], "test": "welch",
                      "t": test["t"], "p": test["p"], "df": test["df"], "hedges_g": hedges_g(xa, xb),
                      "verdict": verdict(test, mode, "a better", "b better")})
    frame = pd.DataFrame(table, columns=PAIRWISE_COLUMNS)
    frame["p_holm"] = holm(frame["p"]) if len(frame) else []
    held = (frame["verdict"] != "too few seeds") & ~(frame["p_holm"] < 1 - level)
    frame.loc[held, "verdict"] = "tied"
    wins = (frame["verdict"] != "too few seeds") & (frame["p_holm"] < 1 - level)
    higher = (frame["diff"] > 0) == (mode == "max")
    frame.loc[wins, "verdict"] = ["a better" if h else "b better" for h in higher[wins]]
    return frame


def verdict(test: dict, mode: str, a_wins: str, b_wins: str) -> str:
    """Words for a welch() result of a - b: a_wins / b_wins when the interval excludes 0 on that
    side (with `mode` saying whether higher is better), "tied" otherwise, "too few seeds" without
    an interval."""
    if test["n_a"] < 2 or test["n_b"] < 2 or pd.isna(test["lo"]):
        return "too few seeds"
    higher = a_wins if mode == "max" else b_wins
    lower = b_wins if mode == "max" else a_wins
    if test["lo"] > 0:
        return higher
    if test["hi"] < 0:
        return lower
    return "tied"
