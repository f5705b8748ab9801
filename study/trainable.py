"""The Ray Tune trainable: a thin class around trainables.train.Trainer, one epoch per `step()`.

Each step reports every metric and the per-layer gradient flow, and asks Tune for a checkpoint
(model, optimiser, epoch and RNG states); a restarted trial continues from its last checkpoint
exactly where it stopped. The dataset arrives once per node through Ray's object store
(`tune.with_parameters`), and each trial is one W&B run (study/tracking.py).

Why a class and not a function trainable: Tune calls `cleanup()` inside the trial's process before
it ends it, so the W&B run is always finished there. A function trainable stopped by ASHA at the
end of an experiment has its process (and wandb's writer with it) killed while its thread is still
finishing, which loses that trial's W&B history.
"""
from __future__ import annotations

import json
import os
import re
import time
import warnings
from contextlib import nullcontext
from pathlib import Path, PurePosixPath

import pyarrow.fs as pafs
import ray
import torch
from ray import tune
from ray.tune.utils.util import SafeFallbackEncoder

from studyfiles.files import first_line
from trainables.config import training_options
from trainables.data import resplit
from trainables.train import Trainer

from . import tracking
from .replicates import unit_of
from .wandb_rules import run_tags

STATE_FILE = "state.pt"
CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")   # Tune's names for a trial's checkpoint folders


class CheckpointFallbackWarning(RuntimeWarning):
    """A trial's checkpoint could not be loaded: it continues from an older one, or from scratch."""


def older_checkpoints(checkpoint: tune.Checkpoint) -> list[tune.Checkpoint]:
    """The trial's checkpoints older than `checkpoint` (its siblings in the trial folder, which
    keeps the last 3), newest first, wherever they live: a local folder or a bucket. Empty when
    `checkpoint` is not one of Tune's checkpoint_NNNNNN folders."""
    path = PurePosixPath(checkpoint.path)
    current = CHECKPOINT_DIR.fullmatch(path.name)
    if current is None:
        return []
    selector = pafs.FileSelector(str(path.parent), allow_not_found=True)   # S3 has no empty folders
    siblings = checkpoint.filesystem.get_file_info(selector)
    older = []
    for sibling in siblings:
        match = CHECKPOINT_DIR.fullmatch(PurePosixPath(sibling.path).name)
        if match and sibling.type == pafs.FileType.Directory and int(match.group(1)) < int(current.group(1)):
            older.append((int(match.group(1)), sibling.path))
    return [tune.Checkpoint(folder, filesystem=checkpoint.filesystem) for _, folder in sorted(older, reverse=True)]


def exists(checkpoint: tune.Checkpoint) -> bool:
    return checkpoint.filesystem.get_file_info(checkpoint.path).type != pafs.FileType.NotFound


