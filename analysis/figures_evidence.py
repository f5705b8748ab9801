"""The figure of the evidence beyond one search (analysis/evidence.py), in figures.py's style:
DataFrame in, plotly Figure out, an arm in the same colour as everywhere else.

Tests: .venv/bin/python -m pytest tests/test_analysis_evidence.py (end to end: tests/test_analysis.py)
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .figures import LAYOUT, empty, seed_band

INDEPENDENCE = "an estimate assuming independent draws (TPE and ASHA trials are not)"
AXES = (("trials", "completed search trials"), ("cpu_seconds", "reserved CPU-seconds"),
        ("gpu_seconds", "reserved GPU-seconds"))


def expected_best(curve: pd.DataFrame, metric: str, colors: dict) -> go.Figure:
    """Expected best final <metric> of the search against its budget (Dodge et al. 2019), from
    evidence.expected_best_table(): one line per arm (arms overlaid), the band +- one standard
    deviation, one panel per budget axis (completed search trials, reserved CPU-seconds, and
    reserved GPU-seconds where some arm reserved a GPU)."""
    title = f"Expected best {metric} against the search budget: {INDEPENDENCE}; band: +-1 SD"
    if curve.empty:
        return empty(title, "no completed search trial with a score")
    axes = [(c, label) for c, label in AXES
            if c == "trials" or (pd.to_numeric(curve[c], errors="coerce").fillna(0) > 0).any()]
    fig = make_subplots(rows=1, cols=len(axes), subplot_titles=[label for _, label in axes],
                        horizontal_spacing=0.07)
    for arm, rows in curve.groupby("arm", sort=False):
        color = colors.get(arm, "#888888")
        for c, (axis, label) in enumerate(axes, start=1):
            x = rows[axis].to_numpy(dtype=float)
            if not np.isfinite(x).all():
                continue
            seed_band(fig, x, rows["lo"].to_numpy(dtype=float), rows["hi"].to_numpy(dtype=float),
                      color, 1, c)
            fig.add_trace(go.Scatter(
                x=x, y=rows["expected"], mode="lines+markers", name=arm, legendgroup=arm,
                showlegend=c == 1, line=dict(color=color), marker=dict(size=5),
                hovertemplate=f"{arm}: %{{x:.3g}} {label}, expected best %{{y:.4f}}<extra></extra>"),
                row=1, col=c)
            fig.update_xaxes(title_text=label, row=1, col=c)
    fig.update_yaxes(title_text=f"expected best final {metric}", row=1, col=1)
    return fig.update_layout(title=dict(text=title, font=dict(size=13)), height=430, **LAYOUT)
