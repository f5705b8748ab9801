"""The analysis package's only I/O: read study folders into DataFrames, write the answers and the
report, and log them to W&B. Everything else in `analysis` is pure (DataFrame in, DataFrame,
dict or figure out).

    from analysis.io import load_studies
    tables = load_studies(["~/archstudy-results/quick"])
    tables.trials, tables.epochs, tables.gradflow, tables.signalprop   # DataFrames (study/tables.py)

Several folders can be read at once to compare studies: each arm is then called "<study>:<arm>" so
that same-named arms of different studies stay apart, and the `study` column is the spec's name
(the statistics never pool or pair runs across studies). They must share the metric and its mode
(a StudyError otherwise). The trials table gets an `epochs_budget` column: its study's epochs.
A table that folders written before it existed lack (ADDED_LATER) reads as an empty one.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from studyfiles.contract import OUTPUTS, SPEC_FILE, STUDY_FILES, TABLES, table_path
from studyfiles.errors import StudyError
from studyfiles.files import write_atomic
from studyfiles.spec_data import SpecData, read_spec
from studyfiles.state import read_state
from studyfiles.storage import Store, is_uri
from studyfiles.wandb_names import LEAN_SETTINGS, analysis_values

ADDED_LATER = ("signalprop",)   # tables an older study folder may lack: read as empty tables


@dataclass
class StudyTables:
    """One or several studies' result tables, and what the analysis needs from their specs."""
    folders: list[Path]
    specs: list[SpecData]
    trials: pd.DataFrame
    epochs: pd.DataFrame
    gradflow: pd.DataFrame
    signalprop: pd.DataFrame = field(default_factory=pd.DataFrame)
    states: list[dict] = field(default_factory=list)   # each folder's study.json ({} if none)
    arms: list[str] = field(default_factory=list)   # in the specs' order (colours follow it)
    sources: list = field(default_factory=list)      # the folders as given (paths or bucket URIs)

    @property
    def spec(self) -> SpecData:
        return self.specs[0]

    @property
    def name(self) -> str:
        return "+".join(s.name for s in self.specs)

    @property
    def space(self) -> dict[str, tuple[str, list]]:
        """The search space, {param: (kind, args)}: the first spec's (studies compared share it)."""
        return self.spec.space


def local_folder(folder: str | os.PathLike) -> Path:
    """A study folder on this machine: for s3:// or gs:// the local mirror, refreshed first."""
    if is_uri(folder):
        store = Store(str(folder))
        store.download(*STUDY_FILES)
        return store.local
    return Path(folder).expanduser().resolve()


def publish(folder: str | os.PathLike, names=OUTPUTS + ("wandb",)) -> None:
    """Upload the analysis outputs of a study stored in a bucket (a no-op for local folders)."""
    if is_uri(folder):
        Store(str(folder)).upload(*names)


def read_folder(folder: str | os.PathLike) -> tuple[Path, SpecData, dict[str, pd.DataFrame]]:
    """A study folder's resolved spec and its tables; a StudyError (one line) if it is not one."""
    out = local_folder(folder)
    if not (out / SPEC_FILE).is_file():
        raise StudyError(f"{out} is not a study folder (no spec.yaml); give the folder that "
                         "`archstudy run` printed as 'results'")
    missing = [table_path(out, t).name for t in TABLES
               if t not in ADDED_LATER and not table_path(out, t).is_file()]
    if missing:
        raise StudyError(f"{out} has no {', '.join(missing)} yet: the study has not finished a "
                         f"phase; run `archstudy resume {out}` first")
    frames = {t: pd.read_parquet(table_path(out, t)) if table_path(out, t).is_file() else pd.DataFrame()
              for t in TABLES}
    if frames["trials"].empty:
        raise StudyError(f"{out}/trials.parquet holds no trial; nothing to analyse")
    return out, read_spec(out / SPEC_FILE), frames


def study_state(out: Path) -> dict:
    """A study folder's study.json (studyfiles/state.py; {} when it has none), or {"error": why}
    when it cannot be read: the analysis then says its provenance is unknown rather than failing."""
    try:
        return read_state(out)
    except StudyError as e:
        return {"error": str(e)}


