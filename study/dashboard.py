"""`archstudy dashboard DIR`: optuna-dashboard on a study's optuna.db, while the study runs or
after it, on 127.0.0.1 only; with --tensorboard, TensorBoard on the study folder too.

    archstudy dashboard ~/archstudy-results/quick                  # http://127.0.0.1:8080/
    archstudy dashboard ~/archstudy-results/quick --port 8090 --tensorboard --tensorboard-port 6007
    archstudy dashboard s3://BUCKET/PREFIX/quick                   # the local mirror's optuna.db

optuna.db holds one Optuna study per arm, named `<study>/<arm>` (study/searcher.py). Reading it
never blocks the study (study/optuna_storage.py). For a study in a bucket the dashboard reads the
local mirror's optuna.db (studyfiles/storage.py): the running driver's own when it runs on this
machine; when this machine has none, a copy of the bucket's, downloaded once at the start.

Everything is checked before anything starts: a bad port, a folder that is not a study folder or
has no optuna.db yet, a port that is taken are one line on stderr and exit code 2. Ctrl+C (SIGINT)
or SIGTERM stops the dashboard and TensorBoard, with one line and exit code 130 or 143.

    python -m pytest tests/test_dashboard.py
"""
from __future__ import annotations

import ctypes
import errno
import importlib.util
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from studyfiles.contract import OPTUNA_DB, SPEC_FILE, STATE_FILE
from studyfiles.errors import StudyError
from studyfiles.files import first_line
from studyfiles.storage import Store, is_uri

from . import interrupt

HOST = "127.0.0.1"   # never another interface: optuna-dashboard can edit and delete studies


def add_arguments(p):
    p.add_argument("dir", metavar="DIR", help="a study folder (a path, s3:// or gs://)")
    p.add_argument("--port", default="8080", help="optuna-dashboard's port on 127.0.0.1 (default: 8080)")
    p.add_argument("--tensorboard", action="store_true", help="also start TensorBoard on the study folder")
    p.add_argument("--tensorboard-port", default="6006", help="TensorBoard's port (default: 6006)")
    return p


def port_number(value: str, option: str) -> int:
    """`value` as a TCP port, or a one-line StudyError naming the option."""
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise StudyError(f"{option} {value!r}: not a port; allowed: an integer from 1 to 65535")
    return port


def study_db(location: str) -> tuple[Store, Path]:
    """The study folder at `location` and the optuna.db this machine reads; a one-line StudyError
    when it is not a study folder or holds no optuna.db yet. For a bucket, the mirror gets what
    it lacks of spec.yaml, study.json and optuna.db from the bucket; what it holds is left as it is
    (it may be a running driver's)."""
    store = Store(location if is_uri(location) else Path(location).expanduser().resolve())
    if store.remote:
        store.download(*[name for name in (SPEC_FILE, STATE_FILE, OPTUNA_DB) if not (store.local / name).exists()])
    where = f"{store} (local mirror {store.local})" if store.remote else str(store)
    if not (store.local / SPEC_FILE).is_file():
        raise StudyError(f"{where} is not a study folder (no {SPEC_FILE})")
    if not (store.local / OPTUNA_DB).is_file():
        raise StudyError(f"{where} has no {OPTUNA_DB} yet: the search phase creates it when it "
                         "starts; run the command again then")
    return store, store.local / OPTUNA_DB


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):   # no line per request
        pass


class Server(ThreadingMixIn, WSGIServer):
    """A threaded WSGI server (the dashboard's page asks for several things at once) that says
    nothing of a browser closing a connection early, and watches the TensorBoard beside it."""
    daemon_threads = True   # a request still running does not hold up the stop
    watched = None          # the TensorBoard process, if any

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def service_actions(self):   # serve_forever calls this about every poll_interval
        if self.watched and self.watched.process.poll() is not None:
            print(f"TensorBoard stopped (exit code {self.watched.process.returncode}): "
                  f"{self.watched.last_line()}", file=sys.stderr, flush=True)
            self.watched = None


