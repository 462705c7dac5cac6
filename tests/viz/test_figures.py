"""Static figures: panel layout, titles, where each word's heat lands, LIME outlines, saving and leaks."""
from __future__ import annotations

import gc
import math
import os
import re
import sys
import weakref
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image
from viz_synthetic import blob_centre, make

from captionlens.viz import attention_over_time, method_comparison, save_figure, triptych, word_grid

JET_HIGH = np.array([127.5, 0.0, 0.0])


def image_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.get_visible() and ax.images]


def hottest(panel: np.ndarray) -> tuple[int, int]:
    """Pixel closest to jet's top colour (the blended photo is mid-grey, so the peak stands out)."""
    distance = np.abs(panel.astype(float) - (0.55 * 130 + 0.45 * JET_HIGH)).sum(-1)
    return np.unravel_index(distance.argmin(), distance.shape)


@pytest.mark.parametrize("n_words", [1, 7, 13])
def test_word_grid_has_one_titled_panel_per_word(n_words: int) -> None:
    expl = make(n_words)
    fig = word_grid(expl, "gradcam", max_cols=5)
    cols = min(n_words, 5)
    assert len(fig.axes) == cols * math.ceil(n_words / cols)           # grid + hidden spares
    panels = image_axes(fig)
    assert len(panels) == n_words
    for ax, word, log_prob in zip(panels, expl.tokens, expl.log_probs):
        assert word in ax.get_title() and f"{log_prob:.2f}" in ax.get_title()
    assert expl.caption in fig.get_suptitle().replace("\n", " ")
    width, height = fig.get_size_inches()
    assert width == pytest.approx(word_grid(make(2), "gradcam").get_size_inches()[0] * cols / 2, rel=0.1)
    assert height > 1.5 * math.ceil(n_words / cols)


def test_each_panel_shows_its_own_words_heat() -> None:
    expl = make(7)
    expl.image[:] = 130
    for t, ax in enumerate(image_axes(word_grid(expl, "gradcam"))):
        row, col = hottest(np.asarray(ax.images[0].get_array()))
        cy, cx = blob_centre(t, expl.image.shape[:2])
        assert abs(row - cy) <= 2 and abs(col - cx) <= 2


def test_attention_over_time_writes_each_word_on_its_panel() -> None:
    expl = make(5)
    panels = image_axes(attention_over_time(expl))
    assert [ax.texts[0].get_text() for ax in panels] == expl.tokens
    with pytest.raises(ValueError, match="no attention maps") as info:
        attention_over_time(make(3, methods=("gradcam",)))
    assert "\n" not in str(info.value)


def test_triptych_shows_image_heatmap_and_overlay() -> None:
    expl = make(4)
    fig = triptych(expl, "occlusion", -1)
    panels = image_axes(fig)
    assert [ax.get_title() for ax in panels] == ["image", "value / max |value|", "overlay"]
    np.testing.assert_array_equal(panels[0].images[0].get_array(), expl.image)
    assert panels[1].images[0].get_clim() == (-1.0, 1.0)               # symmetric for a signed method
    assert expl.tokens[3] in fig.get_suptitle()
    with pytest.raises(ValueError, match="out of range"):
        triptych(expl, "gradcam", 4)
    with pytest.raises(KeyError, match=re.escape("no 'lime++' maps")):
        triptych(expl, "lime++", 0)


@pytest.mark.parametrize("n_words", [1, 13])
def test_method_comparison_is_words_by_methods_in_canonical_order(n_words: int) -> None:
    expl = make(n_words, methods=("occlusion", "gradcam", "lime", "attention", "gradcam++"))
    fig = method_comparison(expl)
    panels = image_axes(fig)
    assert len(panels) == n_words * 5
    assert [ax.get_title() for ax in panels[:5]] == ["Grad-CAM", "Grad-CAM++", "attention", "LIME", "occlusion"]
    assert [panels[5 * t].get_ylabel().split("\n")[0] for t in range(n_words)] == expl.tokens
    assert sum(hasattr(ax, "_colorbar") for ax in fig.axes) == 2         # one scale per kind of method
    only = method_comparison(expl, methods=["lime", "gradcam"])
    assert [ax.get_title() for ax in image_axes(only)[:2]] == ["Grad-CAM", "LIME"]


