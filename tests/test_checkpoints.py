"""Damaged checkpoints (issue 6, item 5): EpochTrainable.load_checkpoint (study/trainable.py) falls back to
the trial's previous checkpoint, or to a fresh start, with a CheckpointFallbackWarning, and the
trial then replays exactly what an uninterrupted run computed:

    python -m pytest tests/test_checkpoints.py

- directly, on a folder of checkpoints, and on the same checkpoints in a bucket (moto S3 on
  127.0.0.1, conftest's `s3`);
- through Tune on a local Ray instance on 127.0.0.1: a callback damages a trial's checkpoint files
  as Tune registers them and then SIGKILLs the worker, so that Tune restores the trial from the
  damaged checkpoint.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import warnings
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import torch
from ray import tune

from study import tables
from study.trainable import STATE_FILE, CheckpointFallbackWarning, EpochTrainable
from trainables.data import load_data

from studies import BUCKET, read_results


EPOCHS = 4   # of the checkpoint tests' trials
# A quick model: these tests restore many times. (test_resume's killed-trial test restores a
# resnet20, whose BatchNorm statistics are in the state too; the state is the same dict here.)
CONFIG = {"model": "mlp", "hidden": [32], "epochs": EPOCHS, "lr": 0.05, "batch_size": 32,
          "seed": 0, "phase": "confirm"}


# ---- helpers ---------------------------------------------------------------------------------------
def scores(row: dict) -> dict:
    """What an epoch computed (no timings, no Tune bookkeeping): equal in a replayed epoch."""
    keys = [k for k in row if k.startswith(("train_", "val_", "test_", "gf_")) and k != "train_seconds"]
    return {k: row.get(k) for k in sorted(keys) + ["epoch", "lr", "status", "grad_flow"]}


def state_file(trial_dir: Path, index: int) -> Path:
    return trial_dir / f"checkpoint_{index:06d}" / STATE_FILE


def damage(path: Path, how: str) -> None:
    """Truncate, overwrite with garbage, delete, or (`partial`) keep a loadable file whose model
    part applies but whose optimiser part is gone, so that loading fails half-way through;
    `deleted` removes the whole checkpoint folder (Tune's saved state can name such a one)."""
    if how == "deleted":
        shutil.rmtree(path.parent)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    elif how == "garbage":
        path.write_bytes(os.urandom(4096))
    elif how == "missing":
        path.unlink()
    elif how == "partial":
        state = torch.load(path, weights_only=True)
        del state["trainer"]["optimizer"]
        torch.save(state, path)
    else:
        raise ValueError(how)


# ---- damaged checkpoints: EpochTrainable.load_checkpoint on a folder -------------------------------------
@pytest.fixture(scope="module")
def data():
    return load_data("mnist-5k").subset(train=300, val=100, test=100)


@pytest.fixture(scope="module")
def local_trial(ray_local, data, tmp_path_factory):
    """A factory of EpochTrainables outside Tune. EpochTrainable.setup asks Ray for the node id, which starts a Ray
    instance when none is up (so: ray_local), and a Trainable without Tune makes its log folder
    under ~/ray_results (so: a temporary one)."""
    from ray.tune.trainable import trainable as trainable_module

    class LocalTrial(EpochTrainable):
        def setup(self, config):
            super().setup(config, data=data, wandb_settings={"mode": "disabled"})

    made = []

    def make() -> EpochTrainable:
        trial = LocalTrial({**CONFIG, "arm": "local"})
        made.append(trial)
        return trial

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainable_module, "DEFAULT_STORAGE_PATH", str(tmp_path_factory.mktemp("logdirs")))
        yield make
        for trial in made:
            trial.stop()


@pytest.fixture(scope="module")
def uninterrupted(local_trial, tmp_path_factory):
    """One trial trained through all epochs, saving a checkpoint after each of the first three in
    Tune's layout (trial folder / checkpoint_00000N / state.pt, N = epoch - 1)."""
    trial, folder, results = local_trial(), tmp_path_factory.mktemp("checkpoints"), []
    for epoch in range(1, EPOCHS + 1):
        results.append(trial.train())
        if epoch < EPOCHS:
            checkpoint = folder / f"checkpoint_{epoch - 1:06d}"
            checkpoint.mkdir()
            trial.save_checkpoint(str(checkpoint))
    assert [r["epoch"] for r in results] == list(range(1, EPOCHS + 1)) and results[-1]["done"]
    return folder, results


def restore(local_trial, uninterrupted, tmp_path, damaged: dict[int, str], index: int = 2, bucket=None):
    """A copy of the uninterrupted trial's checkpoints with `damaged` {index: how}, and a new EpochTrainable
    restored (as Tune does it) from checkpoint_00000<index>; returns (trial, its warnings). With
    `bucket` (a pyarrow filesystem), the copy is uploaded there and the trial restored from it."""
    folder = tmp_path / "trial"
    shutil.copytree(uninterrupted[0], folder)
    for i, how in damaged.items():
        damage(state_file(folder, i), how)
    checkpoint = tune.Checkpoint.from_directory(str(folder / f"checkpoint_{index:06d}"))
    if bucket is not None:
        prefix = f"{BUCKET}/faults/{tmp_path.name}"
        pafs.copy_files(str(folder), prefix, destination_filesystem=bucket)
        checkpoint = tune.Checkpoint(f"{prefix}/checkpoint_{index:06d}", filesystem=bucket)
    trial = local_trial()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trial.restore(checkpoint)
    return trial, [w for w in caught if issubclass(w.category, CheckpointFallbackWarning)]


