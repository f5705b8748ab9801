"""What a model costs, beside what it scores: its parameters and its forward FLOPs per sample.

    from trainables.cost import model_cost
    model_cost(build_model("resnet56"), torch.zeros(1, 3, 32, 32))
    # {'parameters': 853018, 'flops_per_sample': 250971392}

FLOPs are counted by PyTorch's own `torch.utils.flop_counter.FlopCounterMode`: 2 per multiply-add
of the convolutions and matrix products (nn.Linear(784, 128) is 2 * 784 * 128 = 200,704 FLOPs per
sample; biases, BatchNorm, activations, pooling and residual additions are not counted, a few per
cent at most of a conv net's total). These are forward FLOPs: a training step costs about 3 times
as much per sample, the backward pass being about twice the forward (Kaplan et al. 2020, "Scaling
Laws for Neural Language Models", section 2.1: C ~ 6 N per token, 2 N of it the forward pass).

    python -m pytest tests/test_cost.py
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .models import count_parameters


def forward_flops(model: nn.Module, example: torch.Tensor) -> int:
    """Forward FLOPs per sample of `model` on `example`, a batch of shape (n, ...) on the model's
    device (one sample suffices: the count is linear in n). Runs one real forward pass in eval mode
    without gradients, so BatchNorm's running statistics do not move and no randomness is drawn;
    the model's train/eval mode is restored. A ValueError for an empty batch."""
    if len(example) == 0:
        raise ValueError("example: an empty batch has no FLOPs per sample; give at least one sample")
    training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        model.train(training)
    return counter.get_total_flops() // len(example)


def model_cost(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """{'parameters': trainable and frozen parameters, 'flops_per_sample': forward_flops}."""
    return {"parameters": count_parameters(model), "flops_per_sample": forward_flops(model, example)}
