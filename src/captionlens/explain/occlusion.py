"""Occlusion for captions: a square patch slides over the model input; every word's map comes from the same passes.

Each occluded image is scored on all T words by one teacher-forced decoder pass. The attribution of
a pixel for word t is the drop `base score - occluded score`, averaged over the patches covering it.
Patch positions are Captum's `Occlusion`'s: starts 0, stride, ... up to ceil((S - window) / stride)
steps, the last patch clipped at the far edge, so every pixel is covered.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from captionlens.explain.api import ExplainContext, register
from captionlens.explain.lime import Fill, fill_tensor, score_masked
from captionlens.explain.maps import upsample
from captionlens.explain.result import MethodMaps
from captionlens.explain.scoring import auto_batch_size, batched_word_scores


def patch_starts(size: int, window: int, stride: int) -> np.ndarray:
    """Start offsets of the patch along one axis of length `size`, as Captum's Occlusion places them."""
    return np.arange(math.ceil((size - window) / stride) + 1) * stride


def patch_cover(size: int, starts: np.ndarray, window: int) -> torch.Tensor:
    """(P, size) bool: which positions along the axis each patch covers (clipped at the edge)."""
    positions = torch.arange(size)
    starts_t = torch.as_tensor(starts)[:, None]
    return (positions >= starts_t) & (positions < starts_t + window)


def _keep_batches(rows: torch.Tensor, cols: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """(B, H, W) keep-pixel masks: everything but patch p, for each batch of patches."""
    for r, c in zip(rows.split(batch_size), cols.split(batch_size)):
        yield ~(r[:, :, None] & c[:, None, :])


@register("occlusion")
def occlusion(ctx: ExplainContext, window: int | None = None, stride: int | None = None, fill: Fill = "mean",
              blur_sigma: float = 8.0, batch_size: int | None = None) -> MethodMaps:
    """Per-word occlusion maps; `window`/`stride` in model-input pixels (default: 1/8 of the input, half that),
    `batch_size` occluded images per forward pass (default `auto_batch_size`).

    raw is (T, S, S) at model resolution, maps its bilinear upsampling to the original image.
    """
    height, width = ctx.image_tensor.shape[-2:]
    batch_size = auto_batch_size(ctx.image_tensor) if batch_size is None else batch_size
    window = max(1, round(min(height, width) / 8)) if window is None else window
    stride = max(1, window // 2) if stride is None else stride
    if not 1 <= stride <= window <= min(height, width) or batch_size < 1:
        raise ValueError(f"need 1 <= stride <= window <= {min(height, width)} and batch_size >= 1, "
                         f"got stride={stride}, window={window}, batch_size={batch_size}")
    device = ctx.image_tensor.device
    ys, xs = np.meshgrid(patch_starts(height, window, stride), patch_starts(width, window, stride), indexing="ij")
    rows = patch_cover(height, ys.ravel(), window).to(device)
    cols = patch_cover(width, xs.ravel(), window).to(device)
    base = batched_word_scores(ctx.model, ctx.image_tensor, ctx.captions, ctx.score)          # (1, T)
    occluded = score_masked(ctx, _keep_batches(rows, cols, batch_size), fill_tensor(ctx, fill, blur_sigma))
    drop = (base - occluded).double()                                                           # (P, T)
    rows_f, cols_f = rows.double(), cols.double()
    total = torch.einsum("pt,ph,pw->thw", drop, rows_f, cols_f)
    count = torch.einsum("ph,pw->hw", rows_f, cols_f)
    raw = (total / count).float().cpu()
    settings = {"window": window, "stride": stride, "fill": fill, "blur_sigma": blur_sigma,
                "batch_size": batch_size, "score": ctx.score}
    return MethodMaps(maps=upsample(raw, ctx.image_hw), raw=raw.numpy(), settings=settings,
                      extras={"num_forward_passes": np.asarray(len(occluded) + 1)})
