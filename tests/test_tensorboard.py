"""TensorBoard event files (study/tensorboard_log.py), read back with TensorBoard's own readers:

    python -m pytest tests/test_tensorboard.py

- a trial restarted from a checkpoint writes the epochs after it again, into a second file; each
  epoch shows once, with its latest values (no Ray: two writers on one folder);
- a trial whose worker Tune loses and restarts from its checkpoint: each epoch once, with the values
  of its last report (as result.json's tables keep them);
- the session's tiny study (conftest `tiny`): every trial folder holds, per epoch, every number
  it reported and each layer's gradient norm, and its hyperparameters for the HParams plugin;
- `tensorboard --logdir <study>` (the real server, on 127.0.0.1) serves one run per trial and the
  HParams table: every trial with its hyperparameters and its final metrics.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from ray import tune
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import metadata

from conftest import free_port, start_server, stop_server
from studies import TINY_ARMS
from study import tables
from study.spec_file import parse_spec
from study.tensorboard_log import TensorBoardLog, TrialEvents, domain, hp
from study.trainable import EpochTrainable
from trainables.data import load_data

# Tune's report fields that are not charted (bookkeeping; depth is the model's, an hparam-like fact)
NOT_CHARTED = {"training_iteration", "iterations_since_restore", "time_since_restore", "timestamp",
               "pid", "depth"}
ALWAYS_CHARTED = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds",
                  "time_total_s", "gf_first_last_ratio", "gf_grad_norm_first"}


def accumulator(folder: Path) -> event_accumulator.EventAccumulator:
    """Every event of a run folder (size_guidance 0: keep all, no sampling)."""
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={
        event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0})
    acc.Reload()
    return acc


def series(acc, tag: str) -> list[tuple[int, float]]:
    return [(s.step, s.value) for s in acc.Scalars(tag)]


def written(folder: Path, tag: str) -> list[int]:
    """The steps of `tag` as the folder's event files hold them, file after file (no purging)."""
    return [e.step for f in sorted(folder.glob("events.out.tfevents.*"))
            for e in EventFileLoader(str(f)).Load() if any(v.tag == tag for v in e.summary.value)]


def same(a: float, b: float) -> bool:
    """Equal as TensorBoard stores scalars (float32), NaN equal to NaN."""
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-30)


# ---- a restarted trial, without Ray ----------------------------------------------------------------
def test_a_restarted_trial_shows_each_epoch_once_with_its_latest_values(tmp_path):
    experiment = hp.hparams_config_pb([hp.HParam("lr", domain("loguniform", [0.001, 0.3]))],
                                      [hp.Metric("val_acc")])
    session = hp.hparams_pb({"lr": 0.01}, trial_id="t1")
    first = TrialEvents(str(tmp_path), experiment, session)
    for epoch in (1, 2, 3):
        first.log(epoch, {"val_acc": epoch / 10})
    first.close()   # lost after epoch 3; restarted from epoch 1's checkpoint:
    second = TrialEvents(str(tmp_path), experiment, session)
    for epoch in (2, 3, 4):
        second.log(epoch, {"val_acc": 0.5 + epoch / 10})
    second.close()
    assert len(list(tmp_path.iterdir())) == 2
    assert written(tmp_path, "val_acc") == [1, 2, 3, 2, 3, 4]   # epochs 2 and 3 are there twice
    shown = series(accumulator(tmp_path), "val_acc")
    assert [step for step, _ in shown] == [1, 2, 3, 4]
    assert all(same(value, expected) for (_, value), expected in zip(shown, [0.1, 0.7, 0.8, 0.9]))


def test_searched_options_have_their_spec_domain():
    assert domain("loguniform", [1e-3, 0.3]).min_value == 1e-3
    assert domain("uniform", [0, 1]).max_value == 1.0   # a float, as RealInterval requires
    assert domain("int", [16, 64]).dtype is int
    assert domain("choice", [16, 32.5]).values == [16.0, 32.5]
    assert domain("choice", ["sgd", "adam"]).values == ["adam", "sgd"]
    assert domain("choice", [1, "a"]) is None   # one type per domain: this option has none


