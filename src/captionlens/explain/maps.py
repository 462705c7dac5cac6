"""Small array helpers shared by every method: upsampling to image resolution and safe normalisation."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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
