"""Integration tests of the study launcher (study/) on real components: a local Ray instance on
127.0.0.1 (conftest.ray_local), Optuna in SQLite, W&B in offline mode, the mnist-5k data.

- `tiny`: one small two-arm study (mlp, resnet20), search and confirmation, run ONCE in this process;
  most tests check its outputs against each other (tables, Ray's results, Optuna, W&B files).
- a trial whose worker process is SIGKILLed mid-run is restarted by Ray from its checkpoint and
  must reproduce an uninterrupted twin exactly.
- `archstudy run` (a subprocess with its own Ray) is SIGKILLed mid-search, then `archstudy resume`
  must finish the study without losing or repeating anything.
- the CLI: spec errors exit 2 with one line before Ray starts or anything is written.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from ray import tune

from study import runner, tables
from study.search import study_name
from study.trainable import Trial
from trainables.data import load_data

from processes import wait_until
from studies import TINY_ARMS, read_results, spec_text
from study.spec import load_spec
from wandb_files import wandb_records

REPO = Path(__file__).resolve().parents[1]
STATUSES = {"completed", "pruned", "diverged", "error"}
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
RAY_TEMP = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"

# Slow enough to be killed mid-search (the first finished trial leaves at least 3 to go), and with
# two confirmation seeds per arm, so that a driver can be killed after the first confirmation trial.
RESUME_SPEC = dict(name="resumable", epochs=4, seeds=[0, 1], arms=["model: mlp, hidden: [32]",
                                                               "model: mlp, hidden: [16]"])
RESUME_ARMS = ("mlp-h32", "mlp-h16")


# ---- helpers ---------------------------------------------------------------------------------------
def trial_epochs(epochs: pd.DataFrame, phase: str, trial_id: str) -> pd.DataFrame:
    return epochs[(epochs.phase == phase) & (epochs.trial_id == trial_id)].sort_values("epoch")


def proc_table() -> dict[int, tuple[int, int, str, str]]:
    """pid -> (parent pid, process group, state, command line) for every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry)] = (int(fields[1]), int(fields[2]), fields[0], cmdline)
    return table


def descendants(root: int) -> list[int]:
    table = proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def alive(pids) -> list[str]:
    """The given processes that still run (zombies, already dead, don't count), as 'pid cmdline'."""
    table = proc_table()
    return [f"{pid} {table[pid][3][:120]}" for pid in pids if pid in table and table[pid][2] != "Z"]


def processes_of_ray_session(driver_pid: int) -> list[int]:
    """Live processes of the Ray session a driver started (Ray names it session_<time>_<pid>)."""
    pattern = re.compile(rf"session_[0-9_-]+_{driver_pid}\b")
    return [pid for pid, (_ppid, _pgid, state, cmd) in proc_table().items()
            if state != "Z" and pattern.search(cmd)]


def ray_sessions_of(pid: int) -> list[Path]:
    return list(RAY_TEMP.glob(f"session_*_{pid}"))


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def listening_sockets(pids) -> list[tuple[int, str]]:
    """(pid, 'HEXADDR:PORT') of every TCP socket in LISTEN state held by the given processes."""
    owner = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                owner[link[8:-1]] = pid
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in owner:   # 0A: LISTEN
                found.append((owner[fields[9]], fields[1]))
    return found


def not_loopback(sockets) -> list[tuple[int, str]]:
    return [(pid, address) for pid, address in sockets if address.split(":")[0] not in LOOPBACK]


def files_containing(roots, needle: bytes) -> list[Path]:
    hits = []
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                hits.append(path)
    return hits


def kill_pids(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wandb_run(out: Path, study: str, trial_id: str) -> SimpleNamespace:
    """Every offline folder of the run `<study>-<trial_id>` (a restarted trial resumes its run in a
    new folder), read back: run records, history rows {key: value} and whether it was finished."""
    folders = sorted((out / "wandb").glob(f"offline-run-*-{study}-{trial_id}"))
    runs, history, exits = [], [], []
    for folder in folders:
        for record in wandb_records(folder / f"run-{study}-{trial_id}.wandb"):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                runs.append(record.run)
            elif kind == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                       for item in record.history.item}
                history.append((folder, row))
            elif kind == "exit":
                exits.append(record.exit.exit_code)
    return SimpleNamespace(folders=folders, runs=runs, history=history, exits=exits)


