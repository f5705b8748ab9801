"""The analysis package end to end on a real study (conftest's `tiny`: mlp and resnet20, search and
confirmation on a local Ray), plus the figures and the report on synthetic frames.

- `archstudy analyze DIR` (conftest's `analysed`, which test_report_browser opens in a browser)
  writes answers.md, answers.json and a self-contained report.html with every figure in its
  question's section, and logs them to an offline W&B `analysis` run that we read back;
- a loss's y axis turns logarithmic when it spans more than two decades (synthetic frames);
- the notebook runs (nbclient) against the tiny study;
- a W&B Report is built offline; bad folders give one line and exit 2.
(The statistics themselves are tested on planted effects in test_analysis_stats.py.)
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import analysis
from analysis import figures, io
from analysis.report import SECTIONS as REPORT_SECTIONS
from analysis.scales import spans_decades
from study.cli import main
from wandb_files import wandb_records

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("learning_curves", "depth_effect", "gradflow_heatmaps", "attenuation_curves",
           "generalisation_gap", "search_curves", "importance_bars", "cost_pareto", "signal_propagation",
           "expected_best")
SECTIONS = ("ranking", "depth", "why", "convergence", "search", "evidence")


def test_analyze_prints_the_headline_first_then_where_the_details_are(analysed):
    out, _, printed = analysed
    lines = printed.splitlines()
    assert lines[0].startswith("Answer (val_acc, mean over confirmation seeds with its 95% CI)")
    assert lines[1].split() == ["arm", "mean", "95%", "CI", "n"]
    assert {lines[2].split()[0], lines[3].split()[0]} == {"mlp-w1-h32", "resnet20-w0.125"}
    details = next(i for i, line in enumerate(lines) if line.startswith("report: "))
    assert details <= 20 and lines[details:] == [f"report: {out / 'report.html'}",
                                                f"answers: {out / 'answers.md'}, {out / 'answers.json'}"]
    assert any(line.startswith("- Depth") for line in lines[:details])
    html = (out / "report.html").read_text()
    assert html.index("id='headline'") < html.index("<h2>0. Budget")


def test_analyze_writes_answers_and_report(analysed):
    out, code, _ = analysed
    assert code == 0
    answers = json.loads((out / "answers.json").read_text())
    assert set(SECTIONS) <= set(answers)
    assert answers["text"] and all(isinstance(t, str) and t for t in answers["text"])
    ranked = {row["arm"] for row in answers["ranking"]["ranking"]}
    assert ranked == {"mlp-w1-h32", "resnet20-w0.125"}
    markdown = (out / "answers.md").read_text()
    for heading in ("1. Ranking", "2. Depth", "3. Why", "4. Convergence", "5. Search",
                    "6. Evidence beyond one search"):
        assert f"## {heading}" in markdown


def test_evidence_beyond_one_search_is_answered_in_words_numbers_and_a_figure(analysed):
    """Two seeds: P(A > B) has too few paired runs to mean much, and says so; every arm has an
    expected-best curve and an audit row; the signal-propagation numbers come with a sentence."""
    out = analysed[0]
    answers = json.loads((out / "answers.json").read_text())
    evidence, why = answers["evidence"], answers["why"]
    (pair,) = evidence["prob_better"]
    assert (pair["n"], pair["few_runs"], pair["verdict"]) == (2, True, "too few paired runs")
    arms = {"mlp-w1-h32", "resnet20-w0.125"}
    assert {r["arm"] for r in evidence["expected_best"]} == arms
    audit = {r["arm"]: r for r in evidence["space_audit"]}
    assert set(audit) == arms and all(0 <= r["position_lr"] <= 1 for r in audit.values() if r["completed"])
    assert {r["arm"]: r["under_searched"] for r in answers["ranking"]["ranking"]} == \
        {arm: audit[arm]["under_searched"] for arm in arms}
    assert {r["arm"] for r in why["signal_propagation"]} == arms
    markdown = (out / "answers.md").read_text()
    evidence_md = markdown.split("## 6. Evidence beyond one search")[1]
    assert "too few paired runs for the bootstrap to mean much" in evidence_md
    assert "Expected best final val_acc" in evidence_md and "TPE and ASHA trials are not" in evidence_md
    assert "Signal propagation, completed confirmation runs" in markdown.split("## 3. Why")[1]
    html = (out / "report.html").read_text()
    assert html.index("6. Evidence beyond one search") < html.index('id="fig-expected_best"')


def test_report_is_self_contained_with_every_figure(analysed):
    html = (analysed[0] / "report.html").read_text()
    for name in FIGURES:
        assert f'id="fig-{name}"' in html, name
    assert html.count("Plotly.newPlot") == len(FIGURES)
    # each figure in the section of its question: none left over for "Other figures"
    assert set(FIGURES) <= {f for s in REPORT_SECTIONS for f in s.figures} and "id='other'" not in html
    # plotly.js is embedded once (no CDN script), so the report opens offline
    assert not re.search(r"<script[^>]+src=", html)
    assert html.count("plotly.js v") >= 1 and len(html) > 3_000_000


def test_tiny_study_answers_say_when_evidence_is_thin(analysed):
    """Two seeds and one depth per family: the depth question can't be answered, and says so."""
    answers = json.loads((analysed[0] / "answers.json").read_text())
    depth_text = " ".join(answers["depth"]["text"]).lower()
    assert "too few" in depth_text
    assert not re.search(r"\bdegrades\b|\bimproves\b", depth_text)


