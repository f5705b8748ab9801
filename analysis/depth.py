"""Does depth help or hurt, and do skip connections change the answer?

    depth_trend(trials, column="final_train_loss")       # slope per layer, per line of plain / residual nets
    matched_pairs(trials, column="final_train_loss")     # plainN vs resnetN at the same depth
    degradation_gap(trials, column="final_train_loss")   # does plain get worse with depth faster?

All read completed confirmation trials of the `trials` table and regress or compare every run
(seed) individually, never the per-arm means. `column` is any per-trial number (final_train_loss,
final_val_acc, ...): a column whose name contains "acc" is better high, anything else better low.

Depth is only compared along one line of architectures (see common.series): VGGs with VGGs, He et
al.'s 6n+2 plain nets with each other, and so on, each at one width and one BatchNorm setting, and
within one study (the `study` column) when several are analysed together, so that a slope or a
pair never mixes layouts or studies.

Tests: .venv/bin/python -m pytest tests/test_analysis_stats.py
"""
from __future__ import annotations

import pandas as pd

from .common import confirmed, higher_is_better, with_series
from .ranking import verdict as welch_verdict
from .stats import hedges_g, slope_ci, slope_diff_ci, welch

NEED = ("study", "model", "family", "line", "depth", "batchnorm", "width")
MIN_REPLICATES = 2   # runs (seeds) needed at a depth for it to count towards a trend's replicates
TREND_COLUMNS = ["study", "family", "series", "width", "arms", "depths", "n_depths",
                 "n_replicated_depths", "n_runs", "slope", "ci_lo", "ci_hi", "p", "verdict"]
PAIR_COLUMNS = ["study", "depth", "batchnorm", "width", "plain_arm", "residual_arm", "n_plain",
                "n_residual", "plain_mean", "residual_mean", "diff", "diff_ci_lo", "diff_ci_hi", "p",
                "hedges_g", "verdict"]
DEGRADATION_GAP_COLUMNS = ["study", "batchnorm", "width", "depths", "n_replicated_depths", "n_runs",
                           "plain_slope", "residual_slope", "diff", "ci_lo", "ci_hi", "p", "verdict"]


def _runs(trials: pd.DataFrame, column: str) -> pd.DataFrame:
    """Completed confirmation runs of plain and residual arms with a value in `column`."""
    runs = confirmed(trials, need=(*NEED, column))
    runs = runs[runs["family"].isin(["plain", "residual"]) & runs[column].notna()]
    return with_series(runs.assign(study=runs["study"].fillna("")))


def depth_trend(trials: pd.DataFrame, column: str = "final_train_loss",
                level: float = 0.95) -> pd.DataFrame:
    """One row per line of plain or residual architectures (study, family, series, width): the OLS
    slope of `column` on depth over every run, per layer.

    Needs columns: phase, status, arm, model, family, depth, batchnorm, width, `column` (and
    study, when several studies are analysed together).
    Columns: study, family, series, width, arms, depths (lists, by depth), n_depths,
    n_replicated_depths (depths with at least MIN_REPLICATES runs), n_runs, slope, ci_lo, ci_hi, p,
    verdict. verdict: "degrades" when the interval excludes 0 in the bad direction (a loss rising,
    an accuracy falling), "improves" when it excludes 0 in the good one, "no significant change"
    when it contains 0, "too few depths to tell" with fewer than 2 depths, "too few seeds to tell"
    unless at least 2 depths have 2 or more runs each (with one seed per depth the interval only
    measures how far the depths are from a straight line, not the seed-to-seed noise).
    """
    runs = _runs(trials, column)
    table = []
    for (study, family, line, width), g in runs.groupby(["study", "family", "series", "width"],
                                                        dropna=False):
        fit = slope_ci(g["depth"], g[column], level)
        n_depths, replicated = g["depth"].nunique(), _replicated(g)
        by_depth = g.sort_values("depth").drop_duplicates("arm")
        table.append({"study": study, "family": family, "series": line, "width": width,
                      "arms": by_depth["arm"].tolist(), "depths": sorted(g["depth"].unique().tolist()),
                      "n_depths": n_depths, "n_replicated_depths": replicated, "n_runs": len(g),
                      "slope": fit["slope"], "ci_lo": fit["lo"], "ci_hi": fit["hi"], "p": fit["p"],
                      "verdict": trend_verdict(fit, n_depths, len(g), column, replicated)})
    return pd.DataFrame(table, columns=TREND_COLUMNS)


