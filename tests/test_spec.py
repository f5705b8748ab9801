"""Tests of study/spec.py: the shipped specs, defaults, round trips, the JSON Schema, a corpus of
invalid specs (tests/data/bad_specs/, one fault per file) and property-based fuzzing.

    .venv/bin/python -m pytest tests/test_spec.py -q

Each YAML file in bad_specs starts with `# expect: <key path>` (FILE: the message starts with the
file's path) and optionally `# value: <repr>` (the bad value, which the message must quote).
Files that can't carry a comment (empty, binary, ...) have their expectation in NO_COMMENT below.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import pathlib

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from study import spec_file
from study.spec import Arm, Distribution, StudySpec, spec_from_dict
from study.spec_errors import SpecError
from study.spec_file import dump_spec, json_schema, load_spec, parse_spec, spec_hash
from trainables.config import DEFAULTS

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "study" / "specs").glob("*.yaml"))
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


# ---- the shipped specs -----------------------------------------------------------------------------
def test_there_are_shipped_specs():
    assert {p.name for p in SPECS} >= {"quick.yaml", "lab_mlp_mnist.yaml", "lab_cnn_cifar10.yaml",
                                       "he2016_cifar10.yaml"}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_shipped_spec_loads_and_round_trips(path):
    assert path.read_text().startswith("#"), "every shipped spec starts with a comment block"
    assert f"archstudy run study/specs/{path.name}" in path.read_text()
    spec = load_spec(path)
    assert isinstance(spec, StudySpec)
    assert spec.name in str(spec.out_dir())
    assert len(set(spec.arm_names)) == len(spec.arms)
    text = dump_spec(spec)
    again = parse_spec(text)
    assert again == spec
    assert dump_spec(again) == text
    assert spec_hash(again) == spec_hash(spec)
    with_name = spec.with_overrides(name=spec.name + "-copy")
    assert with_name.name == spec.name + "-copy" and with_name.arms == spec.arms


def test_he2016_is_the_papers_recipe():
    spec = load_spec(ROOT / "study" / "specs" / "he2016_cifar10.yaml")
    assert spec.search.fixed == {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
                                 "batch_size": 128, "schedule": "multistep", "milestones": [0.5, 0.75],
                                 "gamma": 0.1}
    assert len(spec.seeds) == 5 and spec.data == "cifar10"
    assert {a.model for a in spec.arms} == {f"{kind}{depth}" for kind in ("plain", "resnet")
                                            for depth in (20, 32, 44, 56, 110)}


# ---- defaults and resolution -----------------------------------------------------------------------
def test_defaults_resolve():
    spec = parse_spec(MINIMAL)
    assert (spec.data, spec.data_root, spec.subset) == ("mnist-5k", None, None)
    assert (spec.metric, spec.mode, spec.epochs) == ("val_acc", "max", DEFAULTS["epochs"])
    assert (spec.seeds, spec.width, spec.gradient_flow) == ([0, 1, 2], 1.0, True)
    assert spec.arms == [Arm(model="mlp", name="mlp", batchnorm=True, width=1.0, hidden=None)]
    s = spec.search
    assert (s.algorithm, s.seed, s.trials_per_arm, s.max_concurrent, s.space, s.fixed) == \
        ("optuna", 0, 8, 2, {}, {})
    assert (spec.scheduler.name, spec.scheduler.grace_period, spec.scheduler.reduction_factor) == \
        ("asha", 1, 2.0)
    assert (spec.resources.cpu, spec.resources.gpu) == (1.0, 0.0)
    assert (spec.wandb.project, spec.wandb.entity, spec.wandb.mode) == ("archstudy", None, None)
    assert spec.storage == "~/archstudy-results" and spec.failure.max_retries == 2
    assert parse_spec(MINIMAL + "metric: train_loss").mode == "min"
    assert parse_spec(MINIMAL + "metric: val_loss\nmode: min").mode == "min"


def test_defaults_are_not_shared_between_specs():
    a, b = parse_spec(MINIMAL), parse_spec(MINIMAL)
    a.seeds.append(7)
    a.search.fixed["lr"] = 0.5
    assert b.seeds == [0, 1, 2] and b.search.fixed == {}


def test_arm_names_and_widths():
    spec = parse_spec("""
name: arms
width: 0.5
arms:
  - {model: vgg11}
  - {model: vgg11, batchnorm: false}
  - {model: vgg11, width: 2}
  - {model: mlp, hidden: [32, 16]}
  - {model: resnet20, batchnorm: false, width: 0.25, name: custom}
""")
    assert spec.arm_names == ["vgg11", "vgg11-nobn", "vgg11-w2", "mlp-h32x16", "custom"]
    assert [a.width for a in spec.arms] == [0.5, 0.5, 2.0, 0.5, 0.25]


def test_training_options_are_checked_and_normalised():
    spec = parse_spec(MINIMAL + """search:
  space:
    lr: {loguniform: [1e-4, 1e-1]}
    batch_size: {int: [16, 128]}
    optimizer: {choice: [sgd, adamw]}
    milestones: {choice: [[0.5, 0.75], [0.3, 0.6, 0.9]]}
  fixed: {momentum: 1e-1, weight_decay: 0, nesterov: true}
