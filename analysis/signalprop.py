"""Signal propagation of the confirmation runs (Brock, De & Smith 2021): how the activations' scale
changes from the first block to the last, per arm, at initialisation and after training.

    signal_profile(signalprop, trials=trials)   # arm x epoch x block mean statistics, for the figure
    signal_growth(signalprop, trials=trials)    # per arm: last/first-block variance, and its verdict
    signal_answer(signalprop, trials=trials)    # the records for answers["why"]["signal_propagation"]
    sentences(signal_growth(...))               # the verdicts in words

`signalprop` is the per-block table (studyfiles/contract.py SIGNALPROP_COLUMNS: one row per trial,
epoch and block; `index` 0 is the first block; epoch 0 is at initialisation). It may be empty: when
gradient flow was off, or in a folder written before the table existed. Given `trials`, only the
trials that completed count (as in attenuation.py).

Brock et al.'s reading: in a residual net without normalisation the variance doubles block after
block (He init: each branch adds as much variance as it receives), in one with BatchNorm it grows
by about one per block (each normalised branch adds a unit). In a deep plain net without
normalisation the variance across the batch collapses while the squared channel mean stays: the
inputs' activations become alike; BatchNorm keeps both flat. A net whose activations explode or
collapse across its depth starts training from a badly scaled or uninformative signal.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .common import num, records, rows
from .attenuation import completed_keys

# The variance "explodes" across the net when avg_var at the last block is above EXPLODING_GROWTH
# times that at the first block, at more than PER_BLOCK_GROWTH times per block on average (geometric
# growth), in every seed; it "collapses" when it is below COLLAPSING_GROWTH at less than
# 1 / PER_BLOCK_GROWTH per block. Measured at initialisation (width 0.25-0.5, 3 seeds): unnormalised
# ResNets grow 40-90x (ResNet-20) to 1e13x (ResNet-110), about x1.6-2 per block; BatchNorm ResNets
# grow linearly, 3x (ResNet-20) to 15x (ResNet-110, x1.05 per block); plain nets without BatchNorm
# collapse (VGG-24 0.003-0.01x, plain-110 1e-14x: the batch's activations become alike), with
# BatchNorm they stay within 0.9-1.3x.
EXPLODING_GROWTH = 10.0
COLLAPSING_GROWTH = 0.1
PER_BLOCK_GROWTH = 1.2
STATS = ("avg_sq_mean", "avg_var", "residual_var")
PROFILE_COLUMNS = ["arm", "epoch", "index", "block", *STATS, "n"]
GROWTH_COLUMNS = ["arm", "family", "depth", "batchnorm", "n", "blocks", "epoch_first", "epoch_last",
                  "growth_first", "growth_last", "per_block_first", "per_block_last",
                  "verdict_first", "verdict_last"]


def _blocks(signalprop: pd.DataFrame | None, phase: str, trials: pd.DataFrame | None) -> pd.DataFrame:
    """The signalprop rows of `phase`; of completed trials only when `trials` is given."""
    blocks = rows(signalprop, phase=phase, need=("study", "trial_id", "epoch", "index", "block", *STATS,
                                                 "family", "depth", "batchnorm"))
    if trials is None or blocks.empty:
        return blocks
    keys = completed_keys(trials, phase)
    return blocks[[k in keys for k in zip(blocks["study"].fillna(""), blocks["arm"], blocks["trial_id"])]]


def signal_profile(signalprop: pd.DataFrame | None, phase: str = "confirm",
                   trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per arm, epoch and block (index, block name): the mean over seeds of avg_sq_mean, avg_var
    and residual_var (NaN for non-residual blocks), and n (seeds). Columns PROFILE_COLUMNS."""
    blocks = _blocks(signalprop, phase, trials)
    if blocks.empty:
        return pd.DataFrame(columns=PROFILE_COLUMNS)
    out = (blocks.groupby(["arm", "epoch", "index"], sort=True)
           .agg(block=("block", "first"), **{s: (s, "mean") for s in STATS},
                n=("trial_id", "nunique")).reset_index())
    return out[PROFILE_COLUMNS]


def verdict(growths, blocks: int) -> str:
    """'explodes', 'collapses' or 'stable' when every seed's last/first-block variance ratio (over
    `blocks` blocks) says so (EXPLODING_GROWTH, COLLAPSING_GROWTH, PER_BLOCK_GROWTH), 'mixed' when
    the seeds disagree, 'unknown' without a ratio or with fewer than two blocks."""
    values = np.asarray([g for g in growths if not np.isnan(g)], dtype=float)
    if not len(values) or blocks < 2:
        return "unknown"
    per_block = values ** (1 / (blocks - 1))
    explodes = (values > EXPLODING_GROWTH) & (per_block > PER_BLOCK_GROWTH)
    collapses = (values < COLLAPSING_GROWTH) & (per_block < 1 / PER_BLOCK_GROWTH)
    if explodes.all():
        return "explodes"
    if collapses.all():
        return "collapses"
    return "stable" if not (explodes | collapses).any() else "mixed"