def wandb_problems(out: Path, spec_hash: str, commit: str, trials: pd.DataFrame,
                   epochs: pd.DataFrame, gradflow: pd.DataFrame) -> list[str]:
    """What is wrong with each trial's W&B run (an empty list: every run holds everything)."""
    problems = []
    for row in trials.itertuples():
        where = f"{row.phase} trial {row.trial_id} ({row.arm}, {row.status}, {row.epochs_run} epochs)"
        run = wandb_run(out, row.study, row.trial_id)
        if not run.folders:
            problems.append(f"{where}: no offline run folder")
            continue
        if not run.runs:
            problems.append(f"{where}: no run record in {[f.name for f in run.folders]} (empty log)")
            continue
        meta = run.runs[0]
        config = {item.key: json.loads(item.value_json) for item in meta.config.update}
        params = json.loads((out / row.path / "params.json").read_text())
        if meta.run_id != f"{row.study}-{row.trial_id}" or meta.run_group != row.study \
                or meta.job_type != row.phase or row.arm not in meta.tags:
            problems.append(f"{where}: id/group/job_type/tags {meta.run_id, meta.run_group, meta.job_type, list(meta.tags)}")
        wrong = {k: (config.get(k), v) for k, v in params.items() if config.get(k) != v}
        if wrong or config.get("spec_hash") != spec_hash or config.get("git_commit") != commit:
            problems.append(f"{where}: config differs: {wrong}, spec_hash {config.get('spec_hash')}, "
                            f"git_commit {config.get('git_commit')}")
        rows = {}
        for folder, h in run.history:
            if h["epoch"] in rows and any(rows[h["epoch"]][1][m] != h[m] for m in METRICS):
                problems.append(f"{where}: epoch {h['epoch']} logged twice with different values")
            rows[h["epoch"]] = (folder, h)
        expected = trial_epochs(epochs, row.phase, row.trial_id)
        if sorted(rows) != expected.epoch.tolist():
            problems.append(f"{where}: W&B history has epochs {sorted(rows)}, the tables "
                            f"{expected.epoch.tolist()}; finished: {bool(run.exits)}")
            continue
        for e in expected.itertuples():
            folder, h = rows[e.epoch]
            if h["_step"] != e.epoch or any(h[m] != getattr(e, m) for m in METRICS):
                problems.append(f"{where}: epoch {e.epoch} differs from epochs.parquet")
            layers = gradflow[(gradflow.phase == row.phase) & (gradflow.trial_id == row.trial_id)
                              & (gradflow.epoch == e.epoch)].sort_values("index")
            if h.get("grad_flow/_type") != "table-file":
                problems.append(f"{where}: epoch {e.epoch} has no gradient flow table")
                continue
            table = json.loads((folder / "files" / h["grad_flow/path"]).read_text())
            logged = [dict(zip(table["columns"], r)) for r in table["data"]]
            if [(r["layer"], r["grad_norm"]) for r in logged] != list(zip(layers.layer, layers.grad_norm)):
                problems.append(f"{where}: epoch {e.epoch} gradient flow table differs from gradflow.parquet")
        if run.exits[-1:] != [0]:
            problems.append(f"{where}: run not finished (exit records {run.exits})")
    return problems


def test_ray_runs_on_loopback_only(ray_local):
    context = ray_local.get_runtime_context()
    assert context.gcs_address.startswith("127.0.0.1:")
    assert {node["NodeManagerAddress"] for node in ray_local.nodes()} == {"127.0.0.1"}
    sockets = listening_sockets(descendants(os.getpid()))
    assert sockets, "found no listening socket of this process's Ray instance"
    assert not_loopback(sockets) == []


