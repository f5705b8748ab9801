"""`archstudy dashboard` (study/dashboard.py) and the study's Optuna database beside a reader
(study/optuna_storage.py): a reader that holds a read transaction open never blocks the study's
writes; the dashboard on the session's tiny study, in headless Chromium (Debian's `chromium`: `make
browser`) and through its JSON API, with TensorBoard beside it, both stopped by Ctrl+C; bad input
refused in one line before anything starts.

    python -m pytest tests/test_dashboard.py
"""
from __future__ import annotations

import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from conftest import free_port
from study import optuna_storage as storage_module
from study.cli import main
from study.optuna_storage import optuna_storage
from study.searcher import study_name
from studyfiles.files import sqlite_snapshot

REPO = Path(__file__).resolve().parents[1]


def objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("lr", 1e-3, 1.0, log=True)


def test_a_reader_in_a_read_transaction_never_blocks_the_study(tmp_path, monkeypatch):
    """As optuna-dashboard reads: BEGIN; SELECT ...; and the transaction left open while Optuna
    writes 20 trials through the study's storage. With a 1-s busy timeout, a writer that waited
    for the reader (SQLite's default rollback journal) fails with "database is locked"."""
    monkeypatch.setattr(storage_module, "BUSY_TIMEOUT_S", 1)
    db = tmp_path / "optuna.db"
    study = optuna.create_study(study_name="s/a", storage=optuna_storage(f"sqlite:///{db}"))
    study.optimize(objective, n_trials=1)
    reader = sqlite3.connect(db, timeout=1, isolation_level=None)   # transactions as written here
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM trials").fetchone() == (1,)
    study.optimize(objective, n_trials=20)   # raises "database is locked" if it waits for the reader
    assert reader.execute("SELECT COUNT(*) FROM trials").fetchone() == (1,)   # the reader's snapshot
    reader.execute("COMMIT")
    assert reader.execute("SELECT COUNT(*), MIN(state), MAX(state) FROM trials").fetchone() == \
        (21, "COMPLETE", "COMPLETE")
    assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    reader.close()
    reloaded = optuna.load_study(study_name="s/a", storage=f"sqlite:///{db}")
    assert len(reloaded.trials) == 21


def test_a_snapshot_holds_the_commits_that_the_file_alone_lacks(tmp_path):
    """What the bucket upload sends (studyfiles/storage.py Store.upload): while the study's
    connection is open, a commit may sit in optuna.db-wal only."""
    db = tmp_path / "optuna.db"
    study = optuna.create_study(study_name="s/a", storage=optuna_storage(f"sqlite:///{db}"))
    study.optimize(objective, n_trials=3)
    shutil.copy(db, tmp_path / "plain.db")
    with sqlite_snapshot(db) as copy:
        shutil.copy(copy, tmp_path / "snapshot.db")
    assert [p.name for p in tmp_path.iterdir() if "snapshot-" in p.name] == []   # removed
    plain = sqlite3.connect(tmp_path / "plain.db")
    assert plain.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'trials'").fetchone() == (0,)
    plain.close()
    trials = optuna.load_study(study_name="s/a", storage=f"sqlite:///{tmp_path / 'snapshot.db'}").trials
    assert [t.params for t in trials] == [t.params for t in study.trials]


def read_until(process: subprocess.Popen, last: str, timeout: float) -> list[str]:
    """The lines `process` prints on stdout up to the one that starts with `last` (read by a
    thread: a pipe's buffered lines are not seen by select); on timeout, kills it and fails."""
    lines: list[str] = []

    def read():
        for line in process.stdout:
            lines.append(line)
    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not any(line.startswith(last) for line in lines):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {last!r} line: {lines}, stderr: {process.communicate()[1][-2000:]}")
        time.sleep(0.2)
    return lines


