"""Evidence beyond one search: how often one arm beats another seed for seed, and how much better
an arm's search would have got with more trials.

    prob_better(a, b, mode="max")                 # P(A better than B) over paired runs, bootstrap CI
    prob_better_table(trials, "val_acc", "max")   # every pair of arms of a study, paired on the seed
    expected_best(scores, mode="max")             # Dodge et al.'s expected best of n = 1..N draws
    expected_best_table(trials, "val_acc", "max") # per arm and n: the curve, against trials and seconds

prob_better follows Bouthillier et al. 2021 ("Accounting for variance in machine learning
benchmarks", MLSys): P(A > B) is the share of paired runs (same seed, so same initialisation, data
order and split) in which A scores better than B, a tie counting 1/2. Its interval is a percentile
bootstrap over the paired seeds (scipy.stats.bootstrap, paired=True). They call an improvement
significant when the interval's lower bound is above 0.5, and meaningful when P(A > B) > 0.75.

expected_best is Dodge et al. 2019 ("Show your work", EMNLP), eq. 1: with an arm's N completed search
scores sorted v(1) <= ... <= v(N), the expected maximum of n draws (with replacement) is
sum_i v(i) ((i/N)^n - ((i-1)/N)^n). It assumes independent draws: TPE's suggestions depend on the
trials before them, and ASHA keeps only the trials that looked good early, so for such a search the
curve is an estimate; `search.algorithm: random` with `scheduler: {name: none}` draws independently.
Even for independent draws this plug-in estimate is biased low as n nears N (at n = N it is below
the best score found), the price of its low variance: the unbiased estimator, drawing without
replacement, has the highest variance (Dodge et al. 2021, "Expected validation performance and
estimation of a random variable's maximum", Findings of EMNLP).

Tests: .venv/bin/python -m pytest tests/test_analysis_evidence.py
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

from .common import rows
from .stats import NAN, clean

MIN_PAIRED_RUNS = 5     # fewer paired runs: too few for the bootstrap to mean much, no verdict
MEANINGFUL = 0.75       # Bouthillier et al. 2021's threshold for a meaningful P(A > B)
RESAMPLES = 2000        # bootstrap resamples of the paired seeds
SEED = 0                # of the bootstrap's numpy Generator, fresh for every pair
PROB_COLUMNS = ["study", "arm_a", "arm_b", "matched", "keys", "n", "ties", "p_better", "ci_lo", "ci_hi",
                "verdict", "meaningful", "few_runs", "welch_verdict", "agree"]
CURVE_COLUMNS = ["study", "arm", "trials", "n_completed", "expected", "std", "lo", "hi",
                 "wall_seconds", "cpu_seconds", "gpu_seconds"]
COSTS = ("wall_seconds", "cpu_seconds", "gpu_seconds")


# ---- P(A > B) ------------------------------------------------------------------------------------
def _wins(a: np.ndarray, b: np.ndarray, sign: float, axis: int = -1) -> np.ndarray:
    """Per paired run: 1 where a is better, 1/2 on a tie, 0 where b is; the mean along `axis`."""
    return ((sign * (a - b) > 0) + 0.5 * (a == b)).mean(axis=axis)


def prob_better(a, b, mode: str = "max", level: float = 0.95, resamples: int = RESAMPLES,
                seed: int = SEED) -> dict:
    """P(A better than B) over paired runs: a[i] and b[i] are the two arms' scores in run i (same
    seed). Pairs with a NaN on either side are dropped.

    Returns n (pairs), ties, p_better (in [0, 1]; "better" is higher for mode "max", lower for
    "min"), ci_lo, ci_hi (percentile bootstrap at `level` over `resamples` resamples of the pairs,
    seeded: the same interval every time; NaN with fewer than 2 pairs; zero width when every
    pair says the same).
    """
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"prob_better: a and b must be paired, got {len(a)} and {len(b)} values")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    sign = 1.0 if mode == "max" else -1.0
    n = len(a)
    out = {"n": n, "ties": int((a == b).sum()), "p_better": float(_wins(a, b, sign)) if n else NAN,
           "ci_lo": NAN, "ci_hi": NAN}
    if n < 2:
        return out
    boot = stats.bootstrap((a, b), lambda x, y, axis: _wins(x, y, sign, axis), paired=True,
                           vectorized=True, n_resamples=resamples, confidence_level=level,
                           method="percentile", rng=np.random.default_rng(seed))
    return {**out, "ci_lo": float(boot.confidence_interval.low),
            "ci_hi": float(boot.confidence_interval.high)}


def prob_verdict(p: dict, min_runs: int = MIN_PAIRED_RUNS) -> str:
    """"a better" when the interval of P(A > B) lies above 0.5, "b better" below, "tied" when it
    holds 0.5, "too few paired runs" with fewer than `min_runs` pairs."""
    if p["n"] < min_runs or pd.isna(p["ci_lo"]):
        return "too few paired runs"
    return "a better" if p["ci_lo"] > 0.5 else "b better" if p["ci_hi"] < 0.5 else "tied"


def meaningful(p_better: float, threshold: float = MEANINGFUL) -> str:
    """Bouthillier et al.'s rule on P(A > B) alone: "a better" above `threshold`, "b better" below
    1 - threshold, "neither" between, "n/a" without a value."""
    if pd.isna(p_better):
        return "n/a"
    return "a better" if p_better > threshold else "b better" if p_better < 1 - threshold else "neither"


def pair_keys(trials: pd.DataFrame) -> list[str]:
    """What pairs two arms' runs: the seed, and the data split's seed where the table has one."""
    return ["seed", *(["split_seed"] if "split_seed" in trials else [])]


def prob_better_table(trials: pd.DataFrame, metric: str = "val_acc", mode: str = "max",
                      level: float = 0.95, order: list | None = None,
                      pairwise: pd.DataFrame | None = None, resamples: int = RESAMPLES,
                      seed: int = SEED) -> pd.DataFrame:
    """prob_better() for every pair of arms of the same study, over their completed confirmation
    runs with a final_<metric>, paired on pair_keys() (runs of one arm sharing a key are averaged).

    Needs trials columns: phase, status, arm, seed (split_seed when present), final_<metric>,
    family, depth, batchnorm, width (study when several are analysed). `order` is the arms' order
    (the ranking's: arm_a comes before arm_b; default: as they appear); `pairwise`, ranking.pairwise()
    of the same trials, gives each pair its Welch/Holm verdict.
    Columns PROB_COLUMNS: study, arm_a, arm_b, matched (plain vs residual at the same depth,
    BatchNorm and width), keys (what the runs are paired on), n, ties, p_better, ci_lo, ci_hi,
    verdict (prob_verdict), meaningful (Bouthillier's rule; None when few_runs: with fewer than
    MIN_PAIRED_RUNS paired runs a P of 1 or 0 is a handful of wins, not evidence), few_runs
    (n < MIN_PAIRED_RUNS), welch_verdict ("" without `pairwise`) and agree (whether the two
    verdicts are the same; None unless both are decided, i.e. "a better", "b better" or "tied":
    where either is "too few ..." or missing, no comparison was made).
    """
    col, keys = f"final_{metric}", pair_keys(trials)
    runs = rows(trials, phase="confirm", status="completed",
                need=(col, *keys, "study", "family", "depth", "batchnorm", "width"))
    runs = runs[runs[col].notna()].assign(study=lambda f: f["study"].fillna(""))
    if order is None:
        order = list(dict.fromkeys(runs["arm"]))
    info = runs.groupby("arm").first()
    scores = {arm: g.groupby(keys)[col].mean() for arm, g in runs.groupby("arm")}
    welch = {} if pairwise is None else dict(zip(zip(pairwise["arm_a"], pairwise["arm_b"]),
                                                  pairwise["verdict"]))
    table = []
    for a, b in itertools.combinations([arm for arm in order if arm in scores], 2):
        if info.loc[a, "study"] != info.loc[b, "study"]:
            continue   # runs of different studies are never paired
        both = pd.concat([scores[a], scores[b]], axis=1, join="inner")
        p = prob_better(both.iloc[:, 0], both.iloc[:, 1], mode, level, resamples, seed)
        decided = prob_verdict(p)
        other = welch.get((a, b), "")
        table.append({"study": info.loc[a, "study"], "arm_a": a, "arm_b": b,
                      "matched": _matched(info.loc[a], info.loc[b]), "keys": keys, **p,
                      "verdict": decided, "few_runs": p["n"] < MIN_PAIRED_RUNS,
                      "meaningful": None if p["n"] < MIN_PAIRED_RUNS else meaningful(p["p_better"]),
                      "welch_verdict": other, "agree": agreement(decided, other)})
    return pd.DataFrame(table, columns=PROB_COLUMNS)


def agreement(paired: str, welch: str) -> bool | None:
    """Whether the paired verdict and Welch's say the same; None when either is undecided ("too
    few ...") or missing, since then there is nothing to agree or disagree with."""
    if not (_decided(paired) and _decided(welch)):
        return None
    return paired == welch


def _decided(verdict: str) -> bool:
    return verdict in ("a better", "b better", "tied")


def _matched(a: pd.Series, b: pd.Series) -> bool:
    """A plain and a residual arm of the same depth, BatchNorm and width (as depth.matched_pairs)."""
    same_width = a["width"] == b["width"] or (pd.isna(a["width"]) and pd.isna(b["width"]))
    return bool({a["family"], b["family"]} == {"plain", "residual"} and a["depth"] == b["depth"]
                and bool(a["batchnorm"]) == bool(b["batchnorm"]) and same_width)


# ---- expected best against the search budget -------------------------------------------------------
def expected_best(scores, mode: str = "max") -> tuple[np.ndarray, np.ndarray]:
    """(expected, std): E[best of n] and its standard deviation for n = 1..N draws with replacement
    from the N finite `scores` (Dodge et al. 2019, eq. 1; std from E[best^2] with the same weights).
    "Best" is the maximum for mode "max", the minimum for "min". Empty arrays without a score.
    E[best of 1] is the mean; the curve rises (falls, for "min") with n towards the best score."""
    sign = 1.0 if mode == "max" else -1.0
    v = np.sort(sign * clean(scores))
    big_n = len(v)
    if not big_n:
        return np.array([]), np.array([])
    # eq. 1's sum_i v(i) (F(i)^n - F(i-1)^n), F(i) = i/N, summed by parts: v(N) - sum_{i<N} F(i)^n
    # (v(i+1) - v(i)). The same number, but exact where scores tie (no 1e-17 "gain" on equal ones).
    below = (np.arange(1, big_n) / big_n) ** np.arange(1, big_n + 1)[:, None]   # F(i)^n: n rows, i < N
    mean = v[-1] - below @ np.diff(v)
    square = v[-1] ** 2 - below @ np.diff(v ** 2)                               # E[best^2], alike
    var = np.clip(square - mean ** 2, 0.0, None)   # rounding can make it a hair negative
    return sign * mean, np.sqrt(var)


def expected_best_table(trials: pd.DataFrame, metric: str = "val_acc",
                        mode: str = "max") -> pd.DataFrame:
    """Per arm and budget n = 1..N (N: the arm's completed search trials with a final_<metric>):
    expected_best() against trials and seconds.

    Needs trials columns: phase, status, arm, final_<metric>, wall_seconds, cpu_seconds,
    gpu_seconds (study when several are analysed). Columns CURVE_COLUMNS: study, arm, trials (n),
    n_completed (N), expected, std, lo and hi (expected -+ std), and wall_seconds, cpu_seconds,
    gpu_seconds: n times the arm's search cost per completed trial (the seconds of all its search
    trials, pruned, diverged and failed ones included, over N; reserved CPU- and GPU-seconds are
    wall time x the resources reserved), so that n = N costs what the search spent.
    """
    col = f"final_{metric}"
    search = rows(trials, phase="search", need=(col, "study", *COSTS))
    table = []
    for arm, g in search.groupby("arm", sort=False):
        done = g[(g["status"] == "completed") & g[col].notna()]
        mean, std = expected_best(done[col], mode)
        per_draw = {c: g[c].astype(float).sum(min_count=1) / len(done) if len(done) else NAN
                    for c in COSTS}
        for n, (m, s) in enumerate(zip(mean, std), start=1):
            table.append({"study": "" if pd.isna(g["study"].iloc[0]) else g["study"].iloc[0],
                          "arm": arm, "trials": n, "n_completed": len(done), "expected": m,
                          "std": s, "lo": m - s, "hi": m + s, **{c: n * v for c, v in per_draw.items()}})
    return pd.DataFrame(table, columns=CURVE_COLUMNS)
