"""CIFAR ResNets and their plain twins (the same network with every skip connection removed).

- `ResNet`: resnet18/34 as in kuangliu/pytorch-cifar: 3x3 stem, no max-pool, BasicBlocks at
  64-128-256-512, 1x1 projection shortcuts (+BN) where the shape changes.
- `CifarResNet`: He et al. 2016's 6n+2 family: 16-32-64 channels, identity shortcuts that subsample
  and zero-pad channels where the shape changes ("option A", parameter-free).
With `residual=False` the block returns relu(main path) and owns no shortcut at all; nothing else
changes. With `batchnorm=False` every BatchNorm goes, and convs get a bias in its place.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .vgg import pad_to_32

IMAGENET_STYLE_RESNETS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}   # BasicBlocks per stage
CIFAR_RESNETS = {depth: (depth - 2) // 6 for depth in (20, 32, 44, 56, 110)}  # blocks per stage


def conv_bn(cin: int, cout: int, kernel: int, stride: int, batchnorm: bool) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=not batchnorm)
    return [conv, nn.BatchNorm2d(cout)] if batchnorm else [conv]


class PadShortcut(nn.Module):
    """Option A: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.left = (cout - cin) // 2
        self.right = cout - cin - self.left

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.left, self.right))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, batchnorm: bool, residual: bool,
                 shortcut: str):
        super().__init__()
        self.residual = residual
        self.main = nn.Sequential(*conv_bn(cin, cout, 3, stride, batchnorm), nn.ReLU(inplace=True),
                                  *conv_bn(cout, cout, 3, 1, batchnorm))
        self.shortcut = None
        if residual:
            self.shortcut = nn.Identity()
            if stride != 1 or cin != cout:
                self.shortcut = (PadShortcut(cin, cout) if shortcut == "pad"
                                 else nn.Sequential(*conv_bn(cin, cout, 1, stride, batchnorm)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.main(x)
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)


class _Stages(nn.Module):
    """Stem conv, stages of BasicBlocks (stride 2 at each new stage), global average pool, Linear."""

    def __init__(self, channels: list[int], blocks: list[int], num_classes: int, in_channels: int,
                 width: float, batchnorm: bool, residual: bool, shortcut: str):
        super().__init__()
        channels = [max(1, round(c * width)) for c in channels]
        self.stem = nn.Sequential(*conv_bn(in_channels, channels[0], 3, 1, batchnorm),
                                  nn.ReLU(inplace=True))
        layers, cin = [], channels[0]
        for stage, (cout, n) in enumerate(zip(channels, blocks)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(cin, cout, stride, batchnorm, residual, shortcut))
                cin = cout
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(pad_to_32(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class ResNet(_Stages):
    def __init__(self, blocks: list[int], num_classes: int = 10, in_channels: int = 3,
                 width: float = 1.0, batchnorm: bool = True, residual: bool = True):
        super().__init__([64, 128, 256, 512], blocks, num_classes, in_channels, width, batchnorm,
                         residual, shortcut="projection")


class CifarResNet(_Stages):
    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3,
                 width: float = 1.0, batchnorm: bool = True, residual: bool = True):
        n = CIFAR_RESNETS[depth]
        super().__init__([16, 32, 64], [n] * 3, num_classes, in_channels, width, batchnorm,
                         residual, shortcut="pad")
