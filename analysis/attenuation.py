"""Gradient flow of the confirmation runs: how the gradient norm changes from the last layer back to
the first, per arm (the evidence why.py weighs for "vanishing gradients").

    gradient_profile(gradflow, trials=trials)   # arm x epoch x layer mean gradient norms, for heatmaps
    attenuation(gradflow, trials=trials)        # per arm: first/last-layer ratio, vanishing / exploding

`gradflow` is the per-layer table (one row per trial, epoch and layer; `index` 0 is the first layer
in forward order); it may be empty when gradient flow was off. Given `trials` (the per-trial
table), only the trials that completed count: a diverged run's last epochs would otherwise set an
arm's gradient statistics.

Tests: .venv/bin/python -m pytest tests/test_analysis_questions.py
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .common import rows
from .stats import NAN, mean_ci

# A gradient "vanishes" when the first layer's gradient norm is below VANISHING_RATIO times the last
# layer's in EVERY seed of an arm, at its first epoch or at its last; it "explodes" (towards the
# input) when that ratio is above EXPLODING_RATIO in every seed. Healthy nets sit around 0.1-10;
# three orders of magnitude either way is a conservative flag.
VANISHING_RATIO = 1e-3
EXPLODING_RATIO = 1e3
PROFILE_COLUMNS = ["arm", "epoch", "index", "layer", "grad_norm", "grad_mean_abs", "update_ratio", "n"]
ATTENUATION_COLUMNS = ["arm", "family", "depth", "batchnorm", "n", "ratio_first", "ratio_first_lo",
                       "ratio_first_hi", "ratio_last", "ratio_last_lo", "ratio_last_hi",
                       "min_rel_first", "min_rel_last", "min_grad_norm", "update_ratio", "vanishing",
                       "exploding"]
LAYER_STATS = ("grad_norm", "grad_mean_abs", "update_ratio")


def completed_keys(trials: pd.DataFrame | None, phase: str = "confirm") -> set[tuple]:
    """(study, arm, trial_id) of the trials of `phase` that completed. Needs trials columns: phase,
    status, arm, trial_id (study when several studies are read; "" otherwise)."""
    done = rows(trials, phase=phase, status="completed", need=("study", "trial_id"))
    return set(zip(done["study"].fillna(""), done["arm"], done["trial_id"]))


def _layers(gradflow: pd.DataFrame | None, phase: str, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """The gradflow rows of `phase`; of completed trials only when `trials` is given."""
    layers = rows(gradflow, phase=phase, need=("study", "trial_id", "epoch", "index", "layer",
                                               *LAYER_STATS, "family", "depth", "batchnorm"))
    if trials is None or layers.empty:
        return layers
    keys = completed_keys(trials, phase)
    keep = [k in keys for k in zip(layers["study"].fillna(""), layers["arm"], layers["trial_id"])]
    return layers[keep]


def gradient_profile(gradflow: pd.DataFrame, phase: str = "confirm",
                     trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per arm, epoch and layer (index, layer name): the mean over seeds of grad_norm,
    grad_mean_abs and update_ratio, and n (seeds). Needs gradflow columns: phase, arm, trial_id,
    epoch, index, layer, grad_norm, grad_mean_abs, update_ratio (study when several studies are
    read); with `trials` (columns as in completed_keys), only the trials of `phase` that completed
    count."""
    layers = _layers(gradflow, phase, trials)
    if layers.empty:
        return pd.DataFrame(columns=PROFILE_COLUMNS)
    out = (layers.groupby(["arm", "epoch", "index"], sort=True)
           .agg(layer=("layer", "first"), grad_norm=("grad_norm", "mean"),
                grad_mean_abs=("grad_mean_abs", "mean"), update_ratio=("update_ratio", "mean"),
                n=("trial_id", "nunique")).reset_index())
    return out[PROFILE_COLUMNS]