def dashboard_server(db: Path, port: int) -> Server:
    """optuna-dashboard's WSGI app on `db`, bound to 127.0.0.1:`port` (not serving yet)."""
    import optuna_dashboard

    from .optuna_storage import reader_storage
    try:
        storage = reader_storage(f"sqlite:///{db}")
    except Exception as e:   # sqlalchemy's and optuna's errors on a file that is not Optuna's
        raise StudyError(f"{db} cannot be read as an Optuna database ({type(e).__name__}: "
                         f"{first_line(e)})") from None
    app = optuna_dashboard.wsgi(storage)
    try:
        server = Server((HOST, port), QuietHandler)
    except OSError as e:
        raise StudyError(port_problem(port, "--port", e)) from None
    server.set_app(app)
    return server


def port_problem(port: int, option: str, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"port {port} on {HOST} is taken (another program listens there); choose another with {option}"
    return f"port {port} on {HOST} cannot be used ({error.strerror or error}); choose another with {option}"


def check_free(port: int, option: str) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as TensorBoard binds
        try:
            probe.bind((HOST, port))
        except OSError as e:
            raise StudyError(port_problem(port, option, e)) from None


def tensorboard_logdir(store: Store) -> str:
    """What TensorBoard reads: the study folder, or for a bucket its URI without pyarrow's options
    (TensorBoard reads s3:// through boto3, with the AWS environment, and other URIs through
    fsspec, whose gs:// is gcsfs)."""
    if store.remote and store.remote.startswith("gs://") and importlib.util.find_spec("gcsfs") is None:
        raise StudyError("--tensorboard: TensorBoard reads a gs:// study only with gcsfs installed; "
                         "or copy the study's folders here and run tensorboard on them")
    return store.remote.partition("?")[0] if store.remote else str(store.local)


def end_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when this process ends, even by SIGKILL
    (prctl PR_SET_PDEATHSIG); elsewhere nothing."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class TensorBoard:
    """`tensorboard --logdir <logdir> --host 127.0.0.1 --port <port>` in its own session (the
    terminal's Ctrl+C reaches this process only, which stops it), ended with this process however
    it ends, its output in a temporary file."""

    def __init__(self, logdir: str, port: int):
        self.logdir = logdir
        fast = ["--load_fast=false"] if is_uri(logdir) else []   # its fast loader reads no bucket
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", HOST,
             "--port", str(port), *fast], stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=end_with_parent)

    def last_line(self) -> str:
        self.log.seek(0)
        lines = [line for line in self.log.read().decode(errors="replace").splitlines() if line.strip()]
        return first_line(lines[-1]) if lines else "no output"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@contextmanager
def signals_ignored():
    main = threading.current_thread() is threading.main_thread()   # only it may set handlers
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in interrupt.SIGNALS} if main else {}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def run(args) -> int:
    """The `archstudy dashboard` command: serve until a stop signal."""
    port = port_number(args.port, "--port")
    tb_port = port_number(args.tensorboard_port, "--tensorboard-port") if args.tensorboard else None
    if port == tb_port:
        raise StudyError(f"--port and --tensorboard-port are both {port}; give them different ports")
    store, db = study_db(args.dir)
    if tb_port:
        logdir = tensorboard_logdir(store)
        check_free(tb_port, "--tensorboard-port")
    server = dashboard_server(db, port)
    tensorboard, stop = None, None
    try:
        if tb_port:
            tensorboard = server.watched = TensorBoard(logdir, tb_port)
        with interrupt.catching():
            print(f"optuna-dashboard: http://{HOST}:{port}/  (reads {db}: one Optuna study per arm)",
                  flush=True)
            if tensorboard:
                print(f"TensorBoard: http://{HOST}:{tb_port}/  (--logdir {shlex.quote(tensorboard.logdir)})",
                      flush=True)
            print(f"Ctrl+C stops {'both' if tensorboard else 'it'}", flush=True)
            server.serve_forever(poll_interval=0.5)
    except interrupt.Interrupted as e:
        stop = e
    finally:
        with signals_ignored():   # a second Ctrl+C does not cut the stop short (10 s at most)
            server.server_close()
            if tensorboard:
                tensorboard.stop()
    if stop is None:   # serve_forever ends only by a signal
        return 0
    print(f"interrupted by {stop.name}: the dashboard{' and TensorBoard' * bool(tensorboard)} stopped",
          file=sys.stderr, flush=True)
    return stop.exit_code
