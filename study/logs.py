"""What a study's driver shows on the terminal, and what goes to its log file instead.

Ray Tune logs a full traceback on the terminal for every trial failure (also in its setup, also for
each retry), then "Trials did not complete" and "Failed to fetch metrics" for the same trials. Here
every record of Ray's loggers still goes to `<study>/driver.log`, with its traceback, and each
trial's own traceback is in its folder's error.txt; the terminal gets one line per failed trial
(`TrialErrorLines`) instead of the tracebacks and of the messages archstudy words itself (the
interruption and the resume command: study/interrupt.py, study/cli.py).
"""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path

from ray import tune

from studyfiles.storage import Store, join

from . import interrupt
from .tables import trial_error

LOG_FILE = "driver.log"
TUNE_LOGGERS = ("ray.tune", "ray.air", "ray.train")
# Tune's messages about failed trials and interruptions, which archstudy words itself
REPLACED = ("Trial task failed", "Trials did not complete", "Failed to fetch metrics",
            "Stop signal received", "Experiment has been interrupted", "Wrote the latest version")


class NotOnTerminal(logging.Filter):
    """Keeps the REPLACED messages of Tune's loggers off a terminal handler, and their other
    tracebacks: such a record is shown as its first line only (the file handler, which comes after,
    still gets it whole, so the record itself is left as it is)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(TUNE_LOGGERS):
            return True
        message = record.getMessage()
        if message.startswith(REPLACED):
            return False
        if record.exc_info or record.stack_info:
            first = (message.strip().splitlines() or [""])[0][:300]
            print(f"{record.levelname} {record.name}: {first} (traceback: {LOG_FILE})",
                  file=sys.stderr, flush=True)
            return False
        return True


def terminal_handlers() -> list[logging.Handler]:
    return [h for name in ("ray", "") for h in logging.getLogger(name).handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


@contextmanager
def to_log_file(out: Path):
    """While a study runs: Ray's log records go to <out>/driver.log too, tracebacks only there."""
    handler = logging.FileHandler(out / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    quiet = NotOnTerminal()
    ray_logger = logging.getLogger("ray")
    terminals = terminal_handlers()
    ray_logger.addHandler(handler)
    for h in terminals:
        h.addFilter(quiet)
    try:
        yield
    finally:
        ray_logger.removeHandler(handler)
        handler.close()
        for h in terminals:
            h.removeFilter(quiet)


class TrialErrorLines(tune.Callback):
    """One line on stderr per trial that failed for good (Tune gave up retrying it): its folder,
    the first line of the cause, and where the traceback is. Failures caused by a stop signal (Ray's
    processes may get it too) are the interruption's, reported once by the CLI."""

    def __init__(self, phase: str, store: Store):
        self.phase, self.store = phase, store

    def on_trial_error(self, iteration, trials, trial, **info):
        if interrupt.requested():
            return
        folder = Path(trial.local_path)   # where Tune has just written error.txt (the driver's copy)
        cause = trial_error(folder) or f"see {LOG_FILE}"
        where = (join(self.store.remote, self.phase, folder.name, "error.txt") if self.store.remote
                 else self.store.local / self.phase / folder.name / "error.txt")
        print(f"{self.phase}: trial {folder.name} failed: {cause} (traceback: {where})",
              file=sys.stderr, flush=True)
