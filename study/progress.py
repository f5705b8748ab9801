"""The progress of a running phase, for `archstudy run` and `resume`, in place of Ray's large tables.

On a terminal, one table that rich redraws in place: a row per arm with its trials done, running
and pending, the epochs used against the budget and its score so far (search: the best final metric
of the trials that trained every epoch; confirmation: the mean final metric of the finished seeds,
what the analysis ranks on); the line above it has the
phase, the trials finished, the elapsed time and an ETA. When the phase ends the table stays as
its summary.

Elsewhere (a log file, CI, Ray Jobs), one line at most every LINE_EVERY seconds:

    [search] 11/30 trials finished (running 2), elapsed 15m19s, ETA 26m27s, best final val_acc 0.9780 (resnet44)

and at the end of the phase a last line, followed by one line per arm:

    [search] 30/30 trials finished, elapsed 41m47s, best final val_acc 0.9810 (resnet44)
      resnet20  done 10/10, epochs 212/300, best final val_acc 0.9750
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass

from ray import tune
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import interrupt
from .logs import terminal_handlers

REFRESH_EVERY = 1.0   # seconds between redraws of the table (Tune's step ends come far more often)
LINE_EVERY = 30.0     # seconds between progress lines when stdout is not a terminal


def fmt_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@dataclass
class ArmCount:
    """One arm's trials so far: `budget` trials and `epoch_budget` epochs in the phase; `best` is
    its score (ProgressCallback.label: the search's best final metric, the confirmation's mean;
    None before any trial has trained every epoch)."""
    arm: str
    done: int
    running: int
    pending: int
    budget: int
    epochs: int
    epoch_budget: int
    best: float | None


class LiveTable:
    """A rich Live display on `console`, redrawn only when `show` is called (no thread of its own).
    While it is shown, prints to stdout and stderr, and Ray's log lines, come out above the table;
    a study stopped at once (interrupt.at_stop_now) stops it first, so the terminal gets its cursor
    back."""

    def __init__(self, console: Console, renderable):
        streams = sys.stdout, sys.stderr
        self.live = Live(renderable, console=console, auto_refresh=False)
        self.live.start(refresh=True)
        # rich swaps sys.stdout and sys.stderr for proxies; a logging handler (Ray's, set up by
        # ray.init) holds the stream of its time, and its lines would cut through the table
        proxies = dict(zip(map(id, streams), (sys.stdout, sys.stderr)))
        self.handlers = [(h, h.stream) for h in terminal_handlers() if id(h.stream) in proxies]
        for h, stream in self.handlers:
            h.setStream(proxies[id(stream)])
        interrupt.at_stop_now.append(self.stop)

    def show(self, renderable) -> None:
        self.live.update(renderable, refresh=True)

    def stop(self) -> None:
        if self.stop in interrupt.at_stop_now:
            interrupt.at_stop_now.remove(self.stop)
        for h, stream in self.handlers:
            h.setStream(stream)
        self.handlers = []
        self.live.stop()


class ProgressCallback(tune.Callback):
    """Shows a phase's progress from Tune's hooks (see the module's docstring).

    console: where to show it; None: one on stdout, made when first needed (rich decides whether
    that is an interactive terminal: TTY_INTERACTIVE=0 or 1 overrides it). clock: seconds since
    the epoch, time.time by default (tests give their own)."""

    def __init__(self, phase: str, spec, console: Console | None = None, clock=time.time):
        self.phase, self.spec, self.console, self.clock = phase, spec, console, clock
        self.trials_per_arm = (spec.search.trials_per_arm if phase == "search" else len(spec.seeds)) \
            * spec.search.replicates   # each search replicate has the full budget and its winner
        self.start = clock()
        self.last_shown = -math.inf
        self.display: LiveTable | None = None

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment (tuner.pkl) and restores them on resume:
        # the console (a stream, locks) and the live display belong to this process's terminal
        return {**self.__dict__, "console": None, "display": None}

    def __setstate__(self, state: dict) -> None:
        # a tuner.pkl written by the earlier line-printing version of this class lacks these
        defaults = {"console": None, "clock": time.time, "last_shown": -math.inf, "display": None}
        self.__dict__.update({**defaults, **state})

    # ---- the numbers ------------------------------------------------------------------------------
    def arm_counts(self, trials) -> list[ArmCount]:
        better = max if self.spec.mode == "max" else min
        counts = []
        for arm in self.spec.arm_names:
            mine = [t for t in trials if t.config.get("arm") == arm]
            done = sum(t.status in ("TERMINATED", "ERROR") for t in mine)
            running = sum(t.status == "RUNNING" for t in mine)
            epochs = sum((t.last_result or {}).get("training_iteration", 0) for t in mine)
            scores = [t.last_result[self.spec.metric] for t in mine if self.finished_budget(t)]
            summary = (better if self.phase == "search" else statistics.fmean)(scores) if scores else None
            counts.append(ArmCount(arm, done, running, max(0, self.trials_per_arm - done - running),
                                   self.trials_per_arm, epochs, self.trials_per_arm * self.spec.epochs,
                                   summary))
        return counts

    def finished_budget(self, trial) -> bool:
        """A trial that ended having trained every epoch, with a finite metric: what the analysis
        scores (a trial ASHA stopped, still running or diverged is not)."""
        result = trial.last_result or {}
        value = result.get(self.spec.metric)
        return (trial.status == "TERMINATED" and result.get("training_iteration", 0) >= self.spec.epochs
                and isinstance(value, (int, float)) and math.isfinite(value))

    @property
    def label(self) -> str:
        """What `best` is: the best final metric of the search's full-budget trials, or the mean
        final metric of the confirmation's finished seeds (the analysis ranks on that mean)."""
        return f"{'best' if self.phase == 'search' else 'mean'} final {self.spec.metric}"

    def headline(self, counts: list[ArmCount], final: bool = False, best: bool = True) -> str:
        """`[phase] finished/total trials finished (running n), elapsed, ETA, best score (arm)`;
        at the end of the phase without the running trials and the ETA."""
        elapsed = self.clock() - self.start
        total = sum(c.budget for c in counts)
        finished = sum(c.done for c in counts)
        line = f"[{self.phase}] {finished}/{total} trials finished"
        if not final:
            line += f" (running {sum(c.running for c in counts)})"
        line += f", elapsed {fmt_seconds(elapsed)}"
        if not final:
            eta = fmt_seconds(elapsed / finished * (total - finished)) if finished else "?"
            line += f", ETA {eta}"
        scored = [c for c in counts if c.best is not None]
        if best and scored:
            top = (max if self.spec.mode == "max" else min)(scored, key=lambda c: c.best)
            line += f", {'' if self.phase == 'search' else 'top '}{self.label} {top.best:.4f} ({top.arm})"
        return line

    def arm_lines(self, counts: list[ArmCount]) -> list[str]:
        """The end of phase summary, one line per arm."""
        width = max(len(c.arm) for c in counts)
        return [f"  {c.arm:<{width}}  done {c.done}/{c.budget}, epochs {c.epochs}/{c.epoch_budget}, "
                f"{self.label} {'-' if c.best is None else f'{c.best:.4f}'}" for c in counts]

    def live_view(self, counts: list[ArmCount], final: bool = False) -> Group:
        """The headline (without the best arm: the table has a column for it) above the table."""
        table = Table()
        for name in ("arm", "done", "running", "pending", "epochs", self.label):
            table.add_column(name, justify="left" if name == "arm" else "right")
        for c in counts:
            table.add_row(Text(c.arm), f"{c.done}/{c.budget}", str(c.running), str(c.pending),
                          f"{c.epochs}/{c.epoch_budget}", "-" if c.best is None else f"{c.best:.4f}")
        # Text, not str: rich would take "[search]" (and an arm's name) for markup
        return Group(Text(self.headline(counts, final, best=False)), table)

    # ---- showing them ------------------------------------------------------------------------------
    def show(self, trials, final: bool = False) -> None:
        """Redraw the table or print a line, unless the last one is too recent (never at the end)."""
        console = self.console = self.console or Console()
        now = self.clock()
        if not final and now - self.last_shown < (REFRESH_EVERY if console.is_interactive else LINE_EVERY):
            return
        self.last_shown = now
        counts = self.arm_counts(trials)
        if console.is_interactive:
            if self.display is None:
                self.display = LiveTable(console, self.live_view(counts, final))
            else:
                self.display.show(self.live_view(counts, final))
        else:
            lines = [self.headline(counts, final), *(self.arm_lines(counts) if final else [])]
            print("\n".join(lines), file=console.file, flush=True)

    def stop(self) -> None:
        """Take the table off the live display (it stays on the screen as it was last drawn)."""
        if self.display is not None:
            self.display.stop()
            self.display = None

    def on_step_end(self, iteration, trials, **info):
        self.show(trials)

    def on_experiment_end(self, trials, **info):
        # interrupted: Tune has just stopped the running trials, which are not "done"; the CLI's
        # line on how to resume follows the table as it was
        if not interrupt.requested():
            self.show(trials, final=True)
        self.stop()
