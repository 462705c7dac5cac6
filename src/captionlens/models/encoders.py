"""Image encoders: a conv trunk `resnet` (torchvision ResNet or a tiny CNN) and its pooling.

Every encoder exposes `encoder.resnet`, an `nn.Sequential` whose second-to-last child is the last
conv block (the seed notebook's `encoder.resnet[-2]`, the default Grad-CAM target) and whose last
child is the pooling: global for Show-and-Tell, a fixed spatial grid for Show-Attend-Tell.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models

RESNETS = {
    "resnet18": (tv_models.resnet18, tv_models.ResNet18_Weights),
    "resnet34": (tv_models.resnet34, tv_models.ResNet34_Weights),
    "resnet50": (tv_models.resnet50, tv_models.ResNet50_Weights),
    "resnet101": (tv_models.resnet101, tv_models.ResNet101_Weights),
}
BACKBONES = ("tiny", *RESNETS)


class PretrainedWeightsMissing(RuntimeError):
    """Pretrained weights are neither in the torch cache nor downloadable."""


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
                              stride=conv.stride, padding=conv.padding, bias=False)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, :conv.in_channels] = conv.weight
    return wide


def tiny_trunk(width: int = 32) -> tuple[OrderedDict, int]:
    """A four-block CNN of stride 8 (96 px -> 12x12) that trains in minutes on two CPU cores; its stem
    also sees the pixel coordinates (`CoordChannels`, parameter-free, so the block names stay the same)."""
    stem = _conv_block(3, width, 2)
    layers = OrderedDict(
        stem=nn.Sequential(CoordChannels(), _with_coordinates(stem[0]), *stem[1:]),
        layer1=_conv_block(width, 2 * width, 2),
        layer2=_conv_block(2 * width, 4 * width, 2),
        layer3=_conv_block(4 * width, 4 * width, 1),
    )
    return layers, 4 * width


def resnet_trunk(name: str, pretrained: bool) -> tuple[OrderedDict, int]:
    """The conv layers of a torchvision ResNet (everything before avgpool/fc), named as torchvision names them."""
    if name not in RESNETS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    build, weights_enum = RESNETS[name]
    weights = weights_enum.DEFAULT if pretrained else None
    try:
        net = build(weights=weights)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a corrupt cache file is a RuntimeError
        if weights is None:
            raise
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise PretrainedWeightsMissing(
            f"pretrained {name} weights unavailable ({exc.__class__.__name__}): download {weights.url} "
            f"and put it at {cache}, or pass pretrained=False") from None
    layers = OrderedDict((n, m) for n, m in net.named_children() if n not in ("avgpool", "fc"))
    return layers, net.fc.in_features


def build_trunk(backbone: str, pool: nn.Module, pretrained: bool = False) -> tuple[nn.Sequential, int]:
    """`nn.Sequential(conv layers..., pool)` and its channel count."""
    layers, channels = tiny_trunk() if backbone == "tiny" else resnet_trunk(backbone, pretrained)
    layers["pool"] = pool
    return nn.Sequential(layers), channels


class EncoderCNN(nn.Module):
    """Show-and-Tell encoder: conv trunk, global average pool, linear projection to the word-embedding size."""

    def __init__(self, embed_size: int, backbone: str = "resnet50", pretrained: bool = False) -> None:
        super().__init__()
        self.resnet, self.channels = build_trunk(backbone, nn.AdaptiveAvgPool2d(1), pretrained)
        self.linear = nn.Linear(self.channels, embed_size)

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Image feature fed as the LSTM's first input, from the pooled (B, C, 1, 1) map."""
        return self.linear(pooled.flatten(1))

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


def set_trunk_trainable(encoder: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze the conv trunk (fine-tuning option); the projection always trains."""
    for p in encoder.resnet.parameters():
        p.requires_grad_(trainable)
