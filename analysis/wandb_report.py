"""The W&B Report of a study (`archstudy analyze --wandb-report`), built offline as an object whose
JSON spec the tests check; `io.create_wandb_report` saves it (that needs W&B online).

What it shows, from the runs the study logged (study/tracking.py: one run per Tune trial, in the
study's W&B group, config key `arm`, job type `search` or `confirm`; the analysis run, job type
`analysis`, with the report's figures):

- the answers, as sentences;
- the learning curves of every trial, grouped by arm (W&B draws each group's mean and range);
- the depth figure and the learning-curve figure of the analysis run (its logged plotly media);
- per arm, the sweep view of its search: a parallel-coordinates panel (every searched parameter,
  then the metric) and a parameter-importance panel (W&B's own, against the metric).

Runs are selected by their W&B group, a run attribute (`Metric("Group")` in wandb-workspaces'
filter language), not a config key; grouping by arm is `config.arm`.

    python -m pytest tests/test_analysis.py -k wandb_report
"""
from __future__ import annotations

CURVES = ("train_loss", "val_loss", "train_acc", "val_acc")
FIGURES = ("figures/depth_effect", "figures/learning_curves")


def _quote(text: str) -> str:
    """A string literal for wandb-workspaces' filter expressions (names are [A-Za-z0-9._-])."""
    return "'" + str(text).replace("\\", "\\\\").replace("'", "\\'") + "'"


def runs_filter(study: str, arm: str | None = None, job_type: str | None = None) -> str:
    """The filter expression that selects the study's runs (optionally one arm's, one job type's)."""
    parts = [f"Metric('Group') == {_quote(study)}"]
    if arm is not None:
        parts.append(f"Config('arm') == {_quote(arm)}")
    if job_type is not None:
        parts.append(f"Metric('JobType') == {_quote(job_type)}")
    return " and ".join(parts)


def build_report(study: str, project: str, entity: str | None, metric: str, space: list[str],
                 arms: list[str], sentences: list[str]):
    """The Report (wandb_workspaces.reports.v2.Report), not saved. `space`: the searched parameters'
    names (config keys); `arms`: the arm names, in the spec's order."""
    import wandb_workspaces.reports.v2 as wr

    where = dict(project=project, entity=entity or "")
    trials = wr.Runset(**where, name=study, filters=runs_filter(study), groupby=["config.arm"])
    analysis = wr.Runset(**where, name=f"{study} analysis", filters=runs_filter(study, job_type="analysis"))
    blocks = [
        wr.H1(f"Study {study}"),
        wr.MarkdownBlock("\n".join(f"- {t}" for t in sentences)),
        wr.H2("Learning curves, by arm"),
        wr.PanelGrid(runsets=[trials], panels=[
            *[wr.LinePlot(title=m, x="epoch", y=[m], groupby="config.arm") for m in CURVES],
            wr.LinePlot(title="first/last layer gradient norm", x="epoch", y=["gf_first_last_ratio"],
                        log_y=True, groupby="config.arm"),
        ]),
        wr.H2("Depth against the metric (the analysis)"),
        wr.PanelGrid(runsets=[analysis], panels=[wr.MediaBrowser(title=key.split("/")[1],
                                                                 media_keys=[key]) for key in FIGURES]),
        wr.H2("Each arm's search"),
    ]
    for arm in arms:
        searched = wr.Runset(**where, name=f"{arm} search", filters=runs_filter(study, arm, "search"))
        columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(p)) for p in space]
        blocks += [wr.H3(arm), wr.PanelGrid(runsets=[searched], panels=[
            wr.ParallelCoordinatesPlot(title=f"{arm}: searched parameters -> {metric}",
                                       columns=[*columns, wr.ParallelCoordinatesPlotColumn(
                                           metric=wr.SummaryMetric(metric))]),
            wr.ParameterImportancePlot(with_respect_to=metric),
        ])]
    return wr.Report(**where, title=f"archstudy: {study}", blocks=blocks,
                     description="Plain against residual nets over depth: learning curves, the depth "
                                 "figure, each arm's search, and the answers.")
