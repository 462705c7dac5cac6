"""word_tiles(): the blended colours against matplotlib's colormaps by hand, tile order, caption wrapping and
labels, size and file format."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from captionlens.explain.registry import METHODS
from captionlens.explain.result import CaptionExplanation, MethodMaps
from captionlens.viz.tiles import MAX_TILE, MIN_TILE, save_tiles, tile_size, word_tiles

GRAY = 120
ALPHA = 0.45


def halves(n_words: int, shape: tuple[int, int], hot_words: set[int], signed: bool) -> CaptionExplanation:
    """A flat gray image; word t's map is high on the left half and low on the right when t in hot_words,
    else zero everywhere (a constant map scales to 0)."""
    h, w = shape
    maps = np.zeros((n_words, h, w), np.float32)
    for t in range(n_words):
        if t in hot_words:
            maps[t, :, : w // 2] = 1.0
            if signed:
                maps[t, :, w // 2:] = -1.0
    method = "occlusion" if signed else "gradcam"
    return CaptionExplanation(image=np.full((h, w, 3), GRAY, np.uint8), tokens=[f"w{t}" for t in range(n_words)],
                              token_ids=list(range(4, 4 + n_words)),
                              log_probs=-np.linspace(0.1, 2.0, n_words).astype(np.float32),
                              methods={method: MethodMaps(method=method, raw=maps[:, ::4, ::4], maps=maps,
                                                          settings=METHODS[method].settings())})


def expected(cmap: str, position: float) -> np.ndarray:
    """(1 - a) * photo + a * colour, the colour from matplotlib itself."""
    colour = np.array(colormaps[cmap](position)[:3]) * 255
    return np.rint((1 - ALPHA) * GRAY + ALPHA * colour)


def pixels_of(canvas: Image.Image, colour: np.ndarray) -> np.ndarray:
    """(row, col) of every pixel within 1 of `colour` in every channel."""
    array = np.asarray(canvas).astype(int)
    return np.argwhere(np.abs(array - colour).max(axis=2) <= 1)


def test_colours_and_tile_area_match_a_hand_blend_of_matplotlibs_jet() -> None:
    shape = (48, 64)
    expl = halves(7, shape, hot_words=set(range(7)), signed=False)
    canvas = word_tiles(expl, "gradcam", alpha=ALPHA)
    th, tw = tile_size(shape)
    for position in (1.0, 0.0):
        found = len(pixels_of(canvas, expected("jet", position)))
        # each of 7 tiles is half hot, half cold; bilinear resampling blurs at most a few columns at the edge
        assert 7 * th * (tw // 2 - 3) <= found <= 7 * th * (tw // 2 + 1)


def test_signed_maps_use_the_diverging_map_centred_on_zero() -> None:
    canvas = word_tiles(halves(3, (40, 40), {0, 1, 2}, signed=True), "occlusion", alpha=ALPHA)
    th, tw = tile_size((40, 40))
    red, blue = (len(pixels_of(canvas, expected("RdBu_r", p))) for p in (1.0, 0.0))
    assert red > 3 * th * (tw // 2 - 3) and blue > 3 * th * (tw // 2 - 3)


def test_words_are_laid_out_in_reading_order() -> None:
    expl = halves(7, (48, 64), hot_words={6}, signed=False)  # only the 7th word: second row, second tile
    canvas = word_tiles(expl, "gradcam", max_cols=5, alpha=ALPHA)
    hot = pixels_of(canvas, expected("jet", 1.0))
    _, tw = tile_size((48, 64))
    assert hot[:, 0].min() > canvas.height / 2                       # lower row
    assert tw < hot[:, 1].min() and hot[:, 1].max() < 2 * tw + 3 * 4  # second column


def text_lines_above_the_first_tile(canvas: Image.Image) -> tuple[int, np.ndarray]:
    """(how many lines of dark text lie above the first tile, the text mask): the caption's lines and the
    first word's label; the flat tiles of `halves` without hot words are jet's lowest colour."""
    first_tile_row = pixels_of(canvas, expected("jet", 0.0))[:, 0].min()
    text = np.asarray(canvas.convert("L")) < 60
    rows = np.flatnonzero(text[:first_tile_row].any(axis=1))
    return 1 + int((np.diff(rows) > 1).sum()), text


def test_a_long_caption_wraps_within_the_width_and_the_words_are_labelled() -> None:
    expl = halves(12, (48, 64), hot_words=set(), signed=False)
    expl.tokens = [f"word{t}" for t in range(12)]
    wide, _ = text_lines_above_the_first_tile(word_tiles(expl, "gradcam", max_cols=12, alpha=ALPHA))
    assert wide == 2                                    # the caption on one line, then the first label
    narrow = word_tiles(expl, "gradcam", max_cols=1, alpha=ALPHA)
    lines, text = text_lines_above_the_first_tile(narrow)
    assert lines >= 4                                   # 12 words in one tile's width: several lines
    assert not text[:, -2:].any()                       # nothing drawn past the right edge
    tile_rows = np.unique(pixels_of(narrow, expected("jet", 0.0))[:, 0])
    tops = tile_rows[np.r_[True, np.diff(tile_rows) > 1]]
    assert len(tops) == 12 and all(text[top - 8:top].any() for top in tops)  # a label above every tile


@pytest.mark.parametrize(("shape", "longest"), [((24, 32), MIN_TILE), ((96, 96), MIN_TILE), ((200, 150), 200),
                                                ((375, 500), MAX_TILE), ((1000, 300), MAX_TILE)])
def test_tile_size_keeps_the_aspect_and_clips_the_longest_side(shape: tuple[int, int], longest: int) -> None:
    size = tile_size(shape)
    assert max(size) == longest
    assert abs(size[0] / size[1] - shape[0] / shape[1]) < 0.02


def test_tiles_save_as_png_or_jpeg_by_suffix_and_read_back(tmp_path: Path) -> None:
    canvas = word_tiles(halves(4, (96, 96), {1}, signed=False), "gradcam")
    with Image.open(save_tiles(canvas, tmp_path / "grid.png")) as png:
        np.testing.assert_array_equal(np.asarray(png), np.asarray(canvas))
    with Image.open(save_tiles(canvas, tmp_path / "grid.jpg")) as jpg:
        assert jpg.format == "JPEG" and np.abs(np.asarray(jpg, int) - np.asarray(canvas, int)).mean() < 3
    with pytest.raises(ValueError, match="grid.gif"):
        save_tiles(canvas, tmp_path / "grid.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.jpg", "grid.png"]


def test_bad_arguments_are_refused() -> None:
    expl = halves(2, (20, 20), {0}, signed=False)
    with pytest.raises(ValueError, match="max_cols"):
        word_tiles(expl, "gradcam", max_cols=0)
    with pytest.raises(ValueError, match="alpha"):
        word_tiles(expl, "gradcam", alpha=1.5)
    with pytest.raises(KeyError, match="lime"):
        word_tiles(expl, "lime")
