"""Studies stored in a bucket, against real servers on 127.0.0.1 that conftest starts: moto's S3
server (study_env points AWS_ENDPOINT_URL at it, for this process and the Ray workers) and
fake-gcs-server (reached through the gs:// URI's own options).

    python -m pytest tests/test_storage.py

For each, a small study runs its search phase with `storage: s3://...` or `gs://...`; then the
driver's machine is "lost" (its local mirror deleted), and `archstudy resume <URI>` finishes the
study from the bucket alone: nothing re-runs, and the bucket ends up holding everything a local
study folder holds, TensorBoard's events included. Also: unwritable or full local storage is
refused before anything runs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pyarrow.fs as pafs
import pytest
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

from studies import BUCKET, spec_text
from study import runner
from study.cli import main
from study.dashboard import study_db
from study.searcher import study_name
from study.spec_file import load_spec, parse_spec
from studyfiles.storage import join, mirror_of

SPEC = dict(name="bucketed", epochs=2, seeds=[0, 1], arms=["model: mlp, hidden: [16]"])


def listing(fs, path: str) -> set[str]:
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return {i.path[len(path) + 1:] for i in infos if i.type == pafs.FileType.File}


@pytest.fixture(scope="module", params=["s3", "gs"])
def bucket(request):
    """The study's storage URI in a bucket on moto S3 or on fake-gcs-server (with the options that
    point pyarrow at it), the server's pyarrow filesystem and the storage's path in it."""
    if request.param == "s3":
        return SimpleNamespace(storage=f"s3://{BUCKET}/results", fs=request.getfixturevalue("s3"),
                               path=f"{BUCKET}/results")
    gcs = request.getfixturevalue("gcs")
    return SimpleNamespace(storage=gcs.uri("results"), fs=gcs.fs, path=f"{BUCKET}/results")


@pytest.fixture(scope="module")
def bucketed(bucket, ray_local, tmp_path_factory):
    """Search phase in the bucket, the mirror deleted, then `archstudy resume <bucket URI>`."""
    path = tmp_path_factory.mktemp("bucketed") / "spec.yaml"
    path.write_text(spec_text(bucket.storage, **SPEC))
    spec = load_spec(path)
    study = runner.prepare(spec)
    out = join(bucket.storage, "bucketed")
    assert study.store.remote == out and study.out == mirror_of(out)
    study.run_phase("search", runner.study_data(spec))
    searched = pd.read_parquet(study.out / "trials.parquet")
    shutil.rmtree(study.out)                       # the driver's machine is gone
    code = main(["resume", out])
    return study, searched, code


def test_resume_from_the_bucket_alone_finishes_without_rerunning(bucketed):
    study, searched, code = bucketed
    assert code == 0
    trials = pd.read_parquet(study.out / "trials.parquet")
    assert json.loads((study.out / "study.json").read_text())["phase"] == "done"
    search = trials[trials.phase == "search"]
    assert sorted(search.trial_id) == sorted(searched.trial_id)      # nothing re-ran, nothing lost
    assert (search.set_index("trial_id").epochs_run == searched.set_index("trial_id").epochs_run).all()
    confirm = trials[trials.phase == "confirm"]
    assert len(confirm) == 2 and (confirm.status == "completed").all()


def test_the_bucket_holds_the_whole_study(bucketed, bucket):
    study, _, _ = bucketed
    files = listing(bucket.fs, f"{bucket.path}/bucketed")
    for name in ("spec.yaml", "study.json", "optuna.db", "trials.parquet", "epochs.parquet",
                 "gradflow.parquet", "answers.md", "answers.json", "report.html"):
        assert name in files, name
    trials = pd.read_parquet(study.out / "trials.parquet")
    for row in trials.itertuples():
        assert f"{row.path}/result.json" in files and f"{row.path}/params.json" in files
        assert any(f.startswith(f"{row.path}/checkpoint_") for f in files), row.path
        runs = [f for f in files if f.startswith("wandb/offline-run-")
                and f.endswith(f"-{row.study}-{row.trial_id}.wandb")]
        assert runs, f"no W&B offline run of {row.trial_id} in the bucket"
    # the bucket's tables are the mirror's
    with bucket.fs.open_input_file(f"{bucket.path}/bucketed/trials.parquet") as f:
        assert pd.read_parquet(f).trial_id.tolist() == trials.trial_id.tolist()


def test_the_dashboard_of_a_bucket_study_reads_a_whole_optuna_db(bucketed, bucket, tmp_path, monkeypatch):
    """`archstudy dashboard <URI>` reads this machine's mirror; on a machine without it, the bucket's
    optuna.db is fetched (study/dashboard.py study_db), and it holds every search trial, ended: the
    driver uploads a SQLite backup copy (its connections, in WAL mode, may hold commits in
    optuna.db-wal, which a copy of the file alone would miss)."""
    study, _, _ = bucketed
    out = join(bucket.storage, "bucketed")
    assert study_db(out)[1] == study.out / "optuna.db"
    monkeypatch.setenv("ARCHSTUDY_CACHE", str(tmp_path))   # another machine
    db = study_db(out)[1]
    assert db == mirror_of(out) / "optuna.db" and db.is_relative_to(tmp_path)
    trials = pd.read_parquet(study.out / "trials.parquet")
    for arm, rows in trials[trials.phase == "search"].groupby("arm"):
        stored = optuna.load_study(study_name=study_name("bucketed", arm), storage=f"sqlite:///{db}").trials
        assert sorted(t.number for t in stored) == sorted(rows.optuna_trial.astype(int)), arm
        assert all(t.state.is_finished() for t in stored), arm


def test_tensorboard_reads_every_trial_from_the_bucket(bucketed, bucket, tmp_path):
    """Each trial's TensorBoard events reach the bucket, the first driver's (search) and the resumed
    one's (confirm). TensorBoard reads an s3:// study in place (through boto3, which study_env
    points at moto); the gs:// one is read from a copy (TensorBoard's gs:// needs Google's login)."""
    study, _, _ = bucketed
    trials = pd.read_parquet(study.out / "trials.parquet")
    if bucket.storage.startswith("s3://"):
        root = f"s3://{bucket.path}/bucketed"
    else:
        root = str(tmp_path / "bucketed")
        pafs.copy_files(f"{bucket.path}/bucketed", root, source_filesystem=bucket.fs)
    runs = EventMultiplexer().AddRunsFromDirectory(root)
    runs.Reload()
    assert sorted(runs.Runs()) == sorted(trials.path)
    for row in trials.itertuples():
        assert [e.step for e in runs.Tensors(row.path, "val_acc")] == list(range(1, row.epochs_run + 1))


