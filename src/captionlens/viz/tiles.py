"""`word_tiles`: one method's per-word overlays composed into one image with numpy and PIL, no axes.

This is the batch export's default figure: it costs a few milliseconds where a matplotlib grid of the
same overlays costs a large share of a second, so explaining a dataset is not bound by drawing it.
Each tile is the photo at a display size chosen from the image (small images are enlarged, photos
reduced), the map coloured with the same colormaps and scaling as `viz.figures`, and a strip above it
with the word and its log-probability; the caption and the method head the image.
"""
from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from captionlens.atomic import atomic_path
from captionlens.explain.registry import is_signed, method_label
from captionlens.explain.result import CaptionExplanation
from captionlens.viz.overlay import (
    DEFAULT_CMAP,
    SIGNED_CMAP,
    check_image,
    colormap_lut,
    colormap_positions,
    method_maps,
)

MIN_TILE = 128          # longest side of a tile, px: small images are enlarged to this
MAX_TILE = 320          # photos are reduced to this
JPEG_QUALITY = 90
GAP = 4
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def word_tiles(expl: CaptionExplanation, method: str, max_cols: int = 5, alpha: float = 0.45) -> Image.Image:
    """Every word's `method` overlay as one RGB image: rows of up to `max_cols` tiles under a caption line."""
    if max_cols < 1:
        raise ValueError(f"max_cols must be >= 1, got {max_cols}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not expl.tokens:
        raise ValueError("explanation has no words to show")
    image = check_image(expl.image)
    maps = method_maps(expl, method)
    signed = is_signed(method, maps)
    size = tile_size(image.shape[:2])
    base = Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    positions = colormap_positions(maps, size, signed)
    palette = _palette(SIGNED_CMAP if signed else DEFAULT_CMAP)
    tiles = []
    for position in positions:  # colour by palette lookup and blend, both in PIL's C code
        colour = Image.fromarray(position, mode="L")
        colour.putpalette(palette)
        tiles.append(Image.blend(base, colour.convert("RGB"), alpha))

    font_size = max(11, size[1] // 14)
    line = _line_height(font_size)
    cols = min(len(tiles), max_cols)
    rows = math.ceil(len(tiles) / cols)
    width = cols * size[1] + (cols + 1) * GAP
    head = _lines(f"“{expl.caption}” ({method_label(method)})".split(), font_size, width - 2 * GAP)
    top = GAP + line * len(head) + GAP
    cell_h = line + size[0] + GAP
    canvas = Image.new("RGB", (width, top + rows * cell_h), BACKGROUND)
    for i, masks in enumerate(head):
        _paste_line(canvas, (GAP, GAP + i * line), masks, _space(font_size))
    for index, (tile, word, log_prob) in enumerate(zip(tiles, expl.tokens, expl.log_probs)):
        x = GAP + (index % cols) * (size[1] + GAP)
        y = top + (index // cols) * cell_h
        _label(canvas, (x, y), word, f"{float(log_prob):.2f}", font_size, size[1])
        canvas.paste(tile, (x, y + line))
    return canvas


# Text is pasted from masks rendered once per process and kept (a dataset's captions reuse a small
# vocabulary, and two-decimal numbers are few), so a tile image neither renders nor measures text again.

def _label(canvas: Image.Image, xy: tuple[int, int], word: str, number: str, font_size: int, width: int) -> None:
    """"word  number" at `xy`, cut to `width`."""
    pieces, gap = [_text_mask(word, font_size), _text_mask(number, font_size)], font_size // 2
    if pieces[0].width + gap + pieces[1].width > width:
        pieces, gap = [_text_mask(_cut(f"{word}  {number}", _font(font_size), width), font_size)], 0
    _paste_line(canvas, xy, pieces, gap)


def _lines(words: list[str], font_size: int, width: int) -> list[list[Image.Image]]:
    """The masks of `words` broken into lines no wider than `width` px (a word wider than that is cut with '…')."""
    space = _space(font_size)
    lines: list[list[Image.Image]] = [[]]
    used = 0
    for word in words:
        mask = _text_mask(word, font_size)
        if mask.width > width:
            mask = _text_mask(_cut(word, _font(font_size), width), font_size)
        if lines[-1] and used + space + mask.width > width:
            lines.append([])
            used = 0
        used += (space if lines[-1] else 0) + mask.width
        lines[-1].append(mask)
    return lines


def _paste_line(canvas: Image.Image, xy: tuple[int, int], masks: list[Image.Image], gap: int) -> None:
    x = xy[0]
    for mask in masks:
        canvas.paste(INK, (x, xy[1], x + mask.width, xy[1] + mask.height), mask)
        x += mask.width + gap


@lru_cache(maxsize=8192)
def _text_mask(text: str, font_size: int) -> Image.Image:
    """`text` as an "L" mask (255 = ink) one line high, rendered with the tiles' font."""
    font = _font(font_size)
    mask = Image.new("L", (max(1, math.ceil(font.getlength(text))), _line_height(font_size)), 0)
    ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=font)
    return mask


def tile_size(shape: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of one tile for an image of `shape`: longest side clipped to [MIN_TILE, MAX_TILE]."""
    h, w = shape
    scale = float(np.clip(max(h, w), MIN_TILE, MAX_TILE)) / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def save_tiles(tiles: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write `tiles` atomically as JPEG or PNG by the path's suffix.

    The export writes JPEG: the tiles are continuous-tone overlays even on synthetic scenes, and PNG's
    deflate costs about as much per image as explaining it (the explanation file keeps the image losslessly)."""
    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: word tiles are saved as .png or .jpg")
    with atomic_path(path) as tmp:
        tiles.save(tmp, format=fmt, **({"quality": JPEG_QUALITY} if fmt == "JPEG" else {"compress_level": 1}))
    return path


@lru_cache(maxsize=4)
def _palette(cmap: str) -> bytes:
    return colormap_lut(cmap).tobytes()


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=8)
def _line_height(font_size: int) -> int:
    top, bottom = _font(font_size).getbbox("Hgjy“")[1::2]
    return int(bottom - min(top, 0)) + 3


@lru_cache(maxsize=8)
def _space(font_size: int) -> int:
    return max(1, round(_font(font_size).getlength(" ")))


def _cut(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> str:
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"
