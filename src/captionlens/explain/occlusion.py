"""Occlusion for captions: a square patch slides over the model input; every word's map comes from the same passes.

Each occluded image is scored on all T words by one teacher-forced decoder pass. The attribution of
a pixel for word t is the drop `base score - occluded score`, averaged over the patches covering it.
Patch positions are Captum's `Occlusion`'s: starts 0, stride, ... up to ceil((S - window) / stride)
steps, the last patch clipped at the far edge, so every pixel is covered.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from captionlens.explain.context import ExplainContext
from captionlens.explain.maps import Drawing
from captionlens.explain.perturbation import Fill, check_fill, fill_tensor, score_masked
from captionlens.explain.registry import MethodSettings, register_method, require
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


@dataclass(frozen=True, kw_only=True)
class OcclusionSettings(MethodSettings):
    """`window`/`stride` in model-input pixels (default: 1/8 of the input, half that), hidden pixels take
    `fill`; `batch_size` occluded images per forward pass (None: `auto_batch_size`)."""

    window: int | None = None
    stride: int | None = None
    fill: Fill = "mean"
    blur_sigma: float = 8.0
    batch_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("window", "stride", "batch_size"):
            value = getattr(self, name)
            require(value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1),
                    f"{name} must be an integer >= 1 or None, got {value!r}")
        check_fill(self.fill, self.blur_sigma)

    def for_input(self, input_size: int) -> OcclusionSettings:
        window = max(1, round(input_size / 8)) if self.window is None else self.window
        stride = max(1, window // 2) if self.stride is None else self.stride
        require(stride <= window <= input_size,
                f"need stride <= window <= {input_size} (the model's input size), got stride={stride}, window={window}")
        return replace(self, window=window, stride=stride)


def quick(input_size: int) -> dict[str, int]:
    """Patches of a quarter of the input at an eighth's stride (49 patches): for runs over many images."""
    return {"window": max(1, input_size // 4), "stride": max(1, input_size // 8)}


@register_method("occlusion", label="occlusion", order=4, signed=True, settings=OcclusionSettings,
                 summary="score drop under a sliding patch; P + 1 forward passes for all words", quick_settings=quick)
def occlusion(contexts: Sequence[ExplainContext], settings: OcclusionSettings) -> list[MethodMaps]:
    """Per-word occlusion maps of each image. raw is (T, S, S) at model resolution, maps its bilinear
    upsampling to the original image."""
    return [_occlusion(ctx, settings) for ctx in contexts]


def _occlusion(ctx: ExplainContext, settings: OcclusionSettings) -> MethodMaps:
    height, width = ctx.image_tensor.shape[-2:]
    window, stride = settings.window, settings.stride
    assert window is not None and stride is not None  # for_input filled them
    batch_size = auto_batch_size(ctx.image_tensor) if settings.batch_size is None else settings.batch_size
    device = ctx.image_tensor.device
    ys, xs = np.meshgrid(patch_starts(height, window, stride), patch_starts(width, window, stride), indexing="ij")
    rows = patch_cover(height, ys.ravel(), window).to(device)
    cols = patch_cover(width, xs.ravel(), window).to(device)
    base = batched_word_scores(ctx.model, ctx.image_tensor, ctx.captions, ctx.score, targets=ctx.scored_ids)
    background = fill_tensor(ctx, settings.fill, settings.blur_sigma)
    occluded = score_masked(ctx, _keep_batches(rows, cols, batch_size), background, len(rows))
    drop = (base - occluded).double()                                                           # (P, T)
    rows_f, cols_f = rows.double(), cols.double()
    total = torch.einsum("pt,ph,pw->thw", drop, rows_f, cols_f)
    count = torch.einsum("ph,pw->hw", rows_f, cols_f)
    raw = (total / count).float().cpu()
    return MethodMaps(method="occlusion", raw=raw.numpy(), drawing=Drawing("upsample", ctx.image_hw, height),
                      settings=replace(settings, batch_size=batch_size),
                      extras={"num_forward_passes": np.asarray(len(occluded) + 1)})
