"""The headline: a compact ranking and one sentence per question, first in the terminal and in
report.html. Planted frames, no Ray.

    .venv/bin/python -m pytest tests/test_analysis_headline.py
"""
from __future__ import annotations

import json

import pandas as pd

from analysis import figures as fig
from analysis import questions as q
from analysis.headline import headline, headline_text
from analysis.report import render_html
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