def _trial_epochs(layers: pd.DataFrame) -> pd.DataFrame:
    """One row per trial and epoch: first/last-layer gradient-norm ratio, smallest layer norm
    relative to the median layer, smallest absolute norm, mean update ratio."""
    table = []
    for (arm, trial, epoch), g in layers.groupby(["arm", "trial_id", "epoch"]):
        norms = g.sort_values("index")["grad_norm"].to_numpy(dtype=float)
        median = float(np.median(norms))
        table.append({"arm": arm, "trial_id": trial, "epoch": epoch,
                      "ratio": norms[0] / norms[-1] if norms[-1] > 0 else NAN,
                      "min_rel": norms.min() / median if median > 0 else NAN,
                      "min_norm": float(norms.min()), "update_ratio": float(g["update_ratio"].mean())})
    return pd.DataFrame(table)


def _geo_ci(values, level: float) -> tuple[float, float, float]:
    """Geometric mean and interval (a t-interval on log10), for ratios spanning decades."""
    logs = np.log10(np.maximum(np.asarray(values, dtype=float), 1e-300))
    mean, lo, hi, _ = mean_ci(logs, level)
    return 10 ** mean, 10 ** lo, 10 ** hi


def attenuation(gradflow: pd.DataFrame, phase: str = "confirm", level: float = 0.95,
                trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per arm: how much the gradient shrinks from the last layer back to the first.

    Needs the gradflow table's columns (arm, trial_id, epoch, index, grad_norm, update_ratio, and
    family, depth, batchnorm). Columns: arm, family, depth, batchnorm, n (seeds), ratio_first (the
    geometric mean over seeds of grad_norm[first layer] / grad_norm[last layer] at each trial's
    first epoch) with ratio_first_lo/_hi (interval on the log scale; NaN with one seed), the same at
    the last epoch (ratio_last...), min_rel_first / min_rel_last (smallest layer norm / median layer
    norm, geometric mean over seeds), min_grad_norm (smallest layer norm seen anywhere), update_ratio
    (mean over layers, epochs and seeds), vanishing: True when every seed's first/last ratio is
    below VANISHING_RATIO (1e-3) at the first epoch, or every seed's is at the last epoch, and
    exploding: the same with every ratio above EXPLODING_RATIO (1e3). With `trials`, only the
    trials of `phase` that completed count.
    """
    layers = _layers(gradflow, phase, trials)
    if layers.empty:
        return pd.DataFrame(columns=ATTENUATION_COLUMNS)
    per = _trial_epochs(layers)
    epoch = per.groupby(["arm", "trial_id"])["epoch"]
    first = per[per["epoch"] == epoch.transform("min")]
    last = per[per["epoch"] == epoch.transform("max")]
    info = layers.groupby("arm")[["family", "depth", "batchnorm"]].first()
    table = []
    for arm, g in per.groupby("arm"):
        f, l = first[first["arm"] == arm], last[last["arm"] == arm]
        rf, rl = _geo_ci(f["ratio"].dropna(), level), _geo_ci(l["ratio"].dropna(), level)
        table.append({"arm": arm, **info.loc[arm].to_dict(), "n": g["trial_id"].nunique(),
                      "ratio_first": rf[0], "ratio_first_lo": rf[1], "ratio_first_hi": rf[2],
                      "ratio_last": rl[0], "ratio_last_lo": rl[1], "ratio_last_hi": rl[2],
                      "min_rel_first": _geo_ci(f["min_rel"].dropna(), level)[0],
                      "min_rel_last": _geo_ci(l["min_rel"].dropna(), level)[0],
                      "min_grad_norm": float(g["min_norm"].min()),
                      "update_ratio": float(g["update_ratio"].mean()),
                      "vanishing": _all(f["ratio"], 1) or _all(l["ratio"], 1),
                      "exploding": _all(f["ratio"], -1) or _all(l["ratio"], -1)})
    return pd.DataFrame(table, columns=ATTENUATION_COLUMNS)


def _all(ratios: pd.Series, below: int) -> bool:
    """Every ratio below VANISHING_RATIO (below=1) or above EXPLODING_RATIO (below=-1)."""
    ratios = ratios.dropna()
    hit = ratios < VANISHING_RATIO if below > 0 else ratios > EXPLODING_RATIO
    return bool(len(ratios) > 0 and hit.all())