def test_both_phases_ran(tiny):
    t = tiny.trials
    assert json.loads((tiny.out / "study.json").read_text())["phase"] == "done"
    search, confirm = t[t.phase == "search"], t[t.phase == "confirm"]
    assert len(search) == 6 and len(confirm) == 4
    assert set(t.status) <= STATUSES
    assert search.groupby("arm").size().to_dict() == {arm: 3 for arm in TINY_ARMS}
    assert confirm.groupby("arm").size().to_dict() == {arm: 2 for arm in TINY_ARMS}
    assert (confirm.status == "completed").all() and (confirm.epochs_run == 3).all()
    # ASHA (grace 1, reduction 2, rungs at epochs 1 and 2) stops the weaker of 3 trials per arm: in
    # resnet20's arm the third trial (lr 0.001) is compared at epoch 1 with a finished better one.
    assert (search.status == "pruned").sum() >= 1
    assert (search[search.status == "pruned"].epochs_run < 3).all()
    assert (search[search.status == "completed"].epochs_run == 3).all()
    assert t.trial_id.is_unique


def test_optuna_holds_every_search_trial_truthfully(tiny):
    summaries = optuna.get_all_study_summaries(tiny.storage)
    assert sorted(s.study_name for s in summaries) == sorted(study_name("tiny", a) for a in TINY_ARMS)
    search = tiny.trials[tiny.trials.phase == "search"]
    for arm in TINY_ARMS:
        study = optuna.load_study(study_name=study_name("tiny", arm), storage=tiny.storage)
        rows = search[search.arm == arm].assign(optuna_trial=lambda d: d.optuna_trial.astype(int))
        assert sorted(t.number for t in study.trials) == sorted(rows.optuna_trial) == [0, 1, 2]
        for trial in study.trials:
            row = rows[rows.optuna_trial == trial.number].iloc[0]
            values = trial_epochs(tiny.epochs, "search", row.trial_id).set_index("epoch").val_acc
            assert trial.params == {"lr": row.param_lr}
            assert dict(trial.intermediate_values) == values.to_dict()   # every epoch run, once
            assert sorted(trial.intermediate_values) == list(range(1, row.epochs_run + 1))
            if row.status == "pruned":
                assert trial.state == TrialState.PRUNED
            else:
                assert row.status == "completed" and trial.state == TrialState.COMPLETE
                assert trial.value == row.final_val_acc and row.epochs_run == 3
        assert sum(t.state == TrialState.PRUNED for t in study.trials) == (rows.status == "pruned").sum()
        assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_tables_agree_with_rays_own_results(tiny):
    for phase in ("search", "confirm"):
        analysis = tune.ExperimentAnalysis(str(tiny.out / phase))
        ray_trials = {trial.trial_id: trial for trial in analysis.trials}
        rows = tiny.trials[tiny.trials.phase == phase]
        assert set(ray_trials) == set(rows.trial_id)
        for row in rows.itertuples():
            trial, epochs = ray_trials[row.trial_id], trial_epochs(tiny.epochs, phase, row.trial_id)
            assert trial.status == "TERMINATED" and trial.config["arm"] == row.arm
            assert trial.last_result["epoch"] == row.epochs_run == trial.last_result["training_iteration"]
            assert trial.last_result["val_acc"] == row.final_val_acc
            assert epochs.epoch.tolist() == list(range(1, row.epochs_run + 1))   # each epoch once
            assert epochs.val_acc.iloc[-1] == row.final_val_acc
            frame = analysis.trial_dataframes[trial.trial_id]   # Ray's own per-epoch record
            assert frame.epoch.tolist() == epochs.epoch.tolist()
            for metric in METRICS:
                assert frame[metric].tolist() == epochs[metric].tolist()


def test_gradient_flow_rows(tiny):
    g = tiny.gradflow
    assert not g.duplicated(["phase", "trial_id", "epoch", "layer"]).any()
    assert (g.grad_norm > 0).all() and g.grad_norm.notna().all()
    for row in tiny.trials.itertuples():
        mine = g[(g.phase == row.phase) & (g.trial_id == row.trial_id)]
        assert sorted(mine.epoch.unique()) == list(range(1, row.epochs_run + 1))
        assert mine.groupby("epoch").size().eq(TINY_ARMS[row.arm]).all()
        assert sorted(mine[mine.epoch == 1]["index"]) == list(range(TINY_ARMS[row.arm]))


