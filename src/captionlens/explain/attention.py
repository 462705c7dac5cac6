"""The attention weights a decoder with attention itself used for each word, as maps.

alpha_t (over the N = gh x gw cells of the pooled map) is what the decoder attended to when it wrote
word t under teacher forcing; it sums to 1 and needs no gradient. Upsampled bilinearly, a 7x7 grid
shows its cell edges, so the maps get a light Gaussian smoothing whose width is given in grid cells
(`sigma=0.5`: half a cell; 0 turns it off). `raw` keeps the unsmoothed alphas on the grid.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from captionlens.explain.context import ExplainContext
from captionlens.explain.registry import MethodSettings, register_method, require
from captionlens.explain.result import MethodMaps
from captionlens.explain.scoring import padded_captions


@dataclass(frozen=True, kw_only=True)
class AttentionSettings(MethodSettings):
    """`sigma`: Gaussian smoothing of the upsampled maps, in grid cells (0: none)."""

    sigma: float = 0.5

    def __post_init__(self) -> None:
        require(isinstance(self.sigma, (int, float)) and self.sigma >= 0,
                f"sigma must be >= 0 grid cells, got {self.sigma!r}")


@register_method("attention", label="attention", order=2, signed=False, needs_attention=True,
                 settings=AttentionSettings, summary="the decoder's own attention weights; one teacher-forced pass")
def attention(contexts: Sequence[ExplainContext], settings: AttentionSettings) -> list[MethodMaps]:
    """Teacher-forced alphas of each word on the pooled grid, every image in one pass; `sigma` (grid
    cells) smooths the drawn maps. The alphas of step t are computed before word t is chosen, so they are
    the same whichever word is scored there (`ExplainContext.targets` changes nothing)."""
    first = contexts[0]
    captions = padded_captions([c.token_ids for c in contexts], first.vocab, first.captions.device)
    with torch.no_grad():
        grid = first.target.pooled(torch.cat([c.activations for c in contexts]))  # (B, C, gh, gw)
        _, alphas = first.model.teacher_forced_hidden(first.target.head(grid), captions)
    if alphas is None:
        raise ValueError(f"{type(first.model).__name__} returned no attention weights")
    grid_hw = (int(grid.shape[2]), int(grid.shape[3]))
    return [_draw(ctx, alphas[k, :ctx.num_words].float().cpu().numpy(), grid_hw, settings)  # step t wrote word t
            for k, ctx in enumerate(contexts)]


def _draw(ctx: ExplainContext, weights: np.ndarray, grid_hw: tuple[int, int],
          settings: AttentionSettings) -> MethodMaps:
    raw = weights.reshape(ctx.num_words, *grid_hw)
    drawing = ctx.target.drawing(grid_hw, ctx.image_hw, pooled=True, sigma=settings.sigma)
    return MethodMaps(method="attention", raw=raw, drawing=drawing, settings=settings, extras={"alphas": weights})
