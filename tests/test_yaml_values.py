"""One parser for values written as YAML (trainables/yaml_values.py, issue 12 item 7): the spec
file and every flag of `python -m trainables` read 5e-4, 1E-3, .5 and 1e3 as numbers (YAML 1.1, as
PyYAML's safe_load reads it, takes 5e-4 for text), and refuse the same values. The archstudy
command's flags take no numbers (names, paths, addresses, modes).

    .venv/bin/python -m pytest tests/test_yaml_values.py -q
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from study import spec_file
from study.spec_errors import SpecError
from trainables import yaml_values
from trainables.__main__ import parse_args, training_config
from trainables.yaml_values import parse_yaml_value

REPO = Path(__file__).resolve().parents[1]
NUMBERS = {"5e-4": 0.0005, "1E-3": 0.001, ".5": 0.5, "1e3": 1000.0, "-2.5e+2": -250.0, "+1e-2": 0.01,
           "1.0e-3": 0.001, "3": 3, "0.25": 0.25, "1_000": 1000}


def test_one_loader_behind_the_spec_and_the_flags():
    assert spec_file.Loader is yaml_values.Loader and spec_file.Dumper is yaml_values.Dumper


@pytest.mark.parametrize("text, number", NUMBERS.items())
def test_numbers_parse_as_numbers(text, number):
    value = parse_yaml_value(text)
    assert value == number and type(value) is type(number)


@pytest.mark.parametrize("text", ["[1,", "a: b: c", "2021-02-30", "{x"])
def test_text_that_is_not_yaml_is_a_one_line_value_error(text):
    with pytest.raises(ValueError) as info:
        parse_yaml_value(text)
    assert str(info.value).startswith(f"{text!r} is not a valid YAML value") and "\n" not in str(info.value)


def spec_value(key: str, text: str):
    """What a spec makes of `key: text` in search.fixed: the value, or the SpecError's reason."""
    try:
        spec = spec_file.parse_spec(f"name: x\narms: [{{model: mlp}}]\nsearch: {{fixed: {{{key}: {text}}}}}\n")
    except SpecError as e:
        return "refused: " + str(e).split(" is not allowed; ", 1)[1]
    return spec.search.fixed[key]


def flag_value(key: str, text: str):
    """What `python -m trainables --<key>=text` makes of it: the value, or the error's reason (the
    `=` form, as argparse takes -1e-2 after a space for a flag)."""
    try:
        config = training_config(parse_args([f"--{key.replace('_', '-')}={text}"]))
    except ValueError as e:
        return "refused: " + str(e).split(" is not allowed; ", 1)[1]
    return getattr(config, key)


@pytest.mark.parametrize("key, text", [
    *[("weight_decay", t) for t in ["5e-4", "1E-3", ".5", "1e3", "0", "1.0e-3", "-1e-2", "'5e-4'"]],
    *[("lr", t) for t in ["1e-2", "3", ".1", "zero"]],
    *[("batch_size", t) for t in ["64", "1e3", "6.4e1", "true"]],
    *[("milestones", t) for t in ["[0.5, 0.75]", "[5e-1]", "[.25, .5]", "[0.75, 0.5]"]],
    ("nesterov", "true"), ("nesterov", "yes"), ("nesterov", "1"), ("schedule", "cosine"),
    ("gamma", "1e-1"), ("momentum", ".9"), ("label_smoothing", "1e-1"), ("device", "cpu"),
])
def test_a_flag_reads_a_value_as_the_spec_does(key, text):
    assert flag_value(key, text) == spec_value(key, text)
    assert type(flag_value(key, text)) is type(spec_value(key, text))


def test_the_training_cli_takes_exponents_and_refuses_bad_yaml_in_one_line(data_root_5k):
    env = {**os.environ, "ARCHSTUDY_DATA": str(data_root_5k)}
    common = [sys.executable, "-m", "trainables", "--model", "mlp", "--hidden", "[8]", "--epochs", "1",
              "--grad-flow", "false"]
    runs = {"ok": subprocess.Popen([*common, "--weight-decay", "5e-4", "--lr", "1E-2", "--momentum", ".5",
                                    "--limit", "64"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True),
            "yaml": subprocess.Popen([*common, "--milestones", "[0.5,"], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
            "limit": subprocess.Popen([*common, "--limit", "1e3"], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)}
    done = {name: (proc, *proc.communicate(timeout=300)) for name, proc in runs.items()}
    proc, out, err = done["ok"]
    assert proc.returncode == 0 and out.startswith("epoch   1/1  train_loss"), err[-2000:]
    proc, out, err = done["yaml"]
    assert (proc.returncode, out) == (2, ""), err[-2000:]
    assert err == "error: milestones: '[0.5,' is not a valid YAML value (expected the node content, " \
                  "but found '<stream end>')\n"
    proc, out, err = done["limit"]   # 1e3 is the number 1000.0, not an integer: as subset.train in a spec
    assert (proc.returncode, out, err) == (2, "", "error: limit: '1e3' is not allowed; expected an integer >= 1\n")