def get_json(url: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return json.loads(answer.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def rendered_page(url: str, profile: Path, wanted: list[str]) -> str:
    """The DOM that headless Chromium holds once the dashboard's page has rendered (its React app
    asks the API for the studies, then draws them)."""
    if shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is not installed: run `make browser`")
    for _ in range(3):   # a page still loading when the budget ran out is loaded again
        dom = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", url],
            capture_output=True, text=True, timeout=90).stdout
        if all(name in dom for name in wanted):
            break
    return dom


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_the_dashboard_shows_every_arm_and_stops_on_ctrl_c(tiny, tmp_path):
    names = [study_name(tiny.spec.name, arm) for arm in tiny.spec.arm_names]
    with sqlite3.connect(tiny.out / "optuna.db") as con:   # the study made it so
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    port, tb_port = free_port(), free_port()
    while tb_port == port:
        tb_port = free_port()
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "study", "dashboard", str(tiny.out), "--port", str(port),
         "--tensorboard", "--tensorboard-port", str(tb_port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = read_until(dashboard, "Ctrl+C stops both", timeout=120)
        assert lines[0] == f"optuna-dashboard: http://127.0.0.1:{port}/  (reads {tiny.out / 'optuna.db'}: " \
                           "one Optuna study per arm)\n"
        assert lines[1] == f"TensorBoard: http://127.0.0.1:{tb_port}/  (--logdir {tiny.out})\n"
        studies = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        assert sorted(s["study_name"] for s in studies) == sorted(names)
        assert sorted(names) == sorted(optuna.get_all_study_names(tiny.storage))
        dom = rendered_page(f"http://127.0.0.1:{port}/dashboard", tmp_path / "chromium", names)
        assert [name for name in names if name not in dom] == [], dom[-3000:]
        environment = get_json(f"http://127.0.0.1:{tb_port}/data/environment", timeout=60)
        assert environment["data_location"] == str(tiny.out)
        dashboard.send_signal(signal.SIGINT)
        started = time.monotonic()
        dashboard.wait(timeout=15)
        seconds = time.monotonic() - started
    finally:
        if dashboard.poll() is None:   # a failed check: SIGTERM stops TensorBoard too
            dashboard.terminate()
            try:
                dashboard.wait(timeout=15)
            except subprocess.TimeoutExpired:
                dashboard.kill()
                dashboard.wait()
    stderr = dashboard.stderr.read()
    assert dashboard.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.splitlines()[-1] == "interrupted by SIGINT: the dashboard and TensorBoard stopped"
    assert seconds < 10 and port_is_free(port) and port_is_free(tb_port)


@pytest.fixture
def study_folder(tmp_path):
    """A folder with a spec.yaml and an Optuna database of one arm."""
    (tmp_path / "spec.yaml").write_text("name: s\n")
    optuna.create_study(study_name="s/a", storage=optuna_storage(f"sqlite:///{tmp_path / 'optuna.db'}"))
    return tmp_path


BAD_INPUT = {   # case: (arguments, the line); {tmp}: an empty folder, {study}: study_folder
    "not a study": (["{tmp}/nothing"], "error: {tmp}/nothing is not a study folder (no spec.yaml)"),
    "no optuna.db": (["{tmp}/bare"], "error: {tmp}/bare has no optuna.db yet: the search phase creates "
                                     "it when it starts; run the command again then"),
    "port 0": (["{study}", "--port", "0"], "error: --port '0': not a port; allowed: an integer from 1 to 65535"),
    "port 65536": (["{study}", "--port", "65536"],
                   "error: --port '65536': not a port; allowed: an integer from 1 to 65535"),
    "port x": (["{study}", "--tensorboard", "--tensorboard-port", "x"],
               "error: --tensorboard-port 'x': not a port; allowed: an integer from 1 to 65535"),
    "same ports": (["{study}", "--port", "6006", "--tensorboard"],
                   "error: --port and --tensorboard-port are both 6006; give them different ports"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_before_anything_starts(case, study_folder, tmp_path_factory, capsys):
    args, expected = BAD_INPUT[case]
    tmp = tmp_path_factory.mktemp("empty")
    (tmp / "bare").mkdir()
    (tmp / "bare" / "spec.yaml").write_text("name: s\n")   # a study that has not searched yet
    args = [a.format(tmp=tmp, study=study_folder) for a in args]
    assert main(["dashboard", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == expected.format(tmp=tmp, study=study_folder) + "\n"


def test_a_taken_port_is_one_line(study_folder, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", str(study_folder), "--port", str(port)]) == 2
        assert main(["dashboard", str(study_folder), "--tensorboard", "--tensorboard-port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (
        f"error: port {port} on 127.0.0.1 is taken (another program listens there); choose another with --port\n"
        f"error: port {port} on 127.0.0.1 is taken (another program listens there); choose another with "
        "--tensorboard-port\n")
