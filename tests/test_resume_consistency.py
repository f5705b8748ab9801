"""A driver killed while Tune's saved state lagged behind Optuna and the checkpoints (issue 12,
items 1 and 11), on real components (the session's local Ray on 127.0.0.1, Optuna in SQLite, W&B
offline):

    python -m pytest tests/test_resume_consistency.py

The kill is reproduced exactly, without racing a process. A search runs to its end; then its
folder is rolled back to what Tune's driver had written at an early moment (its experiment state,
the searcher's and the scheduler's, every trial's params.json and result.json: the files Tune
uploads to storage only with its state), while optuna.db, the checkpoints and the W&B runs (written
at once, by the searcher and by the trials) stay as they are. That is the folder of a driver
killed just after the search's last trial ended, whose uploads since that moment were lost with
it. Then:
- Tune's state names, for each trial it holds as running, a checkpoint that is gone (deleted here,
  as num_to_keep deletes it; the fault of item 1);
- the search's other trials ended in Optuna (some pruned) but Tune's state never knew them (item 11).
`resume` must finish the search so that optuna.db, Tune's state and the tables agree.
The records of such trials are rebuilt from their checkpoints (study/recovery.py): that is also
checked directly, in a local folder and in a bucket (conftest's moto S3 on 127.0.0.1).
"""
from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pyarrow.fs as pafs
import pytest
import torch
from ray import tune
from ray.tune.experiment.trial import Trial as TuneTrial

from studies import BUCKET, read_results, spec_text
from study import runner, tables
from study.recovery import LOST_ERROR, recover_lost_trials
from study.searcher import RAY_TRIAL_ID, ArmSearch, study_name
from studyfiles.storage import Store
from study.spec_file import load_spec
from wandb_files import METRICS, trial_epochs, wandb_problems

ARMS = ("mlp-h32", "mlp-h16")
DRIVER_FILES = ("params.json", "params.pkl", "result.json", "progress.csv", "error.txt", "error.pkl")
OPTUNA_STATE = {"completed": "COMPLETE", "pruned": "PRUNED", "diverged": "FAIL", "error": "FAIL"}


class SnapshotDriverFiles(tune.Callback):
    """When a trial first reports epoch 2, copy what Tune's driver has written so far (its staging
    folder: what its next upload would put on storage)."""

    def __init__(self, to: Path):
        self.to = to

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result["epoch"] == 2 and not self.to.exists():
            shutil.copytree(trial.storage.experiment_driver_staging_path, self.to)


class ErrorLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage()[:300])


def saved_trials(phase_dir: Path) -> dict[str, tuple[str, str | None, tuple[str, int]]]:
    """trial id -> (status, path of the checkpoint it would restore, (arm, Optuna trial number))
    in Tune's saved state."""
    state = json.loads(max(phase_dir.glob("experiment_state-*.json")).read_text())
    saved = {}
    for trial_json, metadata in state["trial_data"]:
        trial = TuneTrial.from_json_state(trial_json, stub=True)   # its status is reset here
        trial.restore_run_metadata(metadata)
        saved[trial.trial_id] = (json.loads(trial_json)["status"],
                                 trial.checkpoint.path if trial.checkpoint else None,
                                 (trial.config["arm"], trial.config["optuna_trial"]))
    return saved


def roll_back(phase_dir: Path, snapshot: Path) -> None:
    """Replace every file Tune's driver writes in a phase folder by the snapshot's."""
    for path in phase_dir.iterdir():
        if path.is_file() and path.name.startswith(("experiment_state-", "search_gen_state-",
                                                    "searcher-state-")):
            path.unlink()
        for name in DRIVER_FILES if path.is_dir() else ():
            (path / name).unlink(missing_ok=True)
    shutil.copytree(snapshot, phase_dir, dirs_exist_ok=True)


