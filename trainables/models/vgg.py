"""VGG for CIFAR-sized inputs: torchvision's depth table, 3x3 convs (+ optional BatchNorm), five 2x2
max-pools, and the CIFAR head, a single Linear(512, classes) (as in kuangliu/pytorch-cifar)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

M = "M"  # 2x2 max-pool
VGG_TABLE = {
    "vgg11": [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "vgg13": [64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "vgg16": [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M],
    "vgg19": [64, 64, M, 128, 128, M, 256, 256, 256, 256, M,
              512, 512, 512, 512, M, 512, 512, 512, 512, M],
    # Not standard (the lab never published its layout): 21 convs in stages of [2, 2, 5, 6, 6].
    "vgg24": [64] * 2 + [M] + [128] * 2 + [M] + [256] * 5 + [M] + [512] * 6 + [M] + [512] * 6 + [M],
}


def pad_to_32(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad 28x28 (MNIST) inputs to 32x32 so five 2x pools end at 1x1."""
    extra = 32 - x.shape[-1]
    return F.pad(x, (extra // 2, extra - extra // 2) * 2) if extra > 0 else x


class VGG(nn.Module):
    def __init__(self, name: str, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 batchnorm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for v in VGG_TABLE[name]:
            if v == M:
                layers.append(nn.MaxPool2d(2, 2))
                continue
            out = max(1, round(v * width))
            layers.append(nn.Conv2d(channels, out, 3, padding=1))
            if batchnorm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(pad_to_32(x)), 1))