def _growth(g: pd.DataFrame) -> float:
    """avg_var of the last block over that of the first, in one trial's epoch (inf from a dead 0)."""
    var = g.sort_values("index")["avg_var"].to_numpy(dtype=float)
    if var[0] > 0:
        return float(var[-1] / var[0])
    return float("inf") if var[-1] > 0 else float("nan")


def _geomean(values) -> float:
    values = np.asarray([v for v in values if not np.isnan(v)], dtype=float)
    if not len(values):
        return float("nan")
    with np.errstate(divide="ignore"):
        return float(np.exp(np.log(values).mean()))


def signal_growth(signalprop: pd.DataFrame | None, phase: str = "confirm",
                  trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per arm: how much the activation variance grows from the first block to the last.

    Columns GROWTH_COLUMNS: arm, family, depth, batchnorm, n (seeds), blocks, epoch_first and
    epoch_last (each trial's first recorded epoch, 0 = at initialisation, and its last),
    growth_first / growth_last (geometric mean over seeds of avg_var[last block] / avg_var[first
    block] at those epochs), per_block_first / per_block_last (the same as a mean factor per block,
    growth ** (1 / (blocks - 1)): about 2 for an unnormalised ResNet at init, Brock et al.) and
    verdict_first / verdict_last (verdict() of the seeds' ratios: explodes, collapses, stable,
    mixed or unknown). With `trials`, completed trials only.
    """
    blocks = _blocks(signalprop, phase, trials)
    if blocks.empty:
        return pd.DataFrame(columns=GROWTH_COLUMNS)
    per = pd.DataFrame([{"arm": arm, "trial_id": trial, "epoch": epoch, "growth": _growth(g),
                         "blocks": g["index"].nunique()}
                        for (arm, trial, epoch), g in blocks.groupby(["arm", "trial_id", "epoch"])])
    epoch = per.groupby(["arm", "trial_id"])["epoch"]
    first, last = per[per["epoch"] == epoch.transform("min")], per[per["epoch"] == epoch.transform("max")]
    info = blocks.groupby("arm")[["family", "depth", "batchnorm"]].first()
    table = []
    for arm, g in per.groupby("arm"):
        f, l = first[first["arm"] == arm], last[last["arm"] == arm]
        n_blocks = int(g["blocks"].max())
        gf, gl = _geomean(f["growth"]), _geomean(l["growth"])
        table.append({"arm": arm, **info.loc[arm].to_dict(), "n": g["trial_id"].nunique(),
                      "blocks": n_blocks, "epoch_first": int(f["epoch"].min()),
                      "epoch_last": int(l["epoch"].max()), "growth_first": gf, "growth_last": gl,
                      "per_block_first": _per_block(gf, n_blocks), "per_block_last": _per_block(gl, n_blocks),
                      "verdict_first": verdict(f["growth"], n_blocks),
                      "verdict_last": verdict(l["growth"], n_blocks)})
    return pd.DataFrame(table, columns=GROWTH_COLUMNS)


def _per_block(growth: float, blocks: int) -> float:
    return growth ** (1 / (blocks - 1)) if blocks > 1 and growth >= 0 else float("nan")


def signal_answer(signalprop: pd.DataFrame | None, phase: str = "confirm",
                  trials: pd.DataFrame | None = None) -> list[dict]:
    """answers["why"]["signal_propagation"]: signal_growth() as JSON-safe records (NaN and inf
    become None), one per arm; [] when nothing was recorded."""
    return records(signal_growth(signalprop, phase, trials))


def sentences(growth: pd.DataFrame, recorded: bool = True) -> list[str]:
    """The verdicts of signal_growth() in words (one sentence; one saying why there is none when
    `growth` is empty: `recorded` tells whether the table had rows at all)."""
    if growth.empty:
        return ["Signal propagation was " + ("recorded for no completed confirmation run"
                                             if recorded else "not recorded") + ", so variance "
                "explosion or collapse across the blocks can be neither claimed nor ruled out."]
    def arm(r) -> str:
        when = "at initialisation" if r.epoch_first == 0 else f"at epoch {r.epoch_first}"
        per_block = (f"; x{num(r.per_block_first)} per block" if pd.notna(r.per_block_first) else
                     "; one block")
        return (f"{r.arm} x{num(r.growth_first)} {when} ({r.verdict_first}{per_block}), "
                f"x{num(r.growth_last)} at epoch {r.epoch_last} ({r.verdict_last})")
    return ["Signal propagation, completed confirmation runs (activation variance at the last block "
            "over the first, geometric mean over seeds; it explodes above "
            f"x{num(EXPLODING_GROWTH)} and collapses below x{num(COLLAPSING_GROWTH)} in every seed): "
            + "; ".join(arm(r) for r in growth.itertuples()) + "."]
