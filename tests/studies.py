"""Study specs shared by the test modules: the tiny two-arm study that conftest's `tiny` fixture
runs once per session (test_study and test_analysis both read it), and the template behind it;
the study that test_cluster runs on a cluster that loses a node; reading a trial's reports; the
bucket on conftest's moto S3 server."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

BUCKET = "archstudy-test"   # created on the moto S3 server by conftest's `s3` fixture

SPEC_TEMPLATE = """\
name: {name}
data: mnist-5k
subset: {{train: 300, val: 100, test: 100}}
epochs: {epochs}
seeds: {seeds}
arms:
{arms}
search:
  trials_per_arm: 3
  max_concurrent: 2
  space:
    lr: {{loguniform: [0.001, 0.3]}}
  fixed:
    batch_size: 32
scheduler: {{name: asha, grace_period: 1, reduction_factor: 2}}
wandb: {{mode: offline}}
storage: {storage}
"""


ONE_TRIAL_TEMPLATE = """\
name: {name}
data: mnist-5k
subset: {{train: 64, val: 32, test: 32}}
epochs: 1
seeds: [0]
arms: [{{model: mlp, hidden: [8]}}]
search: {{trials_per_arm: 1}}
resources: {resources}
wandb: {{mode: {mode}}}
storage: {storage}
"""


def one_trial_spec(storage, name: str, resources: str = "{}", mode: str = "offline") -> str:
    """The smallest study: one 8-unit MLP trial of 1 epoch on 64 digits, then one seed, for tests
    that are about what happens before (or instead of) training."""
    return ONE_TRIAL_TEMPLATE.format(name=name, resources=resources, mode=mode, storage=storage)


def spec_text(storage, name: str, epochs: int, seeds: list[int], arms: list[str]) -> str:
    """A small study on 300 mnist-5k digits, 3 trials per arm, stored under `storage`."""
    return SPEC_TEMPLATE.format(storage=storage, name=name, epochs=epochs, seeds=seeds,
                                arms="\n".join(f"  - {{{arm}}}" for arm in arms))


TINY_SPEC = dict(name="tiny", epochs=3, seeds=[0, 1], arms=["model: mlp, hidden: [32], width: 1.0",
                                                            "model: resnet20, width: 0.125"])
TINY_ARMS = {"mlp-w1-h32": 2, "resnet20-w0.125": 20}   # arm name -> weight layers (gradient flow rows)


# One arm: two search trials at once (on a cluster of two 1-CPU nodes, one per node), then one
# confirmation run; no ASHA (every trial runs all its epochs); ~0.7 s an epoch on a 2-core machine.
NODE_LOSS_EPOCHS = 8
NODE_LOSS_SPEC = """\
name: nodeloss
data: mnist-5k
subset: {{train: 4000, val: 200, test: 200}}
epochs: {epochs}
seeds: [0]
arms:
  - {{model: mlp, hidden: [256, 256]}}
search: {{trials_per_arm: 2, max_concurrent: 2, max_concurrent_per_arm: 2, space: {{lr: {{loguniform: [0.01, 0.05]}}}},
         fixed: {{batch_size: 16}}}}
scheduler: {{name: none}}
wandb: {{mode: offline}}
failure: {{max_retries: 2}}
storage: {storage}
"""


def node_loss_spec(storage) -> str:
    return NODE_LOSS_SPEC.format(storage=storage, epochs=NODE_LOSS_EPOCHS)


def read_results(trial_dir: Path) -> list[dict]:
    """Every line of a finished trial's result.json, in order (an epoch run again after a restore is
    there twice; study.tables.read_results keeps only an epoch's last report)."""
    path = trial_dir / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.exists() else []


def reports(trial_dir: Path) -> list[dict]:
    """A trial's reports in order, read while Tune may be writing them (result.json, written by the
    driver: an epoch run again after a restore is there twice; a partial last line is left out)."""
    found = []
    with contextlib.suppress(OSError):
        for line in (trial_dir / "result.json").read_text().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                break
    return found


def running_on(phase_dir: Path, node: str, epochs: range) -> tuple[Path, int] | None:
    """(trial folder, epoch) of a trial whose last report came from `node` at one of `epochs`."""
    for trial_dir in phase_dir.glob("*/"):
        last = (reports(trial_dir) or [{}])[-1]
        if last.get("node_id") == node and last["epoch"] in epochs:
            return trial_dir, last["epoch"]
    return None
