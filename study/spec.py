"""The study spec: one typed, validated `StudySpec` (pydantic), read from YAML by study/spec_file.py.

    archstudy validate study/specs/quick.yaml     # load, check and print the resolved spec

A spec names the dataset, the architecture "arms" to compare, the search per arm (Optuna or random
search, ASHA early stopping), the confirmation seeds and where the results go. Everything is checked
here, before Ray starts. Any problem is a `SpecError` (study/spec_errors.py) whose message is ONE line
saying where, what and what is allowed:

    arms[1].model: 'resnet99' is not allowed; choose one of: mlp, vgg11, vgg13, ...

Training options (the arms' model options, `search.space`, `search.fixed`) are checked by
`trainables.config.TrainingOptions`, the model the training loop uses, so there is one source of
truth for them. What other systems will do with a valid spec (W&B's rules for the values built from
it, the devices Ray lets a trial see) is checked too, in study/spec_checks.py.

Reading order: the search (Search, with the options it may not set), Scheduler, Resources,
WandbConfig, Failure, the top-level StudySpec, and `spec_from_dict`, which validates. The value types
and the small sections (Subset, Arm, Distribution) are in study/spec_parts.py.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional

from pydantic import Field, StrictBool, StrictInt, StrictStr, ValidationError, model_validator

from studyfiles.storage import is_uri, join
from trainables.config import Number, OptionError, PosInt, TrainingOptions, Width

from . import spec_checks
from .spec_errors import SpecError, bad, one_line, short
from .spec_parts import (Arm, Dataset, Distribution, Metric, Name, NonNegInt, Part,
                         StoragePath, Subset)

__all__ = ["Arm", "Distribution", "Subset", "Search", "Scheduler", "Resources", "WandbConfig",
           "Failure", "StudySpec", "spec_from_dict", "SpecError"]


# Training options a search may not set, and where they come from instead.
NOT_SEARCHED = {"epochs": "it comes from the top-level 'epochs'",
                "seed": "it comes from the top-level 'seeds' (and search.seed for the sampler)",
                "grad_flow": "it comes from the top-level 'gradient_flow'",
                **{key: "it comes from the arms" for key in Arm.model_fields
                   if key in TrainingOptions.model_fields}}
SEARCHABLE = [key for key in TrainingOptions.model_fields if key not in NOT_SEARCHED]


class Search(Part):
    """The per-arm hyperparameter search; `space` and `fixed` map training options (see
    trainables/config.py) to a Distribution or a value. Options in neither keep their defaults."""
    algorithm: Literal["optuna", "random"] = "optuna"   # optuna: TPE, seeded with `seed`
    # optuna: TPE's random suggestions before it models the results (Optuna's default, 10); with
    # trials_per_arm at most this, every suggestion is random (`validate` warns)
    startup_trials: PosInt = 10
    seed: NonNegInt = 0
    trials_per_arm: PosInt = 8
    max_concurrent: PosInt = 2
    # trials of one arm at a time: 1 makes every search decision, so the study, reproducible
    max_concurrent_per_arm: PosInt = 1
    replicates: PosInt = 1   # independent searches per arm, each confirmed (study/replicates.py)
    space: dict[str, Distribution] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Search:
        for group, options in (("space", self.space), ("fixed", self.fixed)):
            for key in options:
                if key in NOT_SEARCHED:
                    raise bad((group, key), key, f"not allowed in search.{group}: {NOT_SEARCHED[key]}")
                if key not in TrainingOptions.model_fields:
                    raise bad((group, key), key,
                               f"unknown training option; allowed: {', '.join(SEARCHABLE)}")
                if group == "fixed" and key in self.space:
                    raise bad((group, key), key,
                               "also in search.space; an option is searched or fixed, not both")
        for key, value in self.fixed.items():
            self.fixed[key] = _check_option(("fixed", key), key, value)
        for key, dist in self.space.items():
            where = ("space", key, dist.kind)
            if dist.kind in ("uniform", "loguniform") and not TrainingOptions.takes_any_number(key):
                raise bad(where, dist.args, f"{key} does not take any number in a range; "
                                             "use int: [lo, hi] or choice: [...]")
            for i, value in enumerate(dist.args):   # each end of a range, every choice
                _check_option((*where, i), key, value)
        return self


def _check_option(where: tuple, key: str, value: Any) -> Any:
    """`value` as the training loop takes it (3 -> 3.0 where a float is expected), or the reason it
    can't be, at `where` below search."""
    try:
        return TrainingOptions.check_value(key, value)
    except OptionError as e:
        raise bad(where, value, e.allowed) from None


class Scheduler(Part):
    """Early stopping within each arm's search: ASHA, or none (every trial runs all epochs)."""
    name: Literal["asha", "none"] = "asha"
    grace_period: PosInt = 1                 # epochs before ASHA may stop a trial (<= epochs)
    reduction_factor: Annotated[Number, Field(gt=1.0)] = 2.0


