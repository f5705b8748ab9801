"""Tests of study/cluster.py, and of a study on a cluster that loses a node, on a real two-node
Ray cluster started on this machine (tests/two_node.py: private network/PID/mount namespaces,
127.0.0.1 only, token authentication; the second node cannot see <base>/hidden).

    .venv/bin/python -m pytest tests/test_cluster.py -q

One cluster (fixture `cluster`) serves the module; its tests run in this file's order, which matters:
- `archstudy submit --wait` runs a two-arm study as a Ray Job: it succeeds, trials ran on both
  nodes, every output is in the storage folder, and the printed follow-up commands work as printed.
- storage that only the head sees, and resources.gpu on a cluster without GPUs, are refused by
  `archstudy run --address` with one line before anything is written.
- a job client without the token, or with a wrong one, gets one line naming RAY_AUTH_MODE / the token.
- unreachable addresses (127.0.0.1:1, in this process's own network namespace) fail at once.
- second to last, as it leaves the head alone (the `job` fixture, which the tests above use, refuses
  to start after it): `archstudy run --address` on the head while its second node is SIGKILLed
  mid-trial; the study completes, that trial continued on the head from its last checkpoint.
- last: the cluster stops and leaves no process behind.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from studies import NODE_LOSS_EPOCHS, node_loss_spec, reports, running_on, spec_text
from processes import wait_until
from two_node import DASHBOARD, GCS, Cluster, archstudy, execute, two_node_cluster

RAY_TEMP = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"

# Two small mlp arms, 2 epochs, 2 seeds (3 search trials per arm, then 2 confirmation runs per arm).
STUDY = dict(epochs=2, seeds=[0, 1], arms=["model: mlp, hidden: [32]", "model: mlp, hidden: [16]"])
ARMS = ("mlp-h32", "mlp-h16")


def one_line_error(result) -> str:
    """The single stderr line of a CLI call that must fail with exit code 2 and one line."""
    assert result.rc == 2, f"exit {result.rc}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-3000:]}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def cluster(study_env):
    with two_node_cluster(study_env) as cluster:
        yield cluster


def write_spec(cluster: Cluster, name: str, storage: Path, extra: str = "") -> Path:
    path = cluster.base / "specs" / f"{name}.yaml"
    path.write_text(spec_text(storage, name=name, **STUDY) + extra)
    return path


# ---- a study submitted as a Ray Job (started first; the refusal tests run while it runs) -----------------
@pytest.fixture(scope="module")
def job(cluster):
    """`archstudy submit SPEC --address DASHBOARD --wait`, started in the background."""
    assert not cluster.second_node_killed, "the tests that need both nodes run before the node-loss test"
    spec = write_spec(cluster, "twonode", cluster.base / "shared")
    logs = [open(cluster.base / f"submit.{name}", "w+") for name in ("out", "err")]
    proc = subprocess.Popen(
        cluster.command(archstudy("submit", str(spec), "--address", DASHBOARD, "--wait")),
        env=cluster.env, cwd=cluster.base, text=True, stdout=logs[0], stderr=logs[1],
        start_new_session=True)
    job = SimpleNamespace(proc=proc, logs=logs, started=time.monotonic(),
                          out=cluster.base / "shared" / "twonode")
    yield job
    if proc.poll() is None:   # a test run that did not wait for it (-k)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for log in logs:
        log.close()


@pytest.fixture(scope="module")
def submitted(cluster, job):
    """The submission, waited for (up to 7 minutes from its start); the job's logs if it failed."""
    try:
        job.proc.wait(timeout=max(1.0, 420 - (time.monotonic() - job.started)))
    except subprocess.TimeoutExpired:
        os.killpg(job.proc.pid, signal.SIGKILL)
        job.proc.wait()
    stdout, stderr = (log.seek(0) or log.read() for log in job.logs)
    result = SimpleNamespace(rc=job.proc.returncode, stdout=stdout, stderr=stderr,
                             seconds=time.monotonic() - job.started)
    match = re.search(r"^submitted job (\S+)$", stdout, re.M)
    job_id = match and match.group(1)
    if result.rc != 0 and job_id:
        logs = cluster.run(["ray", "job", "logs", "--address", DASHBOARD, job_id], timeout=60)
        result.stderr += f"\n---- ray job logs {job_id} ----\n{logs.stdout[-6000:]}{logs.stderr[-2000:]}"
    return SimpleNamespace(result=result, job_id=job_id, out=job.out)


