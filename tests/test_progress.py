"""Tests of the progress view (study/progress.py), driven through Tune's callback hooks with Ray
Tune's own Trial objects (stubs: no Ray is started) and rich consoles writing to memory; time is
an injected clock, never slept.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_progress.py -q
"""
from __future__ import annotations

import io
import logging
import re
import signal
import sys

import pytest
from ray import cloudpickle
from ray.tune.experiment import Trial
from rich.console import Console

from study import interrupt
from study.progress import LINE_EVERY, ProgressCallback
from study.spec import spec_from_dict

SPEC = spec_from_dict({"name": "progress", "arms": [{"model": "mlp"}, {"model": "resnet20"}],
                       "epochs": 4, "seeds": [0, 1], "search": {"trials_per_arm": 3}})
SHOW_CURSOR = "\x1b[?25h"


class Clock:
    """Seconds that move only when a test says so (a class, so that a callback holding it pickles)."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def trial(arm: str, status: str, epochs: int = 0, val_acc: float | None = None) -> Trial:
    t = Trial("Trial", config={"arm": arm}, stub=True)
    t.set_status(status)
    if epochs:
        t.update_last_result({"training_iteration": epochs, "val_acc": val_acc})
    return t


def midway() -> list[Trial]:
    """mlp: one trial done after 4 epochs, one running at epoch 2; resnet20: one failed at epoch 1,
    one pending (not reported yet)."""
    return [trial("mlp", Trial.TERMINATED, 4, 0.91), trial("mlp", Trial.RUNNING, 2, 0.95),
            trial("resnet20", Trial.ERROR, 1, 0.30), trial("resnet20", Trial.PENDING)]


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, force_interactive=True, color_system=None,
                   width=120), out


def table_rows(text: str) -> dict[str, list[str]]:
    """The rows of the last table drawn: arm -> its other cells."""
    last = text.split("┏")[-1]
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in last.splitlines() if line.startswith("│")]
    return {row[0]: row[1:] for row in cells}


def headlines(text: str) -> list[str]:
    return re.findall(r"\[(?:search|confirm)\][^\n\x1b]*?(?=\s*\n)", text)


# ---- on a terminal: one table, redrawn in place ---------------------------------------------------
def test_terminal_table_has_every_arm_and_its_numbers():
    console, out = terminal()
    clock = Clock()
    progress = ProgressCallback("search", SPEC, console, clock)
    progress.on_step_end(iteration=1, trials=midway())
    try:
        # columns: done, running, pending, epochs used/budget, best final val_acc: of the trials
        # that trained every epoch (not the running one's 0.95 at epoch 2, nor the failed one's)
        assert table_rows(out.getvalue()) == {"mlp": ["1/3", "1", "1", "6/12", "0.9100"],
                                              "resnet20": ["1/3", "0", "2", "1/12", "-"]}
        assert headlines(out.getvalue()) == [
            "[search] 2/6 trials finished (running 1), elapsed 0m00s, ETA 0m00s"]
        clock.now += 600   # 2 of 6 trials in 10 minutes: 4 more take 20 minutes
        progress.on_step_end(iteration=2, trials=midway())
        assert headlines(out.getvalue())[-1] == (
            "[search] 2/6 trials finished (running 1), elapsed 10m00s, ETA 20m00s")
    finally:
        progress.stop()


def test_terminal_table_is_redrawn_in_place_at_most_every_second():
    console, out = terminal()
    clock = Clock()
    progress = ProgressCallback("search", SPEC, console, clock)
    progress.on_step_end(iteration=1, trials=midway())
    first = out.getvalue()
    assert "\x1b[1A" not in first and first.count("┏") == 1
    clock.now += 0.5
    progress.on_step_end(iteration=2, trials=midway())
    assert out.getvalue() == first   # too soon: Tune's steps end many times a second
    clock.now += 0.5
    done = midway()
    done[1].set_status(Trial.TERMINATED)
    progress.on_step_end(iteration=3, trials=done)
    redraw = out.getvalue()[len(first):]
    # the cursor goes back up over every line of the table, which is then drawn again
    assert redraw.count("\x1b[1A") == len(first.strip().splitlines()) - 1
    assert table_rows(redraw)["mlp"] == ["2/3", "0", "1", "6/12", "0.9100"]   # ASHA stopped it at 2
    progress.stop()


def test_table_stays_with_final_counts_and_terminal_is_given_back_at_the_end():
    console, out = terminal()
    stdout, stderr = sys.stdout, sys.stderr
    progress = ProgressCallback("confirm", SPEC, console, Clock())
    progress.on_step_end(iteration=1, trials=midway())
    assert sys.stdout is not stdout   # rich's proxy: a print comes out above the table
    print("a line printed meanwhile")
    assert "a line printed meanwhile" in out.getvalue()
    trials = [trial(arm, Trial.TERMINATED, 4, 0.9) for arm in SPEC.arm_names for _ in SPEC.seeds]
    progress.on_experiment_end(trials=trials)
    assert sys.stdout is stdout and sys.stderr is stderr
    assert out.getvalue().endswith(SHOW_CURSOR)
    assert headlines(out.getvalue())[-1] == "[confirm] 4/4 trials finished, elapsed 0m00s"
    assert table_rows(out.getvalue()) == {arm: ["2/2", "0", "0", "8/8", "0.9000"] for arm in SPEC.arm_names}
    assert progress.display is None and interrupt.at_stop_now == []


@pytest.fixture
def signal_forgotten():
    yield
    with interrupt.catching():   # a new outermost block forgets the signal: requested() is False
        pass


def test_interrupted_phase_stops_the_table_as_it_was(signal_forgotten):
    console, out = terminal()
    progress = ProgressCallback("search", SPEC, console, Clock())
    progress.on_step_end(iteration=1, trials=midway())
    with interrupt.catching():
        with pytest.raises(interrupt.Interrupted):
            signal.raise_signal(signal.SIGINT)   # outside fit(): raised where the program is
        assert interrupt.requested()
        progress.on_experiment_end(trials=midway())
    assert out.getvalue().endswith(SHOW_CURSOR)   # the CLI's line on how to resume comes next
    assert "(running 1)" in headlines(out.getvalue())[-1]   # no "finished" table for a partial phase
    assert progress.display is None and interrupt.at_stop_now == []


def test_study_stopped_at_once_gives_the_terminal_back_first():
    console, out = terminal()
    stdout = sys.stdout
    progress = ProgressCallback("search", SPEC, console, Clock())
    progress.on_step_end(iteration=1, trials=midway())
    assert len(interrupt.at_stop_now) == 1
    for stop in list(interrupt.at_stop_now):   # what interrupt._stop_now calls before os._exit
        stop()
    assert out.getvalue().endswith(SHOW_CURSOR) and sys.stdout is stdout
    progress.on_experiment_end(trials=midway())   # not reached after os._exit, but harmless
    assert interrupt.at_stop_now == []


def test_log_lines_come_out_above_the_table():
    # a handler that holds sys.stderr as it was, as Ray's terminal handler does after ray.init
    handler = logging.StreamHandler(sys.stderr)
    ray_logger = logging.getLogger("ray")
    ray_logger.addHandler(handler)
    try:
        console, out = terminal()
        progress = ProgressCallback("search", SPEC, console, Clock())
        progress.on_step_end(iteration=1, trials=midway())
        ray_logger.warning("a warning from Ray")
        assert "a warning from Ray" in out.getvalue()
        progress.stop()
        assert handler.stream is sys.stderr
    finally:
        ray_logger.removeHandler(handler)


def test_callback_pickles_while_its_table_is_shown(capsys):
    console, out = terminal()
    clock = Clock()
    progress = ProgressCallback("search", SPEC, console, clock)
    progress.on_step_end(iteration=1, trials=midway())
    try:
        copy = cloudpickle.loads(cloudpickle.dumps(progress))   # as Tune pickles it (tuner.pkl)
    finally:
        progress.stop()
    assert copy.display is None and copy.console is None and copy.start == progress.start
    clock.now += LINE_EVERY
    copy.clock = clock
    copy.on_step_end(iteration=2, trials=midway())   # on stdout, here not a terminal: a line
    assert capsys.readouterr().out.splitlines() == [
        "[search] 2/6 trials finished (running 1), elapsed 0m30s, ETA 1m00s, best final val_acc 0.9100 (mlp)"]


def test_callback_from_an_older_tuner_pkl_still_works():
    progress = ProgressCallback("search", SPEC, Console(file=io.StringIO()), Clock())
    state = {k: v for k, v in progress.__dict__.items() if k not in ("console", "clock", "last_shown", "display")}
    old = ProgressCallback.__new__(ProgressCallback)
    old.__setstate__({**state, "stream": None, "last_print": 0.0})
    old.on_step_end(iteration=1, trials=midway())   # prints a line on stdout, no AttributeError
    assert old.last_shown > 0


# ---- elsewhere: one line at most every 30 s, the per-arm summary once at the end -----------------
def test_lines_at_most_every_30_s_and_summary_once():
    out = io.StringIO()
    clock = Clock()
    progress = ProgressCallback("search", SPEC, Console(file=out), clock)
    for t in (0, 1, 29, 30, 31, 59.9, 61, 80):
        clock.now = 1000 + t
        progress.on_step_end(iteration=1, trials=midway())
    lines = out.getvalue().splitlines()
    assert [line.split("elapsed ")[1].split(",")[0] for line in lines] == ["0m00s", "0m30s", "1m01s"]
    assert lines[2] == ("[search] 2/6 trials finished (running 1), elapsed 1m01s, ETA 2m02s, "
                        "best final val_acc 0.9100 (mlp)")
    clock.now = 1000 + 3725
    trials = [trial("mlp", Trial.TERMINATED, 4, 0.91), trial("mlp", Trial.TERMINATED, 1, 0.5),
              trial("mlp", Trial.TERMINATED, 2, 0.95), trial("resnet20", Trial.ERROR, 1, 0.30),
              trial("resnet20", Trial.TERMINATED, 4, 0.97), trial("resnet20", Trial.TERMINATED, 4, 0.96)]
    progress.on_experiment_end(trials=trials)
    assert out.getvalue().splitlines()[3:] == [
        "[search] 6/6 trials finished, elapsed 1h02m, best final val_acc 0.9700 (resnet20)",
        "  mlp       done 3/3, epochs 7/12, best final val_acc 0.9100",   # 0.95 was ASHA's at epoch 2
        "  resnet20  done 3/3, epochs 9/12, best final val_acc 0.9700"]


def test_no_summary_after_an_interrupted_phase(signal_forgotten):
    out = io.StringIO()
    progress = ProgressCallback("search", SPEC, Console(file=out), Clock())
    progress.on_step_end(iteration=1, trials=midway())
    with interrupt.catching():
        with pytest.raises(interrupt.Interrupted):
            signal.raise_signal(signal.SIGTERM)
        progress.on_experiment_end(trials=midway())
    assert len(out.getvalue().splitlines()) == 1


def test_min_mode_picks_the_lowest_and_arms_without_results_show_a_dash():
    spec = SPEC.model_copy(update={"metric": "val_loss", "mode": "min"})
    out = io.StringIO()
    progress = ProgressCallback("search", spec, Console(file=out), Clock())
    trials = [trial("mlp", Trial.TERMINATED, 4), trial("mlp", Trial.TERMINATED, 4)]
    for t, loss in zip(trials, (0.4, 0.2)):
        t.update_last_result({"training_iteration": 4, "val_loss": loss})
    progress.on_experiment_end(trials=trials)
    assert out.getvalue().splitlines() == [
        "[search] 2/6 trials finished, elapsed 0m00s, best final val_loss 0.2000 (mlp)",
        "  mlp       done 2/3, epochs 8/12, best final val_loss 0.2000",
        "  resnet20  done 0/3, epochs 0/12, best final val_loss -"]


def test_the_confirmation_shows_the_mean_over_finished_seeds_as_the_analysis_ranks():
    out = io.StringIO()
    progress = ProgressCallback("confirm", SPEC, Console(file=out), Clock())
    trials = [trial("mlp", Trial.TERMINATED, 4, 0.90), trial("mlp", Trial.TERMINATED, 4, 0.94),
              trial("resnet20", Trial.TERMINATED, 4, 0.96), trial("resnet20", Trial.RUNNING, 3, 0.99)]
    progress.on_experiment_end(trials=trials)
    assert out.getvalue().splitlines() == [
        "[confirm] 3/4 trials finished, elapsed 0m00s, top mean final val_acc 0.9600 (resnet20)",
        "  mlp       done 2/2, epochs 8/8, mean final val_acc 0.9200",
        "  resnet20  done 1/2, epochs 7/8, mean final val_acc 0.9600"]