class Resources(Part):
    """Per trial. Ray shares a GPU only in fractions below 1: 0.25, 0.5, 1, 2 are fine; 1.5 isn't."""
    cpu: Annotated[Number, Field(gt=0.0)] = 1.0
    gpu: Annotated[Number, Field(ge=0.0)] = 0.0

    @model_validator(mode="after")
    def _check(self) -> Resources:
        if self.gpu > 1 and not self.gpu.is_integer():
            raise bad(("gpu",), self.gpu, "expected a fraction below 1 or a whole number of GPUs")
        return self


class WandbConfig(Part):
    """Weights & Biases logging; one W&B group per study (its name)."""
    project: Annotated[StrictStr, Field(min_length=1)] = "archstudy"
    entity: Optional[StrictStr] = None
    mode: Optional[Literal["offline", "online", "disabled"]] = None   # None: see resolved_mode

    @model_validator(mode="after")
    def _check(self) -> WandbConfig:   # W&B's own rules, in every mode
        spec_checks.check_wandb_config(self)
        return self

    def resolved_mode(self, env: Mapping[str, str] = os.environ) -> str:
        """The mode if given, else online when a WANDB_API_KEY is configured, else offline."""
        if self.mode is not None:
            return self.mode
        return "online" if env.get("WANDB_API_KEY") else "offline"


class Failure(Part):
    max_retries: NonNegInt = 2               # Ray's retries of a crashed trial


class StudySpec(Part):
    """A whole study. After validation, `mode` and every arm's `name` and `width` are filled in."""
    name: Name                               # output folder name and W&B group
    data: Dataset = "mnist-5k"
    data_root: Optional[StrictStr] = None
    subset: Optional[Subset] = None
    metric: Metric = "val_acc"
    mode: Optional[Literal["max", "min"]] = None   # default: max for *_acc, min for *_loss
    epochs: Annotated[StrictInt, Field(ge=1, le=10000)] = TrainingOptions().epochs   # budget per trial
    seeds: Annotated[list[NonNegInt], Field(min_length=1)] = [0, 1, 2]    # confirmation runs
    # per_seed: confirmation seed s trains on split seed s, fixed: on 0 (study/replicates.py)
    split: Literal["per_seed", "fixed"] = "per_seed"
    width: Width = 1.0
    gradient_flow: StrictBool = True
    arms: Annotated[list[Arm], Field(min_length=1)]
    search: Search = Field(default_factory=Search)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    resources: Resources = Field(default_factory=Resources)
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    storage: StoragePath = "~/archstudy-results"
    failure: Failure = Field(default_factory=Failure)

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        expected = "max" if self.metric.endswith("_acc") else "min"
        if self.mode is None:
            self.mode = expected
        elif self.mode != expected:
            raise bad(("mode",), self.mode, f"{self.metric} needs mode {expected} (or leave mode out)")
        for i, seed in enumerate(self.seeds):
            if seed in self.seeds[:i]:
                raise bad(("seeds", i), seed, "expected distinct seeds (this one is repeated)")
        for i, arm in enumerate(self.arms):
            if arm.name in self.arm_names[:i]:
                raise bad(("arms", i, "name"), arm.name, "expected unique arm names; give this arm a "
                                                          "different 'name' (or change it)")
            if arm.width is None:
                arm.width = self.width
        if self.scheduler.grace_period > self.epochs:
            raise bad(("scheduler", "grace_period"), self.scheduler.grace_period,
                       f"expected an integer <= epochs ({self.epochs})")
        spec_checks.check_devices(self)        # what Ray lets a trial see
        spec_checks.check_wandb_values(self)   # what W&B takes
        return self

    def warnings(self) -> list[str]:
        """What is allowed but probably not meant: one line each (`archstudy validate` prints them)."""
        return spec_checks.warnings(self)

    @property
    def arm_names(self) -> list[str]:
        return [arm.name for arm in self.arms]

    def out_dir(self) -> Path | str:
        """Where this study writes: <storage>/<name>; a str for s3:// and gs:// URIs, else a Path."""
        if is_uri(self.storage):
            return join(self.storage, self.name)
        root = Path(os.path.abspath(os.path.expanduser(self.storage)))
        out = root / self.name
        if out.parent != root or self.name in (".", ".."):   # the name pattern already rules this out
            raise SpecError(f"name: {self.name!r} is not allowed; it would leave storage {root}")
        return out

    def with_overrides(self, name: str | None = None, storage: str | None = None,
                       wandb_mode: str | None = None) -> StudySpec:
        """A copy with command-line overrides applied, validated again."""
        data = self.model_dump(mode="json", by_alias=True)
        if name is not None:
            data["name"] = name
        if storage is not None:
            data["storage"] = storage
        if wandb_mode is not None:
            data["wandb"]["mode"] = wandb_mode
        return spec_from_dict(data)


def spec_from_dict(d: dict) -> StudySpec:
    """Validate a plain dict; the first problem becomes a one-line SpecError."""
    if not isinstance(d, dict):
        raise SpecError(f"(top level): {short(d)} is not allowed; expected a mapping with at least "
                        "'name', 'arms'")
    try:
        return StudySpec.model_validate(d)
    except ValidationError as e:
        raise SpecError(one_line(e.errors(include_url=False)[0])) from None
    except RecursionError:   # YAML anchors can make a value contain itself
        raise SpecError("(top level): the spec is nested too deeply or contains itself; "
                        "expected plain data") from None
