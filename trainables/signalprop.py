"""Signal propagation (Brock, De & Smith 2021, "Characterizing signal propagation to close the
performance gap in unnormalized ResNets", ICLR): how the scale of the activations changes block by
block in the forward pass, measured with forward hooks on one fixed probe batch (one forward pass).

The blocks, in forward order: a ResNet's BasicBlocks (trainables/models/resnet.py), a VGG's
conv(+BN)+ReLU units and an MLP's hidden Linear+ReLU layers (each ends in a ReLU). For a block's
output x of shape (N, C, H, W) (or (N, C) in the MLP), with channel statistics taken over N, H, W:
- avg_sq_mean: the mean over channels of the squared channel mean;
- avg_var: the mean over channels of the channel variance (population variance, divided by n);
- residual_var: for a residual block, avg_var of its residual branch's output (`block.main`, before
  the skip connection is added); None for every other block (NaN in signalprop.parquet; None, not
  NaN, so that two runs' rows compare equal and the metrics stay strict JSON).

Measured in training mode, as in Brock et al.'s plots: BatchNorm then normalises with the probe
batch's own statistics, as in every training step (in eval mode at initialisation its running
statistics are still 0 and 1, and a BatchNorm net would look unnormalised). The training run is left
exactly as it was: no gradients, no random draws (the probe is the first PROBE_SAMPLES training
samples, unaugmented, the same every epoch), the model's mode is restored, and every buffer (the
BatchNorm running statistics and their counters) is put back, so losses and checkpoints are
bit-for-bit those of a run without the probe (tests/test_signalprop.py checks it).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from studyfiles.contract import SIGNALPROP_STATS

from .models.resnet import BasicBlock

PROBE_SAMPLES = 256   # samples in the probe batch: enough for stable channel statistics, one pass


def channel_stats(x: torch.Tensor) -> torch.Tensor:
    """(avg_sq_mean, avg_var) of an (N, C, ...) activation, as a float32 tensor of shape (2,)."""
    per_channel = x.detach().float().transpose(0, 1).reshape(x.shape[1], -1)   # (C, N*H*W)
    var, mean = torch.var_mean(per_channel, dim=1, correction=0)
    return torch.stack([(mean ** 2).mean(), var.mean()])


def signal_blocks(model: nn.Module) -> list[tuple[str, nn.Module, nn.Module | None]]:
    """(name, module whose output is the block's output, its residual branch or None), in forward
    order: the BasicBlocks of a ResNet (plain twins included, without a branch), else every ReLU
    (VGG's conv units, the MLP's hidden layers). Modules register in forward order in all of them."""
    named = list(model.named_modules())
    residual_blocks = [(n, m, m.main if m.residual else None) for n, m in named if isinstance(m, BasicBlock)]
    if residual_blocks:
        return residual_blocks
    return [(n, m, None) for n, m in named if isinstance(m, nn.ReLU)]


class SignalProp:
    """`measure(epoch)` returns one row per block ({"epoch", "block", "index", *SIGNALPROP_STATS},
    floats; residual_var None without a branch) for `model` on the fixed `probe` batch (already on
    the model's device and memory format)."""

    def __init__(self, model: nn.Module, probe: torch.Tensor):
        self.model, self.probe = model, probe
        self.blocks = signal_blocks(model)

    def measure(self, epoch: int) -> list[dict]:
        model = self.model
        # per block: (avg_sq_mean, avg_var) of its output, and of its residual branch (NaN if none)
        outputs = torch.full((len(self.blocks), 2), float("nan"), device=self.probe.device)
        branches = outputs.clone()

        def keep(into: torch.Tensor, row: int):
            def hook(_module, _inputs, output):
                into[row] = channel_stats(output)
            return hook

        hooks = []
        for i, (_name, block, branch) in enumerate(self.blocks):
            hooks.append(block.register_forward_hook(keep(outputs, i)))
            if branch is not None:
                hooks.append(branch.register_forward_hook(keep(branches, i)))
        saved = [b.detach().clone() for b in model.buffers()]
        was_training = model.training
        try:
            model.train()   # batch statistics in BatchNorm, as in a training step (module docstring)
            with torch.no_grad():
                model(self.probe)
        finally:
            model.train(was_training)
            with torch.no_grad():
                for buffer, value in zip(model.buffers(), saved):
                    buffer.copy_(value)
            for h in hooks:
                h.remove()
        values = torch.cat([outputs, branches[:, 1:]], dim=1).cpu().double().tolist()   # one copy
        return [{"epoch": epoch, "block": name, "index": i,
                 **dict(zip(SIGNALPROP_STATS, row[:2] + [row[2] if branch is not None else None]))}
                for i, ((name, _block, branch), row) in enumerate(zip(self.blocks, values))]
