"""archstudy's analysis: answers a study's research questions from its tables, with statistics over
seeds, and shows them in a report.

    archstudy analyze ~/archstudy-results/quick            # or: python -m analysis DIR [DIR ...]

    from analysis import analyze
    result = analyze(["~/archstudy-results/quick"], wandb_mode="disabled")
    print(result.summary); result.figures["depth_effect"].show()

It reads what a study wrote through `studyfiles` (the tables' contract, the spec as data, storage)
and imports nothing from `study` or `trainables`: no torch, no Ray.

Modules: `pipeline` (analyze: folders in, outputs out), `io` (the only one that reads or writes:
study folders in, answers and report out, W&B), `stats` (intervals, tests, slopes), `questions`
(the five questions, DataFrame in, frames and dicts out), `sentences` (the answers in words),
`signalprop` (signal propagation across the blocks, for the 'why' answers), `evidence` and
`space_audit` (evidence beyond one search: P(A > B) seed for seed, the expected best against the
search budget, the search space's audit), `search_variance` (the spread between search replicates
against the spread between seeds; its words in `sentences_replicates`), `budget` (arms that did
not train), `headline` (the answer first), `cost` (parameters, FLOPs and seconds against the
metric: the Pareto front), `figures` (plotly figures), `report` (HTML, markdown and terminal
text), `wandb_report` (the W&B Report), `cli` (the command line).
"""
from __future__ import annotations

__all__ = ["Analysis", "analyze", "compute"]


def __getattr__(name: str):
    # Loaded on first use, so that `python -m analysis --help` and the archstudy command's parser
    # (which imports analysis.cli) do not pay for pandas, scipy and plotly.
    if name in __all__:
        from . import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
