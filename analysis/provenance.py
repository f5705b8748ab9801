"""What code ran each study, from study.json's driver records (studyfiles/provenance.py): one row
per driver (`run`, each `resume`), and a sentence per study that says whether all of them ran the
same code, the commit and package versions, and what differed when they did not. Pure: the states
come from analysis/io.py.

    provenance_answer([("quick", state)], [spec])   # {"drivers": [rows], "code_versions": {study: n},
                                                    #  "differences": [...], "text": [...]}

Several studies compared (`archstudy analyze DIR_A DIR_B`) are also checked for what their
arms' differences would mix with the architecture: a different dataset, budget, split or search
(COMPARED); the first sentence names it, and `analyze` prints it as a note.

Tests: .venv/bin/python -m pytest tests/test_provenance.py
"""
from __future__ import annotations

import json

from studyfiles.provenance import PACKAGES, changed, code_of, describe

# what several studies compared must share for their arms' differences to be the architectures'
COMPARED = ("data", "subset", "epochs", "seeds", "split", "search.algorithm", "search.trials_per_arm",
            "search.replicates", "search.space", "search.fixed", "scheduler")
DRIVER_COLUMNS = ["study", "driver", "command", "started", "archstudy", "git_commit", "git_dirty",
                  "python", *PACKAGES, "platform"]


def driver_rows(study: str, drivers: list[dict]) -> list[dict]:
    """One row per driver record, numbered from 1, with its packages as columns (DRIVER_COLUMNS)."""
    return [{"study": study, "driver": i, **{k: d.get(k) for k in DRIVER_COLUMNS[2:8]},
             **{name: (d.get("packages") or {}).get(name) for name in PACKAGES},
             "platform": d.get("platform")}
            for i, d in enumerate(drivers, start=1)]


def versions(drivers: list[dict]) -> list[list[int]]:
    """The drivers (numbered from 1) grouped by the code they ran, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(drivers, start=1):
        groups.setdefault(repr(code_of(d)), []).append(i)
    return list(groups.values())


def study_sentence(study: str, state: dict) -> str:
    """Whether the study's drivers all ran one code version, and which."""
    if "error" in state:
        return f"Provenance of {study}: unknown ({state['error']})."
    drivers = state.get("drivers")
    if not drivers:
        return (f"Provenance of {study}: not recorded (its study.json predates the driver records), "
                "so which code produced it is unknown.")
    resumes = sum(d.get("command") == "resume" for d in drivers)
    runs = f"{len(drivers)} driver{'s' * (len(drivers) > 1)}" + (f" ({resumes} of them resumes)" if resumes else "")
    groups = versions(drivers)
    caveats = []
    if any(d.get("git_dirty") for d in drivers):
        caveats.append("a checkout with uncommitted changes ran it, so its commit alone does not "
                       "reproduce it")
    if any((d.get("git_commit") or "unknown") == "unknown" for d in drivers):
        caveats.append("archstudy did not run from its git checkout, so the commit is unknown")
    tail = "".join(f" Note: {c}." for c in caveats)
    if len(groups) == 1:
        return f"{study} ran under one code version over {runs}: {describe(drivers[0])}.{tail}"
    what = ", ".join(dict.fromkeys(name for g in groups[1:] for name in changed(drivers[0], drivers[g[0] - 1])))
    each = "; ".join(f"driver{'s' * (len(g) > 1)} {', '.join(map(str, g))}: {describe(drivers[g[0] - 1])}"
                     for g in groups)
    return (f"{study} ran under {len(groups)} code versions over {runs} ({what} differ), so its "
            f"results pool runs made by different code; run it again for an answer from one "
            f"version. {each}.{tail}")


def setup_differences(specs: list[dict]) -> list[str]:
    """'epochs (5 vs 3)' for each COMPARED key (dotted: a key of a section) on which the resolved
    specs (plain data, one per study, in order) differ; [] for one study."""
    def value(spec: dict, key: str):
        for part in key.split("."):
            spec = spec.get(part) if isinstance(spec, dict) else None
        return spec
    found = []
    for key in COMPARED:
        values = [value(spec, key) for spec in specs]
        if any(v != values[0] for v in values[1:]):
            found.append(f"{key} ({' vs '.join(json.dumps(v, sort_keys=True) for v in values)})")
    return found


def provenance_answer(states: list[tuple[str, dict]], specs: list[dict] | None = None) -> dict:
    """answers.json's "provenance" for (study name, study.json state) pairs and the studies'
    resolved specs: drivers (driver_rows of every study), code_versions ({study: distinct code
    versions, 0 when not recorded}), differences (setup_differences of the specs), text."""
    rows, counts, text = [], {}, []
    for study, state in states:
        drivers = [] if "error" in state else state.get("drivers") or []
        rows += driver_rows(study, drivers)
        counts[study] = len(versions(drivers))
        text.append(study_sentence(study, state))
    differences = setup_differences(specs or [])
    if differences:
        text.insert(0, f"The {len(specs)} studies compared differ in {'; '.join(differences)}: a "
                       "difference between arms of different studies mixes the architecture with "
                       "these; compare arms within one study for an answer about the architecture.")
    return {"drivers": rows, "code_versions": counts, "differences": differences, "text": text}
