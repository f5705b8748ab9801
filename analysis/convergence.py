"""How fast does each arm learn, and how far apart do training and validation drift?

    generalisation_gap(epochs)                       # per arm and epoch: train - val, mean over seeds
    final_gap(epochs)                                # per arm: the last epoch's gap, per seed, with CI
    epochs_to_fraction(epochs, 0.95, "val_acc")      # per arm: epochs to reach 95% of the final value

All read the per-epoch table (`epochs`: one row per trial and epoch) of one phase (default the
confirmation runs, which all have the full epoch budget) and use completed trials only: a trial
whose last epoch's status is not "completed" (diverged, stopped early, crashed) is left out. If
the table has no status at all, every trial is used. train_loss and train_acc are running averages
over each epoch's batches (the weights move meanwhile), val_* are evaluated after the epoch.

Tests: .venv/bin/python -m pytest tests/test_analysis_questions.py
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .common import higher_is_better, rows
from .stats import mean_ci

GENERALISATION_GAP_COLUMNS = ["arm", "epoch", "n", "acc_gap", "loss_gap", "train_acc", "val_acc",
                              "train_loss", "val_loss"]
FINAL_GAP_COLUMNS = ["arm", "epoch", "n", "acc_gap", "acc_gap_ci_lo", "acc_gap_ci_hi", "loss_gap",
                     "loss_gap_ci_lo", "loss_gap_ci_hi"]
FRACTION_COLUMNS = ["arm", "n", "epochs_median", "epochs_min", "epochs_max", "last_epoch",
                    "n_censored", "all_censored", "final_mean"]


def completed_epochs(epochs: pd.DataFrame | None, phase: str, need: tuple = ()) -> pd.DataFrame:
    """The epoch rows of `phase` whose trial finished with status "completed", sorted by epoch.
    Needs columns: phase, status, arm, trial_id, epoch (study when several studies are read), and
    those in `need` (added as NaN when missing)."""
    ep = rows(epochs, phase=phase, need=("study", "trial_id", "epoch", *need))
    ep = ep.assign(study=ep["study"].fillna("")).sort_values(["study", "arm", "trial_id", "epoch"])
    if ep.empty or ep["status"].isna().all():
        return ep
    last = ep.groupby(["study", "arm", "trial_id"])["status"].transform("last")
    return ep[last == "completed"]


def generalisation_gap(epochs: pd.DataFrame, phase: str = "confirm") -> pd.DataFrame:
    """Per arm and epoch, means over seeds of acc_gap (train_acc - val_acc), loss_gap
    (val_loss - train_loss) and of the four curves themselves; n = seeds.

    Needs columns: phase, status, trial_id, arm, epoch, train_acc, val_acc, train_loss, val_loss.
    A positive gap means the net does better on its training data than on held-out data.
    """
    ep = completed_epochs(epochs, phase, need=("train_acc", "val_acc", "train_loss", "val_loss"))
    if ep.empty:
        return pd.DataFrame(columns=GENERALISATION_GAP_COLUMNS)
    ep = ep.assign(acc_gap=ep["train_acc"] - ep["val_acc"], loss_gap=ep["val_loss"] - ep["train_loss"])
    curves = ["acc_gap", "loss_gap", "train_acc", "val_acc", "train_loss", "val_loss"]
    out = ep.groupby(["arm", "epoch"]).agg(n=("trial_id", "nunique"), **{c: (c, "mean") for c in curves})
    return out.reset_index()[GENERALISATION_GAP_COLUMNS]


def final_gap(epochs: pd.DataFrame, phase: str = "confirm", level: float = 0.95) -> pd.DataFrame:
    """Per arm, each completed trial's gap at its last epoch (acc_gap = train_acc - val_acc,
    loss_gap = val_loss - train_loss), then the mean over seeds with its t-interval.

    Needs the same columns as generalisation_gap(). Columns: arm, epoch (the last epoch, the
    largest if seeds differ), n (seeds), acc_gap, acc_gap_ci_lo, acc_gap_ci_hi, loss_gap,
    loss_gap_ci_lo, loss_gap_ci_hi.
    """
    ep = completed_epochs(epochs, phase, need=("train_acc", "val_acc", "train_loss", "val_loss"))
    last = ep.groupby(["study", "arm", "trial_id"], sort=False).tail(1)
    table = []
    for arm, g in last.groupby("arm", sort=False):
        acc = mean_ci(g["train_acc"] - g["val_acc"], level)
        loss = mean_ci(g["val_loss"] - g["train_loss"], level)
        table.append({"arm": arm, "epoch": g["epoch"].max(), "n": max(acc[3], loss[3]),
                      "acc_gap": acc[0], "acc_gap_ci_lo": acc[1], "acc_gap_ci_hi": acc[2],
                      "loss_gap": loss[0], "loss_gap_ci_lo": loss[1], "loss_gap_ci_hi": loss[2]})
    return pd.DataFrame(table, columns=FINAL_GAP_COLUMNS)


def first_epoch_at(epoch: np.ndarray, values: np.ndarray, fraction: float, higher: bool) -> float:
    """The first epoch whose value reaches `fraction` of the final (last finite) value: value >=
    fraction * final when higher is better, value <= final / fraction otherwise. NaN if no value."""
    keep = np.isfinite(values)
    epoch, values = epoch[keep], values[keep]
    if not len(values):
        return float("nan")
    final = values[-1]
    hit = values >= fraction * final if higher else values <= final / fraction
    return float(epoch[np.argmax(hit)])   # the last epoch always hits, so argmax finds the first


def epochs_to_fraction(epochs: pd.DataFrame, fraction: float = 0.95, column: str = "val_acc",
                       phase: str = "confirm") -> pd.DataFrame:
    """Per arm: how many epochs each seed needs to reach `fraction` of its own final `column`
    (see first_epoch_at; a loss column counts as reached at final / fraction), as the median and the
    range (min-max) over seeds: with a handful of seeds and integer epochs a t-interval says little.

    A seed that reaches it only at its last epoch is censored: it was still improving, and would
    have needed that many epochs or more. n_censored counts the arm's censored seeds;
    all_censored is True only when every seed is (n_censored == n), so 2 censored seeds of 3 read
    n_censored 2, all_censored False. Needs columns: phase, status, trial_id, arm, epoch
    (1-based), `column`. Columns: arm, n (seeds), epochs_median, epochs_min, epochs_max,
    last_epoch (the largest last epoch), n_censored, all_censored, final_mean (mean final value).
    """
    ep = completed_epochs(epochs, phase, need=(column,))
    higher = higher_is_better(column)
    table = []
    for arm, g in ep.groupby("arm", sort=False):
        reached, finals, censored, lasts = [], [], 0, []
        for _, t in g.groupby(["study", "trial_id"], sort=False):
            values = t[column].to_numpy(dtype=float)
            epoch = t["epoch"].to_numpy(dtype=float)
            hit = first_epoch_at(epoch, values, fraction, higher)
            finite = values[np.isfinite(values)]
            if np.isfinite(hit):
                reached.append(hit)
                lasts.append(epoch[np.isfinite(values)][-1])
                censored += hit == lasts[-1]
                finals.append(finite[-1])
        n = len(reached)
        table.append({"arm": arm, "n": n, "epochs_median": float(np.median(reached)) if n else np.nan,
                      "epochs_min": min(reached) if n else np.nan,
                      "epochs_max": max(reached) if n else np.nan,
                      "last_epoch": max(lasts) if n else np.nan, "n_censored": int(censored),
                      "all_censored": bool(n and censored == n), "final_mean": mean_ci(finals)[0]})
    return pd.DataFrame(table, columns=FRACTION_COLUMNS)
