"""The attention encoder's grid pool: a pass-through at the grid's size, adaptive pooling otherwise."""
from __future__ import annotations

import torch
from torch import nn

from captionlens.models.encoders import GridPool


def test_grid_pool_passes_a_map_of_its_size_through_and_pools_others():
    pool = GridPool(7)
    same = torch.randn(2, 5, 7, 7)
    assert pool(same) is same
    larger = torch.randn(2, 5, 14, 11)
    torch.testing.assert_close(pool(larger), nn.AdaptiveAvgPool2d(7)(larger))
    torch.testing.assert_close(GridPool((3, 3))(larger), nn.AdaptiveAvgPool2d(3)(larger))
