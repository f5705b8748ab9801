"""Every value type the spec accepts in search.space and search.fixed round-trips end to end
(issue 12): a tiny study whose search has a string and a boolean categorical, a categorical of
numbers, an integer range, uniform and log-uniform floats, and whose fixed options hold a list
(milestones), a number written 5e-4, a string, a boolean and an integer, runs through `archstudy run`
(in this process, on the session's Ray) to its answers. Each value comes back equal and of its type
from Optuna's storage, trials.parquet (which pyarrow reads back as numpy types), the confirmation
configs, the analysis (answers.json, the report) and the W&B runs; no warning (numpy's included)
reaches the terminal. What does not complete is refused by `validate` (lists in a choice:
tests/data/bad_specs/space_choice_of_lists.yaml). `python -m analysis` on the study, piped into
`head`, ends quietly.

    .venv/bin/python -m pytest tests/test_value_types.py -q
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest

from processes import start_into_closed_head
from study import runner
from study.searcher import study_name
from study.spec_file import load_spec
from wandb_files import wandb_problems

REPO = Path(__file__).resolve().parents[1]
SPEC = """\
name: types
data: mnist-5k
subset: {{train: 200, val: 100, test: 100}}
epochs: 2
seeds: [0, 1]
arms:
  - {{model: mlp, hidden: [16], name: one}}
  - {{model: mlp, hidden: [16, 16], name: two}}
search:
  trials_per_arm: 2
  max_concurrent: 2
  space:
    lr: {{loguniform: [0.01, 0.1]}}
    momentum: {{uniform: [0.8, 0.95]}}
    batch_size: {{int: [16, 32]}}
    nesterov: {{choice: [true, false]}}
    schedule: {{choice: [multistep, cosine]}}
    gamma: {{choice: [0.1, 0.5]}}
  fixed:
    milestones: [0.5]
    weight_decay: 5e-4
    optimizer: sgd
    compile: false
    grad_flow_batches: 2
scheduler: {{name: asha, grace_period: 1, reduction_factor: 2}}
wandb: {{mode: offline}}
storage: {storage}
"""
TYPES = {"lr": float, "momentum": float, "batch_size": int, "nesterov": bool, "schedule": str,
         "gamma": float, "milestones": list, "weight_decay": float, "optimizer": str, "compile": bool,
         "grad_flow_batches": int}


def plain(value):
    """A value as Python has it (pyarrow hands back numpy scalars and arrays)."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    return value.item() if isinstance(value, np.generic) else value