def test_a_second_study_with_the_same_name_is_refused(bucketed, bucket, capsys, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text(bucket.storage, **SPEC))
    assert main(["run", str(path)]) == 2
    assert "already holds a study" in capsys.readouterr().err


def test_uri_options_stay_at_the_end_of_every_path():
    assert join("s3://b/results/", "study", "search") == "s3://b/results/study/search"
    assert join("s3://b/?endpoint_override=m:9000&scheme=http", "study") == \
        "s3://b/study?endpoint_override=m:9000&scheme=http"
    # the mirror is named by scheme, bucket and path: no user, no options
    assert mirror_of("gs://anonymous@b/r/study?scheme=http") == mirror_of("gs://b/r/study/")
    spec = parse_spec("name: x\narms: [{model: mlp}]\nstorage: 'gs://anonymous@b/r?scheme=http'\n")
    assert spec.out_dir() == "gs://anonymous@b/r/x?scheme=http"


def test_unwritable_storage_is_refused_before_anything_runs(tmp_path, capsys, study_env):
    if os.geteuid() == 0:
        # root ignores permission bits: a read-only bind would need mount rights; use a path under
        # a regular file instead, which no user can create folders in
        blocked = tmp_path / "file"
        blocked.write_text("not a folder")
        storage = blocked / "results"
    else:
        storage = tmp_path / "ro"
        storage.mkdir(mode=0o500)
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text(storage, **SPEC))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: storage: cannot write to") and len(err.splitlines()) == 1
    assert str(storage) in err


def test_full_storage_is_refused_before_anything_runs(tmp_path, study_env):
    """Storage on a 1 MB filesystem (a tmpfs mounted in a private mount namespace): one line, exit 2."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root to mount a small tmpfs in a private mount namespace")
    full = tmp_path / "small"
    full.mkdir()
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text(full / "results", **SPEC))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    script = (f"mount -t tmpfs -o size=1m tmpfs {full} && "
              f"{sys.executable} -m study run {path}; echo rc=$?; ls -A {full}")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                          env=env, cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert "rc=2" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: storage: only 1.0 MB free at {full}"), proc.stderr
    assert proc.stdout.strip().endswith("rc=2")   # and `ls -A` of the small filesystem printed nothing
