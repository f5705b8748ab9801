"""Spec files: YAML in (`load_spec`, `parse_spec`) and out (`dump_spec`), the spec's hash and its
JSON Schema.

    archstudy validate study/specs/quick.yaml     # load, check and print the resolved spec
    archstudy schema > spec.schema.json           # for editors

YAML is read strictly (trainables/yaml_values.py, the parser the training CLI uses too): a repeated
key is an error, 1e-3 is a number (PyYAML alone reads it as text), and every failure, from a syntax
error to a binary file, is a one-line SpecError.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from studyfiles.spec_data import canonical_hash, with_later_keys
from trainables.yaml_values import Dumper, Loader

from .spec import StudySpec, spec_from_dict
from .spec_errors import SpecError, short


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{source}: invalid YAML{where}: {e.problem or e.context or e}") from None
    except yaml.reader.ReaderError as e:   # control characters
        code = e.character if isinstance(e.character, int) else ord(e.character)
        raise SpecError(f"{source}: not a text YAML file: character #x{code:04x} at position "
                        f"{e.position} is not allowed in YAML") from None
    except Exception as e:   # PyYAML's ValueErrors (a date like 2021-02-30), very deep nesting, ...
        raise SpecError(f"{source}: invalid YAML: {type(e).__name__}: {e}") from None


def load_spec(path: str | os.PathLike, saved: bool = False) -> StudySpec:
    """Read, parse and validate a spec file; every failure is a SpecError. `saved`: a study
    folder's spec.yaml, in which a key the spec gained later (studyfiles.spec_data.LATER_KEYS) has
    the value that does what the study did when it was written without it."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise SpecError(f"{path}: cannot read the spec: {e.strerror or e}") from None
    try:
        if b"\x00" in raw:
            raise UnicodeError("NUL byte")
        text = raw.decode("utf-8-sig")
    except UnicodeError:
        raise SpecError(f"{path}: not a text YAML file (binary, or not UTF-8); "
                        "expected a UTF-8 YAML spec") from None
    return parse_spec(text, source=str(path), saved=saved)


def parse_spec(text: str, source: str = "<string>", saved: bool = False) -> StudySpec:
    data = _load_yaml(text, source)
    if data is None:
        raise SpecError(f"{source}: empty spec; expected a mapping with at least 'name', 'arms'")
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the top level is a {type(data).__name__} ({short(data)}), not a "
                        "mapping; expected a mapping with at least 'name', 'arms'")
    return spec_from_dict(with_later_keys(data) if saved else data)


def json_schema() -> dict:
    """JSON Schema (draft 2020-12) of a spec, for editors; cross-key rules are only in StudySpec."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **StudySpec.model_json_schema(), "title": "archstudy study spec"}


def resolved(spec: StudySpec) -> dict:
    """The spec as plain data, every default filled in (what spec.yaml and study.json hold)."""
    return spec.model_dump(mode="json", by_alias=True)


def spec_hash(spec: StudySpec) -> str:
    """First 12 hex digits of the sha256 of the resolved spec as canonical JSON (the analysis
    computes the same from spec.yaml: studyfiles/spec_data.py)."""
    return canonical_hash(resolved(spec))


def dump_spec(spec: StudySpec) -> str:
    """The resolved spec (every default filled in) as YAML that loads back to an equal spec."""
    return yaml.dump(resolved(spec), Dumper=Dumper, sort_keys=False, allow_unicode=True)


