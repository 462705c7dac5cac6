"""The attention weights a Show-Attend-Tell decoder itself used for each word, as maps.

alpha_t (over the N = gh x gw annotation vectors) is what the decoder attended to when it wrote
word t under teacher forcing; it sums to 1 and needs no gradient. Upsampled bilinearly, a 7x7 grid
shows its cell edges, so the maps get a light Gaussian smoothing whose width is given in grid cells
(`sigma=0.5`: half a cell; 0 turns it off). `raw` keeps the unsmoothed alphas on the grid.
"""
from __future__ import annotations

import torch
from skimage.filters import gaussian

from captionlens.explain.api import ExplainContext, register
from captionlens.explain.maps import upsample
from captionlens.explain.result import MethodMaps


@register("attention")
def attention(ctx: ExplainContext, sigma: float = 0.5) -> MethodMaps:
    """Teacher-forced alphas of each word on the encoder grid; `sigma` (grid cells) smooths the upsampled maps."""
    model = ctx.model
    if not model.has_attention:
        raise ValueError(f"'attention' needs a Show-Attend-Tell model; {type(model).__name__} has no attention")
    if sigma < 0:
        raise ValueError(f"attention sigma must be >= 0 grid cells, got {sigma}")
    with torch.no_grad():
        grid = model.encoder.resnet[ctx.split.index + 1:](ctx.activations)  # (1, C, gh, gw) after the pooling
        _, alphas = model.teacher_forced_hidden(model.encoder.head(grid), ctx.captions)
    alphas = alphas[0, :ctx.num_words].float().cpu().numpy()  # step t wrote word t; the last step wrote <END>
    grid_hw = tuple(grid.shape[2:])
    raw = alphas.reshape(ctx.num_words, *grid_hw)
    maps = upsample(raw, ctx.image_hw)
    if sigma > 0:
        cell = [h / g for h, g in zip(ctx.image_hw, grid_hw)]
        maps = gaussian(maps, sigma=(0, sigma * cell[0], sigma * cell[1]), preserve_range=True).astype("float32")
    settings = {"method": "attention", "sigma": sigma, "grid": list(grid_hw)}
    return MethodMaps(maps=maps, raw=raw, settings=settings, extras={"alphas": alphas})
