"""How much does the answer depend on the search's luck? With search replicates (a spec's
`search.replicates: R`: R independent searches per arm, each winner confirmed over the same seeds,
trials.parquet's `replicate` column), each arm's confirmed runs fall into R groups of seeds.

    variance_components(values, groups)           # one-way random effects: between and within
    search_spread(trials, metric="val_acc")       # that, per arm, over the replicates
    replicate_verdicts(trials, metric, mode)      # do the ranking and depth verdicts hold in each?
    search_variance(trials, metric, mode)         # all of it: answers.json's evidence.search_variance

The decomposition is the two-way crossed random model without replication, y_ij = mu + a_i + b_j
+ e_ij (Searle, Casella and McCulloch, "Variance Components", Wiley 1992, section 4.4): every
replicate's winner is confirmed over the same seeds (and, with `split: per_seed`, the same splits),
so seed j's effect b_j ~ N(0, var_seed) is shared by every replicate and cancels out of the
comparison of replicates; replicate i's search lands on a configuration worth a_i ~ N(0,
var_between) above the arm's average; e_ij ~ N(0, var_res) is the rest. From the mean squares MSR
(replicates, R - 1 df), MSS (seeds, S - 1 df) and MSE (residual, (R - 1)(S - 1) df):
var_between = max(0, (MSR - MSE) / S), and var_within, the spread of one replicate's runs over the
seeds (var_seed + var_res), = max(0, (MSS - MSE) / R) + MSE. Intervals at `level` are generalised
confidence intervals (Weerahandi, "Generalized confidence intervals", JASA 88, 1993, 899-905): the
quantiles of the same expressions with each sum of squares SS divided by a chi-square draw on its df
in place of its df, from a fixed seed (so the answers are reproducible). The test of
var_between = 0 is the F test MSR / MSE on (R - 1, (R - 1)(S - 1)) df (scipy.stats.f). Only the
seeds every replicate completed count (a balanced table); with one replicate, var_within is the
seeds' sample variance with the exact chi-square interval.

Nothing here reads files; only completed confirmation runs with a final metric count. The other
answers pool every replicate's runs: an arm's n is then replicates x seeds.

Tests: .venv/bin/python -m pytest tests/test_replicates.py
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .common import rows
from .depth import degradation_gap, depth_trend, matched_pairs
from .ranking import pairwise, ranking

NAN = float("nan")
DRAWS = 10_000      # chi-square draws for the generalised interval of var_between
DRAW_SEED = 0
COMPONENTS = ["var_between", "var_between_lo", "var_between_hi", "var_within", "var_within_lo",
              "var_within_hi", "share_between", "F", "p"]   # variance_components' numbers
SPREAD_COLUMNS = ["arm", "replicates", "seeds", "runs", "replicate_means", "mean", *COMPONENTS, "verdict"]
VERDICT_COLUMNS = ["question", "item", "overall", "per_replicate", "holds", "reversed"]
# verdicts that decide nothing (analysis/ranking.py, analysis/depth.py): a replicate giving one of
# these where the pooled runs decide has fewer runs, not another answer
UNDECIDED = ("tied", "no significant change", "no significant difference in depth trend", "none",
             "not found")


def decided(verdict: str) -> bool:
    return verdict not in UNDECIDED and not verdict.startswith("too few")


def variance_components(values, groups, blocks, level: float = 0.95) -> dict:
    """Two-way random effects decomposition of `values` (numbers) by `groups` (the replicates) crossed
    with `blocks` (the seeds shared by every replicate); see the module docstring. One value per
    (group, block): repeats are averaged; NaN values and blocks missing from some group are left out.

    Returns groups (R), blocks (S), n (R x S, the values used), var_between with
    var_between_lo/_hi, var_within with var_within_lo/_hi, share_between (var_between /
    (var_between + var_within)), F, p. Everything is NaN with fewer than 2 shared blocks, the
    between-group numbers with fewer than 2 groups; no residual spread gives F = inf, p = 0 when the
    group means differ."""
    frame = pd.DataFrame({"y": np.asarray(values, dtype=float), "g": list(groups),
                          "b": list(blocks)}).dropna()
    table = frame.pivot_table(index="g", columns="b", values="y", aggfunc="mean").dropna(axis=1)
    (r, s), y = table.shape, table.to_numpy()
    out = {"groups": r, "blocks": s, "n": r * s, **dict.fromkeys(COMPONENTS, NAN)}
    if r < 1 or s < 2:
        return out
    rng = np.random.default_rng(DRAW_SEED)
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    if r == 1:
        ss = float(((y - y.mean()) ** 2).sum())
        chi_hi, chi_lo = stats.chi2.ppf([hi_q, lo_q], s - 1)
        out.update(var_within=ss / (s - 1), var_within_lo=float(ss / chi_hi), var_within_hi=float(ss / chi_lo))
        return out
    m, rows_m, cols_m = y.mean(), y.mean(axis=1), y.mean(axis=0)
    ss_r, ss_s = s * float(((rows_m - m) ** 2).sum()), r * float(((cols_m - m) ** 2).sum())
    ss_e = float(((y - rows_m[:, None] - cols_m[None, :] + m) ** 2).sum())
    rounding = y.size * (64 * np.finfo(float).eps * np.abs(y).max()) ** 2   # what equal values leave
    ss_r, ss_s, ss_e = (v if v > rounding else 0.0 for v in (ss_r, ss_s, ss_e))
    df_r, df_s, df_e = r - 1, s - 1, (r - 1) * (s - 1)
    ms_r, ms_s, ms_e = ss_r / df_r, ss_s / df_s, ss_e / df_e
    between = max(0.0, (ms_r - ms_e) / s)
    within = max(0.0, (ms_s - ms_e) / r) + ms_e
    with np.errstate(divide="ignore", invalid="ignore"):
        e_draws = ss_e / rng.chisquare(df_e, DRAWS)
        b_draws = np.maximum(0.0, (ss_r / rng.chisquare(df_r, DRAWS) - e_draws) / s)
        w_draws = np.maximum(0.0, (ss_s / rng.chisquare(df_s, DRAWS) - e_draws) / r) + e_draws
        f = ms_r / ms_e if ms_e > 0 else (np.inf if ms_r > 0 else NAN)
    total = between + within
    out.update(var_between=between, var_between_lo=float(np.quantile(b_draws, lo_q)),
               var_between_hi=float(np.quantile(b_draws, hi_q)), var_within=within,
               var_within_lo=float(np.quantile(w_draws, lo_q)), var_within_hi=float(np.quantile(w_draws, hi_q)),
               share_between=between / total if total > 0 else NAN, F=float(f),
               p=float(stats.f.sf(f, df_r, df_e)) if np.isfinite(f) else (0.0 if f == np.inf else NAN))
    return out


def spread_verdict(found: dict, level: float) -> str:
    """Words for a variance_components() result over an arm's replicates."""
    if found["groups"] < 2:
        return "too few replicates"
    if np.isnan(found["var_within"]):
        return "too few seeds"
    if found["p"] < 1 - level:
        return "search spread"
    return "no detectable search spread"


