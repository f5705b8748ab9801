"""The training options' model (trainables/config.py): defaults, every option's one-line message,
and the value rules shared with the study spec (ints widen to float, bools and text are not
numbers, nan and inf are refused).

    PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_config.py      # a few seconds
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from study.spec import spec_from_dict
from study.spec_errors import SpecError
from trainables.config import OptionError, TrainingOptions, training_options
from trainables.models import list_models

# what each option takes, as users read it (the CLI's and the spec's words)
ALLOWED = {
    "model": "choose one of: " + ", ".join(list_models()),
    "width": "expected a number > 0 and <= 8",
    "batchnorm": "expected true or false",
    "hidden": "expected a non-empty list of integers >= 1",
    "optimizer": "choose one of: sgd, adamw",
    "lr": "expected a number > 0",
    "momentum": "expected a number >= 0 and < 1",
    "nesterov": "expected true or false",
    "weight_decay": "expected a number >= 0",
    "schedule": "choose one of: constant, multistep, cosine, onecycle",
    "milestones": "expected a list of increasing fractions between 0 and 1",
    "gamma": "expected a number > 0 and <= 1",
    "label_smoothing": "expected a number >= 0 and < 1",
    "batch_size": "expected an integer >= 1",
    "epochs": "expected an integer >= 1",
    "seed": "expected an integer >= 0",
    "grad_flow": "expected true or false",
    "grad_flow_batches": "expected an integer >= 1",
    "device": "choose one of: auto, cpu, cuda, cuda:N, mps",
    "precision": "choose one of: auto, bf16, fp32",
    "compile": "expected true or false",
}
FLOATS = ["width", "lr", "momentum", "weight_decay", "gamma", "label_smoothing"]
INTS = ["batch_size", "epochs", "seed", "grad_flow_batches"]
BOOLS = ["batchnorm", "nesterov", "grad_flow", "compile"]
# one value each option takes, other than its default
GOOD = {"model": "resnet20", "width": 8, "batchnorm": False, "hidden": [1], "optimizer": "adamw",
        "lr": 1e-6, "momentum": 0, "nesterov": True, "weight_decay": 0, "schedule": "onecycle",
        "milestones": [], "gamma": 1, "label_smoothing": 0.999, "batch_size": 1, "epochs": 1,
        "seed": 0, "grad_flow": False, "grad_flow_batches": 1, "device": "cuda:12",
        "precision": "bf16", "compile": True}
# values each option refuses: at and past its bounds, of the wrong type, out of its choices
BAD = [("model", "resnet99"), ("model", "MLP"), ("model", None), ("width", 0), ("width", 8.01),
       ("width", -1), ("batchnorm", 1), ("batchnorm", "true"), ("hidden", []), ("hidden", [0]),
       ("hidden", [64, 1.5]), ("hidden", [True]), ("hidden", 64), ("hidden", {64, 32}),
       ("optimizer", "SGD"), ("optimizer", "adam"), ("lr", 0), ("lr", -1), ("momentum", 1),
       ("momentum", -0.1), ("nesterov", 0), ("weight_decay", -1e-9), ("schedule", "step"),
       ("milestones", [0.75, 0.5]), ("milestones", [0.5, 0.5]), ("milestones", [0, 0.5]),
       ("milestones", [0.5, 1]), ("milestones", 0.5), ("milestones", [True]),
       ("milestones", {0.5, 0.75}), ("gamma", 0), ("gamma", 1.5), ("label_smoothing", 1),
       ("batch_size", 0), ("batch_size", 64.0), ("epochs", 0), ("seed", -1),
       ("grad_flow", None), ("grad_flow_batches", 0), ("device", "gpu"), ("device", "cuda:"),
       ("device", "cuda:0\n"), ("device", " cpu"), ("device", 0), ("precision", "fp16"),
       ("compile", "yes")]


def test_defaults_are_the_documented_ones():
    assert TrainingOptions().model_dump() == {
        "model": "mlp", "width": 1.0, "batchnorm": True, "hidden": None, "optimizer": "sgd",
        "lr": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4,
        "schedule": "multistep", "milestones": [0.5, 0.75], "gamma": 0.1, "label_smoothing": 0.0,
        "batch_size": 64, "epochs": 10, "seed": 0, "grad_flow": True, "grad_flow_batches": 8,
        "device": "auto", "precision": "auto", "compile": False}
    assert TrainingOptions.resolve({}) == TrainingOptions()
    assert list(ALLOWED) == list(TrainingOptions.model_fields) == list(GOOD)


@pytest.mark.parametrize("key", list(GOOD))
def test_every_option_takes_a_good_value(key):
    value = TrainingOptions.check_value(key, GOOD[key])
    assert value == GOOD[key] and getattr(TrainingOptions.resolve({key: GOOD[key]}), key) == value


@pytest.mark.parametrize("key, value", BAD, ids=[f"{k}={v!r}" for k, v in BAD])
def test_a_bad_value_is_one_line_naming_key_value_and_what_is_allowed(key, value):
    with pytest.raises(OptionError) as info:
        TrainingOptions.resolve({"model": "mlp", key: value})
    assert str(info.value) == f"{key}: {value!r} is not allowed; {ALLOWED[key]}"
    assert (info.value.key, info.value.value, info.value.allowed) == (key, value, ALLOWED[key])


@pytest.mark.parametrize("key", list(ALLOWED))
def test_allowed_describes_each_option(key):
    assert TrainingOptions.allowed(key) == ALLOWED[key]


@pytest.mark.parametrize("key", FLOATS)
def test_ints_widen_to_float(key):
    value = TrainingOptions.check_value(key, 1 if key in ("width", "gamma", "lr") else 0)
    assert type(value) is float
    assert TrainingOptions.takes_any_number(key)


@pytest.mark.parametrize("key", INTS + BOOLS + ["hidden", "milestones", "model"])
def test_only_float_options_take_any_number(key):
    assert not TrainingOptions.takes_any_number(key)


@pytest.mark.parametrize("key", FLOATS + INTS)
@pytest.mark.parametrize("value", [True, False, "5e-4", "1", float("nan"), float("inf"),
                                   float("-inf"), None, [1]])
def test_bools_text_and_non_finite_values_are_not_numbers(key, value):
    with pytest.raises(OptionError, match=rf"^{key}: .* is not allowed; {ALLOWED[key]}$"):
        TrainingOptions.check_value(key, value)


@pytest.mark.parametrize("key", BOOLS)
@pytest.mark.parametrize("value", [0, 1, "true", "yes", None])
def test_bools_are_true_or_false_only(key, value):
    with pytest.raises(OptionError, match=rf"^{key}: .* is not allowed; expected true or false$"):
        TrainingOptions.check_value(key, value)


def test_lists_are_normalised_and_quoted_whole_in_messages():
    assert TrainingOptions.check_value("milestones", (0.3, 1 / 2)) == [0.3, 0.5]
    assert TrainingOptions.check_value("milestones", [0.25]) == [0.25]
    assert TrainingOptions.check_value("hidden", (256, 128)) == [256, 128]
    with pytest.raises(OptionError, match=r"^milestones: \[0\.5, 0\.75, 2\] is not allowed"):
        TrainingOptions.check_value("milestones", [0.5, 0.75, 2])


def test_numpy_numbers_are_numbers():
    assert TrainingOptions.check_value("batch_size", np.int64(32)) == 32
    assert type(TrainingOptions.check_value("batch_size", np.int64(32))) is int
    assert TrainingOptions.check_value("lr", np.float32(0.5)) == 0.5


def test_big_and_tiny_numbers_are_fine_when_finite():
    assert TrainingOptions.check_value("seed", 2 ** 70) == 2 ** 70
    assert TrainingOptions.check_value("lr", 1e300) == 1e300 and math.isfinite(1e300)
    assert TrainingOptions.check_value("lr", 5e-324) == 5e-324


def test_unknown_options_are_named_after_every_bad_value():
    allowed = ", ".join(ALLOWED)
    with pytest.raises(ValueError, match=rf"^learning_rate: unknown option; allowed options: {allowed}$"):
        TrainingOptions.resolve({"learning_rate": 0.1, "lr": 0.1})
    with pytest.raises(ValueError, match=r"^5: unknown option"):
        TrainingOptions.resolve({5: 1, "zz": 2})
    with pytest.raises(OptionError, match=r"^lr: -1 is not allowed"):   # the bad value first
        TrainingOptions.resolve({"zz": 1, 5: 1, "seed": 0, "lr": -1})
    with pytest.raises(OptionError, match=r"^width: 9 is not allowed"):   # in the options' order
        TrainingOptions.resolve({"epochs": 0, "width": 9})


def test_options_are_frozen_and_resolve_keeps_them():
    opts = TrainingOptions.resolve({"lr": 0.1})
    assert TrainingOptions.resolve(opts) is opts
    with pytest.raises(ValueError):
        opts.lr = 1.0


def test_training_options_drops_bookkeeping_keys():
    config = {"arm": "mlp", "phase": "search", "optuna_trial": 3, "lr": 0.1, "model": "mlp"}
    assert training_options(config) == {"lr": 0.1, "model": "mlp"}


SEARCHED = [key for key in ALLOWED if key not in ("model", "width", "batchnorm", "hidden", "epochs",
                                                   "seed", "grad_flow")]


@pytest.mark.parametrize("key, value", [(k, v) for k, v in BAD if k in SEARCHED],
                         ids=[f"{k}={v!r}" for k, v in BAD if k in SEARCHED])
def test_the_spec_refuses_a_fixed_value_with_the_same_words(key, value):
    with pytest.raises(SpecError) as info:
        spec_from_dict({"name": "t", "arms": [{"model": "mlp"}], "search": {"fixed": {key: value}}})
    assert str(info.value) == f"search.fixed.{key}: {value!r} is not allowed; {ALLOWED[key]}"