def test_comparison_scales_non_negative_maps_by_their_peak() -> None:
    """0 stays at the bottom of the shared scale: attention's floor (0.01 of a 0.03 peak) shows as jet(1/3)."""
    expl = make(2, shape=(48, 64), methods=("gradcam", "attention"))
    expl.image[:] = 130
    panels = image_axes(method_comparison(expl, alpha=0.5))
    cy, cx = blob_centre(0, (48, 64))
    floor = np.asarray(panels[1].images[0].get_array())[47, 63].astype(float)
    assert np.abs(floor - (65 + 0.5 * 255 * np.asarray(colormaps["jet"](1 / 3)[:3]))).max() <= 2
    for ax in panels[:2]:                                              # both peaks at the top of the scale
        peak = np.asarray(ax.images[0].get_array())[cy, cx].astype(float)
        assert np.abs(peak - (65 + 0.5 * JET_HIGH)).max() <= 2


def test_lime_panel_outlines_top_positive_superpixels() -> None:
    """Blocks are 12 x 16 px; word 0's positive superpixels are blocks 0 and 1 (rows 0-11, cols 0-31)."""
    expl = make(3, shape=(48, 64), methods=("lime",))
    green = [0, 255, 0]
    panel = np.asarray(image_axes(method_comparison(expl, top_k=3))[0].images[0].get_array())
    np.testing.assert_array_equal(panel[11, 5], green)       # bottom edge of the outlined pair
    np.testing.assert_array_equal(panel[5, 31], green)       # its right edge
    assert list(panel[5, 5]) != green and list(panel[5, 15]) != green and list(panel[5, 40]) != green
    assert list(panel[5, 15]) != list(panel[5, 14])          # the inner superpixel edge is marked (white-ish)
    top1 = np.asarray(image_axes(method_comparison(expl, top_k=1))[0].images[0].get_array())
    np.testing.assert_array_equal(top1[5, 15], green)        # now only block 0 is outlined


def test_save_figure_writes_each_format_atomically(tmp_path: Path) -> None:
    fig = word_grid(make(3), "gradcam")
    width, height = fig.get_size_inches() * 80
    paths = save_figure(fig, tmp_path / "out" / "grid.png", formats=("png", "svg", "pdf"), dpi=80)
    assert [p.name for p in paths] == ["grid.png", "grid.svg", "grid.pdf"]
    with Image.open(paths[0]) as png:
        png.verify()
    with Image.open(paths[0]) as png:
        assert abs(png.width - width) <= 2 and abs(png.height - height) <= 2
    assert "<svg" in paths[1].read_text()[:1000]
    assert paths[2].read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["grid.pdf", "grid.png", "grid.svg"]
    with pytest.raises(ValueError, match="unsupported figure format"):
        save_figure(word_grid(make(1)), tmp_path / "x", formats=("jpeg",))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_fifty_saved_figures_leak_neither_figures_nor_memory(tmp_path: Path) -> None:
    expl = make(1, shape=(24, 32), methods=("gradcam",))
    alive = []

    def render(n: int) -> None:
        for i in range(n):
            fig = word_grid(expl, "gradcam")
            alive.append(weakref.ref(fig))
            save_figure(fig, tmp_path / f"f{i}.png", dpi=60)
            del fig

    render(10)
    gc.collect()
    before = _rss_bytes()
    render(50)
    gc.collect()
    assert plt.get_fignums() == []
    assert all(ref() is None for ref in alive)
    assert _rss_bytes() - before < 25 * 2 ** 20