def search_spread(trials: pd.DataFrame, metric: str = "val_acc", level: float = 0.95) -> pd.DataFrame:
    """One row per arm: variance_components() of its completed confirmation runs' final `metric`
    over its replicates, with the replicates' means, the arm's mean and a verdict ("search spread"
    when the F test finds the replicates' means further apart than the seeds explain, at
    1 - level; "no detectable search spread"; "too few replicates"; "too few seeds"). `seeds`
    and `runs` count what the decomposition used: the seeds every replicate completed. Needs
    columns: phase, status, arm, seed, replicate (0 when absent), final_<metric>."""
    col = f"final_{metric}"
    runs = rows(trials, phase="confirm", status="completed", need=(col, "replicate", "seed"))
    runs = runs.assign(replicate=runs["replicate"].fillna(0)).dropna(subset=[col])
    table = []
    for arm, g in runs.groupby("arm", sort=False):
        found = variance_components(g[col], g["replicate"], g["seed"], level)
        means = g.groupby("replicate")[col].mean()
        table.append({"arm": arm, "replicates": found["groups"], "seeds": found["blocks"],
                      "runs": found["n"], "replicate_means": means.tolist(), "mean": float(g[col].mean()),
                      **{k: found[k] for k in COMPONENTS},
                      "verdict": spread_verdict(found, level)})
    return pd.DataFrame(table, columns=SPREAD_COLUMNS)


