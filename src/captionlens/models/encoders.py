"""Image encoders: a conv trunk `resnet` (a torchvision ResNet or a tiny CNN) and its pooling, and the
registry of trunks by name.

Every encoder exposes `encoder.resnet`, an `nn.Sequential` whose second-to-last child is the last
conv block (the seed notebook's `encoder.resnet[-2]`, the default Grad-CAM target) and whose last
child is the pooling: global for Show-and-Tell, a fixed spatial grid for Show-Attend-Tell.

Trunks are registered by name (`TRUNKS`): the tiny CNN and torchvision's five ResNets. Any other
torchvision-style classifier (children up to a global `avgpool` and a `fc`) joins with
`register_trunk("resnext50_32x4d")`; `identify_trunk` then tells it from the others by the exact
keys and shapes of its weights. A name is registered once: a second registration is refused, naming
the lines of both.
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models

from captionlens.registries import Registry, caller

SHOW_TELL_HEADS = ("linear", "linear-batchnorm")
HEAD_BATCHNORM_MOMENTUM = 0.01  # yunjey's pytorch-tutorial EncoderCNN.bn


class PretrainedWeightsMissing(RuntimeError):
    """Pretrained weights are neither in the torch cache nor downloadable."""


@dataclass(frozen=True)
class TrunkSpec:
    """How to build a named trunk: `build(pretrained)` returns a module whose named children, less
    `dropped`, are the conv layers in order."""

    build: Callable[[bool], nn.Module]
    dropped: tuple[str, ...] = ("avgpool", "fc")


TRUNKS: Registry[str, TrunkSpec] = Registry("trunk")


def register_trunk(name: str, build: Callable[[bool], nn.Module] | None = None,
                   dropped: tuple[str, ...] = ("avgpool", "fc")) -> None:
    """Make `backbone=name` available. Without `build`, `name` is a torchvision model name
    (`torchvision.models.get_model`), with its DEFAULT ImageNet weights when pretrained. A name already
    registered is a ValueError naming the line that registered it and this call's line."""
    TRUNKS.add(name, TrunkSpec(build or (lambda pretrained: _torchvision_model(name, pretrained)), dropped), caller())
    trunk_shapes.cache_clear()


def _torchvision_model(name: str, pretrained: bool) -> nn.Module:
    weights = tv_models.get_model_weights(name).DEFAULT if pretrained else None
    try:
        return tv_models.get_model(name, weights=weights)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a corrupt cache file is a RuntimeError
        if weights is None:
            raise
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise PretrainedWeightsMissing(
            f"pretrained {name} weights unavailable ({exc.__class__.__name__}): download {weights.url} "
            f"and put it at {cache}, or pass pretrained=False") from None


def _conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class CoordChannels(nn.Module):
    """Appends each pixel's x and y (-1 to 1) as two more channels (CoordConv, Liu et al., 2018), so a
    small CNN trained from scratch can tell where things are ("left of", "above") within minutes."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        ys = torch.linspace(-1, 1, h, device=images.device, dtype=images.dtype).view(1, 1, h, 1)
        xs = torch.linspace(-1, 1, w, device=images.device, dtype=images.dtype).view(1, 1, 1, w)
        return torch.cat([images, xs.expand(b, 1, h, w), ys.expand(b, 1, h, w)], dim=1)


def _with_coordinates(conv: nn.Conv2d) -> nn.Conv2d:
    """`conv` taking two more input channels (x, y), weighted 0 at first. Nothing is drawn at random, so a
    seeded model gets the same weights as without coordinates, and an untrained one ignores them."""
    wide = nn.utils.skip_init(nn.Conv2d, conv.in_channels + 2, conv.out_channels, conv.kernel_size,
                              stride=conv.stride, padding=conv.padding, bias=False, device=conv.weight.device)
    if wide.weight.is_meta:  # shapes only (`trunk_shapes`)
        return wide
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, :conv.in_channels] = conv.weight
    return wide


def tiny_trunk(pretrained: bool = False, width: int = 32) -> nn.Sequential:
    """A four-block CNN of stride 8 (96 px -> 12x12) that trains in minutes on two CPU cores; its stem
    also sees the pixel coordinates (`CoordChannels`, parameter-free, so the block names stay the same)."""
    if pretrained:
        raise ValueError("the tiny backbone has no pretrained weights; pass pretrained=False")
    stem = _conv_block(3, width, 2)
    conv = stem[0]
    assert isinstance(conv, nn.Conv2d)
    return nn.Sequential(OrderedDict(
        stem=nn.Sequential(CoordChannels(), _with_coordinates(conv), *stem[1:]),
        layer1=_conv_block(width, 2 * width, 2),
        layer2=_conv_block(2 * width, 4 * width, 2),
        layer3=_conv_block(4 * width, 4 * width, 1),
    ))


def conv_layers(backbone: str, pretrained: bool = False) -> OrderedDict[str, nn.Module]:
    """The named conv layers of a registered trunk, in order."""
    if backbone not in TRUNKS:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(TRUNKS)} "
                         "(or register another with captionlens.models.register_trunk)")
    spec = TRUNKS[backbone]
    net = spec.build(pretrained)
    return OrderedDict((n, m) for n, m in net.named_children() if n not in spec.dropped)


def build_trunk(backbone: str, pool: nn.Module, pretrained: bool = False) -> tuple[nn.Sequential, int]:
    """`nn.Sequential(conv layers..., pool)` and the channel count of the last conv layer."""
    layers = conv_layers(backbone, pretrained)
    channels = _output_channels(nn.Sequential(layers))
    layers["pool"] = pool
    return nn.Sequential(layers), channels


def _output_channels(layers: nn.Sequential) -> int:
    """Channels of the layers' output: those of the last conv or batch-norm layer in them."""
    for module in reversed(list(layers.modules())):
        if isinstance(module, nn.BatchNorm2d):
            return module.num_features
        if isinstance(module, nn.Conv2d):
            return module.out_channels
    raise ValueError("trunk has no Conv2d or BatchNorm2d layer to read its channel count from")


