"""Reproducible by construction: the same spec on the same machine gives the same tables, whatever
the load. The session's tiny study (conftest `tiny`) is run again with a busy loop on one core:
every trial's status, epochs run, configuration and metrics are identical.

    .venv/bin/python -m pytest tests/test_reproducible.py
"""
from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from studies import TINY_SPEC, spec_text
from study import runner
from study.spec_file import load_spec

# What a rerun must reproduce (timings, trial ids, paths and node ids may differ).
TRIAL_KEYS = ["phase", "arm", "optuna_trial", "seed"]
TRIAL_VALUES = ["status", "epochs_run", "config", "param_lr", "best_val_acc", "final_train_loss",
                "final_train_acc", "final_val_loss", "final_val_acc", "final_test_loss", "final_test_acc"]
EPOCH_VALUES = ["status", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "gf_first_last_ratio"]


def comparable(trials: pd.DataFrame, epochs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reproducible part of a study's tables, keyed by arm, Optuna trial (search) and seed."""
    t = trials[TRIAL_KEYS + TRIAL_VALUES].sort_values(TRIAL_KEYS, na_position="first")
    keys = trials.set_index("trial_id")[TRIAL_KEYS]
    e = epochs.drop(columns=TRIAL_KEYS, errors="ignore").join(keys, on="trial_id")[TRIAL_KEYS + ["epoch"] + EPOCH_VALUES]
    return (t.reset_index(drop=True),
            e.sort_values(TRIAL_KEYS + ["epoch"], na_position="first").reset_index(drop=True))


@pytest.fixture
def busy_core():
    """A process spinning on CPU 0 for the length of the test (the load a laptop has)."""
    spin = subprocess.Popen([sys.executable, "-c", "import os; os.sched_setaffinity(0, {0})\nwhile True: pass"])
    yield
    spin.kill()
    spin.wait()


def test_a_rerun_under_load_gives_identical_tables(tiny, busy_core, tmp_path):
    path = tmp_path / "again.yaml"
    path.write_text(spec_text(tmp_path / "results", **{**TINY_SPEC, "name": "again"}))
    study = runner.prepare(load_spec(path))
    study.run()
    again = comparable(pd.read_parquet(study.out / "trials.parquet"),
                       pd.read_parquet(study.out / "epochs.parquet"))
    first = comparable(tiny.trials, tiny.epochs)
    assert len(first[0]) == 10 and (first[0]["status"] == "pruned").any()   # ASHA decided something
    pd.testing.assert_frame_equal(first[0], again[0])
    pd.testing.assert_frame_equal(first[1], again[1])
