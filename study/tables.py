"""The study's result tables, written as studyfiles/contract.py names them (the analysis reads
them through the same contract):

- trials.parquet: one row per trial (arm, family, line, depth, phase, seed, config, status among
  completed / pruned / diverged / error, the first line of an error's cause, best and final
  metrics, epochs run, wall / CPU / GPU seconds, seconds per epoch, the model's parameters and
  forward FLOPs per sample, node); a trial that failed before it reported
  anything (in its setup) is a row too, from Tune's saved state and its error.txt
- epochs.parquet: one row per trial and epoch, every metric and gradient-flow summary
- gradflow.parquet: one row per trial, epoch and layer, the per-layer gradient-flow statistics
- signalprop.parquet: one row per trial, epoch (0: at initialisation) and block, the per-block
  signal-propagation statistics

Built from the Ray experiment folders (each trial's result.json, which `ResultLog` writes on the
driver for every reported epoch); an epoch reported twice (a trial restarted from its checkpoint) is
kept once.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from studyfiles.contract import (GRADFLOW_STATS, METRICS, SIGNALPROP_STATS, TABLES, Phase, Status,
                                 table_path, trials_path)
from studyfiles.files import write_parquet
from trainables.config import training_options
from trainables.models import get_model, model_depth

from .replicates import arm_of, replicate_of, units

GRADFLOW_KEY = "grad_flow"
SIGNALPROP_KEY = "signal_prop"
# The tables of per-layer / per-block rows, and the key of the epoch's metrics that holds their rows
# (a list of dicts, kept out of epochs.parquet); a row may carry its own epoch (signal_prop's 0).
ROW_LISTS = {"gradflow": GRADFLOW_KEY, "signalprop": SIGNALPROP_KEY}
ROW_STATS = {"gradflow": GRADFLOW_STATS, "signalprop": SIGNALPROP_STATS}   # float columns (None: NaN)
DROPPED_RAY_KEYS = ("config", "trial_id", "date", "hostname", "pid", "checkpoint_dir_name",
                    "should_checkpoint", "done")


class KeepDriverLog:
    """Tune's file loggers write on the driver, in a staging folder that Tune copies to the
    storage path every few checkpoints. When a failed trial is restarted, Ray's loggers first copy
    the storage's copy of their file back over the driver's, which loses every report since the
    last copy (seen: a trial's epochs 2 and 3 vanished from result.json when its worker was killed
    at epoch 3). The driver's file is never older than the storage's, so it is kept; the storage's
    copy is fetched only when the driver has none (a new driver resuming the study). Ray fetches
    it only for a trial with a checkpoint; one that a stopped driver left without (stopped before
    Tune registered its first) starts again from scratch, and its new file would replace the
    storage's on the next copy, losing the reports of its first run (seen after Ctrl+C in
    test_interrupt). Its file is fetched too: the epochs run again follow, and the tables keep an
    epoch's last report."""

    def _restore_from_remote(self, file_name: str, trial) -> None:
        if Path(trial.local_path, file_name).exists():
            return
        if trial.checkpoint:
            super()._restore_from_remote(file_name, trial)
            return
        fs, remote = trial.storage.storage_filesystem, f"{trial.storage.trial_fs_path}/{file_name}"
        if fs.get_file_info(remote).type == pafs.FileType.File:   # not a trial that never started
            pafs.copy_files(remote, str(Path(trial.local_path, file_name)), source_filesystem=fs)


class ResultLog(KeepDriverLog, JsonLoggerCallback):
    """Each trial's result.json (one JSON line per report): the source of the tables."""


class ProgressLog(KeepDriverLog, CSVLoggerCallback):
    """Each trial's progress.csv."""


def read_results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["epoch"]] = row   # the last report of an epoch wins
    return [rows[e] for e in sorted(rows)]


