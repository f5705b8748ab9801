"""Training options: their defaults and their checks, the one source of truth that the training
loop, the CLI (`python -m trainables`) and the study spec (`archstudy validate`) all use."""
from __future__ import annotations

import math
import re
from numbers import Integral, Real

MODEL_DEFAULTS = {
    "model": "mlp",          # a name from trainables.models.list_models()
    "width": 1.0,            # multiplies every channel / hidden-unit count
    "batchnorm": True,       # False removes every BatchNorm
    "hidden": None,          # MLP hidden sizes; None means [128, 64]
}

DEFAULTS = {
    "optimizer": "sgd",          # sgd (momentum, optional Nesterov) or adamw
    "lr": 0.01,                  # peak learning rate (the lab's)
    "momentum": 0.9,             # SGD momentum / AdamW beta1
    "nesterov": False,           # Nesterov momentum for SGD
    "weight_decay": 1e-4,        # L2 for SGD, decoupled for AdamW (the lab's 1e-4)
    "schedule": "multistep",     # constant, multistep, cosine or onecycle (stepped every batch)
    "milestones": [0.5, 0.75],   # multistep: fractions of the epochs where lr is multiplied by gamma
    "gamma": 0.1,                # multistep: lr factor at each milestone (the lab's x0.1)
    "label_smoothing": 0.0,      # cross-entropy label smoothing
    "batch_size": 64,            # samples per step (the lab's 64)
    "epochs": 10,                # full passes over the training split
    "seed": 0,                   # model init, shuffling and augmentation
    "grad_flow": True,           # capture per-layer gradient flow (trainables/gradflow.py)
    "grad_flow_batches": 8,      # probe batches per epoch for gradient flow
    "device": "auto",            # auto (cuda if present), cpu, cuda, cuda:N, mps
    "precision": "auto",         # auto (bf16 autocast on cuda, fp32 elsewhere), bf16, fp32
    "compile": False,            # torch.compile the model (GPU runs; slow to start)
}

CHOICES = {
    "optimizer": ("sgd", "adamw"),
    "schedule": ("constant", "multistep", "cosine", "onecycle"),
    "precision": ("auto", "bf16", "fp32"),
}
# key: (kind, low, low inclusive, high, high inclusive) for numeric options; None: unbounded
RANGES = {
    "lr": (float, 0, False, None, False), "momentum": (float, 0, True, 1, False),
    "weight_decay": (float, 0, True, None, False), "gamma": (float, 0, False, 1, True),
    "label_smoothing": (float, 0, True, 1, False), "batch_size": (int, 1, True, None, False),
    "epochs": (int, 1, True, None, False), "seed": (int, 0, True, None, False),
    "grad_flow_batches": (int, 1, True, None, False), "width": (float, 0, False, 8, True),
}
BOOLS = ("nesterov", "grad_flow", "compile", "batchnorm")


def _in_range(value, kind, low, low_inclusive, high, high_inclusive) -> bool:
    if isinstance(value, bool) or not isinstance(value, Integral if kind is int else Real):
        return False
    if not math.isfinite(value):
        return False
    above = value >= low if low_inclusive else value > low
    below = high is None or (value <= high if high_inclusive else value < high)
    return above and below


def _describe(kind, low, low_inclusive, high, high_inclusive) -> str:
    text = f"expected {'an integer' if kind is int else 'a number'} {'>=' if low_inclusive else '>'} {low}"
    if high is not None:
        text += f" and {'<=' if high_inclusive else '<'} {high}"
    return text


def _bad(key: str, value, allowed: str) -> ValueError:
    return ValueError(f"{key}: {value!r} is not allowed; {allowed}")


def check_option(key: str, value):
    """Return `value` (ints widened to float where a float is expected) or raise ValueError with a
    one-line message naming the key, the value and what is allowed."""
    if key in CHOICES:
        if value not in CHOICES[key]:
            raise _bad(key, value, f"choose one of: {', '.join(CHOICES[key])}")
        return value
    if key in BOOLS:
        if not isinstance(value, bool):
            raise _bad(key, value, "expected true or false")
        return value
    if key in RANGES:
        if not _in_range(value, *RANGES[key]):
            raise _bad(key, value, _describe(*RANGES[key]))
        return RANGES[key][0](value)
    if key == "milestones":
        ok = (isinstance(value, (list, tuple)) and
              all(isinstance(m, Real) and not isinstance(m, bool) and 0 < m < 1 for m in value) and
              list(value) == sorted(set(value)))
        if not ok:
            raise _bad(key, value, "expected a list of increasing fractions between 0 and 1")
        return [float(m) for m in value]
    if key == "device":
        if not (isinstance(value, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value)):
            raise _bad(key, value, "choose one of: auto, cpu, cuda, cuda:N, mps")
        return value
    if key == "model":
        from .models import list_models
        if value not in list_models():
            raise _bad(key, value, f"choose one of: {', '.join(list_models())}")
        return value
    if key == "hidden":
        ok = value is None or (isinstance(value, (list, tuple)) and value and all(
            isinstance(h, Integral) and not isinstance(h, bool) and h >= 1 for h in value))
        if not ok:
            raise _bad(key, value, "expected a non-empty list of integers >= 1")
        return None if value is None else [int(h) for h in value]
    allowed = ", ".join([*MODEL_DEFAULTS, *DEFAULTS])
    raise ValueError(f"{key}: unknown option; allowed options: {allowed}")


def training_options(config: dict) -> dict:
    """The options of `config` that the training loop takes (drops a study's bookkeeping keys)."""
    return {k: v for k, v in config.items() if k in DEFAULTS or k in MODEL_DEFAULTS}


def resolve_config(config: dict) -> dict:
    """Defaults filled in, every option checked; unknown keys are errors."""
    resolved = {**MODEL_DEFAULTS, **DEFAULTS, **config}
    return {key: check_option(key, value) for key, value in resolved.items()}
