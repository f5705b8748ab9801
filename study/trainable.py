"""The Ray Tune trainable: a thin wrapper that runs trainables.train.Trainer inside a Tune trial.

One `tune.report` per epoch carries every metric, the per-layer gradient flow and a checkpoint
(model, optimiser, schedule and RNG states); a restarted trial continues from `tune.get_checkpoint()`
exactly where it stopped. The dataset arrives once per node through Ray's object store
(`tune.with_parameters`), and the W&B run lives inside the trial (study/tracking.py).
"""
from __future__ import annotations

import os
import tempfile
import time

import ray
import torch
from ray import tune

from trainables.config import DEFAULTS, MODEL_DEFAULTS
from trainables.train import Trainer

from . import tracking

STATE_FILE = "state.pt"


def training_config(config: dict) -> dict:
    """The trial config minus the study's bookkeeping keys (arm, phase, optuna_trial)."""
    return {k: v for k, v in config.items() if k in DEFAULTS or k in MODEL_DEFAULTS}


def run_trial(config: dict, data, wandb_settings: dict) -> None:
    trainer = Trainer(training_config(config), data)
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            trainer.load_state_dict(torch.load(os.path.join(folder, STATE_FILE), weights_only=True))
    model = trainer.model
    run = tracking.open_run(wandb_settings, config, tune.get_context().get_trial_id(),
                            tags=[config["arm"], model.family, f"depth-{model.depth}"])
    node = ray.get_runtime_context().get_node_id()
    started = time.time()
    try:
        for metrics in trainer.run(test=config["phase"] == "confirm"):
            metrics.update(node_id=node, family=model.family, depth=model.depth,
                           trial_seconds=time.time() - started)
            # W&B first: when Tune stops the trial (ASHA), report() ends this thread via
            # SystemExit, and the `finally` below still finishes the run with every epoch in it.
            tracking.log_epoch(run, metrics)
            with tempfile.TemporaryDirectory() as folder:
                torch.save(trainer.state_dict(), os.path.join(folder, STATE_FILE))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
    finally:
        if run is not None:
            run.finish()
