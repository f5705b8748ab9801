"""The headline: a compact ranking and one sentence per question, first in the terminal and in
report.html; and report.html's layout (a section per question: figures, then sentences, then
tables with 3 significant digits and units in the headers). Planted frames, no Ray.

    .venv/bin/python -m pytest tests/test_analysis_headline.py
"""
from __future__ import annotations

import html
import json
import re

import pandas as pd
import pytest

from analysis import figures as fig
from analysis import questions as q
from analysis.headline import headline, headline_text, ranking_cells
from analysis.report import SECTIONS, render_html
from analysis.report_html import cell, header
from test_analysis_budget import converged, study
from test_analysis_stats import depth_study, trial

ARMS = {"plain20": 0.95, "plain32": 0.93, "plain44": 0.91, "resnet20": 0.96, "resnet32": 0.965,
        "resnet44": 0.967}
LOSSES = {"plain20": 0.2, "plain32": 0.3, "plain44": 0.4, "resnet20": 0.15, "resnet32": 0.14,
          "resnet44": 0.13}


def answers(trials, epochs):
    return json.loads(json.dumps(q.answers(trials, epochs, pd.DataFrame(), "val_acc", "max", 4, {}),
                                 allow_nan=False))


def test_the_headline_answers_each_question_in_at_most_twenty_lines():
    extra = pd.DataFrame([trial("mlp", "mlp", "mlp", 3, s, final_val_acc=0.88 + s / 1000) for s in range(3)])
    trials = pd.concat([study(ARMS, LOSSES), extra], ignore_index=True)
    top = headline(answers(trials, converged([*ARMS, "mlp"])))
    text = headline_text(top)
    lines = text.splitlines()
    assert len(lines) <= 20, text
    assert lines[0].startswith("Answer (val_acc") and lines[1].split() == ["arm", "mean", "95%", "CI", "n"]
    assert lines[2].split()[0] == "resnet44" and lines[2].split()[-1] == "3"   # best first, n seeds
    assert [r["arm"] for r in top["ranking"]][-1] == "mlp"
    sentences = " ".join(top["sentences"])
    assert "plain 6n+2 degrades (+" in sentences and "residual 6n+2 improves" in sentences
    assert "Plain vs residual: plain degrades more with depth than residual" in sentences
    assert "Why: plain32 vs plain20 trains worse too: an optimisation difficulty" in sentences
    assert "Budget: every arm trained" in sentences


def test_the_headline_says_when_a_verdict_is_budget_limited():
    accs = {**ARMS, "plain44": 0.2}
    losses = {**LOSSES, "plain44": 2.0}
    top = headline(answers(study(accs, losses), converged(list(accs))))
    sentences = " ".join(top["sentences"])
    assert "(budget-limited: plain44 did not train)" in sentences
    assert "Budget: not trained within the budget: plain44 (validation accuracy 0.2" in sentences


def test_the_headline_counts_under_searched_arms_and_names_each_kind_of_deficit():
    """From answers.json's records alone: under-searched arms are counted in one clause, and a
    deeper arm that scores lower only within seed noise is said to be that, not an 'unresolved
    deficit'; one whose cause is unresolved is a deficit beyond noise."""
    def why(*entries):
        return {"degradations": [{"arm": a, "reference": r, "where": w} for a, r, w in entries]}
    audit = [{"arm": a, "under_searched": a != "vgg11"} for a in ("vgg11", "vgg16", "vgg19")]
    top = headline({"why": why(("plain32", "plain20", "optimisation"), ("vgg19", "vgg16", "within noise")),
                    "evidence": {"space_audit": audit}})
    sentences = " ".join(top["sentences"])
    assert ("Search: 2 of 3 arms under-searched (fewer than 3 completed search trials): verdicts may "
            "reflect the search, not the architecture.") in sentences
    assert ("Why: plain32 vs plain20 trains worse too: an optimisation difficulty; vgg19 vs vgg16 "
            "scores lower, but only within seed noise (no deficit shown).") in sentences
    assert "other deficit" not in sentences
    noise = " ".join(headline({"why": why(("vgg19", "vgg16", "within noise"))})["sentences"])
    assert ("no plain arm scores worse than a shallower one beyond noise (vgg19 vs vgg16 scores lower, "
            "but only within seed noise (no deficit shown))") in noise
    unresolved = " ".join(headline({"why": why(("vgg19", "vgg16", "unresolved"))})["sentences"])
    assert "beyond seed noise" in unresolved and "no plain arm scores worse" not in unresolved
    searched = [{"arm": "a", "under_searched": False}]
    assert not any(s.startswith("Search:") for s in headline({"evidence": {"space_audit": searched}})["sentences"])


def test_the_headline_of_a_study_without_depth_lines_says_so():
    trials = pd.DataFrame([trial("mlp", "mlp", "mlp", 3, s, final_val_acc=0.9) for s in range(2)])
    top = headline(answers(trials, converged(["mlp"], 2)))
    assert top["sentences"][0] == "Depth: no line of plain or residual arms to study."
    assert "no plain and residual arms at matched depths" in top["sentences"][1]