@functools.cache
def trunk_shapes(backbone: str) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of a registered trunk's conv layers, keyed as in `encoder.resnet`."""
    with torch.device("meta"):
        layers = conv_layers(backbone)
    return {key: tuple(value.shape) for key, value in nn.Sequential(layers).state_dict().items()}


def identify_trunk(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The registered trunk whose weights have exactly these keys and shapes (keys as in
    `encoder.resnet`: `conv1.weight`, `layer4.2.bn3.running_var`, ...). Raises ValueError naming the
    first key or shape the closest trunk does not have when none fits."""
    best: tuple[int, str, str] | None = None
    for name in TRUNKS:
        expected = trunk_shapes(name)
        if dict(shapes) == expected:
            return name
        mismatch = _first_mismatch(shapes, expected)
        score = sum(1 for k, s in shapes.items() if expected.get(k) == s)
        if best is None or score > best[0]:
            best = (score, name, mismatch)
    closest = f"; closest is {best[1]}: {best[2]}" if best else ""
    raise ValueError(f"no known backbone has these conv-trunk weights{closest}")


def _first_mismatch(shapes: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]]) -> str:
    for key, shape in shapes.items():
        if key not in expected:
            return f"unexpected key '{key}' {shape}"
        if expected[key] != shape:
            return f"'{key}' has shape {shape}, expected {expected[key]}"
    missing = next(k for k in expected if k not in shapes)
    return f"missing key '{missing}' {expected[missing]}"


register_trunk("tiny", tiny_trunk, dropped=())
for _depth in (18, 34, 50, 101, 152):
    register_trunk(f"resnet{_depth}")


class EncoderCNN(nn.Module):
    """Show-and-Tell encoder: conv trunk, global average pool, linear projection to the word-embedding size,
    optionally followed by a BatchNorm1d (`head="linear-batchnorm"`, yunjey's pytorch-tutorial encoder)."""

    def __init__(self, embed_size: int, backbone: str = "resnet50", pretrained: bool = False,
                 head: str = "linear") -> None:
        super().__init__()
        if head not in SHOW_TELL_HEADS:
            raise ValueError(f"unknown head {head!r}; choose one of {', '.join(SHOW_TELL_HEADS)}")
        self.resnet, self.channels = build_trunk(backbone, nn.AdaptiveAvgPool2d(1), pretrained)
        self.linear = nn.Linear(self.channels, embed_size)
        self.bn = nn.BatchNorm1d(embed_size, momentum=HEAD_BATCHNORM_MOMENTUM) if head == "linear-batchnorm" else None

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Image feature fed as the LSTM's first input, from the pooled (B, C, 1, 1) map."""
        feature = self.linear(pooled.flatten(1))
        return feature if self.bn is None else self.bn(feature)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.resnet(images))


class GridPool(nn.AdaptiveAvgPool2d):
    """Adaptive average pooling to a grid that passes a map already at the grid's size through as is
    (ResNet-50's 7x7 map at 224 px): the same values, without an identity pool's pass and its backward."""

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        size = self.output_size if isinstance(self.output_size, tuple) else (self.output_size,) * 2
        if tuple(maps.shape[-2:]) == tuple(size):
            return maps
        return super().forward(maps)


class SpatialEncoder(nn.Module):
    """Show-Attend-Tell encoder: conv trunk pooled to a fixed grid, returned as (B, grid*grid, C) annotations."""

    def __init__(self, backbone: str = "resnet50", grid_size: int | None = 7, pretrained: bool = False) -> None:
        super().__init__()
        pool = GridPool(grid_size) if grid_size else nn.Identity()
        self.resnet, self.channels = build_trunk(backbone, pool, pretrained)

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled.flatten(2).transpose(1, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.resnet(images))

