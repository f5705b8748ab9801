"""bench/gpu_check.py --dry-run: the GPU check's code paths on the CPU, and the shape of its JSON.

    .venv/bin/python -m pytest -q tests/test_gpu_check.py      # ~30 s on two busy cores

The dry run is the same script the GPU session runs (tiny nets, few steps, 1 and 2 processes), so
a change that breaks the GPU check shows up here, on a machine without a GPU.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("throughput", "convergence", "specs", "sharing", "same_seed", "gpu_hours")
DRY_RUN_TIMEOUT = 300   # seconds; the dry run takes ~20-30 s, far more only if something hangs


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check") / "gpu_check.json"
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=DRY_RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    written = json.loads(out.read_text())
    assert printed == written
    return written


def numbers(obj):
    """Every int or float in a JSON value (bools excluded)."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def positive(*values):
    return all(math.isfinite(v) and v > 0 for v in values)


def test_every_section_ran_and_every_check_passed(summary):
    assert summary["mode"] == "dry-run" and summary["device"] == "cpu"
    assert summary["errors"] == {}
    assert all(summary[s] is not None for s in SECTIONS)
    assert set(SECTIONS) | {"total"} == set(summary["wall_seconds"])
    assert positive(*summary["wall_seconds"].values())
    assert summary["checks"] == {"all_sections_ran": True, "loss_falls": True, "same_seed_passes": True}
    assert summary["torch"] and summary["name"]
    assert all(math.isfinite(v) for v in numbers(summary))


def test_throughput_compares_three_loops_per_model_and_batch(summary):
    t = summary["throughput"]
    assert positive(t["matmul_bf16_tflops"]) and t["skipped"] == []
    cases = {(c["model"], c["batch_size"]) for c in t["cases"]}
    assert {m for m, _ in cases} == {"mlp", "resnet18", "vgg16"} and len(cases) == 6
    for c in t["cases"]:
        rates = c["samples_per_second"]
        assert set(rates) == {"archstudy", "archstudy (no grad flow)", "lab style", "bare"}
        assert positive(*rates.values(), c["flops_per_sample"], c["achieved_tflops"],
                        c["fraction_of_peak"], c["archstudy_over_lab"], c["archstudy_over_bare"])


def test_resnet20_loss_falls(summary):
    c = summary["convergence"]
    losses = c["epoch_train_loss"]
    assert c["model"] == "resnet20" and len(losses) >= 3 and positive(*losses)
    assert c["loss_falls"] and losses[-1] < c["loss_fall_required"] * losses[0]
    assert c["bf16_autocast"] is False and c["channels_last"] is False   # CPU: fp32, NCHW


def test_same_seed_gives_the_same_first_epoch_loss(summary):
    s = summary["same_seed"]
    assert s["passes"] and s["bf16"] is False and s["identical"]   # CPU fp32: bit-identical
    a, b = s["train_loss"]
    assert positive(a) and abs(a - b) <= s["tolerance_rel"] * a


def test_sharing_has_a_row_per_process_count(summary):
    s = summary["sharing"]
    assert s["model"] == "vgg16" and s["batch_size"] == 64 and s["skipped"] == []
    assert [r["processes"] for r in s["rows"]] == [1, 2]
    for r in s["rows"]:
        assert len(r["per_process_samples_per_second"]) == r["processes"]
        assert positive(r["aggregate_samples_per_second"], r["timed_seconds"],
                        *r["per_process_samples_per_second"])
    assert s["processes_to_keep_busy"] in (1, 2) and set(s["speedup"]) == {"1", "2"}


def test_specs_get_epoch_seconds_and_gpu_hours(summary):
    specs = {s["file"]: s for s in summary["specs"]["specs"]}
    assert set(specs) == {"lab_cnn_cifar10.yaml", "he2016_cifar10.yaml"}
    assert {a["model"] for a in specs["he2016_cifar10.yaml"]["arms"]} >= {"resnet110", "plain20"}
    assert {a["batch"] for a in specs["lab_cnn_cifar10.yaml"]["arms"]} == {64}
    assert all(positive(a["epoch_seconds"]) for s in specs.values() for a in s["arms"])
    assert all(positive(m["train_samples_per_second"], m["eval_samples_per_second"])
               for m in summary["specs"]["models"])
    hours = {h["spec"]: h for h in summary["gpu_hours"]["per_spec"]}
    assert set(hours) == set(specs)
    for h in hours.values():
        for key in ("gpu_hours_one_trial_per_gpu", "gpu_hours_spec_sharing", "gpu_hours_busy_sharing"):
            assert positive(h[key]["upper"], h[key]["lower"]) and h[key]["lower"] <= h[key]["upper"]
    lab = hours["lab_cnn_cifar10.yaml"]
    assert lab["trials_per_gpu"] == 4 and lab["search_epochs_per_trial"]["lower"] == 13.125   # ASHA 5, x2, 50


def test_gpu_sharing_steps_are_sized_from_the_measured_vgg16_rate():
    sys.path.insert(0, str(ROOT))
    from bench.gpu_check import SETTINGS, share_steps
    gpu = SETTINGS["gpu"]   # 20 s for 8 processes at batch 64 if sharing gained nothing
    rate = {"models": [{"model": "vgg16", "batch_size": 64, "train_samples_per_second": 2048.0}]}
    assert share_steps(gpu, rate) == 80   # 20 s * 2048 samples/s / (8 * 64)
    assert share_steps(gpu, None) == 50   # no rate: the lower bound
    rate["models"][0]["train_samples_per_second"] = 1e6
    assert share_steps(gpu, rate) == 400  # the upper bound
