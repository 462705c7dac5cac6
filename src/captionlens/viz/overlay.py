"""Heatmap -> colour: normalisation, colormaps and alpha blending shared by the figures and the HTML report.

Non-negative maps (Grad-CAM, Grad-CAM++, attention) are min-max scaled to [0, 1] like
`explain.maps.normalize_maps`; signed maps (LIME, occlusion) are divided by their largest |value|, so
0 stays at the centre of a diverging colormap and the limits are symmetric.
"""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps

from captionlens.explain.maps import resize_map, resize_maps, scale_maps
from captionlens.explain.result import CaptionExplanation

DEFAULT_CMAP = "jet"
SIGNED_CMAP = "RdBu_r"


def method_maps(expl: CaptionExplanation, method: str) -> np.ndarray:
    """The (T, h, w) float32 maps of `method`, checked against the caption's word count."""
    maps = np.asarray(expl[method].maps, dtype=np.float32)
    if maps.ndim != 3 or maps.shape[0] != len(expl.tokens):
        raise ValueError(f"'{method}' maps have shape {maps.shape}; expected ({len(expl.tokens)}, H, W), "
                         "one map per word")
    return maps


def check_image(image: np.ndarray) -> np.ndarray:
    """Return `image` if it is (H, W, 3) uint8, else raise one clear ValueError."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    return image


def colormap_positions(maps: np.ndarray, size: tuple[int, int], signed: bool) -> np.ndarray:
    """A (T, h, w) stack -> (T, H, W) uint8 colormap positions (0..255, `unit_scale`'s) at `size`; scaled
    after resizing, so each map spans the whole colour scale at the size it is shown."""
    unit, _ = unit_scale(resize_maps(maps, size), signed)
    return np.clip(np.rint(unit * 255), 0, 255).astype(np.uint8)


def unit_scale(maps: np.ndarray, signed: bool, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A (T, H, W) stack -> (colormap position in [0, 1], heat strength in [0, 1]), per map.

    Unsigned: position = min-max scaled value (constant map -> 0), strength = position.
    Signed: x = value / max|value| in [-1, 1] (all-zero map -> 0), position = (x + 1) / 2, strength = |x|.
    With normalize=False the input is taken as already scaled ([0, 1], or [-1, 1] when signed) and clipped.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if normalize:
        scaled = scale_maps(maps, signed)
    else:
        scaled = np.clip(maps, -1.0 if signed else 0.0, 1.0)
    if not signed:
        return scaled, scaled
    return (scaled + 1.0) / 2.0, np.abs(scaled)


def colorize(unit: np.ndarray, cmap: str) -> np.ndarray:
    """Colormap positions in [0, 1] -> RGB floats in [0, 1] (alpha channel dropped)."""
    return colormaps[cmap](unit)[..., :3].astype(np.float32)


def colormap_lut(cmap: str, n: int = 256) -> np.ndarray:
    """(n, 3) uint8 lookup table of a matplotlib colormap, used by the browser to colour heatmaps."""
    return np.rint(colorize(np.linspace(0.0, 1.0, n), cmap) * 255).astype(np.uint8)


def overlay(image: np.ndarray, heatmap: np.ndarray, cmap: str | None = None, alpha: float = 0.45,
            normalize: bool = True, signed: bool = False, alpha_by_heat: bool = False) -> np.ndarray:
    """Blend a coloured heatmap onto an image: out = (1 - a) * image + a * colour, as (H, W, 3) uint8.

    The heatmap is resized to the image's resolution first. `cmap` defaults to "jet", or "RdBu_r"
    (centred on 0, symmetric limits) when `signed`. With `alpha_by_heat`, a = alpha * strength per
    pixel, so cold regions show the untouched photo; otherwise a = alpha everywhere.
    """
    image = check_image(image)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    heat = resize_map(heatmap, image.shape[:2])
    unit, strength = unit_scale(heat[None], signed, normalize)
    colour = colorize(unit[0], cmap or (SIGNED_CMAP if signed else DEFAULT_CMAP)) * 255.0
    weight = (alpha * strength[0] if alpha_by_heat else np.full(heat.shape, alpha, np.float32))[..., None]
    blended = (1.0 - weight) * image.astype(np.float32) + weight * colour
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
