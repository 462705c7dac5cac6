"""The CAM family for every word of a caption in one forward and one backward pass: Grad-CAM, Grad-CAM++,
HiResCAM, LayerCAM, XGradCAM (each a small function of the activations and the word's gradient, as
pytorch-grad-cam defines them), and EigenCAM, which uses no gradient at all.

The naive way (the seed notebook) runs `score_t.backward()` once per word through the whole network.
Here the target-layer activations A (C, h, w) are computed once, without gradient, and every word's
gradient d score_t / dA comes from `gradients.word_gradients` (one pass for all words; see there for
its three routes). `shortcut=False` forces the generic replicated route (the tests check all routes
against each other and against pytorch-grad-cam, Captum and a backward-per-word loop).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
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

GRADCAM_PP_EPS = 1e-6  # pytorch-grad-cam's GradCAMPlusPlus denominator epsilon
XGRADCAM_EPS = 1e-7    # pytorch-grad-cam's XGradCAM epsilon


def _weighted(activations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_k w_k A_k: (R, C) channel weights over (R, C, h, w) activations -> (R, h, w)."""
    return torch.einsum("rc,rchw->rhw", weights, activations)


def gradcam_cam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): channel weights are the spatial mean of the gradient."""
    return _weighted(activations, grads.mean((2, 3)))


def gradcam_plus_plus_cam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018, eq. 19) as pytorch-grad-cam's GradCAMPlusPlus computes it:
    alpha = g^2 / (2 g^2 + sum_ij(A) g^3 + eps), weights = sum_ij relu(g) alpha. The paper derives g^2
    and g^3 as the 2nd and 3rd derivatives of exp(score); taking them as powers of the first is the
    paper's own approximation (exact for an exponential of a piecewise-linear score). pytorch-grad-cam
    also zeroes alpha where g == 0; the eps already makes it 0 there."""
    g2 = grads.pow(2)
    sum_activations = activations.sum((2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + sum_activations * g2 * grads + GRADCAM_PP_EPS)
    return _weighted(activations, (grads.clamp(min=0) * alpha).sum((2, 3)))


def xgradcam_cam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGradCAM (Fu et al. 2020): weights sum_ij(g A) / (sum_ij A + eps), axiom-derived."""
    sums = activations.sum((2, 3), keepdim=True)
    return _weighted(activations, (grads * activations / (sums + XGRADCAM_EPS)).sum((2, 3)))


def hirescam_cam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020): the element-wise product g A summed over channels, no averaging,
    so each cell keeps its own gradient (for a score that is linear in the features, exactly what each
    cell contributes)."""
    return (grads * activations).sum(1)


def layercam_cam(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al. 2021): relu(g) A summed over channels."""
    return (grads.clamp(min=0) * activations).sum(1)


Cam = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def word_cams(model: Captioner, target: TargetLayer, activations: torch.Tensor, captions: torch.Tensor,
              lengths: Sequence[int], cam: Cam = gradcam_cam, score: Score = "log_prob",
              max_batch: int = 256, shortcut: bool = True, targets: torch.Tensor | None = None
              ) -> list[torch.Tensor]:
    """Post-ReLU CAMs (T_i, h, w) of every word of every image, `cam(activations, gradients)` per (image,
    word) row, from one pass (arguments as `word_gradients`)."""
    chunks = word_gradients(model, target, activations, captions, lengths, score, max_batch, shortcut, targets)
    if not chunks:
        return [activations.new_zeros(0, *activations.shape[2:]) for _ in lengths]
    cams = torch.cat([cam(acts, grads.expand_as(acts)).clamp(min=0) for acts, grads in chunks])
    return list(cams.split(list(lengths)))


@dataclass(frozen=True, kw_only=True)
class GradCamSettings(MethodSettings):
    """`max_batch`: (image, word) rows differentiated at once; `shortcut=False` forces the replicated route."""

    max_batch: int = 256
    shortcut: bool = True

    def __post_init__(self) -> None:
        require(isinstance(self.max_batch, int) and self.max_batch >= 1,
                f"max_batch must be an integer >= 1, got {self.max_batch!r}")
        require(isinstance(self.shortcut, bool), f"shortcut must be True or False, got {self.shortcut!r}")


def _explain_cams(contexts: Sequence[ExplainContext], name: str, cam: Cam,
                  settings: GradCamSettings) -> list[MethodMaps]:
    """The CAMs of every word of every context's caption from one pass across the images (`word_cams`)."""
    first = contexts[0]
    captions = padded_captions([c.token_ids for c in contexts], first.vocab, first.captions.device)
    activations = torch.cat([c.activations for c in contexts])
    raws = word_cams(first.model, first.target, activations, captions, [c.num_words for c in contexts], cam,
                     first.score, settings.max_batch, settings.shortcut, padded_targets(contexts))
    route = gradient_route(first.model, first.target, settings.shortcut)
    out = []
    for ctx, raw in zip(contexts, raws):
        raw_np = raw.float().cpu().numpy()
        out.append(MethodMaps(method=name, raw=raw_np, drawing=ctx.target.drawing(raw_np.shape[1:], ctx.image_hw),
                              settings=settings, gradient_route=route))
    return out


@dataclass(frozen=True)
class CamVariant:
    """One registered CAM method: its weights function over the shared pass and how it is shown."""

    name: str
    label: str
    order: int
    cam: Cam
    summary: str


CAM_VARIANTS = (
    CamVariant("gradcam", "Grad-CAM", 0, gradcam_cam,
               "gradient of each word's score at the target layer; all words of all images in one pass"),
    CamVariant("gradcam++", "Grad-CAM++", 1, gradcam_plus_plus_cam,
               "Grad-CAM++ weights (pytorch-grad-cam's closed form); all words of all images in one pass"),
    CamVariant("hirescam", "HiResCAM", 5, hirescam_cam,
               "element-wise gradient x activation at the target layer; one pass for all words"),
    CamVariant("layercam", "LayerCAM", 6, layercam_cam,
               "positive gradient x activation at the target layer; one pass for all words"),
    CamVariant("xgradcam", "XGradCAM", 7, xgradcam_cam,
               "XGradCAM's activation-normalised weights at the target layer; one pass for all words"),
)


def _register(variant: CamVariant) -> None:
    def run(contexts: Sequence[ExplainContext], settings: GradCamSettings) -> list[MethodMaps]:
        return _explain_cams(contexts, variant.name, variant.cam, settings)

    run.__doc__ = f"{variant.label} of every word, un-normalised: {variant.cam.__doc__}"
    run.__qualname__ = f"CAM_VARIANTS[{variant.name!r}]"   # what a registry error names
    register_method(variant.name, label=variant.label, order=variant.order, signed=False, settings=GradCamSettings,
                    summary=variant.summary)(run)


for _variant in CAM_VARIANTS:
    _register(_variant)


@dataclass(frozen=True, kw_only=True)
class EigenCamSettings(MethodSettings):
    """EigenCAM has no options."""


def eigen_projection(activations: np.ndarray) -> np.ndarray:
    """(C, h, w) -> (h, w): the activations' projection on their first principal component (centred over
    cells, SVD as pytorch-grad-cam's get_2d_projection, whose sign convention is numpy's)."""
    cells = activations.reshape(activations.shape[0], -1).T
    cells = cells - cells.mean(0)
    _, _, vt = np.linalg.svd(cells, full_matrices=True)
    return (cells @ vt[0]).reshape(activations.shape[1:])


@register_method("eigencam", label="EigenCAM", order=8, signed=False, settings=EigenCamSettings,
                 summary="first principal component of the target layer's activations: the same map for every "
                         "word (a control that word-specific tests must fail)")
def eigencam(contexts: Sequence[ExplainContext], settings: EigenCamSettings) -> list[MethodMaps]:
    """EigenCAM (Muhammad & Yeasin 2020) as pytorch-grad-cam computes it: ReLU of the first principal
    component's projection. It reads no gradient and no word, so every word gets the same map; it is
    kept as a documented control for the evaluation's word-specific tests."""
    out = []
    for ctx in contexts:
        projection = np.maximum(eigen_projection(ctx.activations[0].float().cpu().numpy()), 0).astype(np.float32)
        raw = np.repeat(projection[None], ctx.num_words, 0)
        out.append(MethodMaps(method="eigencam", raw=raw, drawing=ctx.target.drawing(raw.shape[1:], ctx.image_hw),
                              settings=settings))
    return out
