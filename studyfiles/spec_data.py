"""A study's resolved spec read back as data: what the analysis needs from spec.yaml, without
the `study` package (whose spec model validates specs before anything runs).

    spec = read_spec(folder / "spec.yaml")
    spec.metric, spec.mode, spec.epochs, spec.arm_names, spec.space, spec.hash

spec.yaml is written by `study` with every default filled in (`archstudy validate` prints the same
YAML), so every key read here is present; a file that is not such a spec is a one-line StudyError.

    python -m pytest tests/test_layers.py
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import StudyError
from .files import first_line


# Keys that the spec gained after studies had been written without them, each with the value that
# does what those studies did. A study folder's saved spec without such a key is read with that
# value (`with_later_keys`: an older study resumes as it ran), and a resolved spec that holds it
# hashes as if the key were absent, so such a study's hash stays what it was.
LATER_KEYS = {("split",): "fixed", ("search", "replicates"): 1, ("search", "startup_trials"): 10}


def with_later_keys(data):
    """A saved resolved spec (plain data) with every missing LATER_KEYS key set to its value."""
    out = copy.deepcopy(data)
    for (*parents, key), value in LATER_KEYS.items():
        if isinstance(part := _section(out, parents), dict):
            part.setdefault(key, value)
    return out


def without_later_keys(data):
    """`data` without the LATER_KEYS keys that hold their earlier value."""
    out = copy.deepcopy(data)
    for (*parents, key), value in LATER_KEYS.items():
        if isinstance(part := _section(out, parents), dict) and key in part and part[key] == value:
            del part[key]
    return out


def _section(data, parents: list[str]):
    """data[p0][p1]...: the mapping a key lives in; None when some level is not a mapping."""
    for parent in parents:
        data = data.get(parent) if isinstance(data, dict) else None
    return data


def canonical_hash(data) -> str:
    """First 12 hex digits of the sha256 of `data` (a resolved spec as plain data) as canonical
    JSON: sorted keys, no spaces, LATER_KEYS at their earlier value left out. The study's
    `spec_hash`."""
    blob = json.dumps(without_later_keys(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SpecData:
    """The fields of a resolved spec that the analysis reads; `raw` keeps the whole mapping."""
    raw: dict

    @property
    def name(self) -> str:
        return self.raw["name"]

    @property
    def metric(self) -> str:
        return self.raw["metric"]

    @property
    def mode(self) -> str:
        """'max' or 'min': the direction in which `metric` is better."""
        return self.raw["mode"]

    @property
    def epochs(self) -> int:
        return int(self.raw["epochs"])

    @property
    def seeds(self) -> list[int]:
        return list(self.raw["seeds"])

    @property
    def arm_names(self) -> list[str]:
        return [arm["name"] for arm in self.raw["arms"]]

    @property
    def space(self) -> dict[str, tuple[str, list]]:
        """The search space, {param: (kind, args)}, e.g. {"lr": ("loguniform", [0.02, 0.3])}."""
        return {param: next(iter(dist.items())) for param, dist in self.raw["search"]["space"].items()}

    @property
    def wandb_project(self) -> str:
        return self.raw["wandb"]["project"]

    @property
    def wandb_entity(self) -> str | None:
        return self.raw["wandb"]["entity"]

    def wandb_mode(self, env=os.environ) -> str:
        """The spec's W&B mode if given, else online when a WANDB_API_KEY is configured, else
        offline (the study's rule: study/spec.py's WandbSpec.resolved_mode)."""
        return self.raw["wandb"]["mode"] or ("online" if env.get("WANDB_API_KEY") else "offline")

    @property
    def hash(self) -> str:
        return canonical_hash(self.raw)


REQUIRED = ("name", "metric", "mode", "epochs", "seeds", "arms", "search", "wandb")


def read_spec(path: str | os.PathLike) -> SpecData:
    """The resolved spec in a study folder's spec.yaml; a one-line StudyError if it is unreadable
    or lacks what a resolved spec has."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeError, yaml.YAMLError) as e:
        raise StudyError(f"{path}: cannot read the study's spec ({type(e).__name__}: "
                         f"{first_line(e)})") from None
    missing = [key for key in REQUIRED if not isinstance(raw, dict) or key not in raw]
    if missing:
        raise StudyError(f"{path}: not a resolved study spec (no {', '.join(missing)}); give a "
                         "folder written by `archstudy run`")
    return SpecData(raw)
