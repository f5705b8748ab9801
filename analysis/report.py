"""Turns the answers (analysis.questions.answers) and the figures (analysis.figures) into text:
a self-contained HTML report (plotly.js embedded once, so it opens offline), answers.md, and the
terminal summary that `archstudy analyze` prints. Pure: strings out, nothing written here.

Tests: .venv/bin/python -m pytest tests/test_analysis_headline.py (end to end, on a study run on Ray:
tests/test_analysis.py)
"""
from __future__ import annotations

import html
import math

import pandas as pd
import plotly.io as pio

# (answers keys, heading): pairwise comparisons belong to the ranking question.
BUDGET = "0. Budget: did every arm train?"
SECTIONS = ((("budget",), BUDGET), (("ranking", "pairwise"), "1. Ranking"), (("depth",), "2. Depth"),
            (("why",), "3. Why: gradient flow"), (("convergence",), "4. Convergence"),
            (("search",), "5. Search and cost"), (("evidence",), "6. Evidence"))
# answers keys whose value holds several sub-answers, each with its own text and tables
# (evidence.search_variance, ...)
NESTED = ("evidence",)
STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1200px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
ul.answers li { margin: .3em 0; } .meta { color: #666; font-size: 13px; }
"""


def section(answers: dict, keys: tuple[str, ...]) -> tuple[list[str], dict[str, list[dict]]]:
    """(sentences, {table name: records}) of one section of the answers."""
    texts, tables = [], {}
    for key in keys:
        part = answers.get(key) or {}
        if key in NESTED:
            for name, sub in part.items():
                sub_texts, sub_tables = section({name: sub}, (name,))
                texts += sub_texts
                tables.update({f"{name}.{table}": rows for table, rows in sub_tables.items()})
            continue
        if isinstance(part, list):
            part = {key: part}
        texts += part.get("text", [])
        tables.update({name: rows for name, rows in part.items() if name != "text"
                       and isinstance(rows, list) and rows and isinstance(rows[0], dict)})
    return texts, tables


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) or "-"
    return str(value)


def records_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).map(fmt) if rows else pd.DataFrame()


# ---- markdown and terminal ---------------------------------------------------------------------------
def markdown_table(rows: list[dict]) -> str:
    frame = records_frame(rows)
    if frame.empty:
        return ""
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(r) + " |" for r in frame.astype(str).itertuples(index=False)]
    return "\n".join(lines)


def render_markdown(title: str, answers: dict) -> str:
    """answers.md: for each question, the verdicts in words, then the tables behind them."""
    out = [f"# {title}", ""]
    for key, heading in SECTIONS:
        texts, tables = section(answers, key)
        out += [f"## {heading}", ""] + [f"- {t}" for t in texts] + [""]
        for name, rows in tables.items():
            out += [f"**{name}**", "", markdown_table(rows), ""]
    return "\n".join(out)


def render_terminal(title: str, answers: dict, width: int = 100) -> str:
    """The summary `archstudy analyze` prints: each question's verdicts, wrapped, no tables."""
    import textwrap
    out = [title, "=" * min(width, len(title))]
    for key, heading in SECTIONS:
        texts, _ = section(answers, key)
        out.append(heading)
        for t in texts or ["(nothing to say: no data for this question)"]:
            out.append(textwrap.fill(t, width, initial_indent="  - ", subsequent_indent="    "))
    return "\n".join(out)


# ---- HTML --------------------------------------------------------------------------------------------
def html_table(rows: list[dict]) -> str:
    frame = records_frame(rows)
    return frame.to_html(index=False, escape=True, border=0) if not frame.empty else ""


# Which figures belong to which question, in reading order.
FIGURES_BY_SECTION = {BUDGET: (), "1. Ranking": ("learning_curves",), "2. Depth": ("depth_effect",),
                      "3. Why: gradient flow": ("gradflow_heatmaps", "attenuation_curves"),
                      "4. Convergence": ("generalisation_gap",),
                      "5. Search and cost": ("search_curves", "importance_bars"), "6. Evidence": ()}


def headline_html(top: dict) -> str:
    """The headline (analysis.headline.headline) as a ranking table and a list of sentences."""
    rows = [{"arm": r["arm"], "mean": r["mean"], top["ci_label"]: (
        f"{fmt(r['ci_lo'])} to {fmt(r['ci_hi'])}" if r["ci_lo"] is not None else "-"), "n": r["n"]}
        for r in top["ranking"]]
    return (f"<section id='headline'><h2>Answer</h2><p>{html.escape(top['title'])}</p>"
            + html_table(rows) + "<ul class='answers'>"
            + "".join(f"<li>{html.escape(s)}</li>" for s in top["sentences"]) + "</ul></section>")


def render_html(title: str, answers: dict, figures: dict, meta: str = "", top: dict | None = None) -> str:
    """One HTML document: the headline (`top`, see analysis.headline) and the depth figure first,
    then each question's answers in words, their tables and figures; plotly.js is embedded once, in
    the first figure, so the file opens without a network."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
             f"<p class='meta'>{html.escape(meta)}</p>"]
    placed, first = set(), True

    def figure_html(name: str) -> str:
        nonlocal first
        placed.add(name)
        div = pio.to_html(figures[name], full_html=False, include_plotlyjs="inline" if first else False,
                          div_id=f"fig-{name}", config={"displaylogo": False})
        first = False
        return div

    if top is not None:
        parts.append(headline_html(top))
        if "depth_effect" in figures:
            parts.append(figure_html("depth_effect"))
    for key, heading in SECTIONS:
        texts, tables = section(answers, key)
        parts.append(f"<h2>{html.escape(heading)}</h2><ul class='answers'>"
                     + "".join(f"<li>{html.escape(t)}</li>" for t in texts) + "</ul>")
        for name in FIGURES_BY_SECTION[heading]:
            if name in figures and name not in placed:
                parts.append(figure_html(name))
        for name, rows in tables.items():
            parts.append(f"<h3>{html.escape(name)}</h3>{html_table(rows)}")
    for name in figures:   # any figure not placed above
        if name not in placed:
            parts.append(figure_html(name))
    parts.append("</body></html>")
    return "\n".join(parts)
