"""The pieces of report.html (analysis/report.py puts them in order): numbers to 3 significant
digits, column headers with their units, tables (the long ones folded into <details>), figures
(plotly.js embedded in the first one, so the file opens without a network), the page's style.

    cell(0.012345)                                   # '0.0123'
    header("seconds_per_epoch", "cost", "val_acc")   # 'seconds_per_epoch (s)'
    table_html("pairwise", rows, "val_acc")          # <h3> and a <table>, folded in <details>

Pure: strings out. Tests: .venv/bin/python -m pytest tests/test_analysis_headline.py (in a browser,
on the tiny study: tests/test_report_browser.py)
"""
from __future__ import annotations

import html
import math

import plotly.io as pio

# Tables folded by default (<details>): long, and read only to check one pair.
COLLAPSED = {"pairwise"}
# Columns left out of the tables: their content is the section's sentences already.
HIDDEN = {"text"}
METRIC = "metric"   # in UNITS: the unit of the study's metric (metric_unit)

# The unit of each column, by name, for the headers; a table's own meaning of a name first.
UNITS = {
    **dict.fromkeys(("n", "n_a", "n_b", "reference_n", "n_plain", "n_residual", "n_censored"), "seeds"),
    **dict.fromkeys(("trials", "completed", "pruned", "diverged", "error", "n_completed"), "trials"),
    **dict.fromkeys(("depth", "reference_depth", "depths"), "weight layers"),
    **dict.fromkeys(("epoch", "epochs", "epochs_used", "full_budget", "epoch_first", "epoch_last",
                     "last_epoch", "epochs_median", "epochs_min", "epochs_max"), "epochs"),
    **dict.fromkeys(("mean", "ci_lo", "ci_hi", "std", "test_mean", "test_ci_lo", "test_ci_hi", "mean_a",
                     "mean_b", "diff", "diff_ci_lo", "diff_ci_hi", "reference_mean", "score", "final_mean",
                     "mean_bn", "mean_nobn", "chance", "gap_diff", "gap_ci_lo", "gap_ci_hi"), METRIC),
    **dict.fromkeys(("train_loss", "reference_train_loss", "train_loss_diff", "train_loss_ci_lo",
                     "train_loss_ci_hi", "train_loss_margin", "loss_gap", "loss_gap_ci_lo",
                     "loss_gap_ci_hi"), "cross-entropy"),
    **dict.fromkeys(("val_acc", "acc_gap", "acc_gap_ci_lo", "acc_gap_ci_hi", "fraction_used"), "fraction"),
    **dict.fromkeys(("ratio_first", "ratio_first_lo", "ratio_first_hi", "ratio_last", "ratio_last_lo",
                     "ratio_last_hi"), "first/last layer"),
    **dict.fromkeys(("min_rel_first", "min_rel_last"), "of the largest layer"),
    **dict.fromkeys(("growth_first", "growth_last"), "last/first block"),
    **dict.fromkeys(("per_block_first", "per_block_last"), "x per block"),
    "n_runs": "runs", "n_depths": "depths", "n_replicated_depths": "depths", "blocks": "blocks",
    "parameters": "count", "flops_per_sample": "FLOPs", "seconds_per_epoch": "s", "wall_seconds": "s",
    "cpu_seconds_per_epoch": "CPU-s", "gpu_seconds_per_epoch": "GPU-s", "reserved_cpu_seconds": "CPU-s",
    "reserved_gpu_seconds": "GPU-s", "hedges_g": "pooled SDs", "importance": "fraction of variance",
    "min_grad_norm": "L2 norm", "update_ratio": "update/weight norm",
}
TABLE_UNITS = {   # the depth tables hold rows of several columns (their `column`): slopes per layer
    "depth_trend": dict.fromkeys(("slope", "ci_lo", "ci_hi"), "per layer, unit of column"),
    "degradation_gap": dict.fromkeys(("plain_slope", "residual_slope", "diff", "ci_lo", "ci_hi"),
                                     "per layer, unit of column"),
    "matched_pairs": dict.fromkeys(("plain_mean", "residual_mean", "diff", "diff_ci_lo", "diff_ci_hi"),
                                   "unit of column"),
}

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1200px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
nav { font-size: 14px; } nav a { margin-right: 1.2em; white-space: nowrap; }
#headline { background: #f7f9fc; border: 1px solid #d8e0ea; padding: 0 1em 1em; }
#headline h2 { margin-top: .6em; } .lead { font-weight: 600; }
.table { overflow-x: auto; margin: .5em 0 1.5em; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
details > summary { cursor: pointer; font-weight: 600; margin: 1em 0 .5em; }
ul.answers li { margin: .3em 0; } .meta { color: #666; font-size: 13px; }
"""


def cell(value) -> str:
    """A table cell: numbers to 3 significant digits ('0.0123', '2.5'), from 1,000 on with a
    k/M/G/T suffix ('1.23k', '272k'; never '1e+03'); ints below 10,000 exact (seeds, depths,
    epochs); yes/no for booleans; '-' for None and NaN; a list as its cells joined by ', ';
    anything else as str()."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if math.isinf(value) or (isinstance(value, int) and abs(value) < 10_000):
            return str(value)
        for power, prefix in ((12, "T"), (9, "G"), (6, "M"), (3, "k")):
            scaled = f"{value / 10 ** power:.3g}"   # rounded first: 999.7 is '1k', not '1e+03'
            if abs(float(scaled)) >= 1:
                return scaled + prefix
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value) or "-"
    return str(value)


def metric_unit(metric: str | None) -> str:
    """The unit of a metric: 'fraction' for an accuracy, 'cross-entropy' for a loss, else ''."""
    if not metric:
        return ""
    return "fraction" if metric.endswith("acc") else "cross-entropy" if "loss" in metric else ""


def header(column: str, table: str = "", metric: str | None = None) -> str:
    """A column's header: its name and, in brackets, its unit (TABLE_UNITS, then UNITS; a
    searched parameter's `param_` column and unit-less ones such as p-values keep their name)."""
    unit = TABLE_UNITS.get(table, {}).get(column) or UNITS.get(column, "")
    unit = metric_unit(metric) if unit == METRIC else unit
    return f"{column} ({unit})" if unit and unit != column else column


def html_table(rows: list[dict], table: str = "", metric: str | None = None) -> str:
    """A <table> of records: headers with units, cells by cell(), columns in HIDDEN left out."""
    columns = [c for c in dict.fromkeys(k for r in rows for k in r) if c not in HIDDEN]
    if not rows or not columns:
        return ""
    head = "".join(f"<th>{html.escape(header(c, table, metric))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(r.get(c)))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<div class='table'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def table_html(name: str, rows: list[dict], metric: str | None = None) -> str:
    """A named table under its <h3>; one in COLLAPSED is folded in <details> (its summary says how
    many rows it holds)."""
    table = html_table(rows, name, metric)
    if name in COLLAPSED:
        return (f"<details><summary>{html.escape(name)} ({len(rows)} rows: click to show)</summary>"
                f"{table}</details>")
    return f"<h3>{html.escape(name)}</h3>{table}"


class FigureWriter:
    """Each plotly figure as a <div>, plotly.js embedded inline in the first one only (about
    3.5 MB: the report opens offline); `placed` remembers which names were written."""

    def __init__(self, figures: dict):
        self.figures, self.placed = figures, []

    def __call__(self, name: str) -> str:
        first = not self.placed
        self.placed.append(name)
        return pio.to_html(self.figures[name], full_html=False, include_plotlyjs="inline" if first else False,
                           div_id=f"fig-{name}", config={"displaylogo": False})

    def unplaced(self, names) -> list[str]:
        """Those of `names` that are figures and not written yet, in order."""
        return [n for n in names if n in self.figures and n not in self.placed]
