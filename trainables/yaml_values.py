"""How archstudy reads values written as YAML: the one parser behind the study spec
(study/spec_file.py) and every command-line value (`python -m trainables --weight-decay 5e-4`).

    parse_yaml_value("5e-4")   # 0.0005 (PyYAML's YAML 1.1 alone reads it as the text '5e-4')
    parse_yaml_value("[0.5, 0.75]"), parse_yaml_value("true"), parse_yaml_value("cosine")

`Loader` is yaml.SafeLoader that reads 1e-3, 1E-3, .5 and 1e3 as numbers (PyYAML wants 1.0e-3) and
rejects repeated keys; `Dumper` quotes every string that `Loader` would read as something else
(e.g. '1e-3'), so a value dumped and loaded again is the same value. It lives in trainables so that
the training CLI can use it: study imports trainables, never the other way round.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

FLOAT_TAG = "tag:yaml.org,2002:float"
FLOAT_RE = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class Loader(yaml.SafeLoader):
    """yaml.SafeLoader that reads 1e-3 as a number (PyYAML wants 1.0e-3) and rejects repeated keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if (key_node.tag, key_node.value) in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark)
                seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep)


class Dumper(yaml.SafeDumper):
    """Quotes every string that Loader would read as something else (e.g. '1e-3')."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver(FLOAT_TAG, FLOAT_RE, list("-+0123456789."))
Dumper.yaml_implicit_resolvers = Loader.yaml_implicit_resolvers


def parse_yaml_value(text: str) -> Any:
    """One value written as YAML (a command-line flag's value), read as a spec file reads it; a
    ValueError with a one-line message if it is not valid YAML (`[1,`, a stray `:` ...)."""
    try:
        return yaml.load(text, Loader=Loader)
    except Exception as e:   # yaml.YAMLError, PyYAML's ValueErrors (a date like 2021-02-30), ...
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ValueError(f"{text!r} is not a valid YAML value ({problem})") from None
