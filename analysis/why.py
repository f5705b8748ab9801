"""Why does a deeper plain net do worse: vanishing gradients, an optimisation difficulty, or a
generalisation gap? (He et al. 2016 argue: optimisation, with healthy gradient norms under BN.)

    gradient_profile(gradflow)            # arm x epoch x layer mean gradient norms, for heatmaps
    attenuation(gradflow)                 # per arm: first/last-layer gradient ratio, `vanishing`
    diagnose(trials, gradflow, "val_acc", "max")   # per degraded plain arm: where, and why, in words

`gradflow` is the per-layer table (one row per trial, epoch and layer; `index` 0 is the first layer
in forward order); it may be empty when gradient flow was off. `trials` is the per-trial table.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .common import ci, confirmed, num, pval, rows, with_series
from .ranking import verdict as welch_verdict
from .stats import NAN, mean_ci, welch

# A layer's gradient "vanishes" when the first layer's gradient norm is below this fraction of the
# last layer's in EVERY seed of an arm, at its first epoch or at its last. Healthy nets sit around
# 0.1-10; 1e-3 is three orders of magnitude of attenuation, so the flag is conservative.
VANISHING_RATIO = 1e-3
PROFILE_COLUMNS = ["arm", "epoch", "index", "layer", "grad_norm", "grad_mean_abs", "update_ratio", "n"]
ATTENUATION_COLUMNS = ["arm", "family", "depth", "batchnorm", "n", "ratio_first", "ratio_first_lo",
                       "ratio_first_hi", "ratio_last", "ratio_last_lo", "ratio_last_hi",
                       "min_rel_first", "min_rel_last", "min_grad_norm", "update_ratio", "vanishing"]
LAYER_STATS = ("grad_norm", "grad_mean_abs", "update_ratio")


def _layers(gradflow: pd.DataFrame | None, phase: str) -> pd.DataFrame:
    return rows(gradflow, phase=phase, need=("trial_id", "epoch", "index", "layer", *LAYER_STATS,
                                             "family", "depth", "batchnorm"))


def gradient_profile(gradflow: pd.DataFrame, phase: str = "confirm") -> pd.DataFrame:
    """Per arm, epoch and layer (index, layer name): the mean over seeds of grad_norm,
    grad_mean_abs and update_ratio, and n (seeds). Needs the gradflow table's columns."""
    layers = _layers(gradflow, phase)
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


def attenuation(gradflow: pd.DataFrame, phase: str = "confirm", level: float = 0.95) -> pd.DataFrame:
    """Per arm: how much the gradient shrinks from the last layer back to the first.

    Needs the gradflow table's columns (arm, trial_id, epoch, index, grad_norm, update_ratio, and
    family, depth, batchnorm). Columns: arm, family, depth, batchnorm, n (seeds), ratio_first (the
    geometric mean over seeds of grad_norm[first layer] / grad_norm[last layer] at each trial's
    first epoch) with ratio_first_lo/_hi (interval on the log scale; NaN with one seed), the same at
    the last epoch (ratio_last...), min_rel_first / min_rel_last (smallest layer norm / median layer
    norm, geometric mean over seeds), min_grad_norm (smallest layer norm seen anywhere), update_ratio
    (mean over layers, epochs and seeds) and vanishing: True when every seed's first/last ratio is
    below VANISHING_RATIO (1e-3) at the first epoch, or every seed's is at the last epoch.
    """
    layers = _layers(gradflow, phase)
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
                      "vanishing": _all_below(f["ratio"]) or _all_below(l["ratio"])})
    return pd.DataFrame(table, columns=ATTENUATION_COLUMNS)


def _all_below(ratios: pd.Series) -> bool:
    ratios = ratios.dropna()
    return bool(len(ratios) > 0 and (ratios < VANISHING_RATIO).all())


# ---- diagnosis -----------------------------------------------------------------------------------
def diagnose(trials: pd.DataFrame, gradflow: pd.DataFrame | None = None, metric: str = "val_acc",
             mode: str = "max", level: float = 0.95) -> dict:
    """For each plain arm that scores worse on `metric` than a shallower plain arm of the same line
    (see common.series: VGG with VGG, plain-6n+2 with plain-6n+2, ...; the best such shallower arm
    is the reference): is the deficit beyond seed noise, does it show in final_train_loss
    (optimisation difficulty) or only on `metric` (generalisation), and do its gradients vanish?
    Also, for each model with arms both with and without BatchNorm: the same questions across BN.

    Needs trials columns: phase, status, arm, model, family, depth, batchnorm, width,
    final_<metric>, final_train_loss; and gradflow as in attenuation() (may be empty).
    Returns {"degradations": [...], "batchnorm": [...], "text": [sentences]}; each entry holds the
    numbers behind its own one-sentence `text`.
    """
    col = f"final_{metric}"
    runs = with_series(confirmed(trials, need=("model", "family", "depth", "batchnorm", "width", col,
                                               "final_train_loss")))
    att = attenuation(gradflow, "confirm", level).set_index("arm")
    sign = 1.0 if mode == "max" else -1.0
    plain = runs[runs["family"] == "plain"]
    degradations = []
    for _, g in plain.groupby(["series", "width"], dropna=False):
        means = g.groupby("arm")[col].mean()
        depth = g.groupby("arm")["depth"].first()
        for arm in means.index:
            better = [a for a in means.index
                      if depth[a] < depth[arm] and sign * (means[a] - means[arm]) > 0]
            if better:
                ref = max(better, key=lambda a: sign * means[a])
                degradations.append(_compare(g, arm, ref, col, mode, level, att))
    batchnorm = _batchnorm(runs, col, mode, level, att)
    text = [d["text"] for d in degradations + batchnorm]
    if not degradations:
        text.insert(0, "No plain arm scores worse on " + metric + " than a shallower plain arm of the "
                    "same line, so there is no depth degradation to diagnose.")
    return {"degradations": degradations, "batchnorm": batchnorm, "text": text}