def train_rest(trial) -> list[dict]:
    rows = []
    while not (rows and rows[-1]["done"]):
        rows.append(trial.train())
    return rows


def assert_replays_exactly(trial, uninterrupted, first_epoch: int) -> None:
    """The restored trial runs epochs first_epoch..EPOCHS, each equal to the uninterrupted run's,
    and Tune's training_iteration equals the epoch (ASHA counts it)."""
    rows, reference = train_rest(trial), uninterrupted[1]
    assert [r["epoch"] for r in rows] == list(range(first_epoch, EPOCHS + 1))
    assert [r["training_iteration"] for r in rows] == [r["epoch"] for r in rows]
    assert [scores(r) for r in rows] == [scores(reference[r["epoch"] - 1]) for r in rows]


def test_intact_checkpoint_loads_without_warning(local_trial, uninterrupted, tmp_path):
    trial, warned = restore(local_trial, uninterrupted, tmp_path, {})
    assert warned == [] and trial.trainer.epoch == 3
    assert_replays_exactly(trial, uninterrupted, first_epoch=4)


@pytest.mark.parametrize("how", ["truncated", "garbage", "missing", "partial", "deleted"])
def test_damaged_checkpoint_falls_back_to_the_previous_one(local_trial, uninterrupted, tmp_path, how):
    trial, warned = restore(local_trial, uninterrupted, tmp_path, {2: how})
    assert trial.trainer.epoch == 2
    assert len(warned) == 1, [str(w.message) for w in warned]
    message = str(warned[0].message)
    assert "cannot load checkpoint_000002: " in message
    assert "continuing from checkpoint_000001 (epoch 2)" in message
    assert_replays_exactly(trial, uninterrupted, first_epoch=3)


def test_fallback_skips_every_damaged_checkpoint_and_never_uses_a_newer_one(local_trial, uninterrupted,
                                                                            tmp_path):
    """Restoring checkpoint_000001 (damaged) while an intact, newer checkpoint_000002 lies beside
    it (a checkpoint Tune had not registered): the trial goes back to checkpoint_000000."""
    trial, warned = restore(local_trial, uninterrupted, tmp_path, {1: "garbage"}, index=1)
    assert trial.trainer.epoch == 1 and len(warned) == 1
    assert "continuing from checkpoint_000000 (epoch 1)" in str(warned[0].message)
    assert_replays_exactly(trial, uninterrupted, first_epoch=2)


def test_no_checkpoint_loads_restarts_from_scratch(local_trial, uninterrupted, tmp_path):
    """The newest checkpoint fails half-way (its model weights are already in place when the
    optimiser state is found missing), the older ones do not load at all: the trial must start
    from a new Trainer, not from epoch 0 with epoch-3 weights."""
    trial, warned = restore(local_trial, uninterrupted, tmp_path,
                            {2: "partial", 1: "missing", 0: "truncated"})
    assert trial.trainer.epoch == 0 and trial.last is None
    assert len(warned) == 1
    message = str(warned[0].message)
    for name in ("checkpoint_000002: KeyError", "checkpoint_000001: FileNotFoundError",
                 "checkpoint_000000: ", "restarting it from scratch (epoch 0)"):
        assert name in message, message
    assert_replays_exactly(trial, uninterrupted, first_epoch=1)



@pytest.mark.parametrize("damaged, epoch", [({2: "truncated"}, 2), ({2: "garbage", 1: "truncated"}, 1),
                                            ({2: "truncated", 1: "garbage", 0: "truncated"}, 0),
                                            ({2: "deleted", 1: "deleted"}, 1), ({2: "deleted", 0: "deleted",
                                                                                 1: "deleted"}, 0)],
                         ids=["previous", "older", "scratch", "deleted-older", "deleted-scratch"])
def test_fallback_fetches_older_checkpoints_from_a_bucket(local_trial, uninterrupted, tmp_path, s3,
                                                          damaged, epoch):
    """The study stored in a bucket (moto S3 on 127.0.0.1): Tune hands load_checkpoint a downloaded
    copy of checkpoint_000002 only; the older checkpoints are fetched from the bucket one by one."""
    trial, warned = restore(local_trial, uninterrupted, tmp_path, damaged, bucket=s3)
    assert trial.trainer.epoch == epoch and len(warned) == 1
    message = str(warned[0].message)
    assert f"({BUCKET}/faults/{tmp_path.name}): cannot load checkpoint_000002: " in message, message
    assert (f"continuing from checkpoint_00000{epoch - 1} (epoch {epoch})" if epoch
            else "restarting it from scratch (epoch 0)") in message, message
    assert_replays_exactly(trial, uninterrupted, first_epoch=epoch + 1)

