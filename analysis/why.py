"""Why does a deeper plain net do worse: vanishing gradients, an optimisation difficulty, or a
generalisation gap? (He et al. 2016 argue: optimisation, with healthy gradient norms under BN.)

    gradient_profile(gradflow, trials=trials)   # (attenuation.py) arm x epoch x layer gradient norms
    attenuation(gradflow, trials=trials)        # (attenuation.py) first/last-layer ratio per arm
    diagnose(trials, gradflow, "val_acc", "max")   # per degraded plain arm: where, and why

`trials` is the per-trial table, `gradflow` the per-layer one (may be empty when gradient flow was
off); only completed confirmation trials count, their gradient rows included. Numbers and verdict
codes only: analysis.sentences says them in words.

Tests: .venv/bin/python -m pytest tests/test_analysis_questions.py
"""
from __future__ import annotations

import pandas as pd

from .common import confirmed, left_out, rows, with_series
from .attenuation import (ATTENUATION_COLUMNS, EXPLODING_RATIO, PROFILE_COLUMNS, VANISHING_RATIO,
                       attenuation, completed_keys, gradient_profile)
from .ranking import verdict as welch_verdict
from .stats import NAN, welch

__all__ = ["ATTENUATION_COLUMNS", "EXPLODING_RATIO", "PROFILE_COLUMNS", "TRAIN_LOSS_MARGIN",
           "VANISHING_RATIO", "attenuation", "completed_keys", "diagnose", "gradient_profile"]

# The generalisation rule of diagnose(): a deep arm "trains no worse" than its reference when the
# upper end of the interval of its training-loss difference is at most this fraction of the
# reference's mean training loss (the data rule out a worsening larger than that).
TRAIN_LOSS_MARGIN = 0.10


# ---- diagnosis -----------------------------------------------------------------------------------
def diagnose(trials: pd.DataFrame, gradflow: pd.DataFrame | None = None, metric: str = "val_acc",
             mode: str = "max", level: float = 0.95) -> dict:
    """For each plain arm that scores worse on `metric` than a shallower plain arm of the same line
    and study (see common.series: VGG with VGG, plain-6n+2 with plain-6n+2, ...; the best such
    shallower arm is the reference): is the deficit beyond seed noise, is it an optimisation
    difficulty or a generalisation gap, and do its gradients vanish or explode? Also, for each
    model with arms both with and without BatchNorm: the same questions across BN.

    The rule (`where`): "optimisation" when the deep arm's final training loss is significantly
    higher (the interval of the difference lies above 0); "generalisation" only when the data rule
    out a meaningful training-loss worsening (the interval's upper end is at most TRAIN_LOSS_MARGIN
    of the reference's mean training loss) AND the deep arm's final generalisation gap (Welch test
    of the per-seed train - validation accuracy, or validation - training loss for a loss metric)
    is significantly larger; "unresolved" when the training-loss interval holds both no change and
    a meaningful worsening; "gap unresolved" when it trains no worse but the gap is not
    significantly larger; else "within noise", "too few seeds" or "no train loss".

    Needs trials columns: phase, status, arm, model, family, depth, batchnorm, width, study,
    final_<metric>, final_train_loss (and final_train_acc/final_val_acc or final_val_loss for the
    gap); gradflow as in attenuation() (may be empty; only completed trials' rows are used).
    Returns {"degradations": [...], "batchnorm": [...]} (one dict of numbers and verdict codes per
    comparison: `where` as above, `deficit` / `train_loss_higher` / `gap_larger` "yes", "no", "tied"
    or "too few seeds", gradients as in attenuation()), and what explains an empty diagnosis:
    "plain_arms" (plain arms with confirmation trials, completed or not), "plain_runs" (their
    completed runs with a value), "plain_lines" (lines with runs at 2 or more depths), "left_out"
    (common.left_out of the plain arms' runs).
    """
    col = f"final_{metric}"
    need = ("study", "model", "family", "line", "depth", "batchnorm", "width", col, "final_train_loss",
            "final_train_acc", "final_val_acc", "final_val_loss")
    runs = with_series(confirmed(trials, need=need))
    runs = runs[runs[col].notna()].assign(study=runs["study"].fillna(""),
                                          gap=_generalisation_gap(runs, metric))
    att = attenuation(gradflow, "confirm", level, trials).set_index("arm")
    sign = 1.0 if mode == "max" else -1.0
    plain = runs[runs["family"] == "plain"]
    degradations, lines = [], 0
    for _, g in plain.groupby(["study", "series", "width"], dropna=False):
        means, depth = g.groupby("arm")[col].mean(), g.groupby("arm")["depth"].first()
        lines += depth.nunique() >= 2
        for arm in means.index:
            better = [a for a in means.index
                      if depth[a] < depth[arm] and sign * (means[a] - means[arm]) > 0]
            if better:
                ref = max(better, key=lambda a: sign * means[a])
                degradations.append(_compare(g, arm, ref, col, mode, level, att))
    plain_arms = rows(trials, phase="confirm", need=("family",)).query("family == 'plain'")["arm"]
    return {"degradations": degradations, "batchnorm": _batchnorm(runs, col, mode, level, att),
            "plain_arms": plain_arms.nunique(), "plain_runs": len(plain), "plain_lines": int(lines),
            "left_out": left_out(trials, "confirm", (col, "final_train_loss"), set(plain_arms))}