def verdicts(trials: pd.DataFrame, metric: str, mode: str, level: float,
             order: list | None = None) -> dict[tuple[str, str], str]:
    """(question, item) -> verdict, for the ranking's best arm, every pair of arms (in `order`,
    the pooled ranking's, so that "a better" means the same arm in every replicate) and the depth
    answers on the final training loss and the metric (analysis/ranking.py, analysis/depth.py); the
    best arm is "none" when no arm has a completed run."""
    rank = ranking(trials, metric, mode, level)
    best = str(rank["arm"].iloc[0]) if len(rank) and rank["n"].iloc[0] else "none"
    found = {("ranking", "best arm"): best}
    for r in pairwise(trials, metric, mode, level, order=order or rank["arm"].tolist()).itertuples():
        found[("pairwise", f"{r.arm_a} vs {r.arm_b}")] = r.verdict
    for column in dict.fromkeys(["final_train_loss", f"final_{metric}"]):
        for r in depth_trend(trials, column, level).itertuples():
            found[("depth trend", f"{r.family} {r.series} width {r.width:g}, {column}")] = r.verdict
        for r in matched_pairs(trials, column, level).itertuples():
            found[("matched pair", f"{r.plain_arm} vs {r.residual_arm}, {column}")] = r.verdict
        for r in degradation_gap(trials, column, level).itertuples():
            found[("degradation gap", f"batchnorm {r.batchnorm} width {r.width:g}, {column}")] = r.verdict
    return found


def replicate_verdicts(trials: pd.DataFrame, metric: str = "val_acc", mode: str = "max",
                       level: float = 0.95) -> pd.DataFrame:
    """One row per verdict of the pooled answer (every replicate's runs together, as the main
    answers have them; see verdicts()): question, item, overall (the pooled verdict),
    per_replicate (the same verdict from each replicate's runs alone, replicate 0 first), holds
    (every replicate gives the overall verdict) and reversed (some replicate decides otherwise: a
    verdict other than the overall one and not an UNDECIDED one, so the answer depends on what the
    search found; a replicate that only leaves it undecided has fewer runs). Needs the columns of
    ranking() and depth_trend(), and replicate (0 when absent)."""
    frame = rows(trials, need=("replicate",))
    frame = frame.assign(replicate=frame["replicate"].fillna(0))
    order = ranking(frame, metric, mode, level)["arm"].tolist()
    overall = verdicts(frame, metric, mode, level, order)
    each = [verdicts(g, metric, mode, level, order) for _, g in frame.groupby("replicate")]
    table = []
    for (q, item), v in overall.items():
        found = [e.get((q, item), "not found") for e in each]
        table.append({"question": q, "item": item, "overall": v, "per_replicate": found,
                      "holds": all(f == v for f in found),
                      "reversed": any(f != v and decided(f) for f in found)})
    return pd.DataFrame(table, columns=VERDICT_COLUMNS)


def search_variance(trials: pd.DataFrame, metric: str = "val_acc", mode: str = "max",
                    level: float = 0.95) -> dict:
    """{"replicates": R (the most of any arm's confirmed replicates; 1 without the column),
    "measured": R > 1, and when measured "spread" (search_spread) and "verdicts"
    (replicate_verdicts)}."""
    confirm = rows(trials, phase="confirm", need=("replicate",))
    replicates = int(confirm["replicate"].fillna(0).nunique()) if len(confirm) else 1
    out = {"replicates": max(replicates, 1), "measured": replicates > 1}
    if out["measured"]:
        out.update(spread=search_spread(trials, metric, level),
                   verdicts=replicate_verdicts(trials, metric, mode, level))
    return out