@pytest.fixture(scope="module")
def rolled_back(ray_local, study_env, tmp_path_factory):
    root = tmp_path_factory.mktemp("rollback")
    spec_path = root / "lagging.yaml"
    spec_path.write_text(spec_text(root / "results", name="lagging", epochs=4, seeds=[0],
                                   arms=["model: mlp, hidden: [32]", "model: mlp, hidden: [16]"]))
    spec = load_spec(spec_path)
    study, snapshot = runner.prepare(spec), root / "snapshot"
    study.callbacks.append(SnapshotDriverFiles(snapshot))
    data = runner.study_data(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0")   # Tune saves its state at every step
        study.run_phase("search", data)
    out, phase_dir = study.out, study.out / "search"
    ns = SimpleNamespace(out=out, spec=spec, storage=study.optuna_url, first_run=
                         {d.name: read_results(d) for d in phase_dir.iterdir() if d.is_dir()})
    roll_back(phase_dir, snapshot)
    ns.saved = saved_trials(phase_dir)
    ns.gone = []   # the fault: each checkpoint Tune's state would restore is gone
    for status, checkpoint, _ in ns.saved.values():
        if status != "TERMINATED" and checkpoint is not None:
            shutil.rmtree(checkpoint, ignore_errors=True)   # if num_to_keep has not deleted it
            ns.gone.append(Path(checkpoint))
    known = {optuna_trial for *_, optuna_trial in ns.saved.values()}
    ns.unknown = {}   # Optuna trials that ended after the state: their Tune trial id -> Optuna state
    for arm in ARMS:
        for t in optuna.load_study(study_name=study_name("lagging", arm), storage=ns.storage).trials:
            if (arm, t.number) not in known:
                ns.unknown[t.user_attrs.get(RAY_TRIAL_ID)] = t.state.name
    ns.lagging = set(ns.saved)   # known to the state, and running there or ended after it
    errors = ErrorLog()
    logging.getLogger("ray.tune").addHandler(errors)
    try:
        runner.reopen(out).run_phase("search", data)   # `archstudy resume`
    finally:
        logging.getLogger("ray.tune").removeHandler(errors)
    ns.tune_errors = errors.messages
    ns.trials = pd.read_parquet(out / "trials.parquet")
    ns.epochs = pd.read_parquet(out / "epochs.parquet")
    ns.gradflow = pd.read_parquet(out / "gradflow.parquet")
    return ns


def test_the_state_lagged_as_after_a_kill(rolled_back):
    """The situation of items 1 and 11 was there (the search is reproducible by construction)."""
    k = rolled_back
    running = {i for i, (status, *_) in k.saved.items() if status != "TERMINATED"}
    assert running and k.gone, f"Tune's saved state: {k.saved}"
    assert "PRUNED" in k.unknown.values(), f"ended after Tune's state: {k.unknown}"
    assert len(k.saved) + len(k.unknown) == 3 * len(ARMS)


def test_optuna_and_the_tables_agree(rolled_back):
    """Every Optuna trial is one row of trials.parquet (same Tune trial id), its epochs each once
    in epochs.parquet, with Optuna's intermediate values; each arm has 3 trials (trials_per_arm);
    Optuna's state and the `status` attribute match the row's status."""
    k = rolled_back
    search, problems = k.trials[k.trials.phase == "search"], []
    for arm in ARMS:
        study = optuna.load_study(study_name=study_name("lagging", arm), storage=k.storage)
        mine = search[search.arm == arm]
        if len(study.trials) != 3 or len(mine) != 3:
            problems.append(f"{arm}: {len(study.trials)} Optuna trials, {len(mine)} rows")
        for t in study.trials:
            rows = mine[(mine.optuna_trial == t.number) & (mine.trial_id == t.user_attrs.get(RAY_TRIAL_ID))]
            if len(rows) != 1:
                problems.append(f"{arm} #{t.number} ({t.state.name}): {len(rows)} rows")
                continue
            row = rows.iloc[0]
            if t.user_attrs.get("status") != row.status or OPTUNA_STATE[row.status] != t.state.name:
                problems.append(f"{arm} #{t.number}: {t.state.name}, status attribute "
                                f"{t.user_attrs.get('status')}, row status {row.status}")
            epochs = trial_epochs(k.epochs, "search", row.trial_id)
            if epochs.epoch.tolist() != list(range(1, row.epochs_run + 1)) \
                    or dict(zip(epochs.epoch, epochs[k.spec.metric])) != t.intermediate_values:
                problems.append(f"{arm} #{t.number}: epochs {epochs.epoch.tolist()} in the tables, "
                                f"intermediate values {t.intermediate_values}")
    assert problems == [], "\n".join(problems)


def test_a_trial_whose_checkpoint_is_gone_continues(rolled_back):
    """Each trial Tune's state held as running resumes although the checkpoint the state names
    is gone (from scratch here: num_to_keep had deleted the older ones): it ends TERMINATED, not
    in error, with each epoch once in the tables, and an epoch it ran twice computed the same."""
    k = rolled_back
    assert k.tune_errors == []   # Tune's bookkeeping of the gone checkpoints raised nothing either
    final = {i: state["status"] for i, state in tables.tune_trials(k.out / "search").items()}
    for trial_id in {i for i, (status, *_) in k.saved.items() if status != "TERMINATED"}:
        name = next(n for n in k.first_run if n.endswith(trial_id))
        rows = read_results(k.out / "search" / name)
        assert final[trial_id] == "TERMINATED", (name, final[trial_id])
        first = {r["epoch"]: r for r in k.first_run[name]}
        assert rows[-1]["epoch"] == max(first)   # where it ended the first time
        for r in rows:
            assert {m: r[m] for m in METRICS} == {m: first[r["epoch"]][m] for m in METRICS}, name


def test_trials_that_ended_are_not_run_again(rolled_back):
    """Tune runs no new trial, and a trial that ended after Tune's state keeps its id and its
    record (rebuilt from its checkpoint), each epoch once, as its first run reported it."""
    k = rolled_back
    assert set(tables.tune_trials(k.out / "search")) == set(k.saved)
    for trial_id in k.unknown:
        assert trial_id is not None, "an Optuna trial names no Tune trial"
        name = next(n for n in k.first_run if n.endswith(trial_id))
        rows = read_results(k.out / "search" / name)
        assert rows == k.first_run[name] and [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))


