"""Gradient-flow capture: per-layer gradient and update statistics, sampled each epoch.

For every weight tensor (conv and linear weights; biases and BatchNorm scales are left out, as in
the reference lab) in forward order, on a fixed sample of batches per epoch (always the first two
steps, then evenly spaced), we record: mean |grad|, max |grad|, grad L2 norm, weight L2 norm and the
update-to-weight ratio ||w_after - w_before|| / ||w_before|| of the optimiser step. An epoch's
figures are the mean over its sampled batches. All stats of a batch are reduced on the device and
copied to the host once, so the cost stays a few percent (bench/throughput.py measures it).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from studyfiles.contract import GRADFLOW_STATS


def weights_in_forward_order(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Parameter]]:
    """(name, weight) of every conv/linear layer, in the order a forward pass calls them."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m)) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(example[:1])
    model.train(was_training)
    for h in hooks:
        h.remove()
    names = {m: n for n, m in model.named_modules()}
    seen, layers = set(), []
    for m in order:
        if m not in seen:
            seen.add(m)
            layers.append((names[m], m.weight))
    return layers


def probe_steps(steps_per_epoch: int, count: int) -> set[int]:
    """The first two steps, then evenly spaced steps, `count` in all (fewer on tiny epochs)."""
    head = list(range(min(2, count, steps_per_epoch)))
    rest = max(0, count - len(head))
    if rest and steps_per_epoch > len(head):
        span = steps_per_epoch - len(head)
        head += [len(head) + (i * span) // rest for i in range(rest)]
    return set(head)


class GradFlow:
    """Collects GRADFLOW_STATS for each layer on probe steps: call `before_step()` after backward and
    `after_step()` after the optimiser step; `epoch_summary()` returns and resets the epoch's means."""

    def __init__(self, layers: list[tuple[str, nn.Parameter]]):
        self.names = [n for n, _ in layers]
        self.weights = [w for _, w in layers]
        self._numel = torch.tensor([w.numel() for w in self.weights], dtype=torch.float32,
                                   device=self.weights[0].device if self.weights else "cpu")
        self._sum: torch.Tensor | None = None   # (layers, stats) running sum on the host
        self._count = 0
        self._before: list[torch.Tensor] = []
        self._grad_stats: torch.Tensor | None = None

    def before_step(self) -> None:
        grads = [w.grad.detach() if w.grad is not None else torch.zeros_like(w) for w in self.weights]
        weights = [w.detach() for w in self.weights]
        # One fused op per statistic over all layers (mean |g| = L1 / numel, max |g| = L-inf).
        self._grad_stats = torch.stack([
            torch.stack(torch._foreach_norm(grads, 1)) / self._numel,
            torch.stack(torch._foreach_norm(grads, float("inf"))),
            torch.stack(torch._foreach_norm(grads, 2)),
            torch.stack(torch._foreach_norm(weights, 2)),
        ], dim=1).float()
        self._before = torch._foreach_mul(weights, 1.0)   # a copy of every weight, in one op

    def after_step(self) -> None:
        change = torch.stack(torch._foreach_norm(torch._foreach_sub([w.detach() for w in self.weights],
                                                                    self._before), 2))
        ratios = change.float() / self._grad_stats[:, 3].clamp_min(1e-12)
        stats = torch.cat([self._grad_stats, ratios[:, None]], dim=1).cpu().double()
        self._sum = stats if self._sum is None else self._sum + stats
        self._count += 1
        self._before = []

    def epoch_summary(self) -> tuple[list[dict], dict]:
        """(per-layer rows, per-epoch summary), averaged over the probe batches since the last call."""
        if not self._count:
            return [], {}
        mean = (self._sum / self._count).tolist()
        layers = [{"layer": name, "index": i, **dict(zip(GRADFLOW_STATS, row))}
                  for i, (name, row) in enumerate(zip(self.names, mean))]
        self._sum, self._count = None, 0
        norms = [row["grad_norm"] for row in layers]
        summary = {
            "gf_grad_norm_first": norms[0],
            "gf_grad_norm_last": norms[-1],
            "gf_first_last_ratio": norms[0] / norms[-1] if norms[-1] > 0 else float("inf"),
            "gf_grad_norm_min": min(norms),
            "gf_grad_norm_max": max(norms),
            "gf_update_ratio_mean": sum(r["update_ratio"] for r in layers) / len(layers),
        }
        return layers, summary
