"""Array helpers shared by every method: drawing raw maps at the image's resolution (`Drawing`), plain
upsampling and safe normalisation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from skimage.filters import gaussian

from captionlens.explain.geometry import place_maps


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


DRAWINGS = ("centres", "upsample", "segments")


@dataclass(frozen=True)
class Drawing:
    """How a method's raw maps become maps at the image's resolution; kept with them, so an explanation
    stores only its raw maps and redraws the rest exactly.

    "centres": raw (T, h, w) cells drawn bilinearly between their receptive fields' centres `rows` /
    `cols` (model-input pixels of a `input_size` input; `explain.geometry`), then, when `sigma` > 0,
    smoothed by a Gaussian of `sigma` cells. "upsample": plain bilinear upsampling. "segments": raw
    (T, S) weights painted onto the superpixel labels `extras["segments"]` (H, W).
    """

    kind: str
    image_hw: tuple[int, int]
    input_size: int = 0
    rows: np.ndarray | None = None
    cols: np.ndarray | None = None
    sigma: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in DRAWINGS:
            raise ValueError(f"unknown drawing {self.kind!r}; expected one of {DRAWINGS}")

    def render(self, raw: np.ndarray, extras: dict[str, np.ndarray]) -> np.ndarray:
        """(T, H, W) float32 maps from the raw maps (and, for segments, the labels in `extras`)."""
        raw = np.asarray(raw, np.float32)
        if self.kind == "segments":
            return raw[:, np.asarray(extras["segments"]).astype(np.intp)]
        if self.kind == "upsample" or self.rows is None or self.cols is None:
            maps = upsample(raw, self.image_hw)
        else:
            maps = place_maps(raw, (self.rows, self.cols), self.image_hw, self.input_size)
        if self.sigma > 0:
            cell = [size / n for size, n in zip(self.image_hw, raw.shape[1:])]
            maps = gaussian(maps, sigma=(0, self.sigma * cell[0], self.sigma * cell[1]),
                            preserve_range=True).astype(np.float32)
        return maps

    def to_json(self) -> dict[str, Any]:
        """Everything but the centres (arrays, stored beside the maps)."""
        return {"kind": self.kind, "image_hw": list(self.image_hw), "input_size": self.input_size,
                "sigma": self.sigma}


def placement(drawing: Drawing) -> str:
    """How a drawing places cells: "receptive fields" or "uniform" (plain bilinear upsampling)."""
    return "receptive fields" if drawing.rows is not None else "uniform"
