"""Grad-CAM and Grad-CAM++ for every word of a caption in one forward and one backward pass.

The naive way (the seed notebook) runs `score_t.backward()` once per word through the whole network.
Here the target-layer activations A (C, h, w) are computed once, without gradient, and every word's
gradient d score_t / dA comes from `gradients.word_gradients` (one pass for all words; see there for
its three routes). `shortcut=False` forces the generic replicated route (the tests check all routes
against each other and against pytorch-grad-cam, Captum and a backward-per-word loop).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from captionlens.explain.context import ExplainContext
from captionlens.explain.gradients import gradient_route, word_gradients
from captionlens.explain.registry import MethodSettings, register_method, require
from captionlens.explain.result import MethodMaps
from captionlens.explain.scoring import Score, padded_captions
from captionlens.explain.target import TargetLayer
from captionlens.models.protocol import Captioner

CamKind = Literal["gradcam", "gradcam++"]
GRADCAM_PP_EPS = 1e-6  # pytorch-grad-cam's GradCAMPlusPlus denominator epsilon


def cam_weights(activations: torch.Tensor, grads: torch.Tensor, kind: CamKind) -> torch.Tensor:
    """Channel weights (R, C) from activations (R, C, h, w) and score gradients (broadcastable to them).

    Grad-CAM: the spatial mean of the gradient. Grad-CAM++ (Chattopadhay et al. 2018, eq. 19) as
    pytorch-grad-cam's GradCAMPlusPlus computes it: alpha = g^2 / (2 g^2 + sum_ij(A) g^3 + eps), zero
    where g == 0, weights = sum_ij relu(g) alpha. The paper derives g^2 and g^3 as the 2nd and 3rd
    derivatives of exp(score); taking them as powers of the first is the paper's own approximation
    (exact for an exponential of a piecewise-linear score), not the true higher derivatives.
    pytorch-grad-cam also zeroes alpha where g == 0; the eps already makes it 0 there.
    """
    if kind == "gradcam":
        return grads.mean((2, 3))
    if kind != "gradcam++":
        raise ValueError(f"unknown CAM kind {kind!r}; expected 'gradcam' or 'gradcam++'")
    grads = grads.expand_as(activations)
    g2 = grads.pow(2)
    sum_activations = activations.sum((2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + sum_activations * g2 * grads + GRADCAM_PP_EPS)
    return (grads.clamp(min=0) * alpha).sum((2, 3))


def word_cams(model: Captioner, target: TargetLayer, activations: torch.Tensor, captions: torch.Tensor,
              lengths: Sequence[int], kind: CamKind = "gradcam", score: Score = "log_prob",
              max_batch: int = 256, shortcut: bool = True) -> list[torch.Tensor]:
    """Post-ReLU CAMs (T_i, h, w) of every word of every image (arguments as `word_gradients`)."""
    chunks = word_gradients(model, target, activations, captions, lengths, score, max_batch, shortcut)
    if not chunks:
        return [activations.new_zeros(0, *activations.shape[2:]) for _ in lengths]
    cams = torch.cat([torch.einsum("rc,rchw->rhw", cam_weights(acts, grads, kind), acts).clamp(min=0)
                      for acts, grads in chunks])
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


def _explain_cams(contexts: Sequence[ExplainContext], kind: CamKind, settings: GradCamSettings) -> list[MethodMaps]:
    """The CAMs of every word of every context's caption from one pass across the images (`word_cams`)."""
    first = contexts[0]
    captions = padded_captions([c.token_ids for c in contexts], first.vocab, first.captions.device)
    activations = torch.cat([c.activations for c in contexts])
    raws = word_cams(first.model, first.target, activations, captions, [c.num_words for c in contexts], kind,
                     first.score, settings.max_batch, settings.shortcut)
    route = gradient_route(first.model, first.target, settings.shortcut)
    out = []
    for ctx, raw in zip(contexts, raws):
        raw_np = raw.float().cpu().numpy()
        out.append(MethodMaps(method=kind, raw=raw_np, drawing=ctx.target.drawing(raw_np.shape[1:], ctx.image_hw),
                              settings=settings, gradient_route=route))
    return out


@register_method("gradcam", label="Grad-CAM", order=0, signed=False, settings=GradCamSettings,
                 summary="gradient of each word's score at the target layer; all words of all images in one pass")
def gradcam(contexts: Sequence[ExplainContext], settings: GradCamSettings) -> list[MethodMaps]:
    """Grad-CAM of every word: ReLU(sum_k mean_ij(d score_t / dA_kij) A_k), un-normalised."""
    return _explain_cams(contexts, "gradcam", settings)


@register_method("gradcam++", label="Grad-CAM++", order=1, signed=False, settings=GradCamSettings,
                 summary="Grad-CAM++ weights (pytorch-grad-cam's closed form); all words of all images in one pass")
def gradcam_plus_plus(contexts: Sequence[ExplainContext], settings: GradCamSettings) -> list[MethodMaps]:
    """Grad-CAM++ of every word (see `cam_weights`), un-normalised."""
    return _explain_cams(contexts, "gradcam++", settings)
