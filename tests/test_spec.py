"""Tests of the study spec (study/spec.py, spec_file.py): the shipped specs, defaults, round trips,
hashes, overrides and the JSON Schema. Invalid specs are in test_bad_specs.py.

    .venv/bin/python -m pytest tests/test_spec.py -q
"""
from __future__ import annotations

import hashlib
import json
import pathlib

import jsonschema
import pytest

from study import spec_file
from study.spec import Arm, Distribution, StudySpec, spec_from_dict
from study.spec_errors import SpecError
from study.spec_file import dump_spec, json_schema, load_spec, parse_spec, spec_hash
from trainables.config import TrainingOptions

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "study" / "specs").glob("*.yaml"))
MINIMAL = "name: tiny\narms: [{model: mlp}]\n"


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
    assert (spec.metric, spec.mode, spec.epochs) == ("val_acc", "max", TrainingOptions().epochs)
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
  fixed: {momentum: 1e-1, weight_decay: 0, nesterov: true, milestones: [0.3, 0.6, 0.9]}
""")
    assert spec.search.space["lr"] == Distribution(loguniform=[1e-4, 0.1])
    assert (spec.search.space["lr"].kind, spec.search.space["lr"].args) == ("loguniform", [1e-4, 0.1])
    assert spec.search.space["batch_size"].kind == "int"
    assert spec.search.fixed == {"momentum": 0.1, "weight_decay": 0.0, "nesterov": True,
                                 "milestones": [0.3, 0.6, 0.9]}
    assert isinstance(spec.search.fixed["weight_decay"], float)
    # lists are fixed, never searched: Optuna's categories hold scalars only (issue 12; this spec
    # had milestones: {choice: [[0.5, 0.75], [0.3, 0.6, 0.9]]}, which ran and crashed the analysis)
    with pytest.raises(SpecError, match=r"^search\.space\.milestones\.choice\[0\]: \[0\.5, 0\.75\] is "
                                        r"not allowed; a choice is a number, a string or true/false"):
        parse_spec(MINIMAL + "search: {space: {milestones: {choice: [[0.5, 0.75], [0.3, 0.6, 0.9]]}}}\n")


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
    # keys the spec gained later are hashed only when they differ from what older studies did
    # (studyfiles.spec_data.LATER_KEYS), so those studies keep their hash
    data = spec.model_dump(mode="json", by_alias=True)
    assert data["search"].pop("replicates") == 1 and data["split"] == "per_seed"
    assert data["search"].pop("startup_trials") == 10
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert spec_hash(spec) == hashlib.sha256(canonical.encode()).hexdigest()[:12]
    assert len(spec_hash(spec)) == 12 and int(spec_hash(spec), 16) >= 0
    older = parse_spec(MINIMAL + "epochs: 5\nsplit: fixed")
    del data["split"]
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert spec_hash(older) == hashlib.sha256(canonical.encode()).hexdigest()[:12]
    others = [MINIMAL + "epochs: 6", MINIMAL + "epochs: 5\nseeds: [0, 1]",
              MINIMAL + "epochs: 5\nsplit: fixed", MINIMAL + "epochs: 5\nsearch: {replicates: 2}",
              MINIMAL + "epochs: 5\nsearch: {startup_trials: 4}",
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