def test_report_html_opens_with_the_headline_and_the_depth_figure():
    trials = depth_study(0.005, 0.0)
    result = answers(trials, converged(sorted(set(trials["arm"]))))
    figures = {"depth_effect": fig.depth_effect(trials, "val_acc", 0.95),
               "learning_curves": fig.learning_curves(pd.DataFrame(), {})}
    page = render_html("t", result, figures, "", headline(result))
    head, depth, ranking = (page.index("id='headline'"), page.index("id=\"fig-depth_effect\""),
                            page.index("<h2>1. Ranking</h2>"))
    assert head < depth < ranking
    assert page.count("id=\"fig-depth_effect\"") == 1
    without_headline = render_html("t", result, figures)   # the depth figure in its own section
    assert "href='#fig-depth_effect'" not in without_headline
    assert without_headline.index("<h2>2. Depth</h2>") < without_headline.index('id="fig-depth_effect"')


def test_the_report_headline_says_what_the_terminal_says():
    trials = depth_study(0.005, 0.0)
    result = answers(trials, converged(sorted(set(trials["arm"]))))
    top = headline(result)
    page = render_html("t", result, {}, "", top, "val_acc")
    headline_part = page[page.index("id='headline'"):page.index("</section>")]
    assert all(html.escape(s) in headline_part for s in top["sentences"])
    for arm, mean, interval, n in ranking_cells(top):   # the terminal's cells, in one row
        assert f"<td>{arm}</td><td>{mean}</td><td>{interval}</td><td>{n}</td>" in headline_part
    assert "<th>mean (fraction)</th><th>95% CI</th><th>n (seeds)</th>" in headline_part


@pytest.mark.parametrize("value, shown", [
    (0.012345, "0.0123"), (0.97333, "0.973"), (2.5, "2.5"), (3.0, "3"), (-1.23456e-5, "-1.23e-05"),
    (999.7, "1k"), (1234.5, "1.23k"), (272474, "272k"), (251_234_567, "251M"),
    (20, "20"), (5000, "5000"),          # ints below 10,000 (seeds, depths, epochs) exact
    (None, "-"), (float("nan"), "-"), (True, "yes"), ([20, 32], "20, 32"), ("tied", "tied"),
])
def test_report_cells_have_three_significant_digits(value, shown):
    assert cell(value) == shown


def test_report_headers_carry_units():
    assert header("seconds_per_epoch") == "seconds_per_epoch (s)"
    assert header("parameters") == "parameters (count)" and header("n") == "n (seeds)"
    assert header("mean", "ranking", "val_acc") == "mean (fraction)"
    assert header("mean", "ranking", "val_loss") == "mean (cross-entropy)"
    assert header("slope", "depth_trend") == "slope (per layer, unit of column)"
    assert header("p") == "p" and header("epochs") == "epochs" and header("param_lr") == "param_lr"


def significant_digits(text: str) -> int:
    """How many significant digits a cell such as '0.0123', '-1.23e-05' or '272k' shows."""
    mantissa = re.split(r"e|[kMGT]$", text)[0]
    return len(re.sub(r"\D", "", mantissa).lstrip("0"))


def test_report_sections_show_figures_then_sentences_then_tables():
    trials = depth_study(0.005, 0.0, seeds=3)
    result = answers(trials, converged(sorted(set(trials["arm"]))))
    names = [f for s in SECTIONS for f in s.figures]
    figures = {name: fig.empty(name, "planted") for name in [*names, "extra"]}
    page = render_html("t", result, figures, "", headline(result), "val_acc")
    for s in SECTIONS:
        part = page.split(f"<section id='q-{s.answers[0]}'>")[1].split("</section>")[0]
        assert f"<h2>{html.escape(s.heading)}</h2>" in part
        shown = [part.index(f'id="fig-{n}"') for n in s.figures if f'id="fig-{n}"' in part]
        assert shown == sorted(shown) and all(i < part.index("<ul class='answers'>") for i in shown)
        assert part.index("<ul class='answers'>") < part.find("<table") or "<table" not in part
    # the depth figure is drawn under the headline, its section links to it
    assert page.count('id="fig-depth_effect"') == 1 and "href='#fig-depth_effect'" in page
    assert page.index('id="fig-extra"') > page.index("<h2>Other figures</h2>")   # never lost
    pairwise = page.split("<details><summary>pairwise (15 rows: click to show)</summary>")[1]
    assert pairwise.index("<table") < pairwise.index("</details>")   # folded, not open
    cells = re.findall(r"<td>(-?[\d.]+(?:e[-+]\d+)?[kMGT]?)</td>", page)
    decimals = [c for c in cells if "." in c or "e" in c or c[-1] in "kMGT"]
    assert len(decimals) > 100 and max(map(significant_digits, decimals)) == 3
