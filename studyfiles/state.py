"""study.json read back: the phase a study is in and what it records beside it (the spec it started
with, each driver's code: studyfiles/provenance.py). study/runner.py writes it (Study.mark);
`resume` reads it to go on (study/folder.py), the analysis to say what code ran the study.

    read_state(folder)   # the state as a dict, {} without a study.json, or a one-line StudyError

    python -m pytest tests/test_spec_changed.py
"""
from __future__ import annotations

import json
from pathlib import Path

from .contract import STATE_FILE
from .errors import StudyError

PHASES = ("search", "confirm", "done")


def read_state(out: Path) -> dict:
    """study.json as a dict ({} when there is none); anything unreadable is a one-line StudyError."""
    path = Path(out) / STATE_FILE
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeError, ValueError) as e:
        raise StudyError(f"{path} cannot be read ({type(e).__name__}: {str(e)[:120]}); it records "
                         "the study's progress, so the study cannot continue from it") from None
    if not isinstance(state, dict) or state.get("phase", "search") not in PHASES:
        raise StudyError(f"{path} is not a study state: expected {{\"phase\": one of "
                         f"{', '.join(PHASES)}, ...}}, found {json.dumps(state)[:120]}")
    return state
