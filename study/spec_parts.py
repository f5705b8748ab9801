"""The spec's value types and its small sections: Subset, Arm and Distribution (one searched option).
Used by study/spec.py, which composes them into a `StudySpec`:

    archstudy validate study/specs/quick.yaml     # load, check and print the resolved spec

Every section is a `Part`: pydantic with unknown keys refused in one line that names the allowed keys.
"""
from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal, Optional

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr,
                      model_serializer, model_validator)

from trainables.config import Hidden, ModelName, Number, PosInt, Width
from trainables.data import DATASETS

from .spec_errors import NAME_RE, bad


# ---- value types (strict: YAML's true is not 1, '5' is not 5) --------------------------------------
def _no_dotdot(name: str) -> str:
    if ".." in name:
        raise bad((), name, "'..' is not allowed in a name (it is used as a folder name)")
    return name


def _storage(value: str) -> str:
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]+):", value)   # 2+ letters: C:\ is a local path
    if not value.strip() or (scheme and not re.fullmatch(r"(s3|gs)://[^/\s]+(/.*)?", value)):
        raise bad((), value, "expected a local path, s3://BUCKET/... or gs://BUCKET/...")
    return value


# Number (ints are fine, 3 -> 3.0; bools aren't), PosInt and the arms' ModelName, Width and Hidden
# are the training options' own types (trainables/config.py).
Name = Annotated[StrictStr, Field(pattern=NAME_RE), AfterValidator(_no_dotdot)]
NonNegInt = Annotated[StrictInt, Field(ge=0)]
Pair = Annotated[list[Number], Field(min_length=2, max_length=2)]
IntPair = Annotated[list[StrictInt], Field(min_length=2, max_length=2)]
Dataset = Literal[tuple(DATASETS)]
Metric = Literal["val_acc", "val_loss", "train_acc", "train_loss"]
StoragePath = Annotated[StrictStr, AfterValidator(_storage)]


class Part(BaseModel):
    """Base of every section: unknown keys are errors that name the allowed keys."""
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = [field.alias or name for name, field in cls.model_fields.items()]
            for key in data:
                if key not in allowed:
                    close = difflib.get_close_matches(str(key), allowed, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise bad((str(key),), key, f"unknown key{hint}; allowed keys: {', '.join(allowed)}")
        return data


# ---- the sections ----------------------------------------------------------------------------------
class Subset(Part):
    """Use only the first n samples of a split (tests, quick runs); a missing split is used whole."""
    train: Optional[PosInt] = None
    val: Optional[PosInt] = None
    test: Optional[PosInt] = None


class Arm(Part):
    """One architecture to compare; `width` left out means the study's `width`."""
    model: ModelName
    name: Optional[Name] = None             # default: model + "-nobn" + "-w<width>" + "-h<a>x<b>"
    batchnorm: StrictBool = True
    width: Optional[Width] = None
    hidden: Optional[Hidden] = None         # mlp only

    @model_validator(mode="after")
    def _check(self) -> Arm:
        if self.hidden is not None and self.model != "mlp":
            raise bad(("hidden",), self.hidden, f"only model mlp takes hidden layers (this arm is "
                                                 f"{self.model}); remove 'hidden'")
        if self.name is None:
            self.name = (self.model + ("" if self.batchnorm else "-nobn")
                         + (f"-w{self.width:g}" if self.width is not None else "")
                         + ("-h" + "x".join(map(str, self.hidden)) if self.hidden else ""))
            if not re.match(NAME_RE, self.name):
                raise bad(("name",), self.name, "the name made from model and hidden is too long; "
                                                 "give the arm a 'name'")
        return self


KINDS = ("loguniform", "uniform", "int", "choice")


def _one_key_schema(schema: dict) -> None:
    """JSON Schema of a Distribution: exactly one of its keys, none of them null."""
    schema.update(minProperties=1, maxProperties=1)
    for prop in schema["properties"].values():
        prop.update(next(s for s in prop.pop("anyOf") if s != {"type": "null"}))
        prop.pop("default", None)


class Distribution(Part):
    """One searched option: exactly one of {loguniform: [lo, hi]}, {uniform: [lo, hi]},
    {int: [lo, hi]} (both ends included) or {choice: [v, ...]}."""
    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_key_schema)
    loguniform: Optional[Pair] = None
    uniform: Optional[Pair] = None
    int_: Optional[IntPair] = Field(None, alias="int")
    choice: Optional[Annotated[list[Any], Field(min_length=1)]] = None

    @property
    def kind(self) -> str:
        return next(kind for kind in KINDS if getattr(self, _attr(kind)) is not None)

    @property
    def args(self) -> list:
        return getattr(self, _attr(self.kind))

    @model_serializer
    def _as_one_key(self) -> dict:
        return {self.kind: self.args}

    def __repr__(self) -> str:
        return f"Distribution({self.kind}={self.args!r})"

    @model_validator(mode="after")
    def _check(self) -> Distribution:
        given = {kind: getattr(self, _attr(kind)) for kind in KINDS
                 if getattr(self, _attr(kind)) is not None}
        if len(given) != 1:
            raise bad((), given, "expected exactly one of: loguniform: [lo, hi], uniform: [lo, hi], "
                                  "int: [lo, hi], choice: [v, ...]")
        kind, args = self.kind, self.args
        if kind == "choice":
            for i, value in enumerate(args):
                if not isinstance(value, (bool, int, float, str)):   # Optuna stores nothing else
                    raise bad(("choice", i), value, "a choice is a number, a string or true/false "
                                                     "(Optuna's categories hold no lists or mappings); "
                                                     "a list option such as milestones goes in "
                                                     "search.fixed")
                if value in args[:i]:
                    raise bad(("choice", i), value, "expected distinct choices (this one is repeated)")
            return self
        if kind == "loguniform" and args[0] <= 0:
            raise bad((kind, 0), args[0], "expected lo > 0 (a log scale can't reach 0)")
        if not args[0] < args[1]:
            raise bad((kind,), args, "expected [lo, hi] with lo < hi")
        return self


def _attr(kind: str) -> str:
    return "int_" if kind == "int" else kind
