"""Small statistics helpers for the analysis: confidence intervals, two-sample tests, effect sizes
and regression slopes. scipy does the statistics (scipy.stats.t.interval, ttest_ind, linregress);
the functions here are thin wrappers that drop NaNs first and answer NaN (never raise, never warn)
when there is too little data. Nothing here reads files or knows about studies.

    from analysis.stats import mean_ci, welch, hedges_g, holm, slope_ci
    mean, lo, hi, n = mean_ci([0.91, 0.93, 0.92])          # t-interval of the mean
    welch([1.0, 1.2, 1.1], [0.8, 0.9, 0.7])                # {'t', 'p', 'df', 'diff', 'lo', 'hi', ...}
    holm([0.01, 0.04, 0.03])                               # Holm-adjusted p-values
    slope_ci(depths, losses)                               # {'slope', 'lo', 'hi', 'p', 'n'}

Too little data: fewer than 2 values for a mean's interval, fewer than 2 per side for a two-sample
test, fewer than 3 points or a single distinct x for a slope. No spread at all (every value equal)
gives a zero-width interval, where scipy would answer NaN.

Tests: .venv/bin/python -m pytest tests/test_analysis_stats.py
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

NAN = float("nan")


def clean(values) -> np.ndarray:
    """The finite values of `values` as a float array (NaN and +-inf dropped)."""
    x = np.asarray(values, dtype=float).ravel()
    return x[np.isfinite(x)]


def t_interval(center: float, se: float, df: float, level: float = 0.95) -> tuple[float, float]:
    """(lo, hi): center -+ the two-sided t critical value (`df` degrees of freedom) times `se`
    (scipy.stats.t.interval); (center, center) when se is 0, where scipy answers NaN."""
    if se == 0:
        return center, center
    lo, hi = stats.t.interval(level, df, loc=center, scale=se)
    return float(lo), float(hi)


def value_range(column: str) -> tuple[float, float] | None:
    """The values a metric column can take: [0, 1] for an accuracy (a fraction), else None."""
    return (0.0, 1.0) if column.endswith("_acc") else None


def mean_ci(values, level: float = 0.95,
            within: tuple[float, float] | None = None) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n): the mean with its t-interval on n - 1 df; lo and hi are NaN when n < 2.
    `within` (value_range: an accuracy's [0, 1]) cuts the interval to the values' range: with 2
    or 3 seeds a t-interval of an accuracy can reach below 0 or above 1, and the cut interval
    keeps its coverage, since the true mean lies in the range (Mandelkern, "Setting confidence
    intervals for bounded parameters", Statistical Science 17, 2002)."""
    x = clean(values)
    n = len(x)
    if n == 0:
        return NAN, NAN, NAN, 0
    mean = float(x.mean())
    if n < 2:
        return mean, NAN, NAN, n
    lo, hi = t_interval(mean, float(stats.sem(x)), n - 1, level)
    if within is not None:
        lo, hi = max(lo, within[0]), min(hi, within[1])
    return mean, lo, hi, n


def welch(a, b, level: float = 0.95) -> dict:
    """Welch's two-sample t-test of mean(a) - mean(b), and that difference's interval
    (scipy.stats.ttest_ind(equal_var=False) and its confidence_interval).

    Returns t, p (two-sided), df (Welch-Satterthwaite), diff, lo, hi, n_a, n_b. With fewer than 2
    values on either side everything but diff and the counts is NaN. With no spread on either side
    a nonzero difference gets p = 0, t = +-inf and a zero-width interval; a zero difference gets
    p = 1 and t = 0; df is then n_a + n_b - 2.
    """
    a, b = clean(a), clean(b)
    na, nb = len(a), len(b)
    diff = float(a.mean() - b.mean()) if na and nb else NAN
    out = {"t": NAN, "p": NAN, "df": NAN, "diff": diff, "lo": NAN, "hi": NAN, "n_a": na, "n_b": nb}
    if na < 2 or nb < 2:
        return out
    if np.ptp(a) == 0 and np.ptp(b) == 0:   # not var() == 0: [0.1] * 3 has a variance of 3e-34
        diff = float(a[0] - b[0])            # and a mean 2e-17 above 0.1
        return {**out, "diff": diff, "t": 0.0 if diff == 0 else np.sign(diff) * np.inf, "p": float(diff == 0),
                "df": float(na + nb - 2), "lo": diff, "hi": diff}
    with warnings.catch_warnings():   # one side without spread is fine here; scipy warns of it
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        test = stats.ttest_ind(a, b, equal_var=False)
        interval = test.confidence_interval(level)
    return {**out, "t": float(test.statistic), "p": float(test.pvalue), "df": float(test.df),
            "lo": float(interval.low), "hi": float(interval.high)}


