"""The contract between `study` (which writes a study folder) and `analysis` (which reads it):
file names, the three tables and their columns, the status values and the phases.

    from studyfiles.contract import Phase, Status, TRIALS, trials_path
    trials = pd.read_parquet(trials_path(folder))
    done = trials[(trials.phase == Phase.CONFIRM) & (trials.status == Status.COMPLETED)]

A study folder holds:
- spec.yaml: the resolved spec (every default filled in), read back by `spec_data`;
- study.json (the study's phase, the spec it started with, and each driver's code:
  studyfiles/provenance.py), optuna.db (one Optuna study per arm and search replicate),
  driver.log;
- search/ and confirm/: Ray Tune's experiment folders, one trial folder each;
- trials.parquet, epochs.parquet, gradflow.parquet, signalprop.parquet: the tables below, rebuilt
  after each phase (folders written before signalprop.parquet existed lack it);
- answers.md, answers.json, report.html: the analysis.

    python -m pytest tests/test_layers.py tests/test_tables.py
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path


class Phase(str, Enum):
    """The phases of a study: the per-arm search, then the winners' runs over the seeds."""
    SEARCH = "search"
    CONFIRM = "confirm"


class Status(str, Enum):
    """How a trial ended, in trials.parquet's `status` column."""
    COMPLETED = "completed"   # trained every epoch it was given
    PRUNED = "pruned"         # stopped early by the scheduler (ASHA)
    DIVERGED = "diverged"     # its training loss became NaN or infinite: a result, not a failure
    ERROR = "error"           # raised an exception (retries used up), or never reported


SPEC_FILE = "spec.yaml"
STATE_FILE = "study.json"
OPTUNA_DB = "optuna.db"
DRIVER_LOG = "driver.log"
TABLES = ("trials", "epochs", "gradflow", "signalprop")
TABLE_FILES = tuple(f"{t}.parquet" for t in TABLES)
OUTPUTS = ("answers.md", "answers.json", "report.html")
# The study's own files, which a driver keeps in its local mirror of a study in a bucket
# (everything else is Ray Tune's).
STUDY_FILES = (SPEC_FILE, STATE_FILE, OPTUNA_DB, *TABLE_FILES, *OUTPUTS, DRIVER_LOG)
RESULT_FILES = ("params.json", "result.json", "error.txt", "error.pkl")   # per trial, for the tables

# The metrics every trial reports at the end of each epoch (val_* is the held-out split, test_* the
# dataset's test split; losses are mean cross-entropy, accuracies fractions in [0, 1]).
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")

# Columns every row of the three tables has: which trial it is, and the architecture it trains.
# `family` is mlp / plain / residual; `line` the series of depths it belongs to (trainables.models:
# "mlp", "vgg", "resnet" for the 18/34 layout, "6n+2" for He et al.'s CIFAR nets); `depth` the
# nominal depth in layers; `width` the channel multiplier.
TRIAL_KEY = ("study", "phase", "trial_id", "arm", "model", "family", "line", "depth", "batchnorm",
             "width", "seed")

# trials.parquet: one row per trial. `replicate` is the search replicate a trial belongs to (0..R-1
# with the spec's search.replicates R: a search trial of that search, or a confirmation run of its
# winner); `split_seed` the seed of the train/val split it trained on (0 for search trials; a
# confirmation run's seed under the spec's `split: per_seed`). `best_<metric>` and `param_<name>`
# (one per searched parameter) are named after the spec; `config` is the trial's training options as JSON; seconds are wall-clock
# and CPU/GPU-seconds reserved (wall x the trial's resources); `path` is relative to the folder.
# COST_COLUMNS: `parameters` (count) and `flops_per_sample` (forward FLOPs of one sample, as torch's
# FlopCounterMode counts them: trainables/cost.py), None for a trial that never reported; and the
# seconds per epoch (the mean of the epochs' `epoch_seconds`, training and evaluation as the Trainer
# times them), with the reserved CPU- and GPU-seconds per epoch (x resources); NaN without an epoch.
COST_COLUMNS = ("parameters", "flops_per_sample", "seconds_per_epoch", "cpu_seconds_per_epoch",
                "gpu_seconds_per_epoch")
TRIAL_COLUMNS = (*TRIAL_KEY, "optuna_trial", "replicate", "split_seed", "config", "status", "epochs_run", "error",
                 *(f"final_{m}" for m in METRICS), "wall_seconds", "cpu_seconds", "gpu_seconds",
                 "node_id", "path", *COST_COLUMNS)

# epochs.parquet: one row per trial and epoch; besides these, every scalar the trial reported that
# epoch (the `gf_*` gradient-flow summaries, lr, epoch_seconds, parameters, flops_per_sample, Tune's
# time_total_s, ...).
EPOCH_COLUMNS = (*TRIAL_KEY, "epoch", "status", *METRICS)

# gradflow.parquet: one row per trial, epoch and weight layer (conv or linear, `index` 0 the first
# in forward order); the statistics are means over the epoch's probe batches (trainables/gradflow.py):
# mean and max |grad|, grad and weight L2 norms, and ||w_after - w_before|| / ||w_before||.
GRADFLOW_STATS = ("grad_mean_abs", "grad_max_abs", "grad_norm", "weight_norm", "update_ratio")
GRADFLOW_COLUMNS = (*TRIAL_KEY, "epoch", "layer", "index", *GRADFLOW_STATS)

# signalprop.parquet: one row per trial, epoch and block (`index` 0 the first in forward order:
# ResNet BasicBlocks, VGG conv units, MLP hidden layers; `block` its module name), measured on one
# fixed probe batch in training mode (trainables/signalprop.py, after Brock et al. 2021); epoch 0 is
# at initialisation, epoch k after the k-th epoch. Statistics of the block's output (channel
# statistics over batch and space, then averaged over channels; units: squared activations):
# avg_sq_mean the mean squared channel mean, avg_var the mean channel variance; residual_var the
# mean channel variance of a residual block's branch before the skip is added (NaN elsewhere).
SIGNALPROP_STATS = ("avg_sq_mean", "avg_var", "residual_var")
SIGNALPROP_COLUMNS = (*TRIAL_KEY, "epoch", "block", "index", *SIGNALPROP_STATS)


def table_path(folder: str | Path, table: str) -> Path:
    """Where a table lives in a (local) study folder: one of TABLES."""
    if table not in TABLES:
        raise ValueError(f"table: {table!r} is not allowed; choose one of: {', '.join(TABLES)}")
    return Path(folder) / f"{table}.parquet"


def trials_path(folder: str | Path) -> Path:
    return table_path(folder, "trials")
