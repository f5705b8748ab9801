"""The report's plotly figures: pure functions, DataFrames in, `plotly.graph_objects.Figure` out.

    from analysis import figures
    colors = figures.arm_colors(tables.arms)
    figures.learning_curves(tables.epochs, colors).show()

Every figure takes `colors` ({arm: colour}, from `arm_colors`) so an arm has the same colour in all
of them. Seed bands are the min-max range over seeds; lines are the mean. A loss axis turns
logarithmic when its values span decades (scales.log_y_if_wide).

Tests: .venv/bin/python -m pytest tests/test_analysis_questions.py (end to end, on a study run on Ray:
tests/test_analysis.py)
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from .common import confirmed, line_name, with_series
from .convergence import completed_epochs
from .cost import shown_costs
from .scales import log_y_if_wide
from .stats import mean_ci, value_range
from .attenuation import completed_keys

PALETTE = qualitative.Plotly + qualitative.D3 + qualitative.Dark24
LAYOUT = dict(template="plotly_white", font=dict(size=12), legend=dict(title="arm"),
              margin=dict(l=60, r=20, t=60, b=50))
CURVES = (("train_loss", "training loss (cross-entropy)"), ("val_loss", "validation loss (cross-entropy)"),
          ("train_acc", "training accuracy (fraction)"), ("val_acc", "validation accuracy (fraction)"))


def arm_colors(arms: list[str]) -> dict[str, str]:
    return {arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(arms)}


def rgba(color: str, alpha: float) -> str:
    color = color.lstrip("#")
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def empty(title: str, why: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=why, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, **LAYOUT)


def seed_band(fig, x, lo, hi, color, row=None, col=None) -> None:
    fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([hi, lo[::-1]]),
                             mode="lines", fill="toself", fillcolor=rgba(color, 0.18), line=dict(width=0),
                             hoverinfo="skip", showlegend=False), row=row, col=col)


def learning_curves(epochs: pd.DataFrame, colors: dict, phase: str = "confirm",
                    trials: pd.DataFrame | None = None) -> go.Figure:
    """Train/validation loss and accuracy per epoch: mean over seeds with the seeds' range, over
    completed trials only (by the epochs' own status, and by `trials` when given)."""
    rows = completed_epochs(epochs, phase)
    if trials is not None and not rows.empty:
        keys = completed_keys(trials, phase)
        rows = rows[[k in keys for k in zip(rows["study"], rows["arm"], rows["trial_id"])]]
    title = (f"Learning curves ({phase} phase, completed trials, mean over seeds, band = seed range; "
             "training curves are running averages over each epoch)")
    if rows.empty:
        return empty(title, f"no {phase} epochs")
    fig = make_subplots(rows=2, cols=2, subplot_titles=[label for _, label in CURVES],
                        horizontal_spacing=0.08, vertical_spacing=0.14)
    for arm, color in colors.items():
        per_epoch = rows[rows.arm == arm].groupby("epoch")
        if not len(per_epoch):
            continue
        for i, (column, _label) in enumerate(CURVES):
            if column not in rows:
                continue
            stats = per_epoch[column].agg(["mean", "min", "max"]).dropna()
            r, c = i // 2 + 1, i % 2 + 1
            x = stats.index.to_numpy()
            seed_band(fig, x, stats["min"].to_numpy(), stats["max"].to_numpy(), color, r, c)
            fig.add_trace(go.Scatter(x=x, y=stats["mean"], mode="lines", name=arm, legendgroup=arm,
                                     line=dict(color=color, width=2), showlegend=i == 0), row=r, col=c)
    for c, (column, _label) in enumerate(CURVES[:2], start=1):   # the two losses
        log_y_if_wide(fig, rows.get(column), row=1, col=c)
    fig.update_xaxes(title_text="epoch")
    return fig.update_layout(title=title, height=650, **LAYOUT)


def depth_effect(trials: pd.DataFrame, metric: str, level: float = 0.95) -> go.Figure:
    """Final validation metric and final training loss against depth, completed confirmation runs,
    mean with its confidence interval over seeds (no error bar where n = 1): one line per study,
    family, series and width, the lines depth.py fits a trend along ('plain vgg', 'plain 6n+2',
    'residual 6n+2', ...; prefixed with the study when there are several)."""
    columns = ((f"final_{metric}", f"final {metric}"),
               ("final_train_loss", "final training loss (running average over the epoch)"))
    done = confirmed(trials, need=("study", "model", "family", "line", "depth", "batchnorm", "width",
                                   *(c for c, _ in columns)))
    done = with_series(done[done.family.isin(["plain", "residual"])])
    title = f"Depth against final {metric} and training loss (mean, {level:.0%} CI over seeds)"
    if done.empty:
        return empty(title, "no completed confirmation runs of plain or residual networks")
    fig = make_subplots(rows=1, cols=2, subplot_titles=[label for _, label in columns])
    colors = {"plain": ("#d62728", "#ff7f0e", "#8c564b", "#e377c2"),
              "residual": ("#1f77b4", "#17becf", "#2ca02c", "#9467bd")}
    several, widths = done["study"].nunique() > 1, done["width"].nunique() > 1
    lines = list(done.groupby(["study", "family", "series", "width"], dropna=False))
    for c, (column, label) in enumerate(columns, start=1):
        for i, ((study, family, line, width), g) in enumerate(lines):
            name = (f"{study}: " if several else "") + line_name(family, line) + (
                f" w{width:g}" if widths else "")
            points = []
            for (depth, arm), runs in g.groupby(["depth", "arm"]):
                mean, lo, hi, n = mean_ci(runs[column].to_numpy(), level, value_range(column))
                points.append((depth, arm, mean, None if math.isnan(lo) else mean - lo,
                               None if math.isnan(hi) else hi - mean, n))
            depth, arm, mean, minus, plus, n = map(list, zip(*sorted(points)))
            fig.add_trace(go.Scatter(
                x=depth, y=mean, mode="lines+markers", name=name, legendgroup=name, showlegend=c == 1,
                marker=dict(size=9, symbol="circle" if family == "plain" else "square"),
                line=dict(color=colors[family][i % 4]),
                error_y=dict(type="data", array=plus, arrayminus=minus, visible=True),
                text=[f"{a} (n={k}{', no interval' if k < 2 else ''})" for a, k in zip(arm, n)],
                hovertemplate="%{text}: %{y:.4f}"), row=1, col=c)
        fig.update_yaxes(title_text=label, row=1, col=c)
        log_y_if_wide(fig, done[column] if "loss" in column else None, row=1, col=c)
    fig.update_xaxes(title_text="depth (weight layers)")
    return fig.update_layout(title=title, height=450, **{**LAYOUT, "legend": dict(title="line")})


def gradflow_heatmaps(profile: pd.DataFrame, arms: list[str], column: str = "grad_norm") -> go.Figure:
    """Per arm, log10 of the per-layer gradient norm, layer (0 = input side) by epoch."""
    title = f"Gradient flow: log10 {column} per layer and epoch (mean over seeds)"
    if profile.empty:
        return empty(title, "no gradient-flow data (gradient_flow was off)")
    arms = [a for a in arms if a in set(profile.arm)]
    if not arms:
        return empty(title, "no gradient-flow data for these arms")
    cols = min(3, len(arms))
    rows = math.ceil(len(arms) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=arms, horizontal_spacing=0.06,
                        vertical_spacing=0.12 if rows > 1 else 0.1)
    values = np.log10(profile[column].clip(lower=1e-12))
    zmin, zmax = float(values.min()), float(values.max())
    for i, arm in enumerate(arms):
        grid = profile[profile.arm == arm].pivot_table(index="index", columns="epoch", values=column)
        fig.add_trace(go.Heatmap(z=np.log10(grid.clip(lower=1e-12).to_numpy()), x=grid.columns, y=grid.index,
                                 zmin=zmin, zmax=zmax, colorscale="Viridis", showscale=i == 0,
                                 colorbar=dict(title=f"log10 {column}"),
                                 hovertemplate="epoch %{x}, layer %{y}: %{z:.2f}<extra></extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="layer (0 = input side)")
    return fig.update_layout(title=title, height=320 * rows + 80, **LAYOUT)


def first_and_last_epochs(profile: pd.DataFrame, colors: dict):
    """(arm, colour, epoch, dash, rows sorted by `index`) for each arm's first epoch (dotted) and
    last (solid) in a per-layer or per-block profile (columns arm, epoch, index)."""
    for arm, color in colors.items():
        rows = profile[profile.arm == arm]
        if rows.empty:
            continue
        for epoch, dash in ((rows.epoch.min(), "dot"), (rows.epoch.max(), "solid")):
            yield arm, color, epoch, dash, rows[rows.epoch == epoch].sort_values("index")


def attenuation_curves(profile: pd.DataFrame, colors: dict, column: str = "grad_norm") -> go.Figure:
    """Per arm, the per-layer gradient norm against relative depth (0 = input side, 1 = output), at
    the first and the last epoch: a vanishing gradient shows as a curve falling towards 0."""
    title = f"Gradient attenuation: {column} per layer, first (dotted) and last (solid) epoch"
    if profile.empty:
        return empty(title, "no gradient-flow data (gradient_flow was off)")
    fig = go.Figure()
    for arm, color, epoch, dash, curve in first_and_last_epochs(profile, colors):
        x = curve["index"] / max(1, curve["index"].max())
        fig.add_trace(go.Scatter(x=x, y=curve[column], mode="lines", name=arm, legendgroup=arm,
                                 showlegend=dash == "solid", line=dict(color=color, dash=dash),
                                 hovertemplate=f"{arm}, epoch {epoch}: %{{y:.3g}}<extra></extra>"))
    fig.update_xaxes(title_text="relative layer position (0 = input, 1 = output)")
    fig.update_yaxes(title_text=f"{column} (log scale)", type="log")
    return fig.update_layout(title=title, height=450, **LAYOUT)


def search_curves(epochs: pd.DataFrame, trials: pd.DataFrame, metric: str, colors: dict) -> go.Figure:
    """Every search trial's validation metric per epoch: completed trials solid, trials ASHA
    stopped (pruned) dotted and faint, diverged ones ending in a cross."""
    title = f"Search trials: {metric} per epoch (solid: completed, dotted: pruned by ASHA, x: diverged)"
    search = epochs[epochs.phase == "search"] if not epochs.empty else epochs
    if search.empty or metric not in search:
        return empty(title, "no search epochs")
    search_trials = trials[trials.phase == "search"]
    status = dict(zip(zip(search_trials.arm, search_trials.trial_id), search_trials.status))
    fig = go.Figure()
    shown = set()
    for (arm, trial_id), rows in search.sort_values("epoch").groupby(["arm", "trial_id"], sort=False):
        state = status.get((arm, trial_id), "error")
        pruned = state == "pruned"
        color = colors.get(arm, "#888")
        fig.add_trace(go.Scatter(
            x=rows.epoch, y=rows[metric], name=arm, legendgroup=arm, showlegend=arm not in shown,
            mode="lines", opacity=0.45 if pruned else 0.95,
            line=dict(color=color, dash="dot" if pruned else "solid"),
            hovertemplate=f"{arm} {trial_id} ({state}): %{{y:.4f}}<extra></extra>"))
        if state == "diverged":
            fig.add_trace(go.Scatter(
                x=rows.epoch.iloc[-1:], y=rows[metric].iloc[-1:], mode="markers", legendgroup=arm,
                showlegend=False, marker=dict(symbol="x", size=10, color=color),
                hovertemplate=f"{arm} {trial_id} diverged: %{{y:.4f}}<extra></extra>"))
        shown.add(arm)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text=metric)
    log_y_if_wide(fig, search[metric] if "loss" in metric else None)
    return fig.update_layout(title=title, height=450, **LAYOUT)


def importance_bars(importances: pd.DataFrame, colors: dict) -> go.Figure:
    """Optuna parameter importances (fANOVA) per arm, from completed search trials only."""
    title = "Hyperparameter importance per arm (fANOVA, completed search trials only)"
    if importances.empty:
        return empty(title, "too few completed search trials (or a single searched parameter value)")
    fig = go.Figure()
    for arm, rows in importances.groupby("arm", sort=False):
        fig.add_trace(go.Bar(x=rows.param, y=rows.importance, name=arm, marker_color=colors.get(arm, "#888")))
    fig.update_xaxes(title_text="hyperparameter")
    fig.update_yaxes(title_text="importance (fraction of variance)", range=[0, 1])
    return fig.update_layout(title=title, barmode="group", height=400, **LAYOUT)


def generalisation_gap(gap: pd.DataFrame, colors: dict) -> go.Figure:
    """Training minus validation accuracy per epoch (mean over seeds): the generalisation gap. The
    training accuracy is the epoch's running average in train mode (BatchNorm's batch statistics),
    so early epochs can show a negative gap; the last epochs' gap is the one to read."""
    title = ("Generalisation gap: training (running average over the epoch, train mode) minus "
             "validation accuracy, mean over seeds")
    if gap.empty:
        return empty(title, "no confirmation epochs")
    column = "acc_gap" if "acc_gap" in gap else [c for c in gap.columns if "gap" in c][0]
    fig = go.Figure()
    for arm, color in colors.items():
        rows = gap[gap.arm == arm].sort_values("epoch")
        if not rows.empty:
            fig.add_trace(go.Scatter(x=rows.epoch, y=rows[column], mode="lines+markers", name=arm,
                                     line=dict(color=color)))
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="accuracy gap (fraction)")
    return fig.update_layout(title=title, height=400, **LAYOUT)


def cost_pareto(table: pd.DataFrame, metric: str, colors: dict, level: float = 0.95) -> go.Figure:
    """The final metric against each cost (analysis.cost.cost_table: parameters, forward FLOPs per
    sample, reserved CPU- and GPU-seconds per epoch), one panel per cost with a positive value, log
    x: one marker per arm (mean over seeds, error bar its interval where n > 1) and, per panel, a
    dashed line through that cost's Pareto front (arms no other is both cheaper and better than)."""
    title = (f"Cost against final {metric} (completed confirmation runs, mean and {level:.0%} CI; "
             "dashed: the Pareto front; forward FLOPs, a training step is about 3x)")
    costs = shown_costs(table)
    if table.empty or not costs:
        return empty(title, "no completed confirmation run with its cost (parameters, FLOPs, seconds)")
    cols = min(2, len(costs))
    rows = math.ceil(len(costs) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[label for _, label in costs],
                        horizontal_spacing=0.08, vertical_spacing=0.18)
    for i, (cost, label) in enumerate(costs):
        r, c = i // cols + 1, i % cols + 1
        points = table[(pd.to_numeric(table[cost]) > 0) & table["mean"].notna()]
        for p in points.itertuples():
            minus, plus = (None, None) if math.isnan(p.ci_lo) else (p.mean - p.ci_lo, p.ci_hi - p.mean)
            fig.add_trace(go.Scatter(
                x=[getattr(p, cost)], y=[p.mean], mode="markers", name=p.arm, legendgroup=p.arm,
                showlegend=i == 0, marker=dict(size=10, color=colors.get(p.arm, "#888")),
                error_y=dict(type="data", array=[plus], arrayminus=[minus], visible=plus is not None),
                hovertemplate=f"{p.arm} (n={p.n}): %{{x:.3g}}, %{{y:.4f}}<extra></extra>"), row=r, col=c)
        front = points[points[f"front_{cost}"]].sort_values(cost)
        fig.add_trace(go.Scatter(x=front[cost], y=front["mean"], mode="lines", name="Pareto front",
                                 legendgroup="front", showlegend=i == 0, hoverinfo="skip",
                                 line=dict(color="#444", dash="dash", width=1)), row=r, col=c)
        fig.update_xaxes(title_text=f"{label} (log scale)", type="log", row=r, col=c)
        fig.update_yaxes(title_text=f"final {metric}", row=r, col=c)
        log_y_if_wide(fig, points["mean"] if "loss" in metric else None, row=r, col=c)
    return fig.update_layout(title=title, height=380 * rows + 80, **LAYOUT)


def signal_propagation(profile: pd.DataFrame, colors: dict) -> go.Figure:
    """Signal propagation (Brock et al. 2021): per arm, the average channel variance and the
    average squared channel mean of each block's output against the block index (0 = input side),
    at the first recorded epoch (dotted; 0 = at initialisation) and the last (solid), from
    analysis.signalprop.signal_profile. Log scale: geometric growth is a straight line."""
    title = "Signal propagation: activation statistics per block, first (dotted) and last (solid) epoch"
    if profile.empty:
        return empty(title, "no signal-propagation data (gradient_flow was off, or an older study)")
    columns = (("avg_var", "average channel variance"), ("avg_sq_mean", "average squared channel mean"))
    fig = make_subplots(rows=1, cols=2, subplot_titles=[label for _, label in columns])
    for arm, color, epoch, dash, curve in first_and_last_epochs(profile, colors):
        for c, (column, _label) in enumerate(columns, start=1):
            fig.add_trace(go.Scatter(
                x=curve["index"], y=curve[column], mode="lines+markers", name=arm, legendgroup=arm,
                showlegend=dash == "solid" and c == 1, line=dict(color=color, dash=dash),
                marker=dict(size=4), text=curve["block"],
                hovertemplate=f"{arm}, epoch {epoch}, %{{text}}: %{{y:.3g}}<extra></extra>"), row=1, col=c)
    fig.update_xaxes(title_text="block (0 = input side)")
    fig.update_yaxes(type="log")
    return fig.update_layout(title=title, height=450, **LAYOUT)
