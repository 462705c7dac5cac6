"""Array helpers shared by every method and by whatever shows or compares maps: drawing raw maps at the
image's resolution (`Drawing`), resizing, and per-map scaling (min-max, or by the peak |value| for signed
maps)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter1d
from skimage.filters import gaussian

from captionlens.explain.geometry import apply_weights, placement_weights


def upsample(raw: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, h, w) -> (T, H, W) float32 by bilinear interpolation (align_corners=False, as torchvision resizes)."""
    tensor = torch.as_tensor(np.asarray(raw, dtype=np.float32) if isinstance(raw, np.ndarray) else raw.float())
    out = F.interpolate(tensor.unsqueeze(1), size=size, mode="bilinear", align_corners=False)
    return out.squeeze(1).cpu().numpy().astype(np.float32, copy=False)


def normalize_maps(maps: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Min-max scale each (H, W) map of a (T, H, W) stack to [0, 1]; a constant map becomes all zeros, never NaN."""
    maps = np.asarray(maps, dtype=np.float32)
    flat = maps.reshape(maps.shape[0], -1)
    low, high = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    span = high - low
    scaled = np.where(span > eps, (flat - low) / np.where(span > eps, span, 1.0), 0.0)
    return scaled.reshape(maps.shape).astype(np.float32)


def resize_map(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) -> (H, W) float32 by bilinear resampling (PIL, antialiased when shrinking); no-op when equal."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (h, w), got shape {heatmap.shape}")
    if heatmap.shape == tuple(size):
        return heatmap
    resized = Image.fromarray(heatmap, mode="F").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (T, h, w) stack -> (T, H, W) float32 in one call: bilinear, antialiased when shrinking (as PIL's
    resize, which `resize_map` uses per map); no-op when equal."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"maps must be a 3-D (T, h, w) stack, got shape {maps.shape}")
    if maps.shape[1:] == tuple(size) or not len(maps):
        return maps
    resized = F.interpolate(torch.from_numpy(maps)[:, None], size=size, mode="bilinear", align_corners=False,
                            antialias=True)
    return resized[:, 0].numpy()


def peak_normalize(maps: np.ndarray) -> np.ndarray:
    """Divide each map of a (T, H, W) stack by its largest |value| (all-zero map -> zeros), keeping 0 at 0."""
    maps = np.asarray(maps, dtype=np.float32)
    peak = np.abs(maps).reshape(maps.shape[0], -1).max(1).reshape(-1, 1, 1)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 1e-12)


def scale_maps(maps: np.ndarray, signed: bool) -> np.ndarray:
    """Per-map scaling of a (T, H, W) stack: signed maps to [-1, 1] by their peak |value|
    (`peak_normalize`), others min-max to [0, 1] (`normalize_maps`)."""
    return peak_normalize(maps) if signed else normalize_maps(maps)


DRAWINGS = ("centres", "upsample", "segments")


@dataclass(frozen=True)
class Drawing:
    """How a method's raw maps become maps at the image's resolution; kept with them, so an explanation
    stores only its raw maps and redraws the rest exactly.

    "centres": raw (T, h, w) cells drawn bilinearly between their receptive fields' centres `rows` /
    `cols` (model-input pixels of a `input_size` input; `explain.geometry`), then, when `sigma` > 0,
    smoothed by a Gaussian of `sigma` cells. "upsample": plain bilinear upsampling. "segments": raw
    (T, S) weights painted onto the region labels `segments` (H, W), 0..S-1 (LIME's superpixels).
    """

    kind: str
    image_hw: tuple[int, int]
    input_size: int = 0
    rows: np.ndarray | None = None
    cols: np.ndarray | None = None
    sigma: float = 0.0
    segments: np.ndarray | None = None

    ARRAYS = ("rows", "cols", "segments")   # stored beside the maps, not in the JSON

    def __post_init__(self) -> None:
        if self.kind not in DRAWINGS:
            raise ValueError(f"unknown drawing {self.kind!r}; expected one of {DRAWINGS}")
        if (self.kind == "segments") != (self.segments is not None):
            raise ValueError("a segments drawing needs its region labels, and only it has them")

    @property
    def placement(self) -> str:
        """How cells are placed: "receptive fields", "uniform" (plain bilinear upsampling) or "regions"."""
        if self.kind == "segments":
            return "regions"
        return "receptive fields" if self.rows is not None else "uniform"

    def render(self, raw: np.ndarray) -> np.ndarray:
        """(T, H, W) float32 maps from the raw maps."""
        raw = np.asarray(raw, np.float32)
        if self.segments is not None:
            return raw[:, np.asarray(self.segments).astype(np.intp)]
        cell = [size / n for size, n in zip(self.image_hw, raw.shape[1:])]
        if self.kind == "upsample" or self.rows is None or self.cols is None:
            maps = upsample(raw, self.image_hw)
            if self.sigma > 0:
                maps = gaussian(maps, sigma=(0, self.sigma * cell[0], self.sigma * cell[1]),
                                preserve_range=True).astype(np.float32)
            return maps
        rows, cols = placement_weights((self.rows, self.cols), self.image_hw, self.input_size)
        if self.sigma > 0:
            # placing and smoothing are both linear and separable: smooth the two weight matrices along the
            # image's axis (as skimage's `gaussian` smooths the drawn maps) instead of every drawn map
            rows = gaussian_filter1d(rows, self.sigma * cell[0], axis=0, mode="nearest", truncate=4.0)
            cols = gaussian_filter1d(cols, self.sigma * cell[1], axis=0, mode="nearest", truncate=4.0)
        return apply_weights(raw, rows, cols)

    def to_json(self) -> dict[str, Any]:
        """Everything but the `ARRAYS` (stored beside the maps)."""
        return {"kind": self.kind, "image_hw": list(self.image_hw), "input_size": self.input_size,
                "sigma": self.sigma}

    @classmethod
    def from_json(cls, data: dict[str, Any], arrays: dict[str, np.ndarray]) -> Drawing:
        return cls(data["kind"], (int(data["image_hw"][0]), int(data["image_hw"][1])), int(data["input_size"]),
                   arrays.get("rows"), arrays.get("cols"), float(data["sigma"]), arrays.get("segments"))
