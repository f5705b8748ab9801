"""A compact progress view for `archstudy run`, in place of Ray's large tables: every few seconds,
one line per arm with trials done/running/pending, epochs used against the budget, best so far,
elapsed time and an ETA."""
from __future__ import annotations

import sys
import time

from ray import tune

from . import interrupt

PRINT_EVERY = 15.0   # seconds between progress blocks


def fmt_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class ProgressCallback(tune.Callback):
    def __init__(self, phase: str, spec, stream=None):
        # None: sys.stdout when printing. Tune pickles its callbacks with the experiment (tuner.pkl),
        # and a stream object captured here is not picklable unless it still is sys.stdout then.
        self.phase, self.spec, self.stream = phase, spec, stream
        self.trials_per_arm = (spec.search.trials_per_arm if phase == "search" else len(spec.seeds))
        self.start = time.time()
        self.last_print = 0.0

    def arm_lines(self, trials) -> list[str]:
        lines, metric, better = [], self.spec.metric, max if self.spec.mode == "max" else min
        for arm in self.spec.arm_names:
            mine = [t for t in trials if t.config.get("arm") == arm]
            done = sum(t.status in ("TERMINATED", "ERROR") for t in mine)
            running = sum(t.status == "RUNNING" for t in mine)
            epochs = sum((t.last_result or {}).get("training_iteration", 0) for t in mine)
            scores = [t.last_result[metric] for t in mine if metric in (t.last_result or {})]
            best = f"{better(scores):.4f}" if scores else "-"
            pending = self.trials_per_arm - done - running
            lines.append(f"  {arm:<16} done {done}/{self.trials_per_arm}  running {running}  "
                         f"pending {max(0, pending)}  epochs {epochs}/{self.trials_per_arm * self.spec.epochs}"
                         f"  best {metric} {best}")
        return lines

    def report(self, trials, final: bool = False) -> None:
        elapsed = time.time() - self.start
        total = self.trials_per_arm * len(self.spec.arm_names)
        finished = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        eta = elapsed / finished * (total - finished) if finished and not final else 0.0
        head = (f"[{self.phase}] {finished}/{total} trials finished, elapsed {fmt_seconds(elapsed)}"
                + ("" if final else f", ETA {fmt_seconds(eta) if finished else '?'}"))
        print("\n".join([head, *self.arm_lines(trials)]), file=self.stream or sys.stdout, flush=True)
        self.last_print = time.time()

    def on_step_end(self, iteration, trials, **info):
        if time.time() - self.last_print >= PRINT_EVERY:
            self.report(trials)

    def on_experiment_end(self, trials, **info):
        if not interrupt.requested():   # Tune has just stopped the running trials: not "done"
            self.report(trials, final=True)