class EpochTrainable(tune.Trainable):
    def setup(self, config: dict, data=None, wandb_settings: dict | None = None,
              pruned: dict | None = None):
        self.data, self.wandb_settings = data, wandb_settings or {"mode": "disabled"}
        self.pruned = pruned or {}   # on resume: PRUNED trials -> the epoch where ASHA stopped them
        self.start(config)

    def start(self, config: dict) -> None:
        self.trial_config = config
        self.restart_trainer()
        self.stop_at = self.pruned.get(f"{unit_of(config)}/{config.get('optuna_trial')}")
        model = self.trainer.model
        self.facts = {"node_id": ray.get_runtime_context().get_node_id(), "family": model.family,
                      "depth": model.depth}
        # The W&B run opens at the first step, not here: Tune may construct an actor for a trial,
        # hand the trial to a reused actor instead and kill this one mid-setup (which left a run
        # folder without a .wandb file behind, 1 in ~10 test runs under load).
        self.run, self.run_opened = None, False
        self.tags = run_tags(config["arm"], model.family, model.depth)   # checked by validate
        self.started = time.time()

    def step(self) -> dict:
        stopped = self.stop_at is not None and self.trainer.epoch >= self.stop_at
        metrics = None if stopped else next(self.epochs, None)
        if metrics is None:   # restored at its last epoch (final, or where ASHA stopped it): done
            return {**self.last, "done": True}
        metrics.update(self.facts, trial_seconds=time.time() - self.started)
        if not self.run_opened:
            self.run = tracking.open_run(self.wandb_settings, self.trial_config, self.trial_id, self.tags)
            self.run_opened = True
        tracking.log_epoch(self.run, metrics)
        self.last = metrics
        done = metrics["status"] != "running" or self.trainer.epoch == self.stop_at
        return {**metrics, "should_checkpoint": True, "done": done}

    def train(self) -> dict:
        """Tune's train(): step() and Tune's own fields. The whole report is kept, as the line
        that Tune's JSON logger writes to result.json on the driver."""
        result = super().train()
        self.history.append(json.dumps(result, cls=SafeFallbackEncoder))
        return result

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        """The trainer's state, and the trial's record: its config and every report so far. The
        record is on storage when Tune registers the checkpoint, before the searcher tells Optuna
        the trial's end; Tune uploads the driver's result.json and params.json only with its
        experiment state, and a driver killed in between leaves a trial that Optuna holds as
        finished without them (study/recovery.py rebuilds them from this)."""
        torch.save({"trainer": self.trainer.state_dict(), "last": self.last, "history": self.history,
                    "config": json.dumps(self.trial_config, cls=SafeFallbackEncoder)},
                   os.path.join(checkpoint_dir, STATE_FILE))

    def restore(self, checkpoint_path) -> None:
        """Tune's restore; remembers where the checkpoint lives (a local folder or a bucket), since
        load_checkpoint only sees a local copy of it and may need its older siblings.

        Tune's saved experiment state can name a checkpoint that the trial's later checkpoints
        have already pushed out of the kept three (the state is uploaded asynchronously; a driver
        killed before the upload ends leaves an older one), and Tune refuses a checkpoint that is
        gone. The trial then continues from the newest older sibling that exists (never a newer
        one: Tune's copy of result.json may end at the missing checkpoint's epoch, and the epochs
        after it must run again to be recorded), or from scratch, with a CheckpointFallbackWarning."""
        checkpoint = getattr(checkpoint_path, "checkpoint", checkpoint_path)   # Tune passes a result
        if isinstance(checkpoint, str):
            checkpoint = tune.Checkpoint.from_directory(checkpoint)
        self.restoring, self.restore_failures = checkpoint, []
        if exists(checkpoint):
            super().restore(checkpoint_path)
            return
        self.restore_failures = [f"{PurePosixPath(checkpoint.path).name}: no longer on storage"]
        older = older_checkpoints(checkpoint)
        metrics = getattr(checkpoint_path, "metrics", None)   # Tune's time_total_s, kept
        if not older:   # Tune's other counters are a fresh trial's already (a new or a reset actor)
            self.restart_trainer()
            self._time_total = (metrics or {}).get("time_total_s", 0.0)
            self.warn_fallback(checkpoint, None)
            return
        self.restoring = older[0]
        super().restore(older[0] if metrics is None else type(checkpoint_path)(older[0], metrics))

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """Continue from `checkpoint_dir`. If its state file is missing or does not load, continue
        from the newest older checkpoint of this trial that does (fetched from the bucket when the
        study is stored in one), or else from scratch (epoch 0), with a CheckpointFallbackWarning
        (in the worker's stderr). The epochs after the one restored are then run again, identically
        on the CPU, and their new reports replace the old ones (tables.py keeps an epoch's last
        report). Tune set its iteration count from the checkpoint it asked for; it is set to the
        epoch actually restored, so that training_iteration (what ASHA counts) stays equal to the
        trial's `epoch`."""
        asked = getattr(self, "restoring", None) or tune.Checkpoint.from_directory(checkpoint_dir)
        failures, restored = list(getattr(self, "restore_failures", [])), None
        for checkpoint in [asked, *older_checkpoints(asked)]:
            name = PurePosixPath(checkpoint.path).name
            folder = nullcontext(checkpoint_dir) if checkpoint is asked else checkpoint.as_directory()
            try:
                with folder as local:
                    state = torch.load(Path(local) / STATE_FILE, weights_only=True)
                # a partly applied state is fully overwritten by the next one that loads, or
                # replaced by a new Trainer below
                self.trainer.load_state_dict(state["trainer"])
                self.last = state["last"]
                self.history = list(state.get("history", []))
            except Exception as e:   # a damaged file raises anything from EOFError to IndexError
                failures.append(f"{name}: {type(e).__name__}: {first_line(e, 200)}")
                continue
            restored = name
            break
        if restored is None:
            self.restart_trainer()
        if failures:
            self.restore_failures = failures
            self.warn_fallback(asked, restored)
        self._iteration = self.trainer.epoch   # Tune's training_iteration: the epochs done

    def warn_fallback(self, asked: tune.Checkpoint, restored: str | None) -> None:
        outcome = (f"continuing from {restored} (epoch {self.trainer.epoch}), so the epochs after "
                   f"it run again" if restored is not None
                   else "none of its checkpoints loads: restarting it from scratch (epoch 0)")
        warnings.warn(f"trial {self.trial_id} ({PurePosixPath(asked.path).parent}): cannot load "
                      f"{'; '.join(self.restore_failures)}; {outcome}", CheckpointFallbackWarning)

    def restart_trainer(self) -> None:
        """A new Trainer at epoch 0 for this trial's config (the same seed: the same initial state)."""
        config = self.trial_config
        # the trial's train/val split (study/replicates.py): split seed 0 is the data as shipped
        self.trainer = Trainer(training_options(config), resplit(self.data, config.get("split_seed", 0)))
        self.epochs = self.trainer.run(test=config["phase"] == "confirm")   # starts at trainer.epoch
        self.last: dict | None = None   # the last epoch's metrics (kept in checkpoints)
        self.history: list[str] = []      # every report so far, as result.json lines (ditto)

    def cleanup(self) -> None:
        if self.run is not None:
            tracking.finish_run(self.run, self.wandb_settings)
            self.run = None

    def reset_config(self, new_config: dict) -> bool:
        """Reuse this process for the next trial (reuse_actors): finish this trial, start that one."""
        self.cleanup()
        self.start(new_config)
        return True
