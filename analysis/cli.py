"""The analysis's command line: `python -m analysis DIR [DIR ...]`, also `archstudy analyze`.

    python -m analysis ~/archstudy-results/quick            # the headline, then the paths
    python -m analysis A B --out comparison/                # several studies compared
    python -m analysis DIR --full                           # every verdict too

A folder that is not a finished study is one line on stderr and exit code 2; piped into `head`,
it ends quietly (studyfiles/pipes.py).

    python -m pytest tests/test_cli.py tests/test_value_types.py
"""
from __future__ import annotations

import argparse
import sys

from studyfiles.errors import StudyError
from studyfiles.pipes import quiet_on_broken_pipe


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The analysis's options, on `p` (its own parser, or the archstudy command's subparser)."""
    p.add_argument("dirs", nargs="+", metavar="DIR", help="study folders (several: compared)")
    p.add_argument("--out", help="where to write the answers and report (default: the study folder)")
    p.add_argument("--wandb-mode", choices=["offline", "online", "disabled"])
    p.add_argument("--wandb-report", action="store_true",
                   help="also create a W&B Report with the key panels (online mode only)")
    p.add_argument("--full", action="store_true",
                   help="also print every verdict (as in answers.md), not only the headline")
    return p


def print_analysis(folders, out=None, wandb_mode=None, wandb_report=False, full: bool = False):
    """Analyse and print the headline first (ranking, one sentence per question), then where the
    details are. Returns the Analysis (analysis/pipeline.py)."""
    from .pipeline import analyze
    result = analyze(folders, out=out, wandb_mode=wandb_mode, wandb_report=wandb_report)
    print(result.summary)
    if full:
        print()
        print(result.details)
    print(f"report: {result.paths['report.html']}")
    print(f"answers: {result.paths['answers.md']}, {result.paths['answers.json']}")
    if differences := result.answers["provenance"]["differences"]:   # studies that are not alike
        print(f"note: the studies compared differ in {'; '.join(differences)}", file=sys.stderr)
    return result


def run(args: argparse.Namespace) -> int:
    print_analysis(args.dirs, args.out, args.wandb_mode, args.wandb_report, args.full)
    return 0


@quiet_on_broken_pipe   # `python -m analysis DIR | head`: no BrokenPipeError traceback, exit 141
def main(argv: list[str] | None = None) -> int:
    p = add_arguments(argparse.ArgumentParser(
        prog="python -m analysis",
        description="Answer studies' questions: answers.md/.json and report.html in the study folder."))
    args = p.parse_args(argv)
    try:
        return run(args)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted by SIGINT", file=sys.stderr)
        return 130