def trial_status(results: list[dict], error: bool) -> str:
    """A trial's Status value from its reports: a trial stopped before its last epoch was pruned."""
    if error or not results:
        return Status.ERROR.value
    last = results[-1]["status"]
    ended = {Status.COMPLETED.value, Status.DIVERGED.value}
    return last if last in ended else Status.PRUNED.value


def tune_trials(phase_dir: Path) -> dict[str, dict]:
    """trial_id -> Tune's saved state of the trial (its "status": TERMINATED, ERROR, ...; its
    "config") from the phase's newest saved experiment state; {} when there is none."""
    states = sorted(phase_dir.glob("experiment_state-*.json"))   # named by start time
    if not states:
        return {}
    trial_data = json.loads(states[-1].read_text())["trial_data"]
    return {state["trial_id"]: state for state in (json.loads(t[0]) for t in trial_data)}


def error_cause(text: str) -> str:
    """The first line of the exception that ended a trial, from its error.txt (Tune appends one
    "Failure # N" block per failure; the last one counts): the line after the last traceback frame,
    e.g. "RuntimeError: ... can't allocate memory ...", or the block's first line without one."""
    block = text.rsplit("Failure # ", 1)[-1].splitlines()
    if "Failure # " in text:   # the block's first line is Tune's header (number, time)
        block = block[1:]
    indented = [i for i, line in enumerate(block) if line[:1].isspace()]
    after = block[indented[-1] + 1:] if indented else block
    lines = [line.strip() for line in after if line.strip()] or \
            [line.strip() for line in block if line.strip()]
    return lines[0][:300] if lines else ""


def trial_error(trial_dir: Path) -> str | None:
    path = trial_dir / "error.txt"
    try:
        return error_cause(path.read_text(errors="replace")) if path.is_file() else None
    except OSError:
        return None


def trial_cost(results: list[dict], spec) -> dict:
    """A trial's cost columns: its model's parameters and forward FLOPs per sample (the Trainer
    reports them with every epoch; None when it never reported), and its seconds per epoch: the mean
    of the Trainer's own `epoch_seconds` (training and evaluation; Tune's time_total_s also holds
    the first report's W&B set-up, seen 5 s of a 0.14 s epoch), with the CPU- and GPU-seconds that
    reserves (x the trial's resources); NaN without an epoch."""
    last = results[-1] if results else {}
    seconds = [r["epoch_seconds"] for r in results if r.get("epoch_seconds") is not None]
    per_epoch = sum(seconds) / len(seconds) if seconds else float("nan")
    return {"parameters": last.get("parameters"), "flops_per_sample": last.get("flops_per_sample"),
            "seconds_per_epoch": per_epoch, "cpu_seconds_per_epoch": per_epoch * spec.resources.cpu,
            "gpu_seconds_per_epoch": per_epoch * spec.resources.gpu}