# ---- refused before anything runs -------------------------------------------------------------------------
def test_storage_only_the_head_sees_is_refused(cluster, job):
    hidden = cluster.base / "hidden"
    spec = write_spec(cluster, "blind", hidden)
    result = cluster.run(archstudy("run", str(spec), "--address", GCS), cluster.driver_env(), timeout=180)
    line = one_line_error(result)
    assert line.startswith("error: storage: ") and str(hidden) in line, line
    assert "s3://" in line and "gs://" in line and "shared filesystem" in line, line
    assert "1 of the cluster's 2 nodes" in line and cluster.nodes["worker"][:12] in line, line
    assert list(hidden.iterdir()) == []   # no study folder, and the check's marker was removed


def test_a_gpu_per_trial_on_a_cluster_without_gpus_is_refused(cluster, job):
    storage = cluster.base / "gpu-storage"
    spec = write_spec(cluster, "gpu", storage, extra="resources: {gpu: 1}\n")
    result = cluster.run(archstudy("run", str(spec), "--address", GCS), cluster.driver_env(), timeout=180)
    line = one_line_error(result)
    assert line.startswith("error: resources.gpu: 1 per trial is more than any node of the cluster has"), line
    assert not storage.exists()


@pytest.mark.parametrize("token", ["none", "wrong"])
def test_a_job_client_without_the_right_token_is_told_so(cluster, job, token):
    env = dict(cluster.env)
    if token == "none":
        del env["RAY_AUTH_MODE"]
    else:
        wrong = cluster.base / "wrong_token"
        wrong.write_text(secrets.token_hex(32))
        wrong.chmod(0o600)
        env["RAY_AUTH_TOKEN_PATH"] = str(wrong)
    storage = cluster.base / f"auth-{token}"
    spec = write_spec(cluster, f"auth-{token}", storage)
    result = cluster.run(archstudy("submit", str(spec), "--address", DASHBOARD), env=env, timeout=120)
    line = one_line_error(result)
    assert "token authentication" in line and "cannot reach" not in line, line
    if token == "none":
        assert "RAY_AUTH_MODE is unset" in line and "set RAY_AUTH_MODE=token" in line, line
    else:
        assert "refused this process's token" in line, line
    assert "RAY_AUTH_TOKEN_PATH" in line and "~/.ray/auth_token" in line, line
    assert result.stdout == "" and not storage.exists()


# ---- unreachable addresses (this process's own network namespace, where nothing listens on port 1) --
@pytest.mark.parametrize("command,address", [("run", "127.0.0.1:1"), ("submit", "http://127.0.0.1:1")])
def test_an_unreachable_address_fails_at_once(study_env, tmp_path, command, address):
    """Probed before Ray is asked (study.cluster.check_reachable): ray.init alone retries an
    unreachable GCS for ~14 minutes, so `run` needs runner.start_ray to go through cluster.connect."""
    storage = tmp_path / "storage"
    spec = tmp_path / "unreachable.yaml"
    spec.write_text(spec_text(storage, name="unreachable", **STUDY))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"   # Ray must not swap 127.0.0.1 for this host's address
    result = execute(archstudy(command, str(spec), "--address", address), env, timeout=60, cwd=tmp_path)
    line = one_line_error(result)
    assert line.startswith("error: --address: cannot reach a Ray ") and f"'{address}'" in line, line
    assert "connection refused" in line, line
    assert result.seconds < 40, f"took {result.seconds:.0f} s"
    assert not storage.exists() and result.stdout == ""
    assert list(RAY_TEMP.glob(f"session_*_{result.pid}")) == []   # no Ray started


