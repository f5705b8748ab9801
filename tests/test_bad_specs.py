"""Invalid specs are refused with one line (study/spec_errors.py): a corpus (tests/data/bad_specs/,
one fault per file), the same corpus through `archstudy validate` and `archstudy run`, and
property-based fuzzing of the parser (hypothesis).

    .venv/bin/python -m pytest tests/test_bad_specs.py -q

Each YAML file in bad_specs starts with `# expect: <key path>` (FILE: the message starts with the
file's path) and optionally `# value: <repr>` (the bad value, which the message must quote).
Files that can't carry a comment (empty, binary, ...) have their expectation in NO_COMMENT below.
"""
from __future__ import annotations

import copy
import json
import os
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from study.spec import Arm, Distribution, StudySpec, spec_from_dict
from study.spec_errors import SpecError
from study.spec_file import dump_spec, load_spec, parse_spec, spec_hash

ROOT = pathlib.Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "data" / "bad_specs"
NO_COMMENT = {   # file -> a fragment its message must contain (after the file's path)
    "empty.yaml": "empty spec; expected a mapping with at least 'name', 'arms'",
    "binary.yaml": "not a text YAML file",
    "latin1.yaml": "not a text YAML file",
    "control_character.yaml": "not a text YAML file: character #x0001",
}
MINIMAL = "name: tiny\narms: [{model: mlp}]\n"
FUZZ = settings(max_examples=int(os.environ.get("SPEC_FUZZ_EXAMPLES", "200")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def one_line(message: str) -> bool:
    return len(message.splitlines()) == 1 and message.strip() == message and message != ""


# ---- the corpus of invalid specs -------------------------------------------------------------------
BAD_FILES = sorted(BAD.iterdir())


def test_corpus_is_large_enough():
    assert len(BAD_FILES) >= 40
    assert set(NO_COMMENT) <= {p.name for p in BAD_FILES}


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.name)
def test_bad_spec_is_rejected_with_a_one_line_message(path):
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert one_line(message), message
    assert "\n" not in message and "Value error" not in message and "pydantic" not in message
    if path.name in NO_COMMENT:
        assert message.startswith(f"{path}: ") and NO_COMMENT[path.name] in message, message
        return
    head = path.read_text().splitlines()
    assert head[0].startswith("# expect: "), f"{path.name} needs a '# expect: <key path>' first line"
    expect = head[0].removeprefix("# expect: ")
    if expect == "FILE":
        assert message.startswith(f"{path}: "), message
    else:
        assert message.startswith(f"{expect}: "), message
        assert " is not allowed; " in message or ": missing; " in message, message
    if len(head) > 1 and head[1].startswith("# value: "):
        assert head[1].removeprefix("# value: ") in message, message


# ---- property-based tests --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "spec.yaml"


def loads_or_fails_cleanly(load):
    try:
        spec = load()
    except SpecError as e:
        assert one_line(str(e)), repr(str(e))
        return None
    assert isinstance(spec, StudySpec)
    return spec


@FUZZ
@given(st.text())
def test_any_text_loads_or_fails_cleanly(scratch, text):
    loads_or_fails_cleanly(lambda: parse_spec(text))
    scratch.write_text(text, encoding="utf-8")
    loads_or_fails_cleanly(lambda: load_spec(scratch))


@FUZZ
@given(st.binary())
def test_any_bytes_load_or_fail_cleanly(scratch, data):
    scratch.write_bytes(data)
    loads_or_fails_cleanly(lambda: load_spec(scratch))


@FUZZ
@given(st.sampled_from([MINIMAL, (ROOT / "study/specs/quick.yaml").read_text()]), st.text(max_size=30))
def test_spliced_text_loads_or_fails_cleanly(base, noise):
    cut = len(noise) * 7 % max(len(base), 1)
    loads_or_fails_cleanly(lambda: parse_spec(base[:cut] + noise + base[cut:]))


QUICK = load_spec(ROOT / "study" / "specs" / "quick.yaml").model_dump(mode="json", by_alias=True)
KEYS = sorted({key for model in (StudySpec, Arm, Distribution) for key in model.model_json_schema()
               .get("properties", {})} | {"int", "loguniform", "choice", "lr", "epochs", "seed",
                                          "optimizer", "momentum", "train", "gpu", "cpu", "mode"})
json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 300) | st.integers() | st.floats() |
    st.text(max_size=12) | st.sampled_from(["mlp", "sgd", "asha", "max", "s3://b/x", "1e-3", "..", "a/b"]),
    lambda inner: (st.lists(inner, max_size=4) |
                   st.dictionaries(st.text(max_size=8) | st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=8)


def nodes(value, path=()):
    """Every (path, node) in a JSON-like tree, the root included."""
    yield path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from nodes(child, path + (key,))


def mutate(tree, draw):
    paths = [p for p, _ in nodes(tree)]
    path = draw(st.sampled_from(paths))
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    target = parent[path[-1]] if path else tree
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "add" and isinstance(target, (dict, list)):
        if isinstance(target, dict):
            target[draw(st.sampled_from(KEYS) | st.text(max_size=8))] = draw(json_like)
        else:
            target.insert(draw(st.integers(0, len(target))), draw(json_like))
    elif action == "delete" and path:
        del parent[path[-1]]
    elif path:
        parent[path[-1]] = draw(json_like)


@FUZZ
@given(st.data())
def test_mutated_quick_spec_loads_or_fails_cleanly(data):
    tree = copy.deepcopy(QUICK)
    for _ in range(data.draw(st.integers(1, 3))):
        mutate(tree, data.draw)
    spec = loads_or_fails_cleanly(lambda: spec_from_dict(tree))
    if spec is not None:   # whatever is valid survives dump -> load unchanged
        assert parse_spec(dump_spec(spec)) == spec
        assert spec_hash(spec_from_dict(spec.model_dump(mode="json", by_alias=True))) == spec_hash(spec)


# ---- the corpus through the command line ----------------------------------------------------------
CORPUS_THROUGH_CLI = r"""
import contextlib, io, json, sys
import ray
from study.cli import main
storage, paths, results = sys.argv[1], sys.argv[2:], {}
for path in paths:
    for command in ("validate", "run"):
        err, out = io.StringIO(), io.StringIO()
        args = [command, path] + (["--storage", storage] if command == "run" else [])
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(args)
        results[f"{command} {path}"] = [rc, err.getvalue(), out.getvalue()]
print(json.dumps({"results": results, "ray_initialized": ray.is_initialized()}))
"""


def test_every_bad_spec_fails_validate_and_run_with_one_line_and_no_ray(tmp_path):
    """`archstudy validate` and `archstudy run` on the whole corpus, in one fresh process: exit 2,
    one line on stderr, nothing on stdout, nothing written, and no Ray started."""
    import subprocess
    import sys
    storage = tmp_path / "storage"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-c", CORPUS_THROUGH_CLI, str(storage), *map(str, BAD_FILES)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    report = json.loads(stdout.splitlines()[-1])
    assert len(report["results"]) == 2 * len(BAD_FILES) >= 80
    wrong = {call: r for call, r in report["results"].items()
             if r[0] != 2 or r[2] != "" or len(r[1].splitlines()) != 1 or not r[1].startswith("error: ")}
    assert wrong == {}
    assert not report["ray_initialized"]
    assert not storage.exists()
    ray_temp = pathlib.Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"
    assert not list(ray_temp.glob(f"session_*_{proc.pid}"))   # a started Ray leaves session_<time>_<pid>