def _replicated(runs: pd.DataFrame, by: tuple = ("depth",)) -> int:
    """How many depths have at least MIN_REPLICATES runs in every group of `by` at that depth."""
    sizes = runs.groupby(list(by), dropna=False).size()
    if len(by) == 1:
        return int((sizes >= MIN_REPLICATES).sum())
    return int((sizes >= MIN_REPLICATES).groupby(level="depth").all().sum())


def trend_verdict(fit: dict, n_depths: int, n_runs: int, column: str,
                  n_replicated: int | None = None) -> str:
    """Words for a slope_ci() result of `column` against depth (see depth_trend); n_replicated is
    the number of depths with 2 or more runs (None: not checked)."""
    if n_depths < 2:
        return "too few depths to tell"
    if (n_replicated is not None and n_replicated < 2) or n_runs < 3 or pd.isna(fit["lo"]):
        return "too few seeds to tell"
    good_up = higher_is_better(column)
    if fit["lo"] > 0:
        return "improves" if good_up else "degrades"
    if fit["hi"] < 0:
        return "degrades" if good_up else "improves"
    return "no significant change"


def matched_pairs(trials: pd.DataFrame, column: str = "final_train_loss",
                  level: float = 0.95) -> pd.DataFrame:
    """Every plain arm against every residual arm of the same depth, BatchNorm setting and width
    (plain20 vs resnet20, plain56 vs resnet56, ...): Welch's t-test of plain - residual.

    Needs the same columns as depth_trend(). Columns: study, depth, batchnorm, width, plain_arm,
    residual_arm, n_plain, n_residual, plain_mean, residual_mean, diff (plain - residual),
    diff_ci_lo, diff_ci_hi, p, hedges_g, verdict ("plain better", "residual better", "tied", or
    "too few seeds" with fewer than 2 runs on either side).
    """
    runs = _runs(trials, column)
    mode = "max" if higher_is_better(column) else "min"
    table = []
    for (study, depth, bn, width), g in runs.groupby(["study", "depth", "batchnorm", "width"],
                                                     dropna=False):
        for p_arm, p in g[g["family"] == "plain"].groupby("arm"):
            for r_arm, r in g[g["family"] == "residual"].groupby("arm"):
                test = welch(p[column], r[column], level)
                table.append({"study": study, "depth": depth, "batchnorm": bn, "width": width, "plain_arm": p_arm,
                              "residual_arm": r_arm, "n_plain": test["n_a"], "n_residual": test["n_b"],
                              "plain_mean": p[column].mean(), "residual_mean": r[column].mean(),
                              "diff": test["diff"], "diff_ci_lo": test["lo"], "diff_ci_hi": test["hi"],
                              "p": test["p"], "hedges_g": hedges_g(p[column], r[column]),
                              "verdict": welch_verdict(test, mode, "plain better", "residual better")})
    return pd.DataFrame(table, columns=PAIR_COLUMNS)


def degradation_gap(trials: pd.DataFrame, column: str = "final_train_loss",
                    level: float = 0.95) -> pd.DataFrame:
    """Does plain get worse with depth faster than residual? One row per BatchNorm setting and
    width that has matched pairs: the difference of the plain and residual slopes of `column` on
    depth, over the runs of the matched arms only (the interaction term of one OLS fit, see
    stats.slope_diff_ci).

    Needs the same columns as depth_trend(). Columns: study, batchnorm, width, depths (the matched
    ones), n_replicated_depths (matched depths where both families have 2 or more runs), n_runs,
    plain_slope, residual_slope, diff (plain - residual, per layer), ci_lo, ci_hi, p, verdict:
    "plain degrades more with depth than residual" (or the reverse) when the interval excludes 0,
    "no significant difference in depth trend" when it contains 0, "too few matched depths to
    tell" with fewer than 2 matched depths, "too few seeds to tell" with fewer than 2 replicated
    matched depths (or too few runs for an interval).
    """
    pairs = matched_pairs(trials, column, level)
    runs = _runs(trials, column)
    table = []
    for (study, bn, width), g in pairs.groupby(["study", "batchnorm", "width"], dropna=False):
        arms = set(g["plain_arm"]) | set(g["residual_arm"])
        sub = runs[runs["arm"].isin(arms) & (runs["study"] == study)]
        fit = slope_diff_ci(sub["depth"], sub[column], sub["family"] == "plain", level)
        depths = sorted(g["depth"].unique().tolist())
        replicated = _replicated(sub, ("depth", "family"))
        table.append({"study": study, "batchnorm": bn, "width": width, "depths": depths,
                      "n_replicated_depths": replicated, "n_runs": len(sub),
                      "plain_slope": fit["slope_true"], "residual_slope": fit["slope_false"],
                      "diff": fit["diff"], "ci_lo": fit["lo"], "ci_hi": fit["hi"], "p": fit["p"],
                      "verdict": gap_verdict(fit, len(depths), column, replicated)})
    return pd.DataFrame(table, columns=DEGRADATION_GAP_COLUMNS)


