"""The result log that the tables are built from (study/tables.py) keeps every report of a trial
whose worker died, and of a trial that a new driver runs again from scratch:
python -m pytest tests/test_tables.py"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from ray import tune
from ray.train._internal.storage import StorageContext
from ray.tune.experiment.trial import Trial as TuneTrial
from ray.tune.logger import JsonLoggerCallback

from study import tables
from study.trainable import EpochTrainable
from trainables.data import load_data

from studies import read_results

EPOCHS = 6
KILL_AT = 5   # epoch whose checkpoint Tune is registering when the worker is killed


class KillAtCheckpoint(tune.Callback):
    """SIGKILLs the trial's worker while Tune registers the checkpoint of epoch KILL_AT (the worker
    waits for it), so the restart continues from that checkpoint, at epoch KILL_AT + 1. Records how
    many reports the driver's result.json and the storage's copy hold when Tune decides to retry."""

    def __init__(self):
        self.killed, self.rows_at_recovery = None, None

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if self.killed is None and trial.last_result["epoch"] == KILL_AT:
            self.killed = trial.last_result["pid"]
            os.kill(self.killed, signal.SIGKILL)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.rows_at_recovery = {where: len(read_results(Path(folder)))
                                 for where, folder in (("driver", trial.local_path), ("storage", trial.path))}


@pytest.mark.parametrize("log", [JsonLoggerCallback, tables.ResultLog], ids=["ray", "archstudy"])
def test_result_log_keeps_the_reports_made_before_a_worker_died(ray_local, study_env, tmp_path,
                                                                monkeypatch, log):
    """Tune copies the driver's logs to the storage path every 3 checkpoints (num_to_keep=3) and
    otherwise only every TUNE_GLOBAL_CHECKPOINT_S, so at the kill (epoch 5) the storage's copy is
    behind. Ray's JsonLoggerCallback copies it back over the driver's on the restart and loses the
    newer reports; ResultLog keeps them: every epoch is in result.json exactly once."""
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "600")
    data = load_data("mnist-5k").subset(train=200, val=50, test=50)
    killer = KillAtCheckpoint()
    trainable = tune.with_resources(
        tune.with_parameters(EpochTrainable, data=data, wandb_settings={"mode": "disabled"}), {"cpu": 1})
    config = {"model": "mlp", "hidden": [16], "epochs": EPOCHS, "lr": 0.05, "batch_size": 32,
              "seed": 0, "phase": "search", "arm": "only"}
    tuner = tune.Tuner(trainable, param_space=config,
                       tune_config=tune.TuneConfig(trial_dirname_creator=lambda t: "only"),
                       run_config=tune.RunConfig(
                           name="log", storage_path=str(tmp_path), verbose=0,
                           checkpoint_config=tune.CheckpointConfig(num_to_keep=3),
                           failure_config=tune.FailureConfig(max_failures=1),
                           callbacks=[killer, log()]))
    grid = tuner.fit()
    assert not grid.errors and killer.killed is not None
    # the situation: the storage's copy was behind the driver's when the trial was retried
    assert killer.rows_at_recovery["driver"] == KILL_AT
    assert killer.rows_at_recovery["storage"] < KILL_AT
    epochs = [row["epoch"] for row in read_results(tmp_path / "log" / "only")]
    if log is JsonLoggerCallback:   # Ray's own logger: the reports after the last copy are gone
        assert KILL_AT not in epochs and epochs[-1] == EPOCHS
    else:
        assert epochs == list(range(1, EPOCHS + 1))
        assert [r["epoch"] for r in tables.read_results(tmp_path / "log" / "only")] == epochs


@pytest.mark.parametrize("log", [JsonLoggerCallback, tables.ResultLog], ids=["ray", "archstudy"])
def test_a_new_driver_keeps_the_reports_of_a_trial_it_runs_again_from_scratch(ray_local, tmp_path, log):
    """A driver stopped before Tune registered a trial's first checkpoint (seen after Ctrl+C in
    test_interrupt): the next driver's loggers start the trial again (Tune's on_trial_start) with
    no checkpoint and no file of their own, while storage holds the first run's reports. Ray's
    logger starts an empty file, which then replaces the storage's; ResultLog continues it."""
    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="search")
    trial, never = (TuneTrial("Trial", config={"arm": "only"}, trial_id=i, storage=storage, stub=True)
                    for i in ("first", "never"))   # `never`: a trial that never started before
    for t in (trial, never):
        t.init_local_path()   # its folder name, and its folder on the driver, as Tune makes them
    stored = Path(trial.storage.trial_fs_path, "result.json")
    stored.parent.mkdir(parents=True)
    stored.write_text(json.dumps({"epoch": 1, "pid": 1}) + "\n")   # the stopped driver's
    logger = log()
    for t in (trial, never):
        assert t.checkpoint is None and not Path(t.local_path, "result.json").exists()
        logger.on_trial_start(0, [trial, never], t)
        logger.on_trial_result(1, [trial, never], t, {"epoch": 1, "pid": 2, "config": {}})
        logger.on_trial_complete(2, [trial, never], t)
    kept = [row["pid"] for row in read_results(Path(trial.local_path))]
    assert kept == ([2] if log is JsonLoggerCallback else [1, 2])   # the copy that goes to storage
    assert [row["pid"] for row in read_results(Path(never.local_path))] == [2]