def _generalisation_gap(runs: pd.DataFrame, metric: str) -> pd.Series:
    """Per run, the final generalisation gap: train - val accuracy, or val - train loss."""
    if metric.endswith("acc"):
        return runs["final_train_acc"] - runs["final_val_acc"]
    return runs["final_val_loss"] - runs["final_train_loss"]


def _compare(runs: pd.DataFrame, deep: str, ref: str, col: str, mode: str, level: float,
             att: pd.DataFrame) -> dict:
    a, b = runs[runs["arm"] == deep], runs[runs["arm"] == ref]
    score = welch(a[col], b[col], level)
    train = welch(a["final_train_loss"], b["final_train_loss"], level)
    gap = welch(a["gap"], b["gap"], level)
    entry = {"study": a["study"].iloc[0], "arm": deep, "reference": ref, "depth": a["depth"].iloc[0],
             "reference_depth": b["depth"].iloc[0], "metric": col, "n": score["n_a"],
             "reference_n": score["n_b"], "mean": a[col].mean(), "reference_mean": b[col].mean(),
             "diff": score["diff"], "diff_ci_lo": score["lo"], "diff_ci_hi": score["hi"], "p": score["p"],
             "deficit": welch_verdict(score, mode, "no", "yes"),
             "train_loss": a["final_train_loss"].mean(), "reference_train_loss":
             b["final_train_loss"].mean(), "train_loss_diff": train["diff"],
             "train_loss_ci_lo": train["lo"], "train_loss_ci_hi": train["hi"], "train_loss_p": train["p"],
             "train_loss_higher": welch_verdict(train, "max", "yes", "no"),
             "train_loss_margin": TRAIN_LOSS_MARGIN * abs(b["final_train_loss"].mean()),
             "gap_diff": gap["diff"], "gap_ci_lo": gap["lo"], "gap_ci_hi": gap["hi"], "gap_p": gap["p"],
             "gap_larger": welch_verdict(gap, "max", "yes", "no"), **_gradients(att, deep)}
    entry["where"] = _where(entry)
    return entry


def _gradients(att: pd.DataFrame, arm: str) -> dict:
    if arm not in att.index:
        return {"vanishing": None, "exploding": None, "ratio_first": NAN, "ratio_last": NAN}
    row = att.loc[arm]
    return {"vanishing": bool(row["vanishing"]), "exploding": bool(row["exploding"]),
            "ratio_first": row["ratio_first"], "ratio_last": row["ratio_last"]}


def _where(e: dict) -> str:
    """See diagnose() for the rule."""
    if e["deficit"] == "too few seeds":
        return "too few seeds"
    if e["deficit"] != "yes":
        return "within noise"
    if e["train_loss_higher"] == "too few seeds":
        return "no train loss"
    if e["train_loss_higher"] == "yes":
        return "optimisation"
    if not e["train_loss_ci_hi"] <= e["train_loss_margin"]:
        return "unresolved"
    return "generalisation" if e["gap_larger"] == "yes" else "gap unresolved"


def _batchnorm(runs: pd.DataFrame, col: str, mode: str, level: float, att: pd.DataFrame) -> list:
    """Arms of the same study, model and width with and without BatchNorm, compared on `col`."""
    out = []
    for (study, model, _), g in runs.groupby(["study", "model", "width"], dropna=False):
        with_bn, without = g[g["batchnorm"]], g[~g["batchnorm"]]
        for bn_arm, a in with_bn.groupby("arm"):
            for nobn_arm, b in without.groupby("arm"):
                test = welch(a[col], b[col], level)
                flow_bn, flow_nobn = _gradients(att, bn_arm), _gradients(att, nobn_arm)
                e = {"study": study, "model": model, "arm_bn": bn_arm, "arm_nobn": nobn_arm,
                     "metric": col, "mean_bn": a[col].mean(), "mean_nobn": b[col].mean(),
                     "diff": test["diff"], "diff_ci_lo": test["lo"], "diff_ci_hi": test["hi"],
                     "p": test["p"], "verdict": welch_verdict(test, mode, "with BN better",
                                                              "without BN better"),
                     "vanishing_bn": flow_bn["vanishing"], "vanishing_nobn": flow_nobn["vanishing"],
                     "exploding_bn": flow_bn["exploding"], "exploding_nobn": flow_nobn["exploding"]}
                out.append(e)
    return out