""")
    assert spec.search.space["lr"] == Distribution(loguniform=[1e-4, 0.1])
    assert (spec.search.space["lr"].kind, spec.search.space["lr"].args) == ("loguniform", [1e-4, 0.1])
    assert spec.search.space["batch_size"].kind == "int"
    assert spec.search.fixed == {"momentum": 0.1, "weight_decay": 0.0, "nesterov": True}
    assert isinstance(spec.search.fixed["weight_decay"], float)


def test_yaml_reads_exponents_without_a_dot_as_numbers():
    spec = parse_spec(MINIMAL + "search: {fixed: {lr: 1e-3, weight_decay: 5E-4}}")
    assert spec.search.fixed == {"lr": 0.001, "weight_decay": 0.0005}
    with pytest.raises(SpecError, match=r"^search\.fixed\.lr: '1e-3' is not allowed"):
        parse_spec(MINIMAL + "search: {fixed: {lr: '1e-3'}}")


def test_text_that_looks_like_a_number_survives_a_round_trip():
    spec = parse_spec("name: '1e5'\ndata_root: '1e-3'\nstorage: '2.5'\narms: [{model: mlp, name: '1e2'}]")
    assert (spec.name, spec.data_root, spec.storage, spec.arm_names) == ("1e5", "1e-3", "2.5", ["1e2"])
    assert parse_spec(dump_spec(spec)) == spec


def test_yaml_anchors_and_merge_keys_work():
    spec = parse_spec("""
name: anchors
arms:
  - &first {model: vgg11, batchnorm: false, width: 0.5}
  - {<<: *first, model: vgg16}
""")
    assert spec.arm_names == ["vgg11-nobn-w0.5", "vgg16-nobn-w0.5"]


# ---- hash, overrides, helpers ----------------------------------------------------------------------
def test_spec_hash_is_stable_and_changes_with_any_value():
    spec = parse_spec(MINIMAL + "epochs: 5")
    reordered = parse_spec("epochs: 5\narms: [{model: mlp}]\nname: tiny\n")
    assert spec_hash(spec) == spec_hash(reordered) == spec_hash(parse_spec(dump_spec(spec)))
    canonical = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
    assert spec_hash(spec) == hashlib.sha256(canonical.encode()).hexdigest()[:12]
    assert len(spec_hash(spec)) == 12 and int(spec_hash(spec), 16) >= 0
    others = [MINIMAL + "epochs: 6", MINIMAL + "epochs: 5\nseeds: [0, 1]",
              MINIMAL + "epochs: 5\nsearch: {space: {lr: {loguniform: [0.001, 0.1]}}}",
              MINIMAL + "epochs: 5\nsearch: {space: {lr: {loguniform: [0.001, 0.2]}}}",
              MINIMAL.replace("mlp", "vgg11") + "epochs: 5"]
    hashes = {spec_hash(parse_spec(text)) for text in others} | {spec_hash(spec)}
    assert len(hashes) == len(others) + 1


def test_with_overrides():
    spec = parse_spec(MINIMAL)
    changed = spec.with_overrides(name="other", storage="s3://bucket/runs", wandb_mode="disabled")
    assert (changed.name, changed.storage, changed.wandb.mode) == ("other", "s3://bucket/runs", "disabled")
    assert changed.out_dir() == "s3://bucket/runs/other"
    assert spec.name == "tiny" and spec.wandb.mode is None          # the original is untouched
    assert spec.with_overrides() == spec
    for bad in ({"name": "../escape"}, {"storage": "ftp://host/x"}, {"wandb_mode": "sometimes"}):
        with pytest.raises(SpecError) as info:
            spec.with_overrides(**bad)
        assert one_line(str(info.value))


def test_out_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = parse_spec(MINIMAL)
    assert spec.out_dir() == tmp_path / "archstudy-results" / "tiny"
    assert parse_spec(MINIMAL + "storage: gs://b/x/").out_dir() == "gs://b/x/tiny"
    local = parse_spec(MINIMAL + "storage: results").out_dir()
    assert local.is_absolute() and local == pathlib.Path.cwd() / "results" / "tiny"


def test_wandb_resolved_mode():
    spec = parse_spec(MINIMAL)
    assert spec.wandb.resolved_mode({}) == "offline"
    assert spec.wandb.resolved_mode({"WANDB_API_KEY": "x" * 40}) == "online"
    assert spec.wandb.resolved_mode({"WANDB_API_KEY": ""}) == "offline"
    disabled = parse_spec(MINIMAL + "wandb: {mode: disabled}").wandb
    assert disabled.resolved_mode({"WANDB_API_KEY": "k"}) == "disabled"
    assert spec.wandb.resolved_mode() in ("online", "offline")


def test_spec_from_dict():
    assert spec_from_dict({"name": "d", "arms": [{"model": "mlp"}]}).arm_names == ["mlp"]
    for bad in (None, [], "name: x", 3):
        with pytest.raises(SpecError, match=r"^\(top level\): .* is not allowed; expected a mapping"):
            spec_from_dict(bad)
    recursive: list = []
    recursive.append(recursive)
    with pytest.raises(SpecError):
        spec_from_dict({"name": "r", "arms": [{"model": "mlp"}], "search": {"space": {
            "optimizer": {"choice": [recursive, recursive]}}}})
    assert issubclass(SpecError, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="cannot read the spec") as info:
        load_spec(tmp_path / "nope.yaml")
    assert str(info.value).startswith(str(tmp_path / "nope.yaml"))
    with pytest.raises(SpecError, match="cannot read the spec"):
        load_spec(tmp_path)


# ---- the JSON Schema -------------------------------------------------------------------------------
def test_json_schema_is_valid_and_accepts_the_shipped_specs():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema" and schema["title"]
    json.dumps(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in SPECS:
        validator.validate(spec_file._load_yaml(path.read_text(), str(path)))
        validator.validate(json.loads(json.dumps(load_spec(path).model_dump(mode="json", by_alias=True))))
    for bad in ({"arms": [{"model": "mlp"}]}, {"name": "x", "arms": [{"model": "nope"}]},
                {"name": "x", "arms": [{"model": "mlp"}], "extra": 1},
                {"name": "x", "arms": [{"model": "mlp"}], "search": {"space": {"lr": {}}}}):
        assert not validator.is_valid(bad)


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