def hedges_g(a, b) -> float:
    """Hedges' g: (mean(a) - mean(b)) / pooled SD, with the small-sample correction
    1 - 3 / (4 (n_a + n_b) - 9). NaN with fewer than 2 values per side or no spread at all."""
    a, b = clean(a), clean(b)
    na, nb = len(a), len(b)
    if na < 2 or nb < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return NAN
    pooled = np.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    return float((a.mean() - b.mean()) / pooled * (1 - 3 / (4 * (na + nb) - 9)))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (same order as given): the k-th smallest
    of m finite p-values becomes max over j <= k of min(1, (m - j + 1) p_(j)). NaN p-values stay NaN
    and do not count in m. Rejecting where the adjusted p < alpha controls the family-wise error."""
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full(p.shape, NAN)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out


def slope_ci(x, y, level: float = 0.95) -> dict:
    """OLS slope of y on x (scipy.stats.linregress) with its t-interval on n - 2 df.

    Returns slope, lo, hi, p (two-sided, slope = 0), n. Pairs with a NaN in x or y are dropped;
    with fewer than 3 points or a single distinct x, everything but n is NaN.
    """
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 3 or len(np.unique(x)) < 2:
        return {"slope": NAN, "lo": NAN, "hi": NAN, "p": NAN, "n": n}
    fit = stats.linregress(x, y)
    lo, hi = t_interval(float(fit.slope), float(fit.stderr), n - 2, level)
    p = float(fit.pvalue) if np.isfinite(fit.pvalue) else float(fit.stderr == 0 and fit.slope == 0)
    return {"slope": float(fit.slope), "lo": lo, "hi": hi, "p": p, "n": n}


def slope_diff_ci(x, y, group, level: float = 0.95) -> dict:
    """How much steeper y rises with x where group is true than where it is false: the interaction
    b3 of the OLS fit y = b0 + b1 x + b2 g + b3 x g (equal residual variance assumed in both groups).

    Returns slope_true, slope_false, diff (= b3 = slope_true - slope_false), lo, hi, p, n. NaN unless
    each group has 2+ distinct x and there are more than 4 points.
    """
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    g = np.asarray(group, dtype=bool).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y, g = x[keep], y[keep], g[keep]
    n = len(x)
    out = {"slope_true": NAN, "slope_false": NAN, "diff": NAN, "lo": NAN, "hi": NAN, "p": NAN, "n": n}
    if n <= 4 or len(np.unique(x[g])) < 2 or len(np.unique(x[~g])) < 2:
        return out
    design = np.column_stack([np.ones(n), x, g, x * g])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = n - 4
    sigma2 = float(np.sum((y - design @ coef) ** 2) / dof)
    se = float(np.sqrt(sigma2 * np.linalg.inv(design.T @ design)[3, 3]))
    diff = float(coef[3])
    if se == 0:
        p = float(diff == 0)
    else:
        p = float(2 * stats.t.sf(abs(diff / se), dof))
    lo, hi = t_interval(diff, se, dof, level)
    return {**out, "slope_true": float(coef[1] + coef[3]), "slope_false": float(coef[1]), "diff": diff,
            "lo": lo, "hi": hi, "p": p}