def test_confirmation_reruns_each_arms_best_config(tiny):
    t = tiny.trials
    for arm in TINY_ARMS:
        study = optuna.load_study(study_name=study_name("tiny", arm), storage=tiny.storage)
        complete = [trial for trial in study.trials if trial.state == TrialState.COMPLETE]
        best = max(trial.value for trial in complete)
        best_lrs = {trial.params["lr"] for trial in complete if trial.value == best}
        rows = t[(t.phase == "confirm") & (t.arm == arm)].sort_values("seed")
        assert rows.seed.tolist() == [0, 1]
        assert rows.param_lr.nunique() == 1 and rows.param_lr.iloc[0] in best_lrs
        for config in rows.config.map(json.loads):
            assert config["lr"] == rows.param_lr.iloc[0]
            assert (config["batch_size"], config["epochs"]) == (32, 3)
        assert rows.final_test_acc.between(0, 1).all() and rows.final_test_loss.notna().all()
        # the search trains with seed 2 (max(seeds) + 1): each confirmation run is a new run of the
        # winning configuration, not a replay of the search trial that won
        search = t[(t.phase == "search") & (t.arm == arm) & (t.param_lr == rows.param_lr.iloc[0])]
        assert (t[t.phase == "search"].seed == 2).all()
        original = trial_epochs(tiny.epochs, "search", search.trial_id.iloc[0])
        for trial_id in rows.trial_id:
            rerun = trial_epochs(tiny.epochs, "confirm", trial_id)
            assert rerun["train_loss"].tolist() != original["train_loss"].tolist()
    assert t[t.phase == "search"].final_test_acc.isna().all()   # the search never sees the test split


# ---- W&B ---------------------------------------------------------------------------------------------
def tiny_wandb_problems(tiny, phase: str) -> list[str]:
    spec_hash = json.loads((tiny.out / "study.json").read_text())["spec_hash"]
    commit = runner.git_commit()
    trials = tiny.trials[tiny.trials.phase == phase]
    return wandb_problems(tiny.out, spec_hash, commit, trials, tiny.epochs, tiny.gradflow)


def test_wandb_runs_are_complete_under_four_concurrent_trials(ray_local, study_env, tmp_path):
    """Eight trials, four at a time (half a CPU each on the session's 2-CPU Ray), each writing its
    own offline W&B run: every run file is whole and holds every epoch of its trial."""
    text = spec_text(tmp_path / "results", name="crowded", epochs=2, seeds=[0],
                     arms=["model: mlp, hidden: [16]"])
    text = text.replace("trials_per_arm: 3\n  max_concurrent: 2", "trials_per_arm: 8\n  max_concurrent: 4")
    text = text.replace("scheduler: {name: asha, grace_period: 1, reduction_factor: 2}",
                        "scheduler: {name: none}\nresources: {cpu: 0.5}")
    path = tmp_path / "crowded.yaml"
    path.write_text(text)
    study = runner.prepare(load_spec(path))
    study.run_phase("search", runner.study_data(study.spec))
    trials, epochs, gradflow = (pd.read_parquet(study.out / f"{t}.parquet") for t in ("trials", "epochs", "gradflow"))
    assert len(trials) == 8 and (trials.epochs_run == 2).all()
    # trials overlapped in time: at least 3 ran at once
    spans = [(e.timestamp.min() - 2, e.timestamp.max()) for _, e in epochs.groupby("trial_id")]
    assert max(sum(a <= t <= b for a, b in spans) for t, _ in spans) >= 3
    spec_hash = json.loads((study.out / "study.json").read_text())["spec_hash"]
    assert wandb_problems(study.out, spec_hash, runner.git_commit(), trials, epochs, gradflow) == []


def test_wandb_confirm_runs_hold_the_full_history(tiny):
    assert tiny_wandb_problems(tiny, "confirm") == []


def test_wandb_search_runs_hold_the_full_history(tiny):
    assert tiny_wandb_problems(tiny, "search") == []


# ---- a trial restarted from its checkpoint ----------------------------------------------------------
class KillWorkerOnce(tune.Callback):
    """SIGKILLs the worker process of the trial with config arm == `arm` when it reports `epoch`."""

    def __init__(self, arm: str, epoch: int):
        self.arm, self.epoch, self.killed_pid = arm, epoch, None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if trial.config["arm"] == self.arm and result["epoch"] == self.epoch and self.killed_pid is None:
            self.killed_pid = result["pid"]
            os.kill(self.killed_pid, signal.SIGKILL)