# ---- a trial that Tune restarts -----------------------------------------------------------------------
class KillAtEpoch3(tune.Callback):
    """SIGKILLs the trial's worker once, when it reports epoch 3: Tune usually has no checkpoint of
    epoch 3 yet, so the restart runs epoch 3 again (or else goes on from it)."""

    def __init__(self):
        self.pid = None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result["epoch"] == 3 and self.pid is None:
            self.pid = result["pid"]
            os.kill(self.pid, signal.SIGKILL)


def test_a_trial_that_tune_restarts_shows_each_epoch_once(ray_local, study_env, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")   # as study/runner.py: not Ray's own
    spec = parse_spec("name: r\narms: [{model: mlp, hidden: [16]}]\nseeds: [0]\n"
                      "search: {space: {lr: {loguniform: [0.001, 0.3]}}}\n")
    killer = KillAtEpoch3()
    data = load_data("mnist-5k").subset(train=200, val=50, test=50)
    trainable = tune.with_resources(
        tune.with_parameters(EpochTrainable, data=data, wandb_settings={"mode": "disabled"}), {"cpu": 1})
    config = {"model": "mlp", "hidden": [16], "epochs": 4, "lr": 0.05, "batch_size": 32,
              "seed": 0, "phase": "search", "arm": spec.arm_names[0]}
    tuner = tune.Tuner(trainable, param_space=config,
                       tune_config=tune.TuneConfig(trial_dirname_creator=lambda t: "only"),
                       run_config=tune.RunConfig(
                           name="restart", storage_path=str(tmp_path), verbose=0,
                           failure_config=tune.FailureConfig(max_failures=1),
                           callbacks=[TensorBoardLog(spec, [0, 1]), tables.ResultLog(), killer]))
    assert not tuner.fit().errors and killer.pid is not None
    folder = tmp_path / "restart" / "only"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2   # one file per start of the trial
    assert written(folder, "val_acc") in ([1, 2, 3, 3, 4], [1, 2, 3, 4])   # usually 3 twice
    reports, acc = tables.read_results(folder), accumulator(folder)
    # time_total_s differs between two runs of an epoch: it tells which report is shown
    first_layer = min(t for t in acc.Tags()["scalars"] if t.startswith("grad_norm/"))
    for key in ("val_acc", "train_loss", "time_total_s", first_layer):
        shown = series(acc, key)
        assert [step for step, _ in shown] == [1, 2, 3, 4], key
        if not key.startswith("grad_norm/"):
            assert all(same(value, r[key]) for (_, value), r in zip(shown, reports)), key


# ---- the tiny study ----------------------------------------------------------------------------------
def test_every_reported_number_is_a_scalar_with_one_value_per_epoch(tiny):
    for row in tiny.trials.itertuples():
        reports = tables.read_results(tiny.out / row.path)   # an epoch's last report
        expected = {k for r in reports for k, v in r.items() if k not in NOT_CHARTED
                    and isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert ALWAYS_CHARTED <= expected, row.path
        acc = accumulator(tiny.out / row.path)
        charted = set(acc.Tags()["scalars"])
        assert {t for t in charted if not t.startswith("grad_norm/")} == expected, row.path
        for key in expected:
            reported = [(r["epoch"], float(r[key])) for r in reports if key in r]
            shown = series(acc, key)
            assert [s for s, _ in shown] == [e for e, _ in reported], (row.path, key)
            assert all(same(a, b) for (_, a), (_, b) in zip(shown, reported)), (row.path, key)
        assert [s for s, _ in series(acc, "epoch")] == list(range(1, row.epochs_run + 1))


def test_every_layer_has_its_gradient_norm_per_epoch(tiny):
    g = tiny.gradflow
    for row in tiny.trials.itertuples():
        acc = accumulator(tiny.out / row.path)
        norms = sorted(t for t in acc.Tags()["scalars"] if t.startswith("grad_norm/"))
        assert len(norms) == TINY_ARMS[row.arm], row.path
        rows = g[(g.phase == row.phase) & (g.trial_id == row.trial_id)]
        for layer in rows.itertuples():
            tag = f"grad_norm/{layer.index:02d}_{layer.layer}"
            shown = dict(series(acc, tag))
            assert len(shown) == row.epochs_run and same(shown[layer.epoch], layer.grad_norm), tag
    # the tags sort in the network's order
    first = tiny.trials.iloc[0]
    layers = g[(g.trial_id == first.trial_id) & (g.epoch == 1)].sort_values("index").layer.tolist()
    acc = accumulator(tiny.out / first.path)
    assert [t.split("/")[1].split("_", 1)[1] for t in sorted(acc.Tags()["scalars"])
            if t.startswith("grad_norm/")] == layers


def test_each_trial_has_its_hyperparameters_for_the_hparams_plugin(tiny):
    space = list(tiny.spec.search.space)
    for row in tiny.trials.itertuples():
        acc = accumulator(tiny.out / row.path)
        experiment = metadata.parse_experiment_plugin_data(
            acc.SummaryMetadata(metadata.EXPERIMENT_TAG).plugin_data.content)
        assert [h.name for h in experiment.hparam_infos] == ["arm", "model", "phase", "seed", *space]
        metrics = [m.name.tag for m in experiment.metric_infos]
        assert metrics[0] == tiny.spec.metric and {"val_loss", "test_acc", "epoch"} <= set(metrics)
        start = metadata.parse_session_start_info_plugin_data(
            acc.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content)
        values = {name: (v.string_value or v.number_value) for name, v in start.hparams.items()}
        config = json.loads((tiny.out / row.path / "params.json").read_text())
        assert values == {"arm": row.arm, "model": row.model, "phase": row.phase, "seed": row.seed,
                          **{k: config[k] for k in space}}
        assert start.group_name == row.trial_id


# ---- the real server ---------------------------------------------------------------------------------
def ask(url: str, body: dict | None = None):
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


@pytest.fixture
def board(tiny, tmp_path):
    """`tensorboard --logdir <tiny study>` on 127.0.0.1, once it has loaded every trial's run."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "tensorboard.log", "wb") as log:
        server = start_server([str(Path(sys.executable).with_name("tensorboard")), "--logdir",
                               str(tiny.out), "--host", "127.0.0.1", "--port", str(port)],
                              f"{url}/data/runs", "tensorboard", log=log)
    try:
        deadline = time.monotonic() + 60
        while len(ask(f"{url}/data/runs")) < len(tiny.trials) and time.monotonic() < deadline:
            time.sleep(0.5)   # it loads the folder in the background
        yield url
    finally:
        stop_server(server)


def test_tensorboard_serves_one_run_per_trial_and_the_hparams_table(tiny, board):
    assert sorted(ask(f"{board}/data/runs")) == sorted(tiny.trials.path)
    experiment = ask(f"{board}/data/plugin/hparams/experiment", {"experimentName": ""})
    assert {h["name"] for h in experiment["hparamInfos"]} >= {"arm", "model", "phase", "seed", "lr"}
    metric = {"tag": tiny.spec.metric, "group": ""}
    assert metric in [m["name"] for m in experiment["metricInfos"]]
    table = ask(f"{board}/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 1000,
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [{"hparam": "arm"}, {"hparam": "lr"}, {"metric": metric}]})
    groups = {g["name"]: g for g in table["sessionGroups"]}
    assert set(groups) == set(tiny.trials.trial_id)
    for row in tiny.trials.itertuples():
        group = groups[row.trial_id]
        assert group["hparams"]["arm"] == row.arm and group["hparams"]["seed"] == row.seed
        (value,) = [m for m in group["metricValues"] if m["name"] == metric]
        final = getattr(row, f"final_{tiny.spec.metric}")
        assert value["trainingStep"] == row.epochs_run and same(value["value"], final), row.path
