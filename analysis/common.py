"""Helpers shared by the question modules: picking rows out of the study tables, which direction of
a column is better, grouping arms into depth series, number formatting for the verdict sentences,
and turning frames into JSON-safe records. No statistics here (see stats.py) and no I/O.

Tests: .venv/bin/python -m pytest tests/test_analysis_stats.py tests/test_analysis_questions.py
"""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

FILL_VALUES = {"batchnorm": True, "width": float("nan"), "family": "", "line": "", "depth": float("nan"),
            "model": "", "seed": float("nan"), "study": ""}
# The training loss and accuracy are averaged over the epoch's batches while the weights still move
# (trainables/train.py), not evaluated after the epoch like the validation ones: say so in the texts.
TRAIN_LOSS = "training loss (running average over the epoch)"


def rows(frame: pd.DataFrame | None, phase: str | None = None, status: str | None = None,
         need: tuple = ()) -> pd.DataFrame:
    """A copy of `frame` restricted to `phase` and `status` (when given), with every column in
    `need` present (missing ones filled with FILL_VALUES or NaN). Works on empty or column-less frames."""
    frame = pd.DataFrame() if frame is None else frame
    out = frame.copy()
    for col in ("phase", "status", "arm", *need):
        if col not in out:
            out[col] = FILL_VALUES.get(col, float("nan"))
    if phase is not None:
        out = out[out["phase"] == phase]
    if status is not None:
        out = out[out["status"] == status]
    if "batchnorm" in out:
        out["batchnorm"] = out["batchnorm"].fillna(True).astype(bool)
    return out


def confirmed(trials: pd.DataFrame | None, need: tuple = ()) -> pd.DataFrame:
    """Completed confirmation trials (one per arm and seed)."""
    return rows(trials, phase="confirm", status="completed", need=need)


def higher_is_better(column: str) -> bool:
    """Accuracies are better high, losses (and anything else) low."""
    return "acc" in column


def label(column: str, running: bool = False) -> str:
    """'final_train_loss' -> 'final training loss'; with `running`, a training column says that it
    is a running average over the epoch."""
    if running and "train_" in column:
        return column.split("train_")[0].replace("_", " ") + TRAIN_LOSS.replace(
            "loss", "loss" if column.endswith("loss") else "accuracy")
    names = {"train": "training", "val": "validation", "acc": "accuracy"}
    return " ".join(names.get(w, w) for w in column.split("_"))


def test_column(metric: str) -> str:
    """The final test column of the metric's kind: val_acc -> final_test_acc, *_loss -> final_test_loss."""
    return "final_test_acc" if metric.endswith("acc") else "final_test_loss"


def series(family: str, line: str, batchnorm: bool = True) -> str:
    """The series of architectures a model's depth varies along, so depth trends never mix layouts
    (from the tables' `family` and `line` columns, which the model registry fills in): 'vgg',
    'plain-6n+2' / 'resnet-6n+2' (He et al.'s CIFAR nets), 'plain' / 'resnet' (the 18/34 BasicBlock
    nets), 'mlp'; with '-nobn' appended for arms without BatchNorm."""
    name = str(line)
    if name in ("resnet", "6n+2"):   # a residual net and its plain twin share a line
        name = ("resnet" if family == "residual" else "plain") + ("-6n+2" if name == "6n+2" else "")
    return name + ("" if batchnorm else "-nobn")