def _compare(runs: pd.DataFrame, deep: str, ref: str, col: str, mode: str, level: float,
             att: pd.DataFrame) -> dict:
    a, b = runs[runs["arm"] == deep], runs[runs["arm"] == ref]
    score = welch(a[col], b[col], level)
    train = welch(a["final_train_loss"], b["final_train_loss"], level)
    entry = {"arm": deep, "reference": ref, "depth": a["depth"].iloc[0], "reference_depth":
             b["depth"].iloc[0], "metric": col, "mean": a[col].mean(), "reference_mean": b[col].mean(),
             "diff": score["diff"], "diff_ci_lo": score["lo"], "diff_ci_hi": score["hi"], "p": score["p"],
             "deficit": welch_verdict(score, mode, "no", "yes"),
             "train_loss": a["final_train_loss"].mean(), "reference_train_loss":
             b["final_train_loss"].mean(), "train_loss_diff": train["diff"],
             "train_loss_ci_lo": train["lo"], "train_loss_ci_hi": train["hi"], "train_loss_p": train["p"],
             "train_loss_higher": welch_verdict(train, "max", "yes", "no"),
             **_gradients(att, deep)}
    entry["where"] = _where(entry)
    entry["text"] = _degradation_text(entry, level)
    return entry


def _gradients(att: pd.DataFrame, arm: str) -> dict:
    if arm not in att.index:
        return {"vanishing": None, "ratio_first": NAN, "ratio_last": NAN}
    row = att.loc[arm]
    return {"vanishing": bool(row["vanishing"]), "ratio_first": row["ratio_first"],
            "ratio_last": row["ratio_last"]}


def _where(e: dict) -> str:
    """optimisation / generalisation / within noise / too few seeds / no train loss."""
    if e["deficit"] == "too few seeds":
        return "too few seeds"
    if e["deficit"] != "yes":
        return "within noise"
    if e["train_loss_higher"] == "yes":
        return "optimisation"
    return "generalisation" if e["train_loss_higher"] in ("no", "tied") else "no train loss"


def _grad_clause(e: dict) -> str:
    if e["vanishing"] is None:
        return "gradient flow was not recorded"
    ratios = (f"first/last-layer gradient-norm ratio {num(e['ratio_first'])} at the first epoch, "
              f"{num(e['ratio_last'])} at the last")
    return (f"its gradients vanish ({ratios})" if e["vanishing"]
            else f"its gradients do not vanish ({ratios})")


def _degradation_text(e: dict, level: float) -> str:
    head = (f"{e['arm']} scores below {e['reference']} on {e['metric']} ({num(e['mean'])} vs "
            f"{num(e['reference_mean'])}, difference {num(e['diff'])}, "
            f"{ci(e['diff_ci_lo'], e['diff_ci_hi'], level)}, {pval(e['p'])})")
    loss = (f"final training loss {num(e['train_loss'])} vs {num(e['reference_train_loss'])}, "
            f"difference {num(e['train_loss_diff'])}, "
            f"{ci(e['train_loss_ci_lo'], e['train_loss_ci_hi'], level)}, {pval(e['train_loss_p'])}")
    body = {
        "too few seeds": "but with fewer than 2 seeds per arm there is no telling it from seed noise",
        "within noise": "but the difference is within seed noise, so there is no degradation to explain",
        "no train loss": "and the final training loss is missing, so optimisation and generalisation "
                         "cannot be told apart",
        "optimisation": f"and also trains worse ({loss}): an optimisation difficulty",
        "generalisation": f"but does not train worse ({loss}): a generalisation gap, not an "
                          "optimisation difficulty",
    }[e["where"]]
    return f"{head} {body}; {_grad_clause(e)}."


def _batchnorm(runs: pd.DataFrame, col: str, mode: str, level: float, att: pd.DataFrame) -> list:
    """Arms of the same model and width with and without BatchNorm, compared on `col`."""
    out = []
    for (model, _), g in runs.groupby(["model", "width"], dropna=False):
        with_bn, without = g[g["batchnorm"]], g[~g["batchnorm"]]
        for bn_arm, a in with_bn.groupby("arm"):
            for nobn_arm, b in without.groupby("arm"):
                test = welch(a[col], b[col], level)
                e = {"model": model, "arm_bn": bn_arm, "arm_nobn": nobn_arm, "metric": col,
                     "mean_bn": a[col].mean(), "mean_nobn": b[col].mean(), "diff": test["diff"],
                     "diff_ci_lo": test["lo"], "diff_ci_hi": test["hi"], "p": test["p"],
                     "verdict": welch_verdict(test, mode, "with BN better", "without BN better"),
                     "vanishing_bn": _gradients(att, bn_arm)["vanishing"],
                     "vanishing_nobn": _gradients(att, nobn_arm)["vanishing"]}
                e["text"] = (f"{model} with vs without BatchNorm on {col}: {num(e['mean_bn'])} vs "
                             f"{num(e['mean_nobn'])} ({ci(e['diff_ci_lo'], e['diff_ci_hi'], level)}, "
                             f"{pval(e['p'])}): {e['verdict']}; gradients vanish with BN: "
                             f"{_yes_no(e['vanishing_bn'])}, without: {_yes_no(e['vanishing_nobn'])}.")
                out.append(e)
    return out


def _yes_no(flag) -> str:
    return "not recorded" if flag is None else ("yes" if flag else "no")