def load_studies(folders: list[str | os.PathLike]) -> StudyTables:
    """Read one or several study folders (see the module docstring for arm names)."""
    if not folders:
        raise StudyError("analyze: give at least one study folder")
    read = [read_folder(f) for f in folders]
    first = read[0][1]
    for _out, spec, _tables in read[1:]:
        for key in ("metric", "mode"):
            if getattr(spec, key) != getattr(first, key):
                raise StudyError(f"analyze: studies {first.name} and {spec.name} differ in {key} "
                                 f"({getattr(first, key)} vs {getattr(spec, key)}): compare studies "
                                 f"that optimise the same {key}")
    several = len(read) > 1
    frames: dict[str, list[pd.DataFrame]] = {t: [] for t in TABLES}
    arms: list[str] = []
    for _out, spec, tables in read:
        for t, frame in tables.items():
            if t == "trials":
                frame = frame.assign(epochs_budget=spec.epochs)
            if several and not frame.empty:   # `study` too: the analysis groups on it
                frame = frame.assign(study=spec.name, arm=spec.name + ":" + frame["arm"].astype(str))
            frames[t].append(frame)
        arms += [f"{spec.name}:{a}" if several else a for a in spec.arm_names]
    return StudyTables(folders=[r[0] for r in read], specs=[r[1] for r in read], sources=list(folders),
                       states=[study_state(Path(r[0])) for r in read],
                       arms=list(dict.fromkeys(arms)),
                       **{t: pd.concat(f, ignore_index=True) if f else pd.DataFrame()
                          for t, f in frames.items()})


# ---- writing -----------------------------------------------------------------------------------------
def write_outputs(out: Path, answers: dict, markdown: str, html: str) -> dict[str, Path]:
    """answers.json, answers.md and report.html in `out`, each written whole or not at all."""
    out.mkdir(parents=True, exist_ok=True)
    texts = {"answers.json": json.dumps(answers, indent=1, allow_nan=False),
             "answers.md": markdown, "report.html": html}
    for name, text in texts.items():
        write_atomic(out / name, text)
    return {name: out / name for name in texts}


# ---- W&B -----------------------------------------------------------------------------------------------
def wandb_mode(spec: SpecData, override: str | None) -> str:
    return override or spec.wandb_mode()


def log_to_wandb(tables: StudyTables, figures: dict, frames: dict[str, pd.DataFrame], answers: dict,
                 html: str, mode: str) -> str | None:
    """Log the report's figures, tables, answers and the report itself to an `analysis` run in the
    (first) study's W&B project and group, in `mode` (offline by default: synced later with the
    trials' runs by the same `wandb sync` command). Returns the run's folder, or None if disabled."""
    if mode == "disabled":
        return None
    import wandb

    spec, out = tables.spec, tables.folders[0]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    values = analysis_values(spec.name, stamp)   # checked against W&B's rules by validate
    run = wandb.init(
        project=spec.wandb_project, entity=spec.wandb_entity, group=values["run_group"],
        job_type=values["run_job_type"], id=values["run_id"], name=values["run_name"], dir=str(out),
        mode=mode, tags=values["run_tags"], config={"studies": [s.name for s in tables.specs],
                                                    "spec_hashes": [s.hash for s in tables.specs]},
        settings=wandb.Settings(**LEAN_SETTINGS),
        reinit="create_new")
    try:
        row = {f"figures/{name}": wandb.Plotly(fig) for name, fig in figures.items()}
        row.update({f"tables/{name}": wandb.Table(dataframe=frame.astype(object).where(frame.notna(), None))
                    for name, frame in frames.items() if not frame.empty})
        row["report"] = wandb.Html(html, inject=False)
        row["answers"] = wandb.Html("<br>".join(answers.get("text", [])), inject=False)
        run.log(row)
        run.summary["answers"] = answers.get("text", [])
        return run.dir
    finally:
        run.finish()


def create_wandb_report(tables: StudyTables, answers: dict, save: bool):
    """The study's W&B Report (analysis/wandb_report.py); saved only when `save` (needs a login and
    the network). Returns the report object, so it can be built and checked offline."""
    from .wandb_report import build_report

    spec = tables.spec
    report = build_report(spec.name, spec.wandb_project, spec.wandb_entity, spec.metric,
                          list(spec.space), spec.arm_names, answers.get("text", []))
    if save:
        report.save()
    return report
