"""The analysis from folders to outputs: read the tables, answer the questions, draw the figures,
write answers.md, answers.json and report.html, and log them to W&B (see the package docstring).

    python -m pytest tests/test_analysis.py
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from studyfiles.errors import StudyError
from studyfiles.wandb_key import missing_key

from . import figures as fig
from . import figures_evidence, io, questions, signalprop
from .common import jsonable, records
from .cost import cost_answer, cost_table
from .headline import headline, headline_text
from .provenance import provenance_answer
from .report import render_html, render_markdown, render_terminal, section
from .sentences_replicates import search_variance_answer


@dataclass
class Analysis:
    tables: io.StudyTables
    answers: dict
    figures: dict
    frames: dict
    summary: str            # the headline (headline.headline_text): ranking and one line per question
    details: str            # every verdict in words (report.render_terminal)
    paths: dict[str, Path] = field(default_factory=dict)
    wandb_dir: str | None = None


def compute(tables: io.StudyTables, level: float = 0.95) -> tuple[dict, dict, dict]:
    """(answers, figures, frames) of loaded tables: pure, nothing is written."""
    spec = tables.spec
    t, e, g = tables.trials, tables.epochs, tables.gradflow
    answers, frames = questions.answers_with_frames(
        t, e, g, metric=spec.metric, mode=spec.mode, epochs_budget=spec.epochs, space=tables.space,
        level=level)
    frames["cost"] = cost_table(t, spec.metric, spec.mode, level)
    answers["cost"] = jsonable(cost_answer(frames["cost"], spec.metric))
    # how far the answer depends on the search's luck (search replicates: analysis/search_variance.py)
    answers["evidence"]["search_variance"] = jsonable(search_variance_answer(t, spec.metric, spec.mode, level))
    profile = frames["gradient_profile"]   # completed confirmation trials only
    colors = fig.arm_colors(tables.arms)
    figures = {
        "learning_curves": fig.learning_curves(e, colors, trials=t),
        "depth_effect": fig.depth_effect(t, spec.metric, level),
        "gradflow_heatmaps": fig.gradflow_heatmaps(profile, tables.arms),
        "attenuation_curves": fig.attenuation_curves(profile, colors),
        "generalisation_gap": fig.generalisation_gap(frames["generalisation_gap"], colors),
        "search_curves": fig.search_curves(e, t, spec.metric, colors),
        "importance_bars": fig.importance_bars(frames["importances"], colors),
        "cost_pareto": fig.cost_pareto(frames["cost"], spec.metric, colors, level),
    }
    figures["expected_best"] = figures_evidence.expected_best(frames["expected_best"], spec.metric, colors)
    # signal propagation (analysis/signalprop.py): its numbers and sentences join the 'why' answers
    frames["signal_profile"] = signalprop.signal_profile(tables.signalprop, "confirm", t)
    growth = signalprop.signal_growth(tables.signalprop, "confirm", t)
    answers["why"]["signal_propagation"] = records(growth)
    answers["why"]["text"] += signalprop.sentences(growth, recorded=not tables.signalprop.empty)
    figures["signal_propagation"] = fig.signal_propagation(frames["signal_profile"], colors)
    # what code ran each study (study.json's driver records: analysis/provenance.py)
    answers["provenance"] = jsonable(provenance_answer(
        [(s.name, state) for s, state in zip(tables.specs, tables.states or [{}] * len(tables.specs))],
        [s.raw for s in tables.specs]))
    # every sentence, section by section in the answers' order (the cost's after the questions')
    answers["text"] = [s for key in (*questions.TABLES, "cost", "provenance")
                       for s in section(answers, (key,))[0]]
    return answers, figures, frames


def analyze(folders: list[str | os.PathLike], out: str | os.PathLike | None = None,
            wandb_mode: str | None = None, wandb_report: bool = False, level: float = 0.95) -> Analysis:
    """Read the study folders, answer the questions, write answers.md, answers.json and report.html
    (into the study folder, or `out` when several are compared) and log them to W&B."""
    tables = io.load_studies(list(folders))
    if out is None:
        if len(tables.folders) > 1:
            raise StudyError("analyze: comparing several studies needs --out DIR for the report")
        out = tables.folders[0]
    mode = io.wandb_mode(tables.spec, wandb_mode)
    if wandb_report and mode != "online":
        raise StudyError(f"--wandb-report: needs W&B online mode, not {mode!r} (a W&B Report is "
                            "created on the W&B server)")
    if (problem := missing_key(mode, offline_ok=not wandb_report)) is not None:   # before any output
        raise StudyError(problem)
    answers, figures, frames = compute(tables, level)
    title = f"archstudy analysis: {tables.name}"
    meta = (f"studies: {', '.join(str(f) for f in tables.folders)}; metric {tables.spec.metric} "
            f"({tables.spec.mode}); {level:.0%} confidence intervals over seeds")
    top = headline(answers, tables.spec.metric, level)
    html = render_html(title, answers, figures, meta, top, tables.spec.metric)
    paths = io.write_outputs(Path(out).expanduser(), answers, render_markdown(title, answers), html)
    wandb_dir = io.log_to_wandb(tables, figures, frames, answers, html, mode)
    if len(tables.sources) == 1 and Path(out) == tables.folders[0]:
        io.publish(tables.sources[0])   # a study in a bucket: upload the answers and report
    if wandb_report:
        io.create_wandb_report(tables, answers, save=True)
    return Analysis(tables, answers, figures, frames, headline_text(top), render_terminal(title, answers),
                    paths, wandb_dir)
