"""The records of search trials that Optuna holds as ended but Tune's saved experiment state lost.

Tune writes a trial's params.json and result.json on the driver and uploads them to storage only
with its experiment state (every few seconds, asynchronously); Optuna learns that a trial ended at
once. A driver killed in between leaves a trial that ended in optuna.db and whose folder on
storage holds its checkpoints only: Tune's state does not know it, so neither Tune nor the tables
would. Each checkpoint carries the trial's config and every report so far (study/trainable.py),
and the checkpoint of a trial's last epoch is on storage before Tune tells the searcher that the
trial ended, so params.json and result.json are rebuilt from the newest checkpoint; a trial that
failed before its first checkpoint gets its config from Optuna. ArmSearch counts these trials
against their arm's budget (count_lost_trials), so nothing runs them again.

Also: a confirmation whose saved Tune state a killed driver left damaged (damaged_tune_state).
"""
from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import optuna
import pyarrow.fs as pafs
import torch
from ray import tune

from .optuna_storage import optuna_storage
from .replicates import arm_of
from .searcher import ENDED, RAY_TRIAL_ID, study_name
from .trainable import CHECKPOINT_DIR, STATE_FILE, exists

LOST_ERROR = ("the trial failed; its error report was lost with the driver that ran it (Optuna "
              "holds it as FAIL with status 'error')\n")


def recover_lost_trials(store, study: str, arm_configs: dict[str, dict], optuna_url: str) -> list[str]:
    """Write params.json and result.json (and error.txt for a crashed trial) into the folder of
    every ended search trial that has no params.json on storage. Returns the folders written."""
    fs, phase = ((store.fs, f"{store.root}/search") if store.remote
                 else (pafs.LocalFileSystem(), str(store.local / "search")))
    written, storage = [], optuna_storage(optuna_url)
    for unit, arm_config in arm_configs.items():   # arm_configs: per search unit (replicates.py)
        arm = arm_of(unit)
        try:
            trials = optuna.load_study(study_name=study_name(study, unit), storage=storage) \
                .get_trials(deepcopy=False, states=ENDED)
        except KeyError:   # the arm's study was never created
            continue
        for trial in trials:
            ray_id = trial.user_attrs.get(RAY_TRIAL_ID)
            folder = f"{phase}/{arm}_{ray_id}"   # study/runner.py trial_dirname
            # a folder with params.json is whole; one with error.txt but no params.json is a
            # trial that failed in setup, whose record Tune's state holds (tables.collect_phase)
            if ray_id is None or any(fs.get_file_info(f"{folder}/{name}").type != pafs.FileType.NotFound
                                     for name in ("params.json", "error.txt")):
                continue
            config, history = newest_record(fs, folder)
            if config is None:   # no checkpoint: the config that ArmSearch.suggest handed out
                config = {**arm_config, **trial.params, "arm": arm, "optuna_trial": trial.number}
            fs.create_dir(folder, recursive=True)
            write(fs, f"{folder}/result.json", "".join(line + "\n" for line in history))
            if trial.user_attrs.get("status") == "error":
                write(fs, f"{folder}/error.txt", LOST_ERROR)
            # last: a folder with params.json is one the tables read, and one this skips
            write(fs, f"{folder}/params.json", json.dumps(config, indent=2, sort_keys=True))
            written.append(folder)
    return written


def newest_record(fs, folder: str) -> tuple[dict | None, list[str]]:
    """(config, result.json lines) from the newest checkpoint of a trial folder that loads and
    holds them; (None, []) when there is none."""
    checkpoints = []
    for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
        match = CHECKPOINT_DIR.fullmatch(info.base_name)
        if match and info.type == pafs.FileType.Directory:
            checkpoints.append((int(match.group(1)), info.path))
    for _, path in sorted(checkpoints, reverse=True):
        try:
            with fs.open_input_file(f"{path}/{STATE_FILE}") as f:
                state = torch.load(io.BytesIO(f.read()), weights_only=True)
            return json.loads(state["config"]), list(state["history"])
        except Exception:   # damaged (an older one may load), or holds no record
            continue
    return None, []


def write(fs, path: str, text: str) -> None:
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


# What Tune reads to restore a phase: of each pattern, the file with the greatest name (the newest).
TUNE_STATE = ("tuner.pkl", "experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl",
              "callback-states-*.pkl")


def damaged_tune_state(phase_dir: Path) -> Path | None:
    """The first file of Tune's saved state of a local phase folder that is empty or does not load,
    or None. Tune writes its state whole into a staging folder, then copies it into a local study
    folder in place, so a driver SIGKILLed during the copy can leave a file empty (seen: the
    confirmation's search_gen_state-* and searcher-state-* at 0 bytes). Tune's restore then fails
    and starts the phase again beside its old trials. (Bucket objects appear whole or not at all.)"""
    for pattern in TUNE_STATE:
        paths = sorted(phase_dir.glob(pattern))
        if paths and not loads(paths[-1]):
            return paths[-1]
    return None


def loads(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            if path.name.startswith("experiment_state-"):
                json.load(f)
            else:
                pickle.load(f)
        return True
    except Exception:   # a cut pickle raises anything from EOFError to IndexError
        return False



class ForgetGoneCheckpoints(tune.Callback):
    """On `resume`, the checkpoints that Tune's saved state lists for a trial can be gone (see
    EpochTrainable.restore). Tune deletes the oldest it lists when a trial registers a newer one; a gone one
    makes that fail with a traceback ("Error handling checkpoint") and skips the rest of Tune's
    bookkeeping for that checkpoint. Tune calls this just before it registers a checkpoint: the
    first time for each trial in this driver, the gone ones leave Tune's list."""

    def __init__(self):
        self.checked: set[str] = set()

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if trial.trial_id in self.checked:
            return
        self.checked.add(trial.trial_id)
        manager = getattr(trial.run_metadata, "checkpoint_manager", None)
        listed = getattr(manager, "_checkpoint_results", None)   # Ray 2.60's list
        if listed:
            manager._checkpoint_results = [r for r in listed if exists(r.checkpoint)]
