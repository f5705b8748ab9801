"""Multilayer perceptron: flatten, hidden Linear+ReLU layers, linear head (the lab's exercise 1.1)."""
from __future__ import annotations

import torch
import torch.nn as nn

DEFAULT_HIDDEN = [128, 64]   # "two narrow layers", as the lab's exercise asks


class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int = 10, hidden: list[int] | None = None,
                 width: float = 1.0):
        super().__init__()
        self.in_features = in_features
        self.hidden = [max(1, round(h * width)) for h in (hidden or DEFAULT_HIDDEN)]
        layers: list[nn.Module] = [nn.Flatten()]
        for size_in, size_out in zip([in_features] + self.hidden, self.hidden):
            layers += [nn.Linear(size_in, size_out), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(([in_features] + self.hidden)[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x[0].numel() != self.in_features:
            raise ValueError(f"mlp expects {self.in_features} input values per sample, "
                             f"got shape {tuple(x.shape[1:])}")
        return self.net(x)
