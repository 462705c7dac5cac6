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
    method_maps,
    resize_map,
    unit_scale,
)

MIN_TILE = 160          # longest side of a tile, px: small images are enlarged to this
MAX_TILE = 320          # photos are reduced to this
PNG_MAX_SIDE = 256      # images up to this longest side are saved as PNG, larger ones (photos) as JPEG
JPEG_QUALITY = 88
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
    base = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR), np.float32)
    small = np.stack([resize_map(m, size) for m in maps])
    unit, _ = unit_scale(small, signed)
    lut = colormap_lut(SIGNED_CMAP if signed else DEFAULT_CMAP).astype(np.float32)
    colour = lut[np.rint(unit * 255).astype(np.intp)]
    tiles = np.clip(np.rint((1.0 - alpha) * base + alpha * colour), 0, 255).astype(np.uint8)

    font = _font(max(11, size[1] // 14))
    line = _line_height(font)
    cols = min(len(tiles), max_cols)
    rows = math.ceil(len(tiles) / cols)
    width = cols * size[1] + (cols + 1) * GAP
    head = _fit(f"“{expl.caption}” — {method_label(method)}", font, width - 2 * GAP)
    top = GAP + line * len(head) + GAP
    cell_h = line + size[0] + GAP
    canvas = Image.new("RGB", (width, top + rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(head):
        draw.text((GAP, GAP + i * line), text, fill=INK, font=font)
    for index, (tile, word, log_prob) in enumerate(zip(tiles, expl.tokens, expl.log_probs)):
        x = GAP + (index % cols) * (size[1] + GAP)
        y = top + (index // cols) * cell_h
        label = _fit(f"{word}  {float(log_prob):.2f}", font, size[1])[0]
        draw.text((x, y), label, fill=INK, font=font)
        canvas.paste(Image.fromarray(tile), (x, y + line))
    return canvas


def tile_size(shape: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of one tile for an image of `shape`: longest side clipped to [MIN_TILE, MAX_TILE]."""
    h, w = shape
    scale = float(np.clip(max(h, w), MIN_TILE, MAX_TILE)) / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def tiles_suffix(image_shape: tuple[int, ...]) -> str:
    """".png" for small (synthetic, icon-sized) images, whose flat colours JPEG would smear; ".jpg" for photos."""
    return ".png" if max(image_shape[:2]) <= PNG_MAX_SIDE else ".jpg"


def save_tiles(tiles: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write `tiles` atomically as PNG or JPEG by the path's suffix."""
    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: word tiles are saved as .png or .jpg")
    with atomic_path(path) as tmp:
        tiles.save(tmp, format=fmt, **({"quality": JPEG_QUALITY} if fmt == "JPEG" else {"optimize": False}))
    return path


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _line_height(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    top, bottom = font.getbbox("Hgjy“")[1::2]
    return int(bottom - min(top, 0)) + 3


def _fit(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """`text` broken into lines no wider than `width` px (a word wider than that is cut with '…')."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if font.getlength(candidate) <= width or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
    lines.append(current)
    return [_cut(line, font, width) for line in lines]


def _cut(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> str:
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"