def gap_verdict(fit: dict, n_depths: int, column: str, n_replicated: int | None = None) -> str:
    """Words for a slope_diff_ci() result (plain slope - residual slope) of `column`."""
    if n_depths < 2:
        return "too few matched depths to tell"
    if (n_replicated is not None and n_replicated < 2) or pd.isna(fit["lo"]):
        return "too few seeds to tell"
    plain_worse = fit["lo"] > 0 if not higher_is_better(column) else fit["hi"] < 0
    residual_worse = fit["hi"] < 0 if not higher_is_better(column) else fit["lo"] > 0
    if plain_worse:
        return "plain degrades more with depth than residual"
    if residual_worse:
        return "residual degrades more with depth than plain"
    return "no significant difference in depth trend"


# ---- against the pairwise table ------------------------------------------------------------------
# Each source of a two-arm verdict on the metric: (its decided verdicts, its "no difference" one).
_TWO_ARM = {"depth trend": (("degrades", "improves"), "no significant change"),
            "matched pair": (("plain better", "residual better"), "tied"),
            "why": (("yes", "no"), "tied")}
HOLM_DIFFERS_COLUMNS = ["arm_a", "arm_b", "sources", "verdicts", "pairwise_verdict"]


def holm_differs(trend: pd.DataFrame, pairs: pd.DataFrame, degradations: list[dict],
                 pairwise: pd.DataFrame, column: str) -> pd.DataFrame:
    """The pairs of arms whose depth or why verdict on `column` (the metric, final_<metric>) and
    whose ranking.pairwise() verdict disagree on whether they differ: the former test one planned
    comparison each at the stated level, the latter is Holm-adjusted over every pair, so a pair can
    differ in one and be tied in the other.

    Two-arm verdicts only: depth_trend() lines of exactly two arms, matched_pairs() and the
    `deficit` of why.diagnose()'s degradations; "too few ..." verdicts on either side are skipped.
    `trend` and `pairs` carry a `column` column (questions.results() adds it). Columns: arm_a,
    arm_b (the pairwise table's order), sources (e.g. ["depth trend", "why"]), verdicts (theirs,
    in the same order), pairwise_verdict.
    """
    said = {frozenset((r.arm_a, r.arm_b)): (r.arm_a, r.arm_b, r.verdict) for r in pairwise.itertuples()}
    found = [("depth trend", r["arms"], r["verdict"]) for _, r in trend.iterrows()
             if r["column"] == column and len(r["arms"]) == 2]
    found += [("matched pair", [r["plain_arm"], r["residual_arm"]], r["verdict"])
              for _, r in pairs.iterrows() if r["column"] == column]
    found += [("why", [d["arm"], d["reference"]], d["deficit"]) for d in degradations
              if d["metric"] == column]
    table = {}
    for source, arms, verdict in found:
        decided, null = _TWO_ARM[source]
        a, b, other = said.get(frozenset(arms), (None, None, ""))
        if verdict not in (*decided, null) or other not in ("a better", "b better", "tied"):
            continue
        if (verdict in decided) != (other != "tied"):
            row = table.setdefault((a, b), {"arm_a": a, "arm_b": b, "sources": [], "verdicts": [],
                                            "pairwise_verdict": other})
            row["sources"].append(source)
            row["verdicts"].append(verdict)
    return pd.DataFrame(list(table.values()), columns=HOLM_DIFFERS_COLUMNS)