def test_killed_trial_resumes_exactly_from_its_checkpoint(ray_local, study_env, tmp_path):
    """Two identical trials run side by side; the worker process of one is SIGKILLed when it has
    reported epoch 3 of 4. Ray restarts it (FailureConfig) from the last checkpoint Tune holds (the
    one study/trainable.py wrote after epoch 2: Tune had no time to take epoch 3's from the dead
    worker), and every epoch's metrics must equal the uninterrupted trial's, bit for bit (CPU, same
    seed): the checkpoint restores model, optimiser, schedule and RNG exactly."""
    data = load_data("mnist-5k").subset(train=300, val=100, test=100)
    killer = KillWorkerOnce("killed", epoch=3)
    trainable = tune.with_resources(
        tune.with_parameters(Trial, data=data, wandb_settings={"mode": "disabled"}), {"cpu": 1})
    config = {"model": "resnet20", "width": 0.125, "epochs": 4, "lr": 0.05, "batch_size": 32,
              "seed": 0, "phase": "confirm", "arm": tune.grid_search(["steady", "killed"])}
    tuner = tune.Tuner(trainable, param_space=config,
                       tune_config=tune.TuneConfig(trial_dirname_creator=lambda t: t.config["arm"]),
                       run_config=tune.RunConfig(
                           name="restart", storage_path=str(tmp_path), verbose=0,
                           failure_config=tune.FailureConfig(max_failures=1),
                           callbacks=[killer, tables.ResultLog()]))
    grid = tuner.fit()
    assert not grid.errors and killer.killed_pid is not None
    steady = read_results(tmp_path / "restart" / "steady")
    killed = read_results(tmp_path / "restart" / "killed")
    assert [r["epoch"] for r in steady] == [1, 2, 3, 4]
    before = [r for r in killed if r["pid"] == killer.killed_pid]
    after = [r for r in killed if r["pid"] != killer.killed_pid]
    assert [r["epoch"] for r in before] == [1, 2, 3] and killed[:3] == before
    # one new process, continuing from a checkpoint (epoch 2's or 3's), not from scratch
    assert len({r["pid"] for r in after}) == 1 and after[0]["iterations_since_restore"] == 1
    first = after[0]["epoch"]
    assert first in (3, 4) and [r["epoch"] for r in after] == list(range(first, 5))
    keys = [k for k in steady[-1] if k.startswith(("train_", "val_", "test_", "gf_")) and k != "train_seconds"]
    keys += ["epoch", "lr", "status", "grad_flow"]
    assert {"train_loss", "val_acc", "test_acc", "gf_first_last_ratio"} <= set(keys)
    for row in killed:   # the epoch run again after the restart reproduces its first run too
        assert {k: row.get(k) for k in keys} == {k: steady[row["epoch"] - 1].get(k) for k in keys}
    # the result tables keep one row per epoch (the last report of an epoch wins)
    assert [{k: r.get(k) for k in keys} for r in tables.read_results(tmp_path / "restart" / "killed")] \
        == [{k: r.get(k) for k in keys} for r in steady]


# ---- `archstudy run` killed, then `archstudy resume` ---------------------------------------------------
def finished_optuna_trials(db: Path) -> list[tuple[str, int, str]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT s.study_name, t.number, t.state FROM trials t "
                               "JOIN studies s USING (study_id) WHERE t.state != 'RUNNING'").fetchall()
    except sqlite3.Error:   # not created yet, or locked by the writer
        return []


def confirm_trials_finished(out: Path) -> int:
    folder = out / "confirm"
    return sum(1 for d in folder.iterdir() if (rows := read_results(d)) and rows[-1]["status"] == "completed") \
        if folder.is_dir() else 0


def phase_of(out: Path) -> str | None:
    try:
        return json.loads((out / "study.json").read_text())["phase"]
    except (OSError, ValueError, KeyError):
        return None


