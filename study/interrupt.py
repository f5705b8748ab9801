"""Ctrl+C (SIGINT) and a scheduler's time limit (SIGTERM) during `archstudy run` or `resume`.

    with interrupt.catching():          # the CLI and Study.run
        with interrupt.fitting():       # around each Tuner.fit()
            tuner.fit()                 # raises Interrupted after Tune has saved its state

Without this, Ray Tune takes a SIGINT for "stop now": it saves the experiment's state and returns
from fit() as if the phase had ended, so the study went on to confirm (or analyse) a partial phase;
and a SIGTERM hit Ray's own handler in the driver, which aborts the process without saving. Here
both signals ask Tune to stop the same way (the handler Tune installs for SIGUSR1 during fit), and
fit() is then followed by `Interrupted`, never by the next phase: the phase stays unfinished in
study.json and `archstudy resume` continues it. Outside fit() a signal raises Interrupted where the
program is.

The process stops at once instead (exit code 128 + the signal, the last line saying how to resume;
Tune's last periodic save stands, as after a kill, which resume copes with) on a second signal, when
Tune has not stopped within STOP_GRACE_S, and when the signal reached Ray's own processes too (a
SIGTERM to the whole process group, as `timeout` and Slurm send): Tune then waits on a dead Ray
for a minute, after which Ray's core worker ends the driver with exit code 1.

A Python signal handler runs only when the main thread returns to the interpreter, and Ray's
synchronous calls to its GCS block in C for up to a minute once the GCS is gone. So the interpreter
also writes each signal's number to a pipe (signal.set_wakeup_fd) the moment it arrives, and a
thread reading it watches the stop (Ray lost, the grace period) without waiting for the main thread.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_GRACE_S = 120   # Tune stops its trials and saves its state within seconds
RAY_GONE_S = 1.0     # Ray's processes end within this after a SIGTERM to them
resume_hint = ""     # the last line's advice when the process stops at once (set by the CLI)
at_stop_now: list = []   # called before the process stops at once (the progress table, study/progress.py)


class Interrupted(BaseException):
    """The study was stopped by a signal. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way takes it for an ordinary failure."""

    def __init__(self, signum: int):
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum   # what a shell reports for a process the signal ended: 130, 143


class _State:
    depth = 0            # nested catching() blocks
    signum = None        # the first signal received in the outermost block
    tuning = False       # inside fitting()
    saved: dict = {}     # the handlers before the outermost block
    wakeup = -1          # the wakeup fd before ours (-1: none)
    watching = threading.Lock()   # held once a thread watches the stop
    stopping = threading.Lock()   # held by the one thread that ends the process


def requested() -> bool:
    """Whether a stop signal has been received (trials that fail from now on failed because of it)."""
    return _State.signum is not None


def _handle(signum, frame) -> None:
    first = _State.signum is None
    if first:
        _State.signum = signum
    if _State.tuning:
        stop = signal.getsignal(signal.SIGUSR1)
        if first and callable(stop):   # Tune's: ends the run loop, then saves the experiment's state
            # Not once Ray is gone: Tune would start copying the trials' logs to the study folder,
            # and be cut short in the middle of a file by the stop below (a log would lose lines).
            if signum == signal.SIGTERM and _ray_lost(within=RAY_GONE_S):
                _stop_now("the signal stopped Ray's own processes too", signum)
            stop(signum, frame)
            _watch_the_stop(signum)
            return
        if not first:
            _stop_now("a second signal", _State.signum)
    raise Interrupted(_State.signum)


def _listen(read_fd: int) -> None:
    """The wakeup pipe's reader: a stop signal during fit() starts the watch at once, even while
    the main thread is blocked in C (its handler then runs only when the call returns)."""
    while True:
        received = os.read(read_fd, 64)
        if not received:   # catching() has ended and closed the write end
            os.close(read_fd)
            return
        for signum in received:
            if signum in SIGNALS and _State.tuning:
                _watch_the_stop(signum)


def _ray_lost(within: float = 0.0) -> bool:
    """Whether a process of the local Ray instance this driver started has died (or does so
    `within` seconds: a SIGTERM to the process group reaches Ray's processes at the same time).
    Ray has no public API for this (ray.nodes() and the like ask the GCS, which may be the process
    that died, and wait on it), so this asks the driver's private Node object, which started them."""
    deadline = time.monotonic() + within
    while True:
        try:
            from ray._private import worker
            node = worker._global_node
            if node is not None and node.dead_processes():
                return True
        except Exception:   # Ray's internals changed, or Ray was shut down meanwhile
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _watch_the_stop(signum: int) -> None:
    """Start, once, a thread that ends the process if Ray's processes die (a SIGTERM to the group
    reaches them within RAY_GONE_S) or Tune has not stopped within STOP_GRACE_S."""
    if _State.watching.acquire(blocking=False):
        threading.Thread(target=_watch, args=(signum,), daemon=True).start()


def _watch(signum: int) -> None:
    reason = "the signal stopped Ray's own processes too"
    if signum == signal.SIGTERM and _ray_lost(within=RAY_GONE_S):
        _stop_now(reason, signum)
    deadline = time.monotonic() + STOP_GRACE_S
    while _State.tuning:
        if _ray_lost():
            _stop_now(reason, signum)
        if time.monotonic() > deadline:
            _stop_now(f"Ray Tune did not stop within {STOP_GRACE_S} s", signum)
        time.sleep(0.5)


def _finish_copies(timeout: float = 10.0) -> None:
    """Wait for Ray Tune's background copies of the trials' logs and of its state to the study
    folder (threads of ray.train's _BackgroundProcess): one cut short leaves a file half written,
    and `resume` would continue that trial's log from the half. Scanned until none is running,
    since Tune may start another meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        copies = [t for t in threading.enumerate() if t is not threading.current_thread()
                  and "_BackgroundProcess" in getattr(getattr(t, "_target", None), "__qualname__", "")]
        if not copies:
            return
        for t in copies:
            t.join(max(0.0, deadline - time.monotonic()))
        time.sleep(0.2)


def _stop_now(reason: str, signum: int) -> None:
    if not _State.stopping.acquire(blocking=False):
        while True:   # another thread is ending the process
            time.sleep(1)
    _finish_copies()
    for stop in list(at_stop_now):   # e.g. the live table gives the terminal back its cursor
        try:
            stop()
        except Exception:   # the process stops all the same
            pass
    name = signal.Signals(signum).name
    print(f"\ninterrupted by {name}: {reason}, so the study stops at once, at Ray Tune's last saved "
          f"state (as after a kill); the phase is unfinished" + (f"; {resume_hint}" if resume_hint else ""),
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(128 + signum)


@contextmanager
def catching():
    """SIGINT and SIGTERM raise Interrupted (or stop Tune, inside fitting()). Re-entrant: an inner
    block installs the handlers again, since ray.init puts its own SIGTERM handler in between."""
    if threading.current_thread() is not threading.main_thread():
        yield   # signal handlers can only be set from the main thread
        return
    outer = _State.depth == 0
    if outer:
        _State.saved = {s: signal.getsignal(s) for s in SIGNALS}
        _State.signum = None
        tune_handler = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)   # the interpreter's C handler must never block on it
        _State.wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        _State.watching, _State.stopping = threading.Lock(), threading.Lock()
        threading.Thread(target=_listen, args=(read_fd,), daemon=True, name="signal-listener").start()
    # Tune would otherwise install its own SIGINT handler for the duration of fit()
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    for s in SIGNALS:
        signal.signal(s, _handle)
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if outer:
            for s, handler in _State.saved.items():   # None: a handler set outside Python (Ray's)
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)
            os.close(signal.set_wakeup_fd(_State.wakeup))   # ours: the listener reads EOF and ends
            if tune_handler is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = tune_handler


def reinstall() -> None:
    """Within catching(), after ray.init: it replaces SIGTERM's handler with its own, which aborts."""
    if _State.depth and threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _handle)


@contextmanager
def fitting():
    """Around Tuner.fit(): a signal asks Tune to stop and save its state; Interrupted follows once
    fit() has returned (or has failed: Ray's processes may have had the signal too)."""
    if _State.depth == 0:   # not catching: Tune's own behaviour
        yield
        return
    # Tune sets its SIGUSR1 handler when its run starts and never removes it: one left from an
    # earlier fit() would stop nothing; until Tune installs the new one, a signal raises at once.
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    _State.tuning = True
    try:
        yield
    except Exception as e:
        if _State.signum is not None:
            raise Interrupted(_State.signum) from e
        raise
    finally:
        _State.tuning = False
    if _State.signum is not None:
        raise Interrupted(_State.signum)
