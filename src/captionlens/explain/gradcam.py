"""Grad-CAM and Grad-CAM++ for every word of a caption in one forward and one backward pass.

The naive way (the seed notebook) runs `score_t.backward()` once per word through the whole network.
Here the target-layer activations A (C, h, w) are computed once, without gradient, and replicated
as one leaf tensor (R, C, h, w) with a row per (image, word). One pass of the upper encoder and the
teacher-forced decoder over the R rows scores every word in every row; summing row r's score of its
own word t_r (the "diagonal") and calling `torch.autograd.grad` once gives, in row r, exactly
d score_{t_r} / dA, because rows do not interact. Nothing below the target layer is differentiated,
and no parameter gradient is computed.

When the rest of the trunk after the target layer is a single global average pool (Show-and-Tell),
d score / dA_kij = d score / dp_k / (h w) for every position, so the leaf is the pooled (R, C)
feature instead: the spatial mean of the gradient is the pooled gradient / (h w), and the differentiated
pass starts from (R, C) rather than (R, C, h, w). The `shortcut=False` setting turns this off.

Replication, not `torch.autograd.grad(..., is_grads_batched=True)` (vmap over one forward): vmap
cannot go through cuDNN's RNN backward, and the replicated rows batch just as well on a GPU.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from captionlens.data.vocabulary import Vocabulary
from captionlens.explain.api import ExplainContext, register
from captionlens.explain.maps import upsample
from captionlens.explain.result import MethodMaps
from captionlens.explain.scoring import LayerSplit, Score, caption_tensor, scores_at
from captionlens.models.base import CaptionModel

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


def pools_globally(model: CaptionModel, split: LayerSplit) -> bool:
    """True when the trunk after the target layer is one global average pool (the pooled-leaf shortcut)."""
    rest = model.encoder.resnet[split.index + 1:]
    return (len(rest) == 1 and isinstance(rest[0], nn.AdaptiveAvgPool2d)
            and rest[0].output_size in (1, (1, 1)))


def word_cams(model: CaptionModel, split: LayerSplit, activations: torch.Tensor, captions: torch.Tensor,
              lengths: Sequence[int], kind: CamKind = "gradcam", score: Score = "log_prob",
              max_batch: int = 256, shortcut: bool = True) -> list[torch.Tensor]:
    """Post-ReLU CAMs (T_i, h, w) of every word of every image, from one replicated pass per chunk.

    `activations` (B, C, h, w) are the target-layer activations, `captions` (B, L) the padded
    `<START> words <END> <PAD>..` tensors and `lengths` the word counts T_i (padded positions are
    never scored). Rows (image, word) go through the decoder `max_batch` at a time.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    rows = torch.tensor([(i, t) for i, n in enumerate(lengths) for t in range(n)], dtype=torch.long,
                        device=activations.device).view(-1, 2)
    pooled = shortcut and pools_globally(model, split)
    activations = activations.detach()
    cams = []
    for chunk in rows.split(max_batch):
        image_idx, word_idx = chunk.unbind(1)
        acts = activations[image_idx]
        leaf = (acts.mean((2, 3)) if pooled else acts.detach()).requires_grad_()
        with torch.enable_grad():
            features = model.encoder.head(leaf[:, :, None, None]) if pooled else split.upper(leaf)
            target = scores_at(model, features, captions[image_idx], word_idx, score).sum()
            (grads,) = torch.autograd.grad(target, leaf)
        if pooled:
            grads = grads[:, :, None, None] / (acts.size(2) * acts.size(3))
        weights = cam_weights(acts, grads, kind)
        cams.append(torch.einsum("rc,rchw->rhw", weights, acts).clamp(min=0))
    if not cams:
        return [activations.new_zeros(0, *activations.shape[2:]) for _ in lengths]
    return list(torch.cat(cams).split(list(lengths)))


def padded_captions(captions: Sequence[Sequence[int]], vocab: Vocabulary,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, max T + 2) `<START> words <END>` rows, right-padded with <PAD>."""
    rows = [caption_tensor(ids, vocab, device)[0] for ids in captions]
    return nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=vocab.pad_idx)


def gradcam_batch(model: CaptionModel, images: torch.Tensor, captions: Sequence[Sequence[int]],
                  vocab: Vocabulary | None = None, kind: CamKind = "gradcam", score: Score = "log_prob",
                  target_layer: str | int | None = None, max_batch: int = 256) -> list[np.ndarray]:
    """Raw CAMs (T_i, h, w) for B images (B, 3, S, S) and their word-id captions, images x words at once.

    The model runs in eval mode (restored afterwards); `vocab` defaults to `model.vocab`.
    """
    vocab = vocab or model.vocab
    if vocab is None:
        raise ValueError("no vocabulary: pass vocab=..., or set model.vocab")
    if len(captions) != images.size(0):
        raise ValueError(f"{len(captions)} captions given for {images.size(0)} images")
    was_training = model.training
    model.eval()
    try:
        split = LayerSplit(model, target_layer)
        with torch.no_grad():
            activations = split.lower(images)
        cams = word_cams(model, split, activations, padded_captions(captions, vocab, images.device),
                         [len(c) for c in captions], kind, score, max_batch)
    finally:
        model.train(was_training)
    return [cam.float().cpu().numpy() for cam in cams]


def _explain_cams(ctx: ExplainContext, kind: CamKind, max_batch: int, shortcut: bool) -> MethodMaps:
    (raw,) = word_cams(ctx.model, ctx.split, ctx.activations, ctx.captions, [ctx.num_words], kind, ctx.score,
                       max_batch, shortcut)
    raw = raw.float().cpu().numpy()
    settings = {"method": kind, "layer": ctx.split.name, "score": ctx.score, "max_batch": max_batch,
                "pooled_shortcut": shortcut and pools_globally(ctx.model, ctx.split)}
    return MethodMaps(maps=upsample(raw, ctx.image_hw), raw=raw, settings=settings)


@register("gradcam")
def gradcam(ctx: ExplainContext, max_batch: int = 256, shortcut: bool = True) -> MethodMaps:
    """Grad-CAM of every word: ReLU(sum_k mean_ij(d score_t / dA_kij) A_k), un-normalised."""
    return _explain_cams(ctx, "gradcam", max_batch, shortcut)


@register("gradcam++")
def gradcam_plus_plus(ctx: ExplainContext, max_batch: int = 256, shortcut: bool = True) -> MethodMaps:
    """Grad-CAM++ of every word (pytorch-grad-cam's closed form; see `cam_weights`), un-normalised."""
    return _explain_cams(ctx, "gradcam++", max_batch, shortcut)
