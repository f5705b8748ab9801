"""A device the trial's resources cannot provide is refused by `validate` (study/spec_checks.py,
issue 12 item 4: `device: cuda` with `resources.gpu: 0` passed, and every trial died in setup with
"Found no NVIDIA driver", since Ray hides the GPUs from a trial that asked for none). What does run
is accepted; a GPU reserved for trials that train on the CPU is a warning. The refused specs, through
`validate` and `run`, are in tests/data/bad_specs/device_*.yaml.

    .venv/bin/python -m pytest tests/test_spec_checks.py -q
"""
from __future__ import annotations

import pytest

from study.spec_errors import SpecError
from study.spec_file import parse_spec


def spec(device: str, gpu: float, searched: bool = False):
    """device fixed, or searched as the second of the choices [auto, device] (alone if auto)."""
    choices = f"[auto, {device!r}]" if device != "auto" else "[auto]"
    search = (f"{{space: {{device: {{choice: {choices}}}}}}}" if searched
              else f"{{fixed: {{device: {device!r}}}}}")
    return parse_spec(f"name: d\narms: [{{model: mlp}}]\nsearch: {search}\nresources: {{gpu: {gpu}}}\n")


@pytest.mark.parametrize("device, gpu", [("cuda", 1), ("cuda:0", 0.5), ("cuda:1", 2), ("cuda", 0.25),
                                         ("auto", 0), ("cpu", 0), ("mps", 0), ("auto", 1)])
def test_a_device_the_trial_can_have_is_accepted(device, gpu):
    assert spec(device, gpu).search.fixed["device"] == device
    assert spec(device, gpu, searched=True).search.space["device"].args[-1] == device


@pytest.mark.parametrize("device, gpu, where, allowed", [
    ("cuda", 0, "search.fixed.device", "a trial sees no GPU with resources.gpu 0 (Ray hides them)"),
    ("cuda:2", 2, "search.fixed.device", "a trial with resources.gpu 2 sees 2 GPUs, numbered from cuda:0"),
    ("cuda:1", 0.5, "search.fixed.device", "a trial with resources.gpu 0.5 sees 1 GPU"),
])
def test_a_device_the_trial_cannot_have_is_refused(device, gpu, where, allowed):
    with pytest.raises(SpecError) as info:
        spec(device, gpu)
    assert str(info.value).startswith(f"{where}: {device!r} is not allowed; {allowed}")
    with pytest.raises(SpecError, match=r"^search\.space\.device\.choice\[1\]: "):
        spec(device, gpu, searched=True)


def test_a_gpu_reserved_for_cpu_trials_is_a_warning():
    assert spec("cpu", 1).warnings() == ["resources.gpu: 1 GPU per trial is reserved, but every trial "
                                         "trains on device cpu: the GPU stays idle"]
    assert spec("auto", 1).warnings() == [] and spec("cpu", 0).warnings() == []


@pytest.mark.parametrize("search, warned", [
    ("{space: {lr: {loguniform: [0.01, 0.1]}}}", True),                        # 8 trials, 10 start-up
    ("{space: {lr: {loguniform: [0.01, 0.1]}}, startup_trials: 4}", False),   # 4 random, 4 by TPE
    ("{space: {lr: {loguniform: [0.01, 0.1]}}, algorithm: random}", False),
    ("{space: {lr: {loguniform: [0.01, 0.1]}}, trials_per_arm: 11}", False),
    ("{fixed: {lr: 0.05}}", False),                                             # nothing to search
])
def test_a_tpe_search_that_never_leaves_its_random_startup_is_a_warning(search, warned):
    found = parse_spec(f"name: s\narms: [{{model: mlp}}]\nsearch: {search}\n").warnings()
    assert found == ([f"search.trials_per_arm: 8 trials are all among TPE's 10 random start-up trials "
                      "(search.startup_trials), so TPE never models the results: lower "
                      "search.startup_trials below trials_per_arm, or say algorithm: random"] if warned else [])