def collect_phase(out: Path, phase: str, spec) -> tuple[list[dict], list[dict], dict[str, list[dict]]]:
    """(trials rows, epochs rows, {table in ROW_LISTS: its rows}) of one phase's trial folders."""
    trials, epochs, listed = [], [], {table: [] for table in ROW_LISTS}
    phase_dir = out / phase
    if not phase_dir.is_dir():
        return trials, epochs, listed
    better = max if spec.mode == "max" else min
    saved = tune_trials(phase_dir)
    statuses = {trial_id: state["status"] for trial_id, state in saved.items()}
    for trial_dir in sorted(p for p in phase_dir.iterdir() if p.is_dir()):
        trial_id = trial_dir.name.rsplit("_", 1)[-1]
        if (trial_dir / "params.json").exists():
            config = json.loads((trial_dir / "params.json").read_text())
        elif statuses.get(trial_id) == "ERROR" and isinstance(saved[trial_id].get("config"), dict):
            config = saved[trial_id]["config"]   # failed before it started: no params.json
        else:
            continue   # not a trial folder, or a trial that never started
        results = read_results(trial_dir)
        trial_id = results[-1]["trial_id"] if results else trial_id
        # Tune writes error.txt/error.pkl at every failure, also one it then retried successfully
        error = (statuses[trial_id] == "ERROR" if trial_id in statuses else
                 (trial_dir / "error.txt").exists() or (trial_dir / "error.pkl").exists())
        model = get_model(config["model"])
        base = {"study": spec.name, "phase": phase, "trial_id": trial_id, "arm": config["arm"],
                "model": model.name, "family": model.family, "line": model.line,
                "depth": model_depth(config["model"], config.get("hidden")),
                "batchnorm": bool(config.get("batchnorm", True)), "width": config.get("width"),
                "seed": config["seed"]}
        scores = [r[spec.metric] for r in results if spec.metric in r]
        last = results[-1] if results else {}
        wall = last.get("time_total_s", 0.0)
        trials.append({
            **base, "optuna_trial": config.get("optuna_trial"),
            # study/replicates.py: a config without them is replicate 0 on split seed 0
            "replicate": config.get("replicate", 0), "split_seed": config.get("split_seed", 0),
            "config": json.dumps(training_options(config), sort_keys=True),
            **{f"param_{k}": config[k] for k in spec.search.space},
            "status": trial_status(results, error), "epochs_run": len(results),
            "error": trial_error(trial_dir) if error else None,
            f"best_{spec.metric}": better(scores) if scores else float("nan"),
            **{f"final_{m}": last.get(m, float("nan")) for m in METRICS},
            "wall_seconds": wall, "cpu_seconds": wall * spec.resources.cpu,
            "gpu_seconds": wall * spec.resources.gpu, "node_id": last.get("node_id"),
            "path": str(trial_dir.relative_to(out)), **trial_cost(results, spec),
        })
        for r in results:
            scalars = {k: v for k, v in r.items()
                       if k not in ROW_LISTS.values() and not isinstance(v, (dict, list))}
            epochs.append({**base, **{k: scalars.get(k) for k in scalars
                                      if k not in DROPPED_RAY_KEYS}})
            for table, key in ROW_LISTS.items():
                listed[table] += [{**base, "epoch": r["epoch"], **row} for row in r.get(key) or []]
    return trials, epochs, listed


def row_frame(rows: list[dict], stats: tuple[str, ...]) -> pd.DataFrame:
    """The rows of a per-layer / per-block table, its statistics as floats: a statistic that is None
    in every row (residual_var in a study without residual nets) is NaN, not an untyped column."""
    frame = pd.DataFrame(rows)
    return frame.astype({column: float for column in stats if column in frame})


def write_tables(out: Path, spec) -> dict[str, pd.DataFrame]:
    trials, epochs, listed = [], [], {table: [] for table in ROW_LISTS}
    for phase in Phase:
        t, e, rows = collect_phase(out, phase.value, spec)
        trials += t
        epochs += e
        for table in ROW_LISTS:
            listed[table] += rows[table]
    frames = {"trials": pd.DataFrame(trials), "epochs": pd.DataFrame(epochs),
              **{table: row_frame(rows, ROW_STATS[table]) for table, rows in listed.items()}}
    for name in TABLES:
        write_parquet(frames[name], table_path(out, name))
    return frames


def unit_rows(trials: pd.DataFrame, unit: str) -> pd.DataFrame:
    """The rows of one search unit (study/replicates.py): its arm's, of its replicate."""
    arm, replicate = arm_of(unit), replicate_of(unit)
    if trials.empty:
        return trials
    return trials[(trials.arm == arm) & (trials.get("replicate", 0) == replicate)]


def failed_arms(trials: pd.DataFrame, phase: str, arms) -> dict[str, str]:
    """unit -> the first error's cause, for each search unit (an arm, or one search replicate of it;
    in `arms` order) that has trials in `phase` and all of them failed: such a phase has no result
    for it (unlike trials that diverged, which are a result)."""
    if trials.empty:
        return {}
    mine = trials[trials.phase == phase]
    failed = {}
    for arm in arms:
        rows = unit_rows(mine, arm)
        if len(rows) and (rows.status == Status.ERROR).all():
            causes = rows.sort_values(["optuna_trial", "seed"], na_position="last").error.dropna()
            failed[arm] = causes.iloc[0] if len(causes) else "no error.txt; see driver.log"
    return failed