def test_analysis_run_is_logged_to_wandb_offline(analysed, tiny):
    out = analysed[0]
    folders = [f for f in (out / "wandb").glob("offline-run-*") if "analysis" in f.name]
    assert len(folders) == 1, sorted(f.name for f in (out / "wandb").glob("offline-run-*"))
    records = wandb_records(next(folders[0].glob("*.wandb")))
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.run_group, run.job_type) == (tiny.spec.name, "analysis")
    logged = {item.key or "/".join(item.nested_key) for r in records
              if r.WhichOneof("record_type") == "history" for item in r.history.item}
    for name in FIGURES:
        assert any(key.startswith(f"figures/{name}") for key in logged), name
    assert any(key.startswith("tables/ranking") for key in logged)
    assert any(key.startswith("report") for key in logged)
    assert any(r.WhichOneof("record_type") == "exit" and r.exit.exit_code == 0 for r in records)


def test_notebook_runs_against_the_tiny_study(tiny, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(REPO / "notebooks" / "depth_vs_residual.ipynb", as_version=4)
    os.environ["ARCHSTUDY_STUDY"] = str(tiny.out)
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.pop("ARCHSTUDY_STUDY")
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "study tiny" in text and "- " in text
    assert sum("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs) == len(FIGURES)


def report_spec(report) -> dict:
    """The Report's JSON spec, as W&B's server would receive it on save."""
    return json.loads(report._to_model().model_dump_json(by_alias=True, exclude_none=True))["spec"]


def grids(spec: dict) -> list[dict]:
    return [b for b in spec["blocks"] if b.get("type") == "panel-grid"]


def test_wandb_report_selects_the_studys_runs_and_shows_each_arms_search(tiny):
    tables = io.load_studies([tiny.out])
    answers, _, _ = analysis.compute(tables)
    report = io.create_wandb_report(tables, answers, save=False)
    assert report.title == "archstudy: tiny" and report.project == tiny.spec.wandb.project
    spec = report_spec(report)
    runsets = [g["metadata"]["runSets"][0] for g in grids(spec)]
    group = {"key": {"section": "run", "name": "group"}, "op": "=", "value": "tiny", "disabled": False}
    assert all(rs["filters"]["filters"][0] == group for rs in runsets)   # the run attribute, not a config key
    assert runsets[0]["grouping"] == [{"section": "config", "name": "arm.value"}]
    by_arm = {f["value"]: rs["filters"]["filters"] for rs in runsets for f in rs["filters"]["filters"]
              if f["key"] == {"section": "config", "name": "arm"}}
    assert list(by_arm) == tiny.spec.arm_names
    assert all({"section": "run", "name": "jobType"} in [f["key"] for f in fs] for fs in by_arm.values())
    panels = [[p["viewType"] for p in g["metadata"]["panelBankSectionConfig"]["panels"]] for g in grids(spec)]
    assert panels[0] == ["Run History Line Plot"] * 5 and panels[1] == ["Media Browser"] * 2
    assert panels[2:] == [["Parallel Coordinates Plot", "Parameter Importance"]] * len(tiny.spec.arm_names)
    coords, importance = grids(spec)[2]["metadata"]["panelBankSectionConfig"]["panels"]
    assert [c["accessor"] for c in coords["config"]["columns"]] == ["config:lr.value", "summary:val_acc"]
    assert importance["config"]["targetKey"] == "val_acc"
    media = grids(spec)[1]["metadata"]["panelBankSectionConfig"]["panels"]
    assert [m["config"]["mediaKeys"] for m in media] == [["figures/depth_effect"], ["figures/learning_curves"]]
    assert "Metric('Group') == 'tiny'" in str(report.blocks[3].runsets[0].filters)


def test_two_studies_are_compared_with_arms_kept_apart(tiny, tmp_path, capsys):
    other = tmp_path / "tiny2"
    shutil.copytree(tiny.out, other)
    spec = yaml.safe_load((other / "spec.yaml").read_text())
    spec.update(name="tiny2", epochs=spec["epochs"] + 1)   # as if it had trained one epoch more
    (other / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    tables = io.load_studies([tiny.out, other])
    assert set(tables.trials.arm) == {f"{s}:{a}" for s in ("tiny", "tiny2")
                                      for a in ("mlp-w1-h32", "resnet20-w0.125")}
    assert main(["analyze", str(tiny.out), str(other), "--out", str(tmp_path / "both"),
                 "--wandb-mode", "disabled"]) == 0
    assert (tmp_path / "both" / "report.html").is_file()
    assert capsys.readouterr().err.strip() == "note: the studies compared differ in epochs (3 vs 4)"
    answers = json.loads((tmp_path / "both" / "answers.json").read_text())
    assert answers["provenance"]["differences"] == ["epochs (3 vs 4)"]


@pytest.mark.parametrize("files, expected", [
    ({}, "is not a study folder"),
    ({"spec.yaml": "name: x\n"}, "has no trials.parquet"),
])
def test_bad_folders_exit_2_with_one_line(files, expected, tmp_path, capsys):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert main(["analyze", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)   # nothing written


def test_several_studies_need_an_out_folder(tiny, capsys):
    assert main(["analyze", str(tiny.out), str(tiny.out), "--wandb-mode", "disabled"]) == 2
    assert "--out" in capsys.readouterr().err


# ---- figures on synthetic frames -------------------------------------------------------------------
def synthetic_epochs(arms=("a", "b"), seeds=3, epochs=4) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i, arm in enumerate(arms):
        for seed in range(seeds):
            for epoch in range(1, epochs + 1):
                acc = 0.5 + 0.1 * epoch + 0.05 * i + rng.normal(0, 0.01)
                rows.append(dict(phase="confirm", arm=arm, seed=seed, trial_id=f"{arm}{seed}", epoch=epoch,
                                 train_loss=1 / epoch, val_loss=1.2 / epoch, train_acc=acc + 0.02, val_acc=acc))
    return pd.DataFrame(rows)


def test_each_arm_keeps_its_colour_across_figures():
    epochs = synthetic_epochs()
    colors = figures.arm_colors(["a", "b"])
    assert colors["a"] != colors["b"]
    fig = figures.learning_curves(epochs, colors)
    lines = [t for t in fig.data if t.mode == "lines" and t.fill != "toself"]   # not the seed bands
    assert len(lines) == 2 * 4   # two arms x four panels
    assert {t.name: t.line.color for t in lines} == colors
    a_mean = [t for t in lines if t.name == "a" and t.xaxis == "x4"][0]   # val accuracy panel
    expected = epochs[epochs.arm == "a"].groupby("epoch").val_acc.mean()
    assert np.allclose(a_mean.y, expected.to_numpy())


def test_figures_explain_missing_data_instead_of_failing():
    empty = pd.DataFrame(columns=["arm", "epoch", "index", "grad_norm", "phase"])
    for fig in (figures.gradflow_heatmaps(empty, ["a"]), figures.attenuation_curves(empty, {"a": "#000000"}),
                figures.learning_curves(empty, {"a": "#000000"})):
        assert fig.layout.annotations and "no " in fig.layout.annotations[0].text


@pytest.mark.parametrize("values, wide", [
    ([2.3, 0.5, 0.01], True),          # a loss falling over more than two decades
    ([2.3, 0.5, 0.1], False),          # 23x: a linear axis shows it
    ([2.3, np.nan, 0.001, None], True),   # missing values are left out
    ([5.0, 0.0, 0.001], False),        # a zero has no place on a log axis
    ([], False), (None, False),
])
def test_scale_a_loss_is_log_when_it_spans_more_than_two_decades(values, wide):
    assert spans_decades(values) is wide


def test_scale_learning_curves_put_only_a_wide_loss_on_a_log_axis():
    epochs = synthetic_epochs()
    narrow = figures.learning_curves(epochs, figures.arm_colors(["a", "b"]))
    assert {narrow.layout[f"yaxis{i}"].type for i in ("", 2, 3, 4)} == {None}
    epochs["train_loss"] = 10.0 ** -epochs["epoch"]   # 0.1 to 0.0001: three decades
    wide = figures.learning_curves(epochs, figures.arm_colors(["a", "b"]))
    assert wide.layout.yaxis.type == "log" and wide.layout.yaxis.title.text == "(log scale)"
    assert [wide.layout[f"yaxis{i}"].type for i in (2, 3, 4)] == [None, None, None]
    bands = [t for t in wide.data if t.fill == "toself"]
    assert bands and {t.mode for t in bands} == {"lines"}   # no marker at each corner of a band
