"""Weights & Biases logging from inside a trial (one W&B run per Tune trial).

The run is opened in the trial's own process with `wandb.init` (offline by default: no key, no
network), resumed under the same id when Ray restarts the trial, and finished before the trial
returns, so its history file is complete on disk when Tune marks the trial done. The API key is
never written anywhere: wandb reads it from the environment or its own netrc, and the config we log
holds only the trial's settings.
"""
from __future__ import annotations

import os

from studyfiles.wandb_names import LEAN_SETTINGS

from .wandb_rules import run_id, run_name

# A wandb service started by another process reaches this one through the environment (a notebook
# or a test process that used wandb, and the Ray instance it started). Trials must not share it: a
# run that a killed trial left open there stays "in use", and the trial's retry cannot reopen it
# (seen as "run ID ... is in use" after a driver or a node was killed). Each process starts its own.
os.environ.pop("WANDB_SERVICE", None)

TRAINING_KEYS_DROPPED_FROM_METRICS = ("grad_flow", "signal_prop", "status")


def open_run(settings: dict, config: dict, trial_id: str, tags: list[str]):
    """`settings` comes from the runner: project, entity, group, mode, dir, spec_hash, git_commit.
    Every value passed here was checked against W&B's rules by `validate` (study/wandb_rules.py)."""
    if settings["mode"] == "disabled":
        return None
    import wandb

    os.makedirs(settings["dir"], exist_ok=True)
    return wandb.init(
        project=settings["project"], entity=settings.get("entity"), group=settings["group"],
        job_type=config["phase"], tags=tags, name=run_name(config["arm"], trial_id),
        id=run_id(settings["group"], trial_id), resume="allow", dir=settings["dir"],
        mode=settings["mode"],
        config={**config, "spec_hash": settings["spec_hash"], "git_commit": settings["git_commit"]},
        settings=wandb.Settings(**LEAN_SETTINGS),
        reinit="create_new",
    )


def finish_run(run, settings: dict) -> None:
    """Finish the run (its files are complete on disk after this); with bucket storage, upload the
    run's offline folder to <study>/wandb/ in the bucket."""
    run.finish()
    if settings.get("upload_to") and settings["mode"] == "offline":
        from pathlib import Path

        from studyfiles.storage import join, upload_folder
        folder = Path(run.dir).parent   # .../wandb/offline-run-<time>-<id>/files -> the run folder
        upload_folder(folder, join(settings["upload_to"], folder.name))


def log_epoch(run, metrics: dict) -> None:
    """Per-epoch scalars, plus the per-layer gradient flow and the per-block signal propagation
    (in the first epoch also at initialisation, epoch 0) as tables."""
    if run is None:
        return
    import wandb

    row = {k: v for k, v in metrics.items() if k not in TRAINING_KEYS_DROPPED_FROM_METRICS}
    for key in ("grad_flow", "signal_prop"):
        if table := metrics.get(key) or []:
            columns = list(table[0])
            row[key] = wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in table])
    for r in metrics.get("grad_flow") or []:   # per-layer gradient norm as scalars too, for line plots
        row[f"grad_norm/{r['index']:03d}_{r['layer']}"] = r["grad_norm"]
    run.log(row, step=metrics["epoch"])