def test_wandb_runs_match_the_tables(rolled_back):
    k = rolled_back
    spec_hash = json.loads((k.out / "study.json").read_text())["spec_hash"]
    assert wandb_problems(k.out, spec_hash, runner.git_commit(), k.trials, k.epochs, k.gradflow) == []


# ---- rebuilding a lost trial's record, directly ------------------------------------------------
def put(fs, path: str, data: bytes) -> None:
    fs.create_dir(path.rsplit("/", 1)[0])
    with fs.open_output_stream(path) as f:
        f.write(data)


def write_checkpoint(fs, folder: str, index: int, config: dict, epochs: list[dict]) -> None:
    """A checkpoint as study/trainable.py writes it, with the record of epochs 1..len(epochs)."""
    buffer = io.BytesIO()
    torch.save({"trainer": {}, "last": epochs[-1], "config": json.dumps(config),
                "history": [json.dumps({**e, "trial_id": folder.rsplit("_", 1)[1]}) for e in epochs]},
               buffer)
    put(fs, f"{folder}/checkpoint_{index:06d}/state.pt", buffer.getvalue())


@pytest.mark.parametrize("where", ["local", "s3"])
def test_lost_records_are_rebuilt_from_checkpoints(where, study_env, tmp_path, request):
    """Three trials of one arm ended in Optuna: `lost` (pruned; its newest checkpoint is damaged),
    `crashed` (failed before its first checkpoint) and `known` (Tune's state knew it: it has its
    params.json). The first two get params.json and result.json (`crashed` an error.txt too); the
    tables then hold all three, with Optuna's statuses."""
    if where == "s3":
        request.getfixturevalue("s3")
    store = Store(tmp_path / "rebuilt" if where == "local" else f"s3://{BUCKET}/rebuilt-{tmp_path.name}")
    fs, phase = (store.fs, f"{store.root}/search") if store.remote else (pafs.LocalFileSystem(),
                                                                        str(tmp_path / "rebuilt/search"))
    spec_path = tmp_path / "rebuilt.yaml"
    spec_path.write_text(spec_text(tmp_path, name="rebuilt", epochs=3, seeds=[0], arms=["model: mlp"]))
    spec, url = load_spec(spec_path), f"sqlite:///{tmp_path / 'optuna.db'}"
    arm_config = {"model": "mlp", "hidden": [32], "batch_size": 32, "epochs": 3, "seed": 1, "phase": "search"}
    search = ArmSearch(url, "rebuilt", {"mlp": arm_config}, {"lr": ("loguniform", [0.001, 0.3])}, 3,
                       "random", 0, "val_acc", "max")
    configs, epochs = {}, [{"epoch": e, "val_acc": 0.5 + e / 10, "status": "running"} for e in (1, 2)]
    for name, result, error in (("lost", epochs[-1], False), ("crashed", None, True),
                                ("known", {**epochs[-1], "status": "completed"}, False)):
        configs[name] = search.suggest(name)
        search.on_trial_complete(name, result, error=error)
    write_checkpoint(fs, f"{phase}/mlp_lost", 0, configs["lost"], epochs[:1])
    write_checkpoint(fs, f"{phase}/mlp_lost", 1, configs["lost"], epochs)
    put(fs, f"{phase}/mlp_lost/checkpoint_000002/state.pt", b"damaged")
    put(fs, f"{phase}/mlp_known/params.json", json.dumps(configs["known"]).encode())

    written = recover_lost_trials(store, "rebuilt", {"mlp": arm_config}, url)
    assert sorted(written) == [f"{phase}/mlp_crashed", f"{phase}/mlp_lost"]
    assert recover_lost_trials(store, "rebuilt", {"mlp": arm_config}, url) == []   # done once
    store.fetch_results("search")
    local = store.local / "search"
    assert json.loads((local / "mlp_lost/params.json").read_text()) == configs["lost"]
    assert json.loads((local / "mlp_crashed/params.json").read_text()) == configs["crashed"]
    assert [r["epoch"] for r in read_results(local / "mlp_lost")] == [1, 2]
    assert (local / "mlp_crashed/error.txt").read_text() == LOST_ERROR
    assert not (local / "mlp_lost/error.txt").exists()
    rows = {r["trial_id"]: r for r in tables.collect_phase(store.local, "search", spec)[0]}
    assert {i: (r["status"], r["epochs_run"]) for i, r in rows.items() if i != "known"} \
        == {"lost": ("pruned", 2), "crashed": ("error", 0)}
    study = optuna.load_study(study_name=study_name("rebuilt", "mlp"), storage=url)
    assert [t.user_attrs["status"] for t in study.trials] == ["pruned", "error", "completed"]
