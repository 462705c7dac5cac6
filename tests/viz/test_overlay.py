"""overlay(): blending maths against hand-computed pixels and ColorBrewer/jet constants."""
from __future__ import annotations

import numpy as np
import pytest

from captionlens.viz.overlay import overlay

JET_LOW = np.array([0.0, 0.0, 0.5]) * 255     # jet(0): dark blue
JET_HIGH = np.array([0.5, 0.0, 0.0]) * 255    # jet(1): dark red
RDBU_BLUE, RDBU_WHITE, RDBU_RED = (5, 48, 97), (247, 247, 247), (103, 0, 31)  # ColorBrewer RdBu #053061 #f7f7f7 #67001f


def test_blend_is_convex_combination_of_photo_and_colour() -> None:
    image = np.tile(np.array([100, 50, 200], np.uint8), (2, 3, 1))
    heat = np.zeros((2, 3), np.float32)
    heat[0, 0] = 7.0                      # min-max -> 1 here, 0 elsewhere
    out = overlay(image, heat, alpha=0.4)
    # (1 - 0.4) * image + 0.4 * colour, by hand:
    np.testing.assert_array_equal(out[0, 0], [111, 30, 120])     # 60 + 51, 30 + 0, 120 + 0
    np.testing.assert_array_equal(out[1, 2], [60, 30, 171])      # 60 + 0, 30 + 0, 120 + 51
    assert np.allclose(0.6 * image[0, 0] + 0.4 * JET_HIGH, out[0, 0], atol=0.5)
    assert np.allclose(0.6 * image[1, 2] + 0.4 * JET_LOW, out[1, 2], atol=0.5)


def test_colours_are_not_washed_out() -> None:
    """alpha=1 gives the pure colormap colour, not a rescaled (brightened/darkened) mixture."""
    image = np.full((1, 2, 3), 255, np.uint8)
    out = overlay(image, np.array([[0.0, 1.0]]), alpha=1.0)
    np.testing.assert_array_equal(out[0], np.rint([JET_LOW, JET_HIGH]))


def test_zero_map_with_heat_alpha_leaves_the_photo_unchanged() -> None:
    image = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    for signed in (False, True):
        out = overlay(image, np.zeros((9, 13)), alpha=0.9, alpha_by_heat=True, signed=signed)
        np.testing.assert_array_equal(out, image)


def test_constant_map_normalises_to_zero_not_nan() -> None:
    out = overlay(np.zeros((4, 5, 3), np.uint8), np.full((4, 5), 3.0), alpha=1.0)
    np.testing.assert_array_equal(out, np.broadcast_to(np.rint(JET_LOW), (4, 5, 3)))


def test_signed_map_is_centred_on_zero_with_symmetric_limits() -> None:
    image = np.zeros((1, 4, 3), np.uint8)
    out = overlay(image, np.array([[-2.0, 0.0, 2.0, 1.0]]), alpha=1.0, signed=True).astype(int)
    np.testing.assert_array_equal(out[0, 0], RDBU_BLUE)
    np.testing.assert_array_equal(out[0, 2], RDBU_RED)
    assert np.abs(out[0, 1] - RDBU_WHITE).max() <= 3          # 0 -> the colormap's white centre
    assert out[0, 3, 0] > out[0, 3, 2]                        # half the peak: still on the red side
    # a one-sided map keeps 0 at white (symmetric limits), not min-max stretched to blue
    one_sided = overlay(image[:, :2], np.array([[0.0, 5.0]]), alpha=1.0, signed=True).astype(int)
    assert np.abs(one_sided[0, 0] - RDBU_WHITE).max() <= 3


def test_low_resolution_map_is_resized_to_a_non_square_image() -> None:
    image = np.full((40, 60, 3), 128, np.uint8)
    heat = np.zeros((4, 6), np.float32)
    heat[1, 4] = 1.0                                           # cell rows 10-19, cols 40-49
    out = overlay(image, heat, alpha=1.0)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    distance = np.abs(out.astype(int) - JET_HIGH).sum(-1)
    row, col = np.unravel_index(distance.argmin(), distance.shape)
    assert 10 <= row <= 19 and 40 <= col <= 49
    assert np.abs(out[35, 5].astype(int) - JET_LOW).max() <= 1  # far corner stays cold


@pytest.mark.parametrize("kwargs, message", [
    ({"image": np.zeros((4, 4, 3), np.float32)}, "uint8"),
    ({"image": np.zeros((4, 4), np.uint8)}, "uint8"),
    ({"heatmap": np.zeros((1, 4, 4))}, "2-D"),
    ({"alpha": 1.5}, "alpha"),
])
def test_bad_input_raises_one_clear_error(kwargs: dict, message: str) -> None:
    args = {"image": np.zeros((4, 4, 3), np.uint8), "heatmap": np.zeros((4, 4))} | kwargs
    with pytest.raises(ValueError, match=message):
        overlay(**args)
