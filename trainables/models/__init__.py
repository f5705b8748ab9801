"""The model registry: every architecture a study can compare, by name.

    python -c "from trainables.models import list_models; print(list_models())"

`build_model(name, ...)` returns an `nn.Module` with two extra attributes the analysis uses:
`family` ("mlp", "plain" or "residual") and `depth` (the nominal depth in the name: vgg16 -> 16).
"""
from __future__ import annotations

from functools import partial

import torch.nn as nn

from .mlp import DEFAULT_HIDDEN, MLP
from .resnet import CIFAR_RESNETS, IMAGENET_STYLE_RESNETS, CifarResNet, ResNet
from .vgg import VGG_TABLE, VGG

_BUILDERS: dict = {"mlp": (MLP, "mlp", None)}
for _name in VGG_TABLE:
    _BUILDERS[_name] = (partial(VGG, _name), "plain", int(_name[3:]))
for _depth, _blocks in IMAGENET_STYLE_RESNETS.items():   # resnet18/34 and their plain twins
    _BUILDERS[f"resnet{_depth}"] = (partial(ResNet, _blocks, residual=True), "residual", _depth)
    _BUILDERS[f"plain{_depth}"] = (partial(ResNet, _blocks, residual=False), "plain", _depth)
for _depth in CIFAR_RESNETS:                             # He et al.'s 6n+2 family and twins
    _BUILDERS[f"resnet{_depth}"] = (partial(CifarResNet, _depth, residual=True), "residual", _depth)
    _BUILDERS[f"plain{_depth}"] = (partial(CifarResNet, _depth, residual=False), "plain", _depth)


def list_models() -> list[str]:
    """All registered model names, in a stable order (mlp, VGGs, ResNets, plain twins)."""
    return list(_BUILDERS)


def model_family(name: str) -> str:
    """'mlp', 'plain' or 'residual' (VGG counts as plain)."""
    return _lookup(name)[1]


def model_depth(name: str, hidden: list[int] | None = None) -> int:
    """Nominal depth: the number in the name, or for the MLP its hidden layers + 1."""
    depth = _lookup(name)[2]
    return len(hidden or DEFAULT_HIDDEN) + 1 if depth is None else depth


def _lookup(name: str):
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(_BUILDERS)}")
    return _BUILDERS[name]


def build_model(name: str, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                batchnorm: bool = True, hidden: list[int] | None = None,
                image_size: int | None = None) -> nn.Module:
    """Build a registered model. `width` scales every channel (or hidden) count; `batchnorm=False`
    removes every BatchNorm. `image_size` (default 28 for 1 channel, 32 for 3) only matters for the
    MLP: conv nets zero-pad smaller inputs to 32x32. `hidden` is the MLP's hidden-layer list."""
    builder, family, _ = _lookup(name)
    if not width > 0:
        raise ValueError(f"width: {width!r} is not allowed; expected a number > 0")
    if hidden is not None and name != "mlp":
        raise ValueError(f"hidden: only the mlp takes hidden layers, not {name!r}")
    if name == "mlp":
        size = image_size or (28 if in_channels == 1 else 32)
        model = MLP(in_features=in_channels * size * size, num_classes=num_classes,
                    hidden=hidden, width=width)
    else:
        model = builder(num_classes=num_classes, in_channels=in_channels, width=width,
                        batchnorm=batchnorm)
    model.name, model.family, model.depth = name, family, model_depth(name, hidden)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def init_weights(model: nn.Module) -> None:
    """The reference lab's init: Kaiming-normal (fan_in, ReLU) for conv/linear weights, zero biases,
    BatchNorm weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
