"""Training options: one typed model, `TrainingOptions` (pydantic), with every option's default and
check. It is the one source of truth that the training loop, the CLI (`python -m trainables`) and
the study spec (`archstudy validate`: its arms, search.fixed and search.space) all use.

    opts = TrainingOptions.resolve({"model": "resnet20", "lr": 0.1})   # defaults filled in
    opts.lr, opts.width                                                 # 0.1, 1.0
    TrainingOptions.resolve({"lr": -1})   # OptionError: lr: -1 is not allowed; expected a number > 0

The value rules are the spec's: true is not 1 and '5e-4' (text) is not a number; integers widen to
float where a float is expected (3 -> 3.0); nan and inf are refused. Every refusal is ONE line,
"key: value is not allowed; <what is>", made by `option_error` from pydantic's ValidationError.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Annotated, Any, Literal, Mapping, Optional, get_args, get_origin

from pydantic import (AfterValidator, AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Field,
                      Strict, StrictBool, StrictInt, StrictStr, ValidationError)
from pydantic_core import PydanticCustomError

from .models import list_models


@dataclass(frozen=True)
class Allowed:
    """What an option takes, in words, for options whose rule is not a choice, true/false or bounds
    (metadata of the field's type; pydantic ignores it)."""
    text: str


def _plain_int(value: Any) -> Any:
    if isinstance(value, Integral) and not isinstance(value, (bool, int)):   # numpy's (Python callers)
        return int(value)
    return value


def _list_or_tuple(value: Any) -> Any:
    if not isinstance(value, (list, tuple)):   # pydantic would take a set (YAML's !!set) too
        raise PydanticCustomError("list_type", "Input should be a valid list")
    return value


def _increasing(values: list[float]) -> list[float]:
    if values != sorted(set(values)):
        raise ValueError("expected increasing values")
    return values


# ---- the value types (also the study spec's, for its arms) -----------------------------------------
Number = Annotated[float, Strict(), AllowInfNan(False)]     # ints are fine (3 -> 3.0); bools aren't
Int = Annotated[StrictInt, BeforeValidator(_plain_int)]    # bools aren't; 3.0 isn't either
PosInt = Annotated[Int, Field(ge=1)]
Width = Annotated[Number, Field(gt=0.0, le=8.0)]
Hidden = Annotated[list[PosInt], BeforeValidator(_list_or_tuple), Field(min_length=1)]
ModelName = Literal[tuple(list_models())]
Fraction = Annotated[Number, Field(gt=0.0, lt=1.0)]
Milestones = Annotated[list[Fraction], BeforeValidator(_list_or_tuple), AfterValidator(_increasing),
                       Allowed("expected a list of increasing fractions between 0 and 1")]
Device = Annotated[StrictStr, Field(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$"),
                   Allowed("choose one of: auto, cpu, cuda, cuda:N, mps")]


BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}   # pydantic's Field() bounds, in words


class TrainingOptions(BaseModel):
    """Every option of one training run, checked; unknown options are errors."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    # the model (in a study: from its arm)
    model: ModelName = "mlp"                     # a name from trainables.models.list_models()
    width: Width = 1.0                           # multiplies every channel / hidden-unit count
    batchnorm: StrictBool = True                 # False removes every BatchNorm
    # MLP hidden sizes; None means [128, 64]
    hidden: Annotated[Optional[Hidden], Allowed("expected a non-empty list of integers >= 1")] = None
    # the optimisation
    optimizer: Literal["sgd", "adamw"] = "sgd"   # sgd (momentum, optional Nesterov) or adamw
    lr: Annotated[Number, Field(gt=0.0)] = 0.01  # peak learning rate (the lab's)
    momentum: Annotated[Number, Field(ge=0.0, lt=1.0)] = 0.9         # SGD momentum / AdamW beta1
    nesterov: StrictBool = False                                     # Nesterov momentum for SGD
    weight_decay: Annotated[Number, Field(ge=0.0)] = 1e-4   # L2 for SGD, decoupled for AdamW (lab: 1e-4)
    schedule: Literal["constant", "multistep", "cosine", "onecycle"] = "multistep"   # stepped per batch
    milestones: Milestones = [0.5, 0.75]         # multistep: fractions of the steps where lr *= gamma
    gamma: Annotated[Number, Field(gt=0.0, le=1.0)] = 0.1   # multistep: lr factor (the lab's x0.1)
    label_smoothing: Annotated[Number, Field(ge=0.0, lt=1.0)] = 0.0  # cross-entropy label smoothing
    batch_size: PosInt = 64                      # samples per step (the lab's 64)
    epochs: PosInt = 10                          # full passes over the training split
    seed: Annotated[Int, Field(ge=0)] = 0        # model init, shuffling and augmentation
    # measurement and hardware
    grad_flow: StrictBool = True                 # capture per-layer gradient flow (trainables/gradflow.py)
    grad_flow_batches: PosInt = 8                # probe batches per epoch for gradient flow
    device: Device = "auto"                      # auto (cuda if present), cpu, cuda, cuda:N, mps
    precision: Literal["auto", "bf16", "fp32"] = "auto"   # auto: bf16 autocast on cuda, else fp32
    compile: StrictBool = False                  # torch.compile the model (GPU runs; slow to start)

    @classmethod
    def resolve(cls, config: Mapping[str, Any] | TrainingOptions) -> TrainingOptions:
        """`config` checked, with the defaults filled in; OptionError (a ValueError, one line) for a
        bad value, ValueError for an unknown option. TrainingOptions are returned as they are."""
        if isinstance(config, cls):
            return config
        try:
            return cls.model_validate(dict(config))
        except ValidationError as e:
            raise option_error(e, config) from None

    @classmethod
    def check_value(cls, key: str, value: Any) -> Any:
        """One option's value, checked and normalised (3 -> 3.0 where a float is expected)."""
        return getattr(cls.resolve({key: value}), key)

    @classmethod
    def takes_any_number(cls, key: str) -> bool:
        """Whether option `key` is a float (a search may draw it from a range)."""
        return cls.model_fields[key].annotation is float

    @classmethod
    def allowed(cls, key: str) -> str:
        """What option `key` takes, in words: 'expected a number > 0', 'choose one of: sgd, adamw'."""
        field = cls.model_fields[key]
        text = next((rule.text for rule in field.metadata if isinstance(rule, Allowed)), None)
        if text is not None:
            return text
        if get_origin(field.annotation) is Literal:
            return "choose one of: " + ", ".join(get_args(field.annotation))
        if field.annotation is bool:
            return "expected true or false"
        bounds = [f"{op} {getattr(rule, name):g}" for rule in field.metadata   # Gt(0.0) -> '> 0'
                  for name, op in BOUNDS.items() if hasattr(rule, name)]
        return f"expected {'an integer' if field.annotation is int else 'a number'} " + " and ".join(bounds)


class OptionError(ValueError):
    """A training option's bad value; str(e) is 'key: value is not allowed; allowed' (one line)."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}: {value!r} is not allowed; {allowed}")


def option_error(error: ValidationError, given: Mapping[str, Any]) -> ValueError:
    """The first problem that TrainingOptions found in `given`, as a one-line error naming the key,
    the value (as given: a whole list, not one item of it) and what the option takes. Bad values
    come first, in the options' order; then the first unknown option."""
    options = TrainingOptions.model_fields
    for problem in error.errors(include_url=False):
        key = problem["loc"][0]
        if key in options and key in given:   # not extra_forbidden, nor a key that is no string
            return OptionError(key, given[key], TrainingOptions.allowed(key))
    unknown = next(key for key in given if key not in options)
    return ValueError(f"{unknown}: unknown option; allowed options: {', '.join(options)}")


def training_options(config: Mapping[str, Any]) -> dict:
    """The options of `config` that the training loop takes (drops a study's bookkeeping keys)."""
    return {k: v for k, v in config.items() if k in TrainingOptions.model_fields}