def missing_trials(trials: pd.DataFrame, phase: str, spec) -> dict[str, str]:
    """unit (an arm, or one search replicate of it) -> what `phase` lacks for it: search trials
    short of trials_per_arm, or confirmation runs other than one per seed for a unit that had a
    completed search trial (a phase whose Tune state could not be restored whole ends like that)."""
    mine = trials[trials.phase == phase] if len(trials) else trials
    missing = {}
    for arm in units(spec):
        rows = unit_rows(mine, arm)
        if phase == Phase.SEARCH and len(rows) < spec.search.trials_per_arm:
            missing[arm] = f"{len(rows)} of {spec.search.trials_per_arm} search trials"
        searched = unit_rows(trials[trials.phase == Phase.SEARCH] if len(trials) else trials, arm)
        if phase == Phase.CONFIRM and (searched.status == Status.COMPLETED).any() \
                and sorted(rows.seed.tolist()) != sorted(spec.seeds):
            missing[arm] = (f"confirmation runs with seeds {sorted(rows.seed.tolist())}, "
                            f"not {sorted(spec.seeds)}")
    return missing


def phase_problem(trials: pd.DataFrame, phase: str, spec, folder: str) -> str | None:
    """Why `phase` has no usable result for some arm (one line), or None: the study must not go
    past such a phase. An arm whose trials all diverged is a result, not a problem."""
    if failed := failed_arms(trials, phase, units(spec)):
        (arm, cause), several = next(iter(failed.items())), len(failed) > 1
        return (f"{phase}: every trial of arm{'s' * several} {', '.join(map(repr, failed))} failed "
                f"(first error{f' in {arm!r}' * several}: {cause}); fix the cause, then `archstudy "
                f"resume {folder}` runs the failed trials again (tracebacks: the trials' error.txt, "
                "driver.log)")
    if missing := missing_trials(trials, phase, spec):
        return (f"{phase}: the phase ended with trials missing ("
                + "; ".join(f"arm {arm!r}: {what}" for arm, what in missing.items())
                + "): Ray Tune's saved state of it was not restored whole (see driver.log)"
                + (f"; move {folder}/confirm aside and `archstudy resume {folder}` runs the "
                   "confirmation again" if phase == Phase.CONFIRM else ""))
    return None


def statuses(out: Path, phase: str, unit: str) -> str:
    """'diverged 2, pruned 1': the statuses of a unit's trials in `phase`, from trials.parquet."""
    path = trials_path(out)
    trials = pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=["phase", "arm", "status"])
    mine = unit_rows(trials[trials.phase == phase], unit)
    return ", ".join(f"{status} {n}" for status, n in mine.status.value_counts().items()) or "none"


def best_rerun(out: Path, unit: str, spec) -> dict | None:
    """The searched options of the unit's best completed search trial in trials.parquet, for a
    unit whose Optuna study holds no completed trial: its trials failed, Optuna recorded them as
    FAIL (which cannot be undone), and `resume` ran them again to completion. None when there is
    none."""
    path = trials_path(out)
    if not path.exists():
        return None
    trials = pd.read_parquet(path)
    done = unit_rows(trials[(trials.phase == Phase.SEARCH) & (trials.status == Status.COMPLETED)], unit)
    done = done.dropna(subset=[f"final_{spec.metric}"])
    if done.empty:
        return None
    best = done.sort_values(["optuna_trial", "trial_id"]).sort_values(
        f"final_{spec.metric}", ascending=spec.mode == "min", kind="stable").iloc[0]
    config = json.loads((out / best.path / "params.json").read_text())
    return {key: config[key] for key in spec.search.space}
