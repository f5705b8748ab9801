"""A spec's errors: `SpecError`, whose message is ONE line saying where, what and what is allowed,
and the translation of pydantic's validation errors into such lines:

    arms[1].model: 'resnet99' is not allowed; choose one of: mlp, vgg11, vgg13, ...

Used by study/spec.py (the validators raise `bad(...)`) and study/spec_file.py (YAML errors).
"""
from __future__ import annotations

import re
from typing import Any

from pydantic_core import PydanticCustomError


class SpecError(ValueError):
    """A spec that can't be used. str(e) is one line: '<key.path>: <value> is not allowed; <what is>'."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).splitlines()))


def bad(where: tuple, value: Any, allowed: str) -> PydanticCustomError:
    """The error our validators raise: `where` is the key path below the model being validated."""
    return PydanticCustomError("spec", "{allowed}", {"where": where, "value": value, "allowed": allowed})


# names (the study's, the arms'): the only strings in a spec checked against a pattern
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
NAME_RULE = "expected 1-100 of the characters A-Z a-z 0-9 . _ -, starting with a letter or digit"


EXPECTED = {
    "int_type": "expected an integer", "int_parsing": "expected an integer",
    "int_from_float": "expected an integer", "float_type": "expected a number",
    "float_parsing": "expected a number", "finite_number": "expected a finite number",
    "bool_type": "expected true or false", "bool_parsing": "expected true or false",
    "string_type": "expected a string", "string_too_short": "expected a non-empty string",
    "string_pattern_mismatch": NAME_RULE, "list_type": "expected a list",
    "dict_type": "expected a mapping", "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping", "recursion_loop": "expected plain data",
}
COMPARISONS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
               "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}


def one_line(err: dict) -> str:
    loc, kind, ctx, value = list(err["loc"]), err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "spec":
        loc, value, allowed = loc + list(ctx["where"]), ctx["value"], ctx["allowed"]
    elif kind == "missing":
        return f"{_path(loc)}: missing; this key is required"
    elif kind == "literal_error":
        allowed = "choose one of: " + ", ".join(re.findall(r"'([^']*)'", ctx["expected"]))
    elif kind in COMPARISONS:
        key, op = COMPARISONS[kind]
        bound = ctx[key]
        allowed = f"expected a number {op} {bound:g}" if isinstance(bound, float) else \
            f"expected an integer {op} {bound}"
    elif kind in ("too_short", "too_long"):
        n = ctx.get("min_length", ctx.get("max_length"))
        allowed = ("expected a non-empty list" if kind == "too_short" and n == 1 else
                   f"expected {'at least' if kind == 'too_short' else 'at most'} {n} item{'s' * (n != 1)}")
    else:
        allowed = EXPECTED.get(kind) or err["msg"].splitlines()[0]
    if kind == "string_type" and isinstance(value, bool):
        allowed += " (YAML reads yes/no/on/off/true/false as booleans: put the text in quotes)"
    elif kind in ("int_type", "float_type") and isinstance(value, str) and _is_number(value):
        allowed += " (this is text: write the number without quotes)"
    return f"{_path(loc)}: {short(value)} is not allowed; {allowed}"


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _path(loc: list) -> str:
    """('arms', 1, 'model') -> 'arms[1].model'."""
    text = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        elif part != "[key]":   # odd keys (spaces, control characters) are quoted
            key = str(part) if re.fullmatch(r"[A-Za-z0-9_.-]+", str(part)) else repr(part)
            text += ("." if text else "") + key
    return text or "(top level)"


def short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
