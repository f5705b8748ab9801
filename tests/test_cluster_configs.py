"""Tests of the Ray cluster-launcher configs: cluster.yaml (AWS) and clusters/*.yaml (GCP, local).

    .venv/bin/python -m pytest tests/test_cluster_configs.py -q

Offline. Each file is checked against the JSON Schema that ships inside Ray
(ray/autoscaler/ray-schema.json, the one `ray up` uses). Then it goes through Ray's own
prepare_config + validate_config, the steps `ray up` runs before it contacts a cloud. Then come
archstudy's own requirements:
- the head takes no trials;
- autoscaling GPU worker types;
- archstudy installed from the synced tree with the pinned constraints and the Ray of this venv;
- token auth set the same way on every `ray start`, with the token file synced;
- a shared storage location named;
- the dashboard and job-submission commands documented.
A deliberately broken config must fail, so the schema check is not vacuous.
"""
from __future__ import annotations

import copy
import importlib.resources
import json
import pathlib
import re

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "cluster.yaml", *sorted((ROOT / "clusters").glob("*.yaml"))]
IDS = [str(p.relative_to(ROOT)) for p in CONFIGS]
# Where each config says the study's results go: the storage URI or shared path it documents.
STORAGE = {"cluster.yaml": "s3://my-archstudy-bucket/results",
           "clusters/gcp.yaml": "gs://my-archstudy-bucket/results",
           "clusters/local.yaml": "/mnt/archstudy/results"}


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads((importlib.resources.files("ray.autoscaler") / "ray-schema.json").read_text())


def load(path: pathlib.Path) -> dict:
    return yaml.safe_load(path.read_text())


def ray_up_checks(config: dict) -> dict:
    """What `ray up` does to a config before any cloud call: fill in the provider's defaults, then
    validate (schema + Ray's own checks). Returns the prepared config."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_every_config_is_covered():
    assert {str(p.relative_to(ROOT)) for p in CONFIGS} == set(STORAGE)


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_valid_against_rays_schema(path, schema):
    jsonschema.validate(load(path), schema)


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_passes_rays_own_validation(path):
    prepared = ray_up_checks(load(path))
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_head_runs_no_trials(path):
    config = load(path)
    if config["provider"]["type"] == "local":   # no per-type resources: the flags are the only way
        head = " ".join(config["head_start_ray_commands"])
        assert "--num-cpus=0" in head and "--num-gpus=0" in head
    else:
        head = config["available_node_types"][config["head_node_type"]]
        assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")


@pytest.mark.parametrize("path", [p for p in CONFIGS if load(p)["provider"]["type"] != "local"],
                         ids=[i for i, p in zip(IDS, CONFIGS) if load(p)["provider"]["type"] != "local"])
def test_autoscaling_gpu_worker_types(path):
    config = load(path)
    workers = {name: t for name, t in config["available_node_types"].items()
               if name != config["head_node_type"]}
    gpus = sorted(t["resources"].get("GPU", 0) for t in workers.values())
    assert gpus[0] == 1 and gpus[-1] >= 4, "a single-GPU and a multi-GPU worker type"
    for name, t in workers.items():
        assert t.get("min_workers", 0) == 0 and t["max_workers"] >= 1, name   # scale from zero
        assert t["resources"].get("CPU", 0) >= t["resources"]["GPU"], name
    assert config["max_workers"] >= max(t["max_workers"] for t in workers.values())


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_installs_archstudy_from_the_synced_tree(path):
    config = load(path)
    assert config["file_mounts"].get("~/archstudy") == "."
    setup = [c for c in config["setup_commands"] if "pip install" in c]
    assert any(re.search(r"cd ~/archstudy && .*pip install .*-c constraints\.txt -e \.", c)
               for c in setup), setup
    # The Ray on the cluster is the Ray of the machine that launches and submits to it.
    pins = {m for c in setup for m in re.findall(r"ray\[[a-z,]+\]==([\w.]+)", c)}
    assert pins == {ray.__version__}
    constraints = (ROOT / "constraints.txt").read_text()
    assert "torch==2.14.1" in constraints and "torchvision==0.29.1" in constraints


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_token_auth_is_consistent(path):
    config = load(path)
    # The token file reaches the head (and, through it, every worker) before `ray start`.
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key
    # ... and interactive shells on the nodes (ray attach / ray exec) agree with them.
    assert any("export RAY_AUTH_MODE=token" in c for c in config["setup_commands"])
    # Nothing in the file may switch it off or embed a token.
    text = path.read_text()
    assert "RAY_AUTH_MODE=disabled" not in text and not re.search(r"\b[0-9a-f]{64}\b", text)
    assert "RAY_AUTH_TOKEN=" not in text


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_documents_storage_dashboard_and_submission(path):
    text = path.read_text()
    rel = str(path.relative_to(ROOT))
    assert STORAGE[rel] in text
    assert f"--storage {STORAGE[rel]}" in text                # the command that uses it
    assert f"ray up {rel}" in text and f"ray down {rel}" in text
    assert f"ray dashboard {rel}" in text
    assert "RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265" in text
    assert "ray get-auth-token --generate" in text


def test_cloud_workers_can_write_the_bucket():
    aws = load(ROOT / "cluster.yaml")
    for name, t in aws["available_node_types"].items():
        if name != aws["head_node_type"]:
            assert "IamInstanceProfile" in t["node_config"], name
    gcp = load(ROOT / "clusters" / "gcp.yaml")
    for name, t in gcp["available_node_types"].items():
        if name != gcp["head_node_type"]:
            scopes = t["node_config"]["serviceAccounts"][0]["scopes"]
            assert "https://www.googleapis.com/auth/cloud-platform" in scopes, name
            # GPU VMs must terminate on host maintenance; `scheduling` is an object, not a list.
            assert t["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE", name


@pytest.mark.parametrize("mutate, why", [
    (lambda c: c.update(storage="s3://my-archstudy-bucket/results"), "unknown top-level key"),
    (lambda c: c["available_node_types"]["gpu_1x"]["resources"].update(GPU=0.5), "fractional GPU"),
    (lambda c: c["available_node_types"]["gpu_1x"].pop("node_config"), "node type without node_config"),
    (lambda c: c.update(setup_commands="pip install -e ."), "commands not a list"),
    (lambda c: c["auth"].update(ssh_usr="ubuntu"), "misspelt auth key"),
], ids=["unknown-key", "fractional-gpu", "no-node-config", "commands-not-list", "auth-typo"])
def test_broken_configs_fail(schema, mutate, why):
    config = load(ROOT / "cluster.yaml")
    mutate(config)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)
    # `ray up` fails too: in validation, or earlier while filling in defaults (a string of commands
    # is a TypeError there).
    with pytest.raises((jsonschema.ValidationError, ValueError, KeyError, TypeError)):
        ray_up_checks(config)