def with_series(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with a `series` column (see series()); group on it with dropna=False (width may be NaN)."""
    out = frame.copy()
    out["series"] = [series(f, ln, b) for f, ln, b in zip(out["family"], out["line"], out["batchnorm"])]
    out["width"] = out["width"].astype(float)
    return out


def line_name(family: str, line: str) -> str:
    """A depth line in words for legends and sentences: 'plain vgg', 'plain 6n+2', 'residual 6n+2',
    'plain 6n+2 nobn' (the series' own 'plain' / 'resnet' prefix is the family already)."""
    rest = re.sub(r"^(plain|resnet)-?", "", str(line)).replace("-", " ").strip()
    return f"{family} {rest}".strip()


def left_out(trials: pd.DataFrame | None, phase: str = "confirm", columns: tuple = (),
             arms=None) -> dict[str, dict[str, int]]:
    """The runs of `phase` an analysis leaves out, per arm: {arm: {reason: count}}, the reason being
    the status when it is not "completed", or "no <column>" for a completed run with NaN in one of
    `columns`. Restricted to `arms` when given; arms with nothing left out are absent."""
    frame = rows(trials, phase=phase, need=columns)
    if arms is not None:
        frame = frame[frame["arm"].isin(list(arms))]
    out: dict[str, dict[str, int]] = {}
    for arm, g in frame.groupby("arm", sort=False):
        reasons = [str(s) if s != "completed" else
                   next((f"no {c}" for c in columns if pd.isna(r[c])), None)
                   for s, (_, r) in zip(g["status"], g.iterrows())]
        counts = pd.Series([r for r in reasons if r], dtype=object).value_counts()
        if len(counts):
            out[str(arm)] = {str(k): int(v) for k, v in counts.items()}
    return out


def left_out_text(counts: dict[str, dict[str, int]]) -> str:
    """'plain56 2 (diverged 1, error 1); vgg24 1 (no final_val_acc 1)' for left_out()'s result."""
    return "; ".join(f"{arm} {sum(c.values())} (" + ", ".join(f"{k} {v}" for k, v in c.items()) + ")"
                     for arm, c in counts.items())


def unconfirmed_text(arms: dict[str, str]) -> str:
    """'a: every search trial diverged (3), so it was not confirmed; b: its confirmation runs
    diverged 2' for unconfirmed_arms()' result, for sentences that would otherwise only say an arm
    is missing."""
    return "; ".join(f"{arm}: {why}" for arm, why in arms.items())


def unconfirmed_arms(trials: pd.DataFrame | None, metric: str) -> dict[str, str]:
    """arm -> why it has no completed confirmation run with a final `metric` (see unconfirmed_text).
    Needs trials columns: phase, status, arm, final_<metric>."""
    frame = rows(trials, need=(f"final_{metric}",))
    reasons = {}
    for arm, g in frame.groupby("arm", sort=False):
        confirm = g[g["phase"] == "confirm"]
        if (confirm["status"].eq("completed") & confirm[f"final_{metric}"].notna()).any():
            continue
        if len(confirm):
            counts = confirm["status"].value_counts()
            reasons[arm] = "its confirmation runs " + ", ".join(f"{k} {v}" for k, v in counts.items())
            continue
        search = g[g["phase"] == "search"]["status"].value_counts()
        if len(search) == 1 and search.index[0] in ("diverged", "error"):
            how = {"diverged": "diverged", "error": "failed"}[search.index[0]]
            reasons[arm] = f"every search trial {how} ({search.iloc[0]}), so it was not confirmed"
        else:
            reasons[arm] = ("no completed search trial (" + ", ".join(f"{k} {v}" for k, v in search.items())
                            + "), so it was not confirmed")
    return {str(arm): why for arm, why in reasons.items()}


# ---- words and numbers ---------------------------------------------------------------------------
def num(x, digits: int = 3) -> str:
    """A number for a sentence: 3 significant digits, 'n/a' for NaN/None."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def ci(lo, hi, level: float) -> str:
    """'95% CI 0.1 to 0.3', or 'no CI' when the bounds are NaN."""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "no CI"
    return f"{level:.0%} CI {num(lo)} to {num(hi)}"


def sci(x: float) -> str:
    """A power of ten as '1e-3' / '1e3'."""
    return f"1e{round(math.log10(x))}"


def pval(p) -> str:
    if p is None or not math.isfinite(p):
        return "p n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


# ---- JSON ----------------------------------------------------------------------------------------
def jsonable(obj):
    """`obj` with numpy scalars as Python scalars, NaN/inf as None, tuples/arrays as lists: so that
    json.dumps(obj) works and stays strict JSON."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray, pd.Series)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, pd.DataFrame):
        return records(obj)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj


def records(frame: pd.DataFrame) -> list[dict]:
    """The rows of `frame` as JSON-safe dicts (see jsonable)."""
    return [jsonable(r) for r in frame.to_dict("records")]
