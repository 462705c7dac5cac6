"""Receptive-field centres of trunk cells against autograd (the support of a cell's input gradient, in a
linearised copy of the trunk), and map placement against torch's bilinear upsampling and by hand."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captionlens.explain.geometry import apply_weights, cell_centres, placement_weights
from captionlens.explain.maps import Drawing, upsample
from captionlens.models.encoders import conv_layers, tiny_trunk


def place_maps(raw: np.ndarray, centres: tuple[np.ndarray, np.ndarray], hw: tuple[int, int], size: int) -> np.ndarray:
    return apply_weights(raw, *placement_weights(centres, hw, size))


def uniform_centres(grid: tuple[int, int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """What plain upsampling assumes: cell j at (j + 0.5) * S / n."""
    return tuple((np.arange(n) + 0.5) * size / n for n in grid)  # type: ignore[return-value]

def _linearised(layers: nn.Module) -> nn.Module:
    """The same geometry with every input pixel of a receptive field reaching its cell: ReLUs removed,
    max pools as average pools of the same window (their gradient reaches every position)."""
    layers = copy.deepcopy(layers).eval()
    for module in list(layers.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, child_name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(module, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    return layers


def _support_midpoints(layers: nn.Module, size: int, cells: list[tuple[int, int]]) -> list[tuple[float, float]]:
    torch.manual_seed(0)
    net = _linearised(layers)
    out = []
    for r, c in cells:
        image = torch.ones(1, 3, size, size, requires_grad=True)
        net(image)[0, :, r, c].sum().backward()
        rows, cols = torch.nonzero(image.grad[0].abs().sum(0) > 0, as_tuple=True)
        out.append(((rows.min() + rows.max()).item() / 2 + 0.5, (cols.min() + cols.max()).item() / 2 + 0.5))
    return out


@pytest.mark.parametrize(("name", "size", "cells"), [
    ("tiny", 96, [(5, 6), (6, 5), (7, 7)]),      # cells whose 75 px receptive field fits the image
    ("resnet18 layer1", 96, [(10, 12), (12, 9)]),
    ("resnet18 layer2", 160, [(10, 10), (9, 11)]),
])
def test_centres_are_the_middle_of_each_cells_receptive_field(name, size, cells):
    if name == "tiny":
        layers = tiny_trunk()
    else:
        children = conv_layers("resnet18")
        keep = list(children)[:list(children).index(name.split()[1]) + 1]
        layers = nn.Sequential(*(children[k] for k in keep))
    rows, cols = cell_centres(layers, size)
    for (r, c), (mid_r, mid_c) in zip(cells, _support_midpoints(layers, size, cells)):
        assert (rows[r], cols[c]) == pytest.approx((mid_r, mid_c)), (r, c)


def test_tiny_and_resnet_cells_sit_half_a_stride_before_plain_upsampling():
    rows, cols = cell_centres(tiny_trunk(), 96)
    assert len(cols) == 12 and cols[0] == 0.5 and np.allclose(np.diff(cols), 8)   # uniform would say 4.0
    _, cols = cell_centres(nn.Sequential(conv_layers("resnet50")), 224)
    assert len(cols) == 7 and cols[0] == 0.5 and np.allclose(np.diff(cols), 32)   # uniform: 16.0


def test_uniform_centres_reproduce_bilinear_upsampling():
    raw = np.random.default_rng(0).random((3, 5, 7)).astype(np.float32)
    for hw, size in (((40, 56), 20), ((13, 9), 32)):
        placed = place_maps(raw, uniform_centres((5, 7), size), hw, size)
        expected = F.interpolate(torch.from_numpy(raw)[:, None], size=hw, mode="bilinear", align_corners=False)
        np.testing.assert_allclose(placed, expected[:, 0].numpy(), atol=1e-5)
        np.testing.assert_allclose(placed, upsample(raw, hw), atol=1e-5)


def test_a_hot_cell_peaks_at_its_centre_and_between_centres_is_linear():
    raw = np.zeros((1, 3, 3), np.float32)
    raw[0, 1, 2] = 1.0
    centres = (np.array([0.5, 8.5, 16.5]), np.array([0.5, 8.5, 16.5]))
    placed = place_maps(raw, centres, (24, 24), 24)[0]
    assert np.unravel_index(placed.argmax(), placed.shape) == (8, 16)
    assert placed[8, 12] == pytest.approx((12.5 - 8.5) / 8)             # halfway up the ramp to column 16.5
    assert placed[8, 20:].tolist() == [1.0] * 4                          # clamped past the last centre


def test_a_smoothed_drawing_equals_skimages_gaussian_of_the_drawn_maps():
    """Smoothing is applied to the two placement matrices, not to every drawn map: the same maps as
    skimage's `gaussian` (nearest edges, 4 sigma) on the unsmoothed drawing."""
    from skimage.filters import gaussian

    raw = np.random.default_rng(1).random((4, 6, 5)).astype(np.float32)
    centres = (np.linspace(2.5, 45.5, 6), np.linspace(4.5, 40.5, 5))
    for hw, sigma in (((75, 100), 0.5), ((48, 31), 1.3)):
        plain = Drawing("centres", hw, 48, *centres).render(raw)
        smooth = Drawing("centres", hw, 48, *centres, sigma=sigma).render(raw)
        cell = (hw[0] / 6 * sigma, hw[1] / 5 * sigma)
        np.testing.assert_allclose(smooth, gaussian(plain, sigma=(0, *cell), preserve_range=True), atol=1e-5)
        assert not np.allclose(smooth, plain, atol=1e-3)                  # the smoothing did something


def test_unknown_layers_give_none():
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return self.conv(x)[..., ::2, ::2]

    assert cell_centres(nn.Sequential(Custom()), 32) is None
    assert cell_centres(nn.Sequential(nn.Conv2d(3, 4, 3, padding="same")), 32) is None
