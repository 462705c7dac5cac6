"""Integrated gradients at the target layer for every word of a caption, one pass per interpolation step.

Sundararajan et al. (2017) at a layer, as Captum's `LayerIntegratedGradients` computes it: with A the
target layer's activations of the image and A0 those of the baseline (the all-zero model input, Captum's
default), the attribution of cell (k, i, j) to word t is (A - A0)_kij times the mean of d score_t / dA
along the straight line from A0 to A, the mean taken by Gauss-Legendre quadrature over `steps` points.
The map sums the attribution over channels and keeps its sign. Every word's gradient at each point
comes from `gradients.word_gradients` (one pass for all words of all images), so the cost is `steps`
Grad-CAM passes, whatever the caption's length.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from captionlens.explain.context import ExplainContext, padded_targets
from captionlens.explain.gradients import gradient_route, word_gradients
from captionlens.explain.registry import MethodSettings, register_method, require
from captionlens.explain.result import MethodMaps
from captionlens.explain.scoring import Score, padded_captions
from captionlens.explain.target import TargetLayer
from captionlens.models.protocol import Captioner


def quadrature(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre points in [0, 1] and their weights (summing to 1)."""
    points, weights = np.polynomial.legendre.leggauss(steps)
    return (points + 1) / 2, weights / 2


def word_integrated_gradients(model: Captioner, target: TargetLayer, activations: torch.Tensor,
                              baseline: torch.Tensor, captions: torch.Tensor, lengths: Sequence[int],
                              steps: int = 8, score: Score = "log_prob", max_batch: int = 256,
                              shortcut: bool = True, targets: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Per image, (T_i, C, h, w): integrated gradients of every word at the target layer from `baseline`
    (activations broadcastable to `activations` (B, C, h, w)) to `activations` (other arguments as
    `word_gradients`)."""
    activations, baseline = activations.detach(), baseline.detach().expand_as(activations)
    delta = activations - baseline
    rows = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(lengths)]).to(activations.device)
    total = delta.new_zeros(len(rows), *delta.shape[1:])
    for point, weight in zip(*quadrature(steps)):
        chunks = word_gradients(model, target, baseline + float(point) * delta, captions, lengths, score, max_batch,
                                shortcut, targets)
        if chunks:
            total += float(weight) * torch.cat([g.expand_as(a) for a, g in chunks])
    return list((delta[rows] * total).split(list(lengths)))


@dataclass(frozen=True, kw_only=True)
class IntegratedGradientsSettings(MethodSettings):
    """`steps` quadrature points (each one gradient pass for every word); `max_batch` and `shortcut` as Grad-CAM's."""

    steps: int = 8
    max_batch: int = 256
    shortcut: bool = True

    def __post_init__(self) -> None:
        require(isinstance(self.steps, int) and not isinstance(self.steps, bool) and self.steps >= 1,
                f"steps must be an integer >= 1, got {self.steps!r}")
        require(isinstance(self.max_batch, int) and self.max_batch >= 1,
                f"max_batch must be an integer >= 1, got {self.max_batch!r}")
        require(isinstance(self.shortcut, bool), f"shortcut must be True or False, got {self.shortcut!r}")


@register_method("integrated-gradients", label="integrated gradients", order=9, signed=True,
                 settings=IntegratedGradientsSettings,
                 summary="integrated gradients at the target layer from a zero-input baseline; one pass per step "
                         "for all words")
def integrated_gradients(contexts: Sequence[ExplainContext],
                         settings: IntegratedGradientsSettings) -> list[MethodMaps]:
    """Each word's integrated gradients at the target layer, summed over channels (signed), un-normalised."""
    first = contexts[0]
    captions = padded_captions([c.token_ids for c in contexts], first.vocab, first.captions.device)
    activations = torch.cat([c.activations for c in contexts])
    with torch.no_grad():
        baseline = first.target.lower(torch.zeros_like(first.image_tensor))
    attributions = word_integrated_gradients(first.model, first.target, activations, baseline, captions,
                                             [c.num_words for c in contexts], settings.steps, first.score,
                                             settings.max_batch, settings.shortcut, padded_targets(contexts))
    route = gradient_route(first.model, first.target, settings.shortcut)
    out = []
    for ctx, attribution in zip(contexts, attributions):
        raw = attribution.sum(1).float().cpu().numpy()
        out.append(MethodMaps(method="integrated-gradients", raw=raw,
                              drawing=ctx.target.drawing(raw.shape[1:], ctx.image_hw), settings=settings,
                              gradient_route=route))
    return out