# ---- damaged checkpoints: through Tune ----------------------------------------------------------
class DamageAndKill(tune.Callback):
    """When Tune registers the checkpoint of epoch `epoch` of a trial whose arm is in `plans`,
    damage that trial's checkpoint files as planned ({checkpoint index: how}), then SIGKILL its
    worker. Tune calls on_checkpoint while the worker waits (Tune schedules the next step only
    once the save is processed), and registers the checkpoint right after the callback, so the
    restart is always from checkpoint_00000<epoch - 1> with exactly the planned damage."""

    def __init__(self, epoch: int, plans: dict[str, dict[int, str]]):
        self.epoch, self.plans, self.killed = epoch, plans, {}

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        arm = trial.config["arm"]
        if arm in self.plans and arm not in self.killed and trial.last_result["epoch"] == self.epoch:
            folder = Path(checkpoint.path)
            assert folder.name == f"checkpoint_{self.epoch - 1:06d}", folder
            for index, how in self.plans[arm].items():
                damage(state_file(folder.parent, index), how)
            self.killed[arm] = trial.last_result["pid"]
            os.kill(self.killed[arm], signal.SIGKILL)


def worker_stderr(pid: int) -> str:
    import ray
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    return "".join(p.read_text(errors="replace") for p in logs.glob(f"worker-*-{pid}.err"))


def test_tune_restores_a_trial_from_damaged_checkpoints(ray_local, study_env, data, tmp_path):
    """Three identical trials; at epoch 3 of 4 `fallback`'s newest checkpoint is truncated and
    `scratch`'s three checkpoints are damaged (missing, garbage, truncated), then their workers
    are killed. Tune restores both from checkpoint_000002: `fallback` continues from epoch 2 (it
    runs epoch 3 again), `scratch` from epoch 0. Every epoch, replayed or not, equals the
    uninterrupted `steady` trial's, and training_iteration stays equal to the epoch."""
    plans = {"fallback": {2: "truncated"}, "scratch": {2: "missing", 1: "garbage", 0: "truncated"}}
    killer = DamageAndKill(epoch=3, plans=plans)
    trainable = tune.with_resources(
        tune.with_parameters(EpochTrainable, data=data, wandb_settings={"mode": "disabled"}), {"cpu": 1})
    tuner = tune.Tuner(
        trainable, param_space={**CONFIG, "arm": tune.grid_search(["steady", *plans])},
        # as in the study (runner.py): a restarted trial may be handed to a reused actor
        tune_config=tune.TuneConfig(trial_dirname_creator=lambda t: t.config["arm"], reuse_actors=True),
        run_config=tune.RunConfig(name="damaged", storage_path=str(tmp_path), verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=3),
                                  failure_config=tune.FailureConfig(max_failures=1),
                                  callbacks=[killer, tables.ResultLog()]))
    grid = tuner.fit()
    assert not grid.errors and set(killer.killed) == set(plans)
    steady = read_results(tmp_path / "damaged" / "steady")
    assert [r["epoch"] for r in steady] == list(range(1, EPOCHS + 1))
    for arm, first in (("fallback", 3), ("scratch", 1)):
        rows = read_results(tmp_path / "damaged" / arm)
        before = [r for r in rows if r["pid"] == killer.killed[arm]]
        after = [r for r in rows if r["pid"] != killer.killed[arm]]
        assert [r["epoch"] for r in before] == [1, 2, 3] and rows[:3] == before, arm
        assert [r["epoch"] for r in after] == list(range(first, EPOCHS + 1)), arm
        assert len({r["pid"] for r in after}) == 1 and after[0]["iterations_since_restore"] == 1
        assert [r["training_iteration"] for r in rows] == [r["epoch"] for r in rows], arm
        assert after[-1]["status"] == "completed" and after[-1]["done"]
        for row in rows:
            assert scores(row) == scores(steady[row["epoch"] - 1]), (arm, row["epoch"])
        # the tables keep each epoch once: its last report
        assert [scores(r) for r in tables.read_results(tmp_path / "damaged" / arm)] \
            == [scores(r) for r in steady]
        # the warning, in the stderr of the process that restored the trial (one line each)
        stderr = worker_stderr(after[0]["pid"])
        outcome = {"fallback": "continuing from checkpoint_000001 (epoch 2)",
                   "scratch": "none of its checkpoints loads: restarting it from scratch (epoch 0)"}[arm]
        trial_dir = re.escape(str(tmp_path / "damaged" / arm))
        warning = re.compile(rf"CheckpointFallbackWarning: trial \w+ \({trial_dir}\): "
                             rf"cannot load checkpoint_000002: .*; {re.escape(outcome)}")
        assert warning.search(stderr), f"{arm}: no warning in its worker's stderr:\n{stderr[-3000:]}"
