"""The model registry: every architecture a study can compare, by name, with what the analysis
needs to know about it.

    python -c "from trainables.models import list_models; print(list_models())"
    get_model("resnet20")   # ModelEntry(name='resnet20', family='residual', depth=20, line='6n+2', ...)

`build_model(name, ...)` returns an `nn.Module` with three extra attributes: `name`, `family`
("mlp", "plain" or "residual") and `depth` (nominal depth: vgg16 -> 16, the MLP's hidden layers + 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch.nn as nn

from .mlp import DEFAULT_HIDDEN, MLP
from .resnet import CIFAR_RESNETS, IMAGENET_STYLE_RESNETS, CifarResNet, ResNet
from .vgg import VGG_TABLE, VGG


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture. `build(num_classes, in_channels, width, batchnorm, hidden,
    image_size)` makes it; `line` is the series of depths it belongs to, along which the analysis
    fits depth trends: "mlp", "vgg" (Simonyan & Zisserman's table), "resnet" (He et al.'s 18/34
    BasicBlock layout for ImageNet) or "6n+2" (He et al.'s CIFAR nets, 3 stages of n blocks);
    a plain twin shares its residual net's line."""
    name: str
    build: Callable[..., nn.Module]
    family: Literal["mlp", "plain", "residual"]
    depth: Optional[int]   # None for the MLP: its depth follows its hidden layers
    line: Literal["mlp", "vgg", "resnet", "6n+2"]


def _mlp(num_classes: int, in_channels: int, width: float, batchnorm: bool, hidden, image_size):
    """The MLP sees the image flattened: 28x28 for 1 channel, 32x32 for 3 unless `image_size`
    says otherwise (it has no BatchNorm to remove)."""
    size = image_size or (28 if in_channels == 1 else 32)
    return MLP(in_features=in_channels * size * size, num_classes=num_classes, hidden=hidden, width=width)


def _conv(cls, *args, **kwargs) -> Callable[..., nn.Module]:
    """A conv net's builder: it zero-pads inputs smaller than 32x32, so `image_size` is not needed,
    and it has no hidden layers (build_model refuses them)."""
    def build(num_classes, in_channels, width, batchnorm, hidden, image_size):
        return cls(*args, num_classes=num_classes, in_channels=in_channels, width=width,
                   batchnorm=batchnorm, **kwargs)
    return build


REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> None:
    """Add an architecture under its name (a ValueError if the name is taken)."""
    if entry.name in REGISTRY:
        raise ValueError(f"model {entry.name!r} is registered already")
    REGISTRY[entry.name] = entry


register(ModelEntry("mlp", _mlp, "mlp", None, "mlp"))
for _name in VGG_TABLE:
    register(ModelEntry(_name, _conv(VGG, _name), "plain", int(_name[3:]), "vgg"))
for _depth, _blocks in IMAGENET_STYLE_RESNETS.items():   # resnet18/34 and their plain twins
    register(ModelEntry(f"resnet{_depth}", _conv(ResNet, _blocks, residual=True), "residual", _depth, "resnet"))
    register(ModelEntry(f"plain{_depth}", _conv(ResNet, _blocks, residual=False), "plain", _depth, "resnet"))
for _depth in CIFAR_RESNETS:                             # He et al.'s 6n+2 nets and their twins
    register(ModelEntry(f"resnet{_depth}", _conv(CifarResNet, _depth, residual=True), "residual", _depth, "6n+2"))
    register(ModelEntry(f"plain{_depth}", _conv(CifarResNet, _depth, residual=False), "plain", _depth, "6n+2"))


def list_models() -> list[str]:
    """All registered model names, in a stable order (mlp, VGGs, ResNets and their plain twins)."""
    return list(REGISTRY)


def get_model(name: str) -> ModelEntry:
    """The registry's entry; a ValueError naming the choices for an unknown name."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def model_family(name: str) -> str:
    """'mlp', 'plain' or 'residual' (VGG counts as plain)."""
    return get_model(name).family


def model_line(name: str) -> str:
    """The series of depths the model belongs to: 'mlp', 'vgg', 'resnet' or '6n+2' (ModelEntry)."""
    return get_model(name).line


def model_depth(name: str, hidden: list[int] | None = None) -> int:
    """Nominal depth: the number in the name, or for the MLP its hidden layers + 1."""
    depth = get_model(name).depth
    return len(hidden or DEFAULT_HIDDEN) + 1 if depth is None else depth


def build_model(name: str, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                batchnorm: bool = True, hidden: list[int] | None = None,
                image_size: int | None = None) -> nn.Module:
    """Build a registered model. `width` scales every channel (or hidden) count; `batchnorm=False`
    removes every BatchNorm. `image_size` (default 28 for 1 channel, 32 for 3) only matters for the
    MLP: conv nets zero-pad smaller inputs to 32x32. `hidden` is the MLP's hidden-layer list."""
    entry = get_model(name)
    if not width > 0:
        raise ValueError(f"width: {width!r} is not allowed; expected a number > 0")
    if hidden is not None and entry.family != "mlp":
        raise ValueError(f"hidden: only the mlp takes hidden layers, not {name!r}")
    model = entry.build(num_classes=num_classes, in_channels=in_channels, width=width,
                        batchnorm=batchnorm, hidden=hidden, image_size=image_size)
    model.name, model.family, model.depth = name, entry.family, model_depth(name, hidden)
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
