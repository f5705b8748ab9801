"""Turns the answers (analysis.questions.answers) and the figures (analysis.figures) into text:
report.html (read first: the headline answer and the depth figure, then one section per question,
its figures first, then its sentences and tables; self-contained, it opens offline), answers.md,
and the terminal summary that `archstudy analyze --full` prints. Pure: strings out, nothing
written here. The HTML pieces (number format, units, tables, figures) are in report_html.py.

SECTIONS is the one table of what goes where: a new question is one more Section.

Tests: .venv/bin/python -m pytest tests/test_analysis_headline.py (end to end, on a study run on Ray:
tests/test_analysis.py; in a browser: tests/test_report_browser.py)
"""
from __future__ import annotations

import html
import math
from typing import NamedTuple

import pandas as pd

from .headline import ranking_cells
from .report_html import STYLE, FigureWriter, html_table, table_html


class Section(NamedTuple):
    """One question of the report: its heading, the answers keys whose sentences ("text") and
    tables it shows, and the figures (pipeline.compute's names) drawn first in report.html."""
    heading: str
    answers: tuple[str, ...]
    figures: tuple[str, ...] = ()


SECTIONS = (
    Section("0. Budget: did every arm train?", ("budget",)),
    Section("1. Ranking", ("ranking", "pairwise"), ("learning_curves",)),
    Section("2. Depth", ("depth",), ("depth_effect",)),   # drawn under the headline, at the top
    Section("3. Why: gradient flow", ("why",), ("gradflow_heatmaps", "attenuation_curves",
                                                "signal_propagation")),
    Section("4. Convergence", ("convergence",), ("generalisation_gap",)),
    Section("5. Search and cost", ("search", "cost"), ("search_curves", "importance_bars", "cost_pareto")),
    Section("6. Evidence beyond one search", ("evidence",), ("expected_best",)),
    Section("7. Provenance: what code ran the study", ("provenance",)),
)
HEADLINE_FIGURE = "depth_effect"   # the headline's figure: depth is the study's first question


def section(answers: dict, keys: tuple[str, ...]) -> tuple[list[str], dict[str, list[dict]]]:
    """(sentences, {table name: records}) of one section of the answers; a sub-answer (a dict with
    its own "text", as evidence.search_variance) adds its sentences and its tables as "name.table"."""
    texts, tables = [], {}
    for key in keys:
        part = answers.get(key) or {}
        if isinstance(part, list):
            part = {key: part}
        texts += part.get("text", [])
        for name, rows in part.items():
            if isinstance(rows, dict) and "text" in rows:
                sub_texts, sub_tables = section({name: rows}, (name,))
                texts += sub_texts
                tables.update({f"{name}.{table}": sub for table, sub in sub_tables.items()})
            elif name != "text" and isinstance(rows, list) and rows and isinstance(rows[0], dict):
                tables[name] = rows
    return texts, tables


def fmt(value) -> str:
    """A number for answers.md: 4 significant digits (report.html's tables: report_html.cell)."""
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
    for s in SECTIONS:
        texts, tables = section(answers, s.answers)
        out += [f"## {s.heading}", ""] + [f"- {t}" for t in texts] + [""]
        for name, rows in tables.items():
            out += [f"**{name}**", "", markdown_table(rows), ""]
    return "\n".join(out)


def render_terminal(title: str, answers: dict, width: int = 100) -> str:
    """The summary `archstudy analyze` prints: each question's verdicts, wrapped, no tables."""
    import textwrap
    out = [title, "=" * min(width, len(title))]
    for s in SECTIONS:
        texts, _ = section(answers, s.answers)
        out.append(s.heading)
        for t in texts or ["(nothing to say: no data for this question)"]:
            out.append(textwrap.fill(t, width, initial_indent="  - ", subsequent_indent="    "))
    return "\n".join(out)


# ---- HTML --------------------------------------------------------------------------------------------
def headline_html(top: dict, depth_figure: str = "", metric: str | None = None) -> str:
    """The headline (analysis.headline.headline): the same title, ranking cells and sentences as
    the terminal's (headline.headline_text), then `depth_figure` (a figure's HTML)."""
    rows = [dict(zip(("arm", "mean", top["ci_label"], "n"), cells)) for cells in ranking_cells(top)]
    ranking = html_table(rows, "headline", metric) or "<p>no arm has completed confirmation runs</p>"
    return (f"<section id='headline'><h2>Answer</h2><p class='lead'>{html.escape(top['title'])}</p>"
            + ranking + "<ul class='answers'>" + "".join(f"<li>{html.escape(s)}</li>" for s in top["sentences"])
            + f"</ul>{depth_figure}</section>")


def section_id(s: Section) -> str:
    return f"q-{s.answers[0]}"


def section_html(s: Section, answers: dict, figure, metric: str | None) -> str:
    """One question: its figures (a link to one drawn higher up, under the headline), its
    sentences, its tables."""
    texts, tables = section(answers, s.answers)
    drawn_above = [n for n in s.figures if n in figure.placed]
    parts = [f"<section id='{section_id(s)}'><h2>{html.escape(s.heading)}</h2>"]
    parts += [f"<p class='meta'>Figure <a href='#fig-{n}'>{n}</a>: above, under the answer.</p>"
              for n in drawn_above]
    parts += [figure(name) for name in figure.unplaced(s.figures)]
    parts.append("<ul class='answers'>" + "".join(f"<li>{html.escape(t)}</li>" for t in texts) + "</ul>")
    parts += [table_html(name, rows, metric) for name, rows in tables.items()]
    return "\n".join(parts) + "</section>"


def render_html(title: str, answers: dict, figures: dict, meta: str = "", top: dict | None = None,
                metric: str | None = None) -> str:
    """report.html: the headline (`top`, see analysis.headline) with the depth figure, then one
    section per question (SECTIONS): its figures, sentences and tables (headers with the units of
    `metric` where a column holds it). A figure no section names comes last, under "Other figures"
    (so none is lost). plotly.js is embedded once, in the first figure: the file opens offline."""
    figure = FigureWriter(figures)
    nav = [("headline", "Answer")] * (top is not None) + [(section_id(s), s.heading) for s in SECTIONS]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
             f"<p class='meta'>{html.escape(meta)}</p><nav>"
             + "".join(f"<a href='#{i}'>{html.escape(h)}</a>" for i, h in nav) + "</nav>"]
    if top is not None:
        parts.append(headline_html(top, figure(HEADLINE_FIGURE) if HEADLINE_FIGURE in figures else "", metric))
    parts += [section_html(s, answers, figure, metric) for s in SECTIONS]
    if (rest := figure.unplaced(figures)):
        parts.append("<section id='other'><h2>Other figures</h2>" + "".join(map(figure, rest)) + "</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
