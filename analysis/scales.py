"""The figures' y scales: a loss that falls over decades (2.3 at the first epoch, 0.001 at the last)
is a flat line on a linear axis after its first epochs, so its axis turns logarithmic when the
values it plots span more than WIDE_RANGE (largest over smallest). figures.py calls
log_y_if_wide on each loss axis; accuracies, gaps and importances keep their linear axes.

Tests: .venv/bin/python -m pytest tests/test_analysis.py -k scale
"""
from __future__ import annotations

import numpy as np
import pandas as pd

WIDE_RANGE = 100.0   # two decades: above this, a linear axis squeezes the small values to a line


def spans_decades(values, ratio: float = WIDE_RANGE) -> bool:
    """Whether the finite `values` (array-like; None counts as empty) are all positive and their
    largest is more than `ratio` times their smallest. False when empty or when any value is <= 0
    (a log axis cannot show it)."""
    if values is None:
        return False
    x = pd.to_numeric(pd.Series(np.ravel(values)), errors="coerce").to_numpy(dtype=float)
    x = x[np.isfinite(x)]
    return bool(len(x) and x.min() > 0 and x.max() / x.min() > ratio)


def log_y_if_wide(fig, values, row: int | None = None, col: int | None = None) -> bool:
    """Put the y axis of subplot (row, col) of the plotly figure `fig` (all its y axes when row and
    col are None) on a log scale, with ' (log scale)' added to its title, when the `values` it plots
    span decades (spans_decades). Returns whether it did."""
    if not spans_decades(values):
        return False
    for axis in fig.select_yaxes(row=row, col=col):
        axis.type = "log"
        axis.title.text = f"{axis.title.text or ''} (log scale)".strip()
    return True
