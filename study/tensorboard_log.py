"""TensorBoard event files for every trial, so that a study can be watched while it runs and
browsed afterwards, offline:

    tensorboard --logdir <study folder>

One run per trial (its folder, e.g. search/mlp-w1-h32_1a2b3c4d), each with:

- a scalar per reported number and epoch (step = epoch): `val_acc`, `train_loss`, `lr`, the
  gradient-flow summaries `gf_*`, `epoch_seconds`, `time_total_s`, ... (`test_*` at the last epoch
  of a confirmation run); Tune's bookkeeping (pid, timestamp, iteration counters) is left out;
- `grad_norm/<NN>_<layer>`: each weight layer's gradient norm (NN: the layer's position, input
  first, so that TensorBoard's alphabetical order is the network's order);
- the HParams plugin's data: the experiment (the hyperparameter names with their domains, from the
  spec, and the metric names the HParams table shows) and the trial's hyperparameters (arm, model,
  phase, seed and the searched options). The table's metric values are the metric scalars' last
  values, so it fills in while the trial runs.

Written by the Tune driver into the trial's folder, which Tune copies to the storage path (a
local folder or a bucket) with its experiment state, every few seconds: the same way as
result.json. The files are written with the `tensorboard` package's own event writer and protos.

A trial restarted from a checkpoint (a worker lost, or `archstudy resume`) runs the epochs after
that checkpoint again and writes them into a new event file. Before its first epoch, and whenever
an epoch does not follow the last one written, a SessionLog START event at that epoch tells
TensorBoard to drop what the old file holds from that epoch on (the documented way to discard a
restarted job's orphaned steps; TensorBoard's fast data server drops them per series by itself).
An epoch therefore shows once, with its latest report, as in the result tables.
"""
from __future__ import annotations

import time

from ray.tune.logger import LoggerCallback
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from studyfiles.contract import METRICS

from .tables import GRADFLOW_KEY

# Numbers in Tune's report that are not measurements of the epoch (the step is the epoch).
NOT_SCALARS = ("training_iteration", "iterations_since_restore", "time_since_restore", "timestamp",
               "pid", "depth")
GRAD_NORM_TAG = "grad_norm/{index:02d}_{layer}"


def scalars(result: dict) -> dict[str, float]:
    """The report's numbers worth a chart: ints and floats (NaN and inf included, as TensorBoard
    marks them), not bools, not Tune's bookkeeping."""
    return {k: float(v) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_SCALARS}


def grad_norms(result: dict) -> dict[str, float]:
    """`grad_norm/<NN>_<layer>` -> the layer's gradient norm, from the report's gradient-flow rows."""
    return {GRAD_NORM_TAG.format(index=row["index"], layer=row["layer"]): float(row["grad_norm"])
            for row in result.get(GRADFLOW_KEY) or []}


def domain(kind: str, args: list):
    """The HParams domain of a searched option (spec.Distribution's kind and args); None for a
    choice that mixes types (TensorBoard's Discrete takes one type), which then has no domain."""
    if kind in ("loguniform", "uniform"):
        return hp.RealInterval(float(args[0]), float(args[1]))
    if kind == "int":
        return hp.IntInterval(int(args[0]), int(args[1]))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in args):
        return hp.Discrete([float(v) for v in args])
    try:
        return hp.Discrete(args)
    except TypeError:
        return None


def hparam_value(value):
    """A value the HParams plugin takes (bool, number, string); anything else as its text."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


class TrialEvents:
    """The event file of one trial in one driver session: scalars per epoch, and the HParams
    experiment and session summaries written when it opens."""

    def __init__(self, folder: str, experiment: summary_pb2.Summary, session: summary_pb2.Summary):
        self.writer = EventFileWriter(folder, flush_secs=30)
        self.last_step: int | None = None
        for summary in (experiment, session):
            self.writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))
        self.writer.flush()

    def log(self, step: int, values: dict[str, float]) -> None:
        """One epoch's scalars (step: the epoch, from 1). An epoch that does not follow the last
        one written starts a new session at it: TensorBoard drops the older values from it on."""
        now = time.time()
        if self.last_step is None or step <= self.last_step:
            start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            self.writer.add_event(event_pb2.Event(wall_time=now, step=step, session_log=start))
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)
                                             for tag, value in values.items()])
        self.writer.add_event(event_pb2.Event(wall_time=now, step=step, summary=summary))
        self.writer.flush()   # live curves: each epoch is on disk when it is reported
        self.last_step = step

    def close(self) -> None:
        self.writer.close()


class TensorBoardLog(LoggerCallback):
    """Tune callback: each trial's TensorBoard events in its folder (see the module docstring).
    `seeds`: every training seed the study uses (the confirmation seeds and the search trials'),
    the domain of the `seed` hyperparameter."""

    def __init__(self, spec, seeds: list[int]):
        space = spec.search.space
        self.hparam_names = ["arm", "model", "phase", "seed", *space]
        hparams = [hp.HParam("arm", hp.Discrete(spec.arm_names)),
                   hp.HParam("model", hp.Discrete(sorted({arm.model for arm in spec.arms}))),
                   hp.HParam("phase", hp.Discrete(["search", "confirm"])),
                   hp.HParam("seed", hp.Discrete(sorted(set(seeds)))),
                   *(hp.HParam(name, domain(dist.kind, dist.args)) for name, dist in space.items())]
        metrics = list(dict.fromkeys([spec.metric, *METRICS, "epoch", "time_total_s",
                                      *(["gf_first_last_ratio"] if spec.gradient_flow else [])]))
        self.experiment = hp.hparams_config_pb(hparams, [hp.Metric(m) for m in metrics])
        self.trials: dict = {}

    def session(self, trial) -> summary_pb2.Summary:
        values = {name: hparam_value(trial.config[name]) for name in self.hparam_names
                  if trial.config.get(name) is not None}
        return hp.hparams_pb(values, trial_id=trial.trial_id)

    def log_trial_start(self, trial) -> None:
        if trial in self.trials:   # restarted in this driver: a new file, as after a new driver
            self.trials.pop(trial).close()
        trial.init_local_path()
        self.trials[trial] = TrialEvents(trial.local_path, self.experiment, self.session(trial))

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if trial not in self.trials:
            self.log_trial_start(trial)
        values = {**scalars(result), **grad_norms(result)}
        self.trials[trial].log(int(result.get("epoch", result["training_iteration"])), values)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        if trial in self.trials:
            self.trials.pop(trial).close()