# ---- the submitted study's results -------------------------------------------------------------------
def test_submit_runs_the_study_as_a_job_on_both_nodes(cluster, submitted):
    r = submitted.result
    assert r.rc == 0, f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-9000:]}"
    job = submitted.job_id
    assert job and job.startswith("archstudy-twonode-"), r.stdout
    assert f"\njob {job}: SUCCEEDED" in r.stdout
    # the follow-up commands, in a form that works with token authentication
    for verb in ("logs", "status", "stop"):
        assert f"RAY_AUTH_MODE=token ray job {verb} --address {DASHBOARD}" in r.stdout, r.stdout
    assert re.search(r"^  auth: .*RAY_AUTH_TOKEN_PATH", r.stdout, re.M), r.stdout
    assert f"  results: {submitted.out}\n" in r.stdout
    # trials ran on both nodes, and only there
    trials = pd.read_parquet(submitted.out / "trials.parquet")
    assert set(trials.node_id) == set(cluster.nodes.values()), (trials.node_id.tolist(), cluster.nodes)
    assert len(trials) == 2 * 3 + 2 * 2 and set(trials.arm) == set(ARMS)
    assert (trials[trials.phase == "confirm"].status == "completed").all()


def test_submitted_study_left_every_result_in_storage(submitted):
    assert submitted.result.rc == 0, submitted.result.stderr[-3000:]
    out = submitted.out
    for name in ("spec.yaml", "study.json", "trials.parquet", "epochs.parquet", "gradflow.parquet",
                 "optuna.db", "report.html", "answers.json", "answers.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "study.json").read_text())["phase"] == "done"
    runs = sorted((out / "wandb").glob("offline-run-*"))
    trials = pd.read_parquet(out / "trials.parquet")
    assert {run.name.rsplit("-", 1)[1] for run in runs} >= set(trials.trial_id), [r.name for r in runs]
    assert all(list(run.glob("*.wandb")) for run in runs)
    assert (out / "search").is_dir() and (out / "confirm").is_dir()
    assert sorted(p.name for p in out.parent.iterdir()) == ["twonode"]   # no check marker left


def test_follow_up_commands_work_as_printed(cluster, submitted):
    """The printed `status` command, run as printed by a shell whose environment lacks RAY_AUTH_MODE
    (the printed prefix supplies it; the token comes from RAY_AUTH_TOKEN_PATH)."""
    line = re.search(r"^  status:  (.+)$", submitted.result.stdout, re.M)
    assert line, submitted.result.stdout
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_MODE"}
    result = cluster.run(["bash", "-c", line.group(1)], env=env, timeout=60)
    assert result.rc == 0 and f"Job '{submitted.job_id}' succeeded" in result.stdout, \
        f"{line.group(1)}\nexit {result.rc}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"


# ---- second to last: the second node is lost while a trial runs there ----------------------------------
@pytest.fixture(scope="module")
def node_loss(cluster):
    """`archstudy run SPEC --address GCS` from the head, storage in the shared folder; as soon as a
    trial on the second node has reported its 2nd epoch, every process of that node is SIGKILLed."""
    spec = cluster.base / "specs" / "nodeloss.yaml"
    spec.write_text(node_loss_spec(cluster.base / "shared"))
    out = cluster.base / "shared" / "nodeloss"
    k = cluster.kill_second_node_during(
        archstudy("run", str(spec), "--address", GCS), cluster.driver_env(),
        lambda: running_on(out / "search", cluster.nodes["worker"], range(2, NODE_LOSS_EPOCHS - 2)),
        cluster.base / "nodeloss.log", timeout=200)
    k.out, (k.target, k.killed_after_epoch) = out, k.found or (None, None)
    print(f"node loss: second node killed after epoch {k.killed_after_epoch} of {k.target}; "
          f"`archstudy run` exit {k.rc} after {k.seconds:.0f} s")
    return k


def test_a_study_completes_when_a_node_running_its_trial_is_lost(cluster, node_loss):
    k, head, worker = node_loss, cluster.nodes["head"], cluster.nodes["worker"]
    assert k.target, f"no trial got to epoch 2 on the second node (exit {k.rc}):\n{k.output[-4000:]}"
    assert any("raylet" in line and f"{cluster.base}/w/" in line for line in k.victims), k.victims
    assert k.gone, cluster.second_node()
    assert k.rc == 0, f"exit {k.rc} after {k.seconds:.0f} s:\n{k.output[-6000:]}"
    assert json.loads((k.out / "study.json").read_text())["phase"] == "done"
    trials = pd.read_parquet(k.out / "trials.parquet")
    epochs = pd.read_parquet(k.out / "epochs.parquet")
    assert len(trials) == 3 and (trials.epochs_run == NODE_LOSS_EPOCHS).all(), trials[["trial_id", "epochs_run"]]
    assert (trials.node_id == head).all(), trials[["phase", "trial_id", "node_id"]]   # all ended there
    for trial_id, rows in epochs.sort_values("epoch").groupby("trial_id"):
        assert rows.epoch.tolist() == list(range(1, NODE_LOSS_EPOCHS + 1)), (trial_id, rows.epoch.tolist())
        assert rows.node_id.iloc[-1] == head, trial_id
    moved = epochs[epochs.trial_id == k.target.name.rsplit("_", 1)[1]].sort_values("epoch")
    assert set(moved.node_id) == {head, worker}   # it really changed nodes
    assert (moved.node_id.iloc[:k.killed_after_epoch] == worker).all()
    # the head's GCS declared the node dead, by its health checks (two_node.py: ~15 s after the kill)
    lost = wait_until(lambda: cluster.node(worker, state="DEAD"), timeout=60, step=1)
    assert lost and "health check failed" in lost["state_message"], lost
    declared = datetime.strptime(lost["end_time_ms"], "%Y-%m-%d %H:%M:%S.%f").timestamp() - k.killed_at
    print(f"the head declared the second node dead {declared:.1f} s after the kill")


def test_the_lost_trial_continued_from_its_last_checkpoint(cluster, node_loss):
    k, head = node_loss, cluster.nodes["head"]
    assert k.rc == 0 and k.target, f"exit {k.rc}:\n{k.output[-4000:]}"
    done = reports(k.target)
    switch = [r["node_id"] for r in done].index(head)
    before, after = done[:switch], done[switch:]
    assert {r["node_id"] for r in before} == {cluster.nodes["worker"]} and {r["node_id"] for r in after} == {head}
    last, first = before[-1]["epoch"], after[0]
    # restored, not restarted: the new actor's first report is the epoch after a checkpoint's
    assert first["iterations_since_restore"] == 1 and first["training_iteration"] == first["epoch"] > 1
    # the last checkpoint: every epoch saves one, so at most the last epoch reported before the
    # node died (its checkpoint not yet saved) runs again; result.json holds exactly those replays
    assert first["epoch"] in (last, last + 1), (last, first["epoch"])
    assert [r["epoch"] for r in before] == list(range(1, last + 1))
    assert [r["epoch"] for r in after] == list(range(first["epoch"], NODE_LOSS_EPOCHS + 1))
    assert len(done) == NODE_LOSS_EPOCHS + (last + 1 - first["epoch"])
    for again in after[:last + 1 - first["epoch"]]:   # a replay is the same epoch again, exactly
        once = before[again["epoch"] - 1]
        assert [again[m] for m in ("train_loss", "val_loss", "val_acc")] == \
               [once[m] for m in ("train_loss", "val_loss", "val_acc")]
    # the checkpoint asked for loaded (study/trainable.py warns when it falls back to an older one)
    logs = list((cluster.base / "h" / "session_latest" / "logs").glob("worker-*"))
    assert logs and not [p.name for p in logs if b"CheckpointFallbackWarning" in p.read_bytes()]
    print(f"reported epochs 1-{last} on the second node, then {first['epoch']}-{NODE_LOSS_EPOCHS} on the "
          f"head, the first {first['timestamp'] - k.killed_at:.0f} s after the kill")


def test_the_lost_trial_counts_as_completed(node_loss):
    """Tune wrote the trial's error.txt when its node died, then the retry finished it: it is a
    completed trial (an 'error' one would be left out of the analysis and of the arm's mean)."""
    assert node_loss.rc == 0 and node_loss.target, node_loss.output[-4000:]
    assert (node_loss.target / "error.txt").is_file()   # the failure the trial recovered from
    trials = pd.read_parquet(node_loss.out / "trials.parquet")
    assert (trials.status == "completed").all(), trials[["phase", "trial_id", "status", "epochs_run"]]


# ---- last: the cluster stops and leaves nothing behind ------------------------------------------------------
def test_cluster_stops_and_leaves_no_process(cluster):
    assert cluster.namespace and cluster.inner
    inside = cluster.leftovers()
    # the holder, the head's raylet, GCS, dashboard, agents, ... (the second node's were SIGKILLed)
    assert len(inside) >= 6, inside
    cluster.stop()
    assert cluster.left == [], "processes of the cluster outlived its stop:\n" + "\n".join(cluster.left)
    assert cluster.holder.returncode is not None