def run_until_killed(command: list[str], log_path: Path, env: dict, moment) -> SimpleNamespace:
    """Start `python -m study ...`, SIGKILL its process group (the driver and its Ray instance) as
    soon as `moment()` is true, and check that nothing of it survives."""
    ns = SimpleNamespace()
    with open(log_path, "wb") as log:
        run = subprocess.Popen([sys.executable, "-m", "study", *command], cwd=REPO, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
        family = []
        try:
            ns.reached = wait_until(lambda: run.poll() is not None or moment(), timeout=300, step=0.1)
            ns.exit_before_kill = run.poll()
            family = descendants(run.pid)
            ns.sockets = listening_sockets(family)
            ns.ray_sessions = ray_sessions_of(run.pid)
        finally:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    # the process group held the driver and its whole Ray instance: nothing of it may be left
    wait_until(lambda: not alive(family) and not processes_of_ray_session(run.pid), timeout=15)
    ns.left_alive = alive(family) + alive(processes_of_ray_session(run.pid))
    kill_pids(int(line.split()[0]) for line in ns.left_alive)   # clean up, then fail in the tests
    ns.stdout = log_path.read_text(errors="replace")
    assert ns.reached and ns.exit_before_kill is None, \
        f"`{' '.join(command)}` ended before it could be killed:\n{ns.stdout[-3000:]}"
    return ns


@pytest.fixture(scope="module")
def killed_and_resumed(study_env, tmp_path_factory):
    """`archstudy run` SIGKILLed mid-search; `resume` killed between the phases (as soon as
    study.json says confirm); `resume` killed during confirmation (after its first trial ended);
    then a last `resume` finishes the study."""
    root = tmp_path_factory.mktemp("resume")
    spec_path = root / "resumable.yaml"
    spec_path.write_text(spec_text(root / "results", **RESUME_SPEC))
    out = root / "results" / "resumable"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    ns = SimpleNamespace(out=out, root=root)

    ns.kills = [run_until_killed(["run", str(spec_path)], root / "run.out", env,
                                 lambda: finished_optuna_trials(out / "optuna.db"))]
    ns.killed_after = finished_optuna_trials(out / "optuna.db")
    # what the killed driver left: every result.json line, every trial's Optuna state
    ns.before = {d.name: read_results(d) for d in (out / "search").iterdir() if (d / "params.json").exists()}
    ns.kills.append(run_until_killed(["resume", str(out)], root / "resume1.out", env,
                                     lambda: phase_of(out) == "confirm"))
    ns.kills.append(run_until_killed(["resume", str(out)], root / "resume2.out", env,
                                     lambda: confirm_trials_finished(out) >= 1))
    ns.confirm_done_at_kill = confirm_trials_finished(out)
    ns.run_stdout = "".join(k.stdout for k in ns.kills)
    ns.ray_sessions = [s for k in ns.kills for s in k.ray_sessions]

    started = time.monotonic()
    resume = subprocess.Popen([sys.executable, "-m", "study", "resume", str(out)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        ns.resume_stdout, ns.resume_stderr = (b.decode(errors="replace") for b in resume.communicate(timeout=480))
    finally:
        if resume.poll() is None:
            os.killpg(resume.pid, signal.SIGKILL)
            resume.wait()
        wait_until(lambda: not processes_of_ray_session(resume.pid), timeout=15)
        ns.resume_left_alive = alive(processes_of_ray_session(resume.pid))
        kill_pids(int(line.split()[0]) for line in ns.resume_left_alive)
    ns.ray_sessions += ray_sessions_of(resume.pid)
    ns.resume_seconds, ns.resume_rc = time.monotonic() - started, resume.returncode
    return ns


def test_resume_finishes_a_study_whose_driver_was_killed(killed_and_resumed):
    k = killed_and_resumed
    for kill in k.kills:
        assert kill.ray_sessions, "a killed driver had started no Ray session"
        assert kill.sockets and not_loopback(kill.sockets) == []   # its Ray stayed on 127.0.0.1
        assert kill.left_alive == [], "processes of a killed driver survived its process group's SIGKILL"
    assert len(k.killed_after) < 6   # the first kill was mid-search
    assert 1 <= k.confirm_done_at_kill < 2 * len(RESUME_ARMS)   # the third, mid-confirmation
    assert k.resume_rc == 0, f"resume failed:\n{k.resume_stderr[-4000:]}"
    assert k.resume_left_alive == [], "the resumed run left Ray processes behind"
    assert json.loads((k.out / "study.json").read_text())["phase"] == "done"
    trials = pd.read_parquet(k.out / "trials.parquet")
    assert (trials.phase == "confirm").sum() == 2 * len(RESUME_ARMS)   # two seeds per arm
    assert (trials[trials.phase == "confirm"].status == "completed").all()


def test_resume_loses_and_repeats_nothing(killed_and_resumed):
    k = killed_and_resumed
    assert k.resume_rc == 0, f"resume failed:\n{k.resume_stderr[-4000:]}"
    trials = pd.read_parquet(k.out / "trials.parquet")
    epochs = pd.read_parquet(k.out / "epochs.parquet")
    search = trials[trials.phase == "search"]
    storage = f"sqlite:///{k.out / 'optuna.db'}"
    problems = []
    if len(search) != 6 or search.groupby("arm").size().to_dict() != {a: 3 for a in RESUME_ARMS}:
        problems.append(f"search trials per arm: {search.groupby('arm').size().to_dict()}")
    if dup := epochs[epochs.duplicated(["phase", "trial_id", "epoch"])].trial_id.tolist():
        problems.append(f"epochs reported twice in epochs.parquet: {dup}")
    for row in trials.itertuples():
        got = trial_epochs(epochs, row.phase, row.trial_id).epoch.tolist()
        if got != list(range(1, row.epochs_run + 1)) or row.status not in ("completed", "pruned"):
            problems.append(f"{row.phase} {row.trial_id}: status {row.status}, epochs {got}")
    # trials seen before the kill keep their ids, and what they had reported is kept, not re-run
    for name, rows_before in k.before.items():
        trial_id = name.rsplit("_", 1)[1]
        after = read_results(k.out / "search" / name)
        if trial_id not in set(search.trial_id):
            problems.append(f"{trial_id} (in the killed run) is missing from trials.parquet")
        if after[:len(rows_before)] != rows_before:
            problems.append(f"{trial_id}: result.json lines of the killed run were changed")
        if rows_before and rows_before[-1]["status"] == "completed" and len(after) != len(rows_before):
            problems.append(f"{trial_id}: completed before the kill, ran again on resume")
        reported = [r["epoch"] for r in after]
        if len(reported) != len(set(reported)):
            problems.append(f"{trial_id}: epochs reported more than once: {reported}")
    for arm in RESUME_ARMS:
        study = optuna.load_study(study_name=study_name("resumable", arm), storage=storage)
        states = [t.state.name for t in study.trials]
        mine = search[search.arm == arm]
        if len(states) != 3 or "RUNNING" in states:
            problems.append(f"Optuna {arm}: trial states {states}")
        if sorted(mine.optuna_trial.astype(int)) != sorted(t.number for t in study.trials):
            problems.append(f"Optuna {arm}: numbers {[t.number for t in study.trials]}, table "
                            f"{sorted(mine.optuna_trial)}")
        lrs = [t.params.get("lr") for t in study.trials]
        if None in lrs or len(set(lrs)) != len(lrs):   # the same configuration searched twice
            problems.append(f"Optuna {arm}: lr of its trials {lrs}")
        for t in study.trials:
            row = mine[mine.optuna_trial == t.number]
            if len(row) == 1 and sorted(t.intermediate_values) != list(range(1, row.epochs_run.iloc[0] + 1)):
                problems.append(f"Optuna {arm} #{t.number}: intermediate values at epochs "
                                f"{sorted(t.intermediate_values)}, table has {row.epochs_run.iloc[0]}")
    assert problems == [], "\n".join(problems)


def test_progress_view_prints_trial_counts(killed_and_resumed):
    k = killed_and_resumed
    assert re.search(r"^\[search\] \d/6 trials finished, elapsed \d+m\d\ds, ETA ", k.run_stdout, re.M)
    assert re.search(r"^  mlp-h32 +done \d/3 +running \d +pending \d +epochs \d+/12", k.run_stdout, re.M)
    assert re.search(r"^\[search\] 6/6 trials finished, elapsed \d+m\d\ds$", k.run_stdout, re.M)
    assert re.search(r"^  mlp-h16 +done 3/3 +running 0 +pending 0 ", k.run_stdout, re.M)
    assert re.search(r"^\[confirm\] 4/4 trials finished, elapsed \d+m\d\ds$", k.resume_stdout, re.M)


def test_api_key_is_never_written(tiny, killed_and_resumed, study_env, tmp_path):
    key = study_env["WANDB_API_KEY"].encode()
    # the study folders, W&B's folders, and the Ray session folders (logs) of every driver started
    roots = [tiny.out, killed_and_resumed.out, study_env["home"], *killed_and_resumed.ray_sessions]
    files = [p for root in roots for p in Path(root).rglob("*") if p.is_file()]
    assert len(files) > 100 and any(p.suffix == ".wandb" for p in files)
    (tmp_path / "planted.txt").write_bytes(b"x" + key + b"y")   # the scan itself finds a key
    assert files_containing([tmp_path], key) == [tmp_path / "planted.txt"]
    assert files_containing(roots, key) == []


# ---- the command line ------------------------------------------------------------------------------
BAD_SPECS = {
    "arms[1].model": "name: bad\nstorage: {storage}\narms: [{{model: mlp}}, {{model: resnet99}}]\n",
    "search.space.lr.loguniform[0]": ("name: bad\nstorage: {storage}\narms: [{{model: mlp}}]\n"
                                      "search: {{space: {{lr: {{loguniform: [0, 0.1]}}}}}}\n"),
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Every CLI call of the tests below, started at once (each pays Python's and torch's start-up)."""
    root = tmp_path_factory.mktemp("cli")
    calls = {"schema": ["schema"], "models": ["models"],
             "quick": ["validate", str(REPO / "study/specs/quick.yaml")]}
    for i, (where, text) in enumerate(BAD_SPECS.items()):
        path = root / f"bad{i}.yaml"
        path.write_text(text.format(storage=root / f"storage{i}"))
        calls[f"validate:{where}"] = ["validate", str(path)]
        calls[f"run:{where}"] = ["run", str(path)]
    (root / "not-a-study").mkdir()
    calls["resume:not-a-study"] = ["resume", str(root / "not-a-study")]
    no_data = root / "no-data.yaml"
    no_data.write_text(f"name: offline\ndata: cifar10\ndata_root: {root / 'empty'}\n"
                       f"storage: {root / 'storage-no-data'}\narms: [{{model: resnet20}}]\n")
    calls["run:no-data"] = ["run", str(no_data)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = {name: (time.monotonic(), subprocess.Popen(
        [sys.executable, "-m", "study", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)) for name, args in calls.items()}
    results = {}
    for name, (start, proc) in started.items():
        stdout, stderr = proc.communicate(timeout=180)
        results[name] = SimpleNamespace(rc=proc.returncode, stdout=stdout.decode(), stderr=stderr.decode(),
                                        seconds=time.monotonic() - start, pid=proc.pid)
    return SimpleNamespace(root=root, results=results)


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("where", list(BAD_SPECS))
def test_spec_error_exits_2_with_one_line_before_anything_starts(cli, command, where):
    result = cli.results[f"{command}:{where}"]
    assert result.rc == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {where}: "), result.stderr
    i = list(BAD_SPECS).index(where)
    assert not (cli.root / f"storage{i}").exists()          # nothing written
    assert ray_sessions_of(result.pid) == []                 # no Ray started (the killed run's check
    # above, test_resume_finishes..., shows that a started Ray leaves session_*_<pid>)


@pytest.mark.parametrize("call, expected", [
    ("resume:not-a-study", "is not a study folder"),
    ("run:no-data", "cifar10"),
])
def test_unusable_folders_and_missing_data_exit_2_with_one_line(cli, call, expected):
    result = cli.results[call]
    lines = result.stderr.splitlines()
    assert result.rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], \
        result.stderr[-2000:]
    assert ray_sessions_of(result.pid) == []   # refused before Ray started
    assert not (cli.root / "storage-no-data").exists() and list((cli.root / "not-a-study").iterdir()) == []


def test_validate_schema_and_models(cli):
    quick = cli.results["quick"]
    assert quick.rc == 0 and quick.stdout.startswith(f"{REPO / 'study/specs/quick.yaml'}: ok: study 'quick', 8 arms")
    schema = cli.results["schema"]
    assert schema.rc == 0
    parsed = json.loads(schema.stdout)
    assert parsed["title"] == "archstudy study spec" and {"name", "arms", "search"} <= set(parsed["properties"])
    models = cli.results["models"]
    assert models.rc == 0
    assert re.search(r"^resnet20 +residual +depth 20$", models.stdout, re.M), models.stdout
