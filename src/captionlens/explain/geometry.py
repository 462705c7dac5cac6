"""Where each cell of a trunk layer's map sits in the model input, so coarse maps are drawn where their
cells look.

Plain bilinear upsampling (align_corners=False) puts cell j of an n-cell axis at (j + 0.5) * S / n. A
3x3 convolution of stride 2 and padding 1 centres output cell j's receptive field on input pixel 2j,
half a pixel before that; through a stack of them the gap grows to (stride - 1) / 2 pixels (3.5 px
at the tiny trunk's stride 8, 15.5 px at a ResNet's layer4, stride 32): plain upsampling draws every
map shifted right and down by that much. `cell_centres` propagates the centres of the receptive fields
through the layers (convolutions and pools by their kernel, stride, padding and dilation; adaptive
pools by their bins; torchvision's residual blocks by their main path, which their shortcut matches),
and `placement_weights` interpolates maps between those centres. A layer whose geometry is not known (a
module with convolutions inside it that is none of these) gives None: the caller keeps plain upsampling.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

Centres = tuple[np.ndarray, np.ndarray]   # (rows, columns): positions in model-input pixels (0 .. S)
_WINDOWED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_SPATIAL = (*_WINDOWED, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


class UnknownGeometry(ValueError):
    """A layer whose receptive fields `cell_centres` cannot place."""


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def _at(positions: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Positions at fractional indices, extrapolated linearly past the ends (padding lies there)."""
    if len(positions) == 1:
        return np.full(len(index), positions[0])
    inside = np.interp(index, np.arange(len(positions)), positions)
    low, high = positions[1] - positions[0], positions[-1] - positions[-2]
    return np.where(index < 0, positions[0] + index * low,
                    np.where(index > len(positions) - 1, positions[-1] + (index - len(positions) + 1) * high, inside))


def _windowed(module: Any, centres: Centres) -> Centres:
    if isinstance(module.padding, str) or getattr(module, "ceil_mode", False):
        raise UnknownGeometry(f"{type(module).__name__} with padding={module.padding!r} / ceil_mode")
    kernel, stride = _pair(module.kernel_size), _pair(module.stride)
    padding, dilation = _pair(module.padding), _pair(getattr(module, "dilation", 1))
    out = []
    for axis, positions in enumerate(centres):
        span = dilation[axis] * (kernel[axis] - 1)
        count = (len(positions) + 2 * padding[axis] - span - 1) // stride[axis] + 1
        index = np.arange(count) * stride[axis] - padding[axis] + span / 2
        out.append(_at(positions, index))
    return out[0], out[1]


def _adaptive(module: Any, centres: Centres) -> Centres:
    size = module.output_size
    targets = (size, size) if isinstance(size, int) else tuple(size)
    out = []
    for positions, target in zip(centres, targets):
        n = len(positions)
        m = n if target is None else int(target)
        starts = np.floor(np.arange(m) * n / m).astype(int)
        ends = np.asarray([math.ceil((j + 1) * n / m) for j in range(m)])
        out.append((positions[starts] + positions[ends - 1]) / 2)
    return out[0], out[1]


def propagate(module: nn.Module, centres: Centres) -> Centres:
    """The centres of `module`'s output cells from those of its input's."""
    if isinstance(module, _WINDOWED):
        return _windowed(module, centres)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return _adaptive(module, centres)
    if isinstance(module, nn.Sequential):
        for child in module:
            centres = propagate(child, centres)
        return centres
    if isinstance(module, (BasicBlock, Bottleneck)):
        for name in ("conv1", "conv2", "conv3"):
            if hasattr(module, name):
                centres = propagate(getattr(module, name), centres)
        return centres
    if any(isinstance(m, _SPATIAL) for m in module.modules()):
        raise UnknownGeometry(f"the receptive fields of {type(module).__name__} are not known")
    return centres                                       # element-wise or channel-wise: same cells


def cell_centres(layers: nn.Module, size: int) -> Centres | None:
    """Centres of the receptive fields of `layers`' output cells for an S x S input, or None when a
    layer's geometry is not known."""
    pixels = np.arange(size) + 0.5
    try:
        return propagate(layers, (pixels, pixels))
    except UnknownGeometry:
        return None


def _weights(centres: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """(len(samples), len(centres)) linear interpolation weights, clamped at the ends."""
    n = len(centres)
    weights = np.zeros((len(samples), n))
    if n == 1:
        weights[:, 0] = 1.0
        return weights
    index = np.interp(samples, centres, np.arange(n))
    low = np.clip(np.floor(index).astype(int), 0, n - 2)
    frac = index - low
    rows = np.arange(len(samples))
    weights[rows, low] = 1 - frac
    weights[rows, low + 1] += frac
    return weights


def placement_weights(centres: Centres, image_hw: tuple[int, int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """How (T, h, w) maps whose cells sit at `centres` (model-input pixels of an S x S input) are drawn at the
    image's resolution, bilinearly between the centres (the image is the input stretched to H x W): rows
    (H, h) and columns (W, w) interpolation weights, for `apply_weights`."""
    return (_weights(centres[0], (np.arange(image_hw[0]) + 0.5) * size / image_hw[0]),
            _weights(centres[1], (np.arange(image_hw[1]) + 0.5) * size / image_hw[1]))


def apply_weights(raw: np.ndarray | torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """rows (H, h) @ each of the (T, h, w) maps @ cols (W, w).T, float32."""
    maps = torch.as_tensor(np.asarray(raw, np.float32)) if isinstance(raw, np.ndarray) else raw.detach().float().cpu()
    return (torch.from_numpy(rows).float() @ maps @ torch.from_numpy(cols).float().T).numpy()
