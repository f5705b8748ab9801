"""Study specs shared by the test modules: the tiny two-arm study that conftest's `tiny` fixture
runs once per session (test_study and test_analysis both read it), and the template behind it."""
from __future__ import annotations

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


def spec_text(storage, name: str, epochs: int, seeds: list[int], arms: list[str]) -> str:
    """A small study on 300 mnist-5k digits, 3 trials per arm, stored under `storage`."""
    return SPEC_TEMPLATE.format(storage=storage, name=name, epochs=epochs, seeds=seeds,
                                arms="\n".join(f"  - {{{arm}}}" for arm in arms))


TINY_SPEC = dict(name="tiny", epochs=3, seeds=[0, 1], arms=["model: mlp, hidden: [32], width: 1.0",
                                                            "model: resnet20, width: 0.125"])
TINY_ARMS = {"mlp-w1-h32": 2, "resnet20-w0.125": 20}   # arm name -> weight layers (gradient flow rows)

