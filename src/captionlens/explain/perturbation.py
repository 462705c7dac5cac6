"""What the perturbation methods (LIME, occlusion) share: what hidden pixels become (`fill_tensor`) and the
word scores of many partly hidden copies of an image, composed on the model's device (`score_masked`)."""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torchvision.transforms import functional as TF

from captionlens.explain.context import ExplainContext
from captionlens.explain.registry import require
from captionlens.explain.scoring import batched_word_scores

Fill = str | float | tuple[float, float, float]


def check_fill(fill: Fill, blur_sigma: float) -> None:
    """ValueError unless `fill` is "mean", "blur" (with blur_sigma > 0), a grey level or an RGB triple in 0..255."""
    if isinstance(fill, str):
        require(fill in ("mean", "blur"), f"fill must be 'mean', 'blur', a grey level or an RGB triple in 0..255, "
                                          f"got {fill!r}")
        require(fill != "blur" or (isinstance(blur_sigma, (int, float)) and blur_sigma > 0),
                f"blur_sigma must be > 0, got {blur_sigma!r}")
        return
    rgb = np.asarray(fill, dtype=np.float64) if isinstance(fill, (int, float, tuple, list)) else np.asarray([-1.0])
    require(rgb.shape in ((), (3,)) and bool(((rgb >= 0) & (rgb <= 255)).all()),
            f"fill must be 'mean', 'blur', a grey level or an RGB triple in 0..255, got {fill!r}")


def fill_tensor(ctx: ExplainContext, fill: Fill = "mean", blur_sigma: float = 8.0) -> torch.Tensor:
    """What hidden pixels become, in the model's normalised input space.

    "mean": the original image's mean colour; "blur": a Gaussian-blurred copy of the model input
    (`blur_sigma` in model-input pixels), (1, 3, S, S); a number or RGB triple: that colour in 0..255.
    A colour comes back as (1, 3, 1, 1), broadcast against images.
    """
    check_fill(fill, blur_sigma)
    x = ctx.image_tensor
    if fill == "blur":
        radius = min(math.ceil(3 * blur_sigma), (min(x.shape[-2:]) - 1) // 2)
        return TF.gaussian_blur(x, [2 * radius + 1] * 2, [blur_sigma] * 2)
    if fill == "mean":
        rgb = ctx.image.reshape(-1, 3).astype(np.float64).mean(0)
    else:
        rgb = np.broadcast_to(np.asarray(fill, dtype=np.float64), (3,))
    normalised = ctx.model.preprocessing.normalize_colour(rgb.tolist())
    return torch.as_tensor(normalised, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)


def score_masked(ctx: ExplainContext, keep_batches: Iterable[torch.Tensor], background: torch.Tensor,
                 total: int | None = None) -> torch.Tensor:
    """(P, T) word scores of the images `image where keep else background`, one batched pass per
    (B, S, S) bool batch of `keep_batches`; each image is composed on the model's device. After each
    batch the count of images scored so far (of `total`) goes to `ctx.report`, which may stop the run."""
    x = ctx.image_tensor
    scores: list[torch.Tensor] = []
    done = 0
    for keep in keep_batches:
        scores.append(batched_word_scores(ctx.model, torch.where(keep[:, None], x, background), ctx.captions,
                                          ctx.score, batch_size=len(keep), targets=ctx.scored_ids))
        done += len(keep)
        ctx.report(done, total if total is not None else done)
    return torch.cat(scores)