def same(a, b) -> bool:
    """Equal, and of the same type (True is not 1, 1 is not 1.0)."""
    a, b = plain(a), plain(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.fixture(scope="module")
def typed(ray_local, study_env, tmp_path_factory):
    from study.cli import main
    root = tmp_path_factory.mktemp("types")
    path = root / "types.yaml"
    path.write_text(SPEC.format(storage=root / "results"))
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        warnings.simplefilter("always")   # every warning is recorded, none is hidden by a filter
        rc = main(["run", str(path)])
    folder = root / "results" / "types"
    return SimpleNamespace(rc=rc, stdout=out.getvalue(), stderr=err.getvalue(), warnings=caught,
                           out=folder, spec=load_spec(path),
                           trials=pd.read_parquet(folder / "trials.parquet"),
                           epochs=pd.read_parquet(folder / "epochs.parquet"),
                           gradflow=pd.read_parquet(folder / "gradflow.parquet"),
                           answers=json.loads((folder / "answers.json").read_text()))


def test_the_study_runs_to_its_answers(typed):
    assert typed.rc == 0, typed.stderr[-3000:]
    assert json.loads((typed.out / "study.json").read_text())["phase"] == "done"
    t = typed.trials
    assert t[t.phase == "search"].groupby("arm").size().to_dict() == {"one": 2, "two": 2}
    confirm = t[t.phase == "confirm"]
    assert confirm.groupby("arm").size().to_dict() == {"one": 2, "two": 2}
    assert (confirm.status == "completed").all()
    assert f"answers: {typed.out / 'answers.md'}" in typed.stdout
    assert (typed.out / "report.html").stat().st_size > 0


def test_trials_parquet_holds_each_value_as_asked(typed):
    spec, t = typed.spec, typed.trials
    assert str(t.param_nesterov.dtype) == "bool" and str(t.param_batch_size.dtype) == "int64"
    assert str(t.param_lr.dtype) == str(t.param_gamma.dtype) == "float64"
    for row in t.to_dict("records"):
        config = json.loads(row["config"])
        for key, value in spec.search.fixed.items():
            assert same(config[key], value) and type(config[key]) is TYPES[key], (key, config[key])
        assert same(config["weight_decay"], 0.0005) and same(config["milestones"], [0.5])
        for key, dist in spec.search.space.items():
            assert same(row[f"param_{key}"], config[key]), (key, row[f"param_{key}"], config[key])
            assert type(config[key]) is TYPES[key], (key, config[key])
            if dist.kind == "choice":
                assert any(same(config[key], c) for c in dist.args), (key, config[key])
            else:
                assert dist.args[0] <= config[key] <= dist.args[1], (key, config[key])


def test_optuna_holds_the_values_each_trial_ran_with(typed):
    storage = f"sqlite:///{typed.out / 'optuna.db'}"
    search = typed.trials[typed.trials.phase == "search"]
    for row in search.to_dict("records"):
        study = optuna.load_study(study_name=study_name("types", row["arm"]), storage=storage)
        params = next(t.params for t in study.trials if t.number == int(row["optuna_trial"]))
        config = json.loads(row["config"])
        assert set(params) == set(typed.spec.search.space)
        assert all(same(params[k], config[k]) for k in params), (params, config)


def test_each_confirmation_run_trains_the_best_search_config(typed):
    t = typed.trials
    best = {b["arm"]: b for b in typed.answers["search"]["best_configs"]}   # the analysis's choice
    for arm in ("one", "two"):
        winner = t[(t.phase == "search") & (t.trial_id == best[arm]["trial_id"])].iloc[0]
        chosen = json.loads(winner["config"])
        for key in typed.spec.search.space:   # answers.json, written by json, holds the plain values
            assert same(best[arm][f"param_{key}"], chosen[key]), (arm, key)
        for row in t[(t.phase == "confirm") & (t.arm == arm)].to_dict("records"):
            config = json.loads(row["config"])
            assert {k: v for k, v in config.items() if k != "seed"} == \
                   {k: v for k, v in chosen.items() if k != "seed"}
            assert all(same(config[k], chosen[k]) for k in TYPES)


def test_the_report_shows_the_best_configs(typed):
    text = "\n".join(typed.answers["text"])
    html = (typed.out / "report.html").read_text()
    for b in typed.answers["search"]["best_configs"]:
        for shown in (f"batch_size={b['param_batch_size']}", f"nesterov={b['param_nesterov']}",
                      f"schedule={b['param_schedule']}", f"gamma={b['param_gamma']:.3g}"):
            assert shown in text and shown in html, shown


def test_the_wandb_runs_hold_each_value_as_asked(typed):
    spec_hash = json.loads((typed.out / "study.json").read_text())["spec_hash"]
    assert wandb_problems(typed.out, spec_hash, runner.git_commit(), typed.trials, typed.epochs,
                          typed.gradflow) == []


def test_no_warning_reaches_the_terminal(typed):
    assert [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in typed.warnings] == []
    assert "Warning" not in typed.stderr, typed.stderr[-3000:]


def test_the_analysis_piped_into_head_ends_quietly(typed):
    proc = start_into_closed_head([sys.executable, "-m", "analysis", str(typed.out)], cwd=REPO)
    _, stderr = proc.communicate(timeout=300)
    assert (proc.returncode, stderr) == (141, ""), stderr[-3000:]
