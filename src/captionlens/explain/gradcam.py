"""Grad-CAM and Grad-CAM++ for every word of a caption in one forward and one backward pass.

The naive way (the seed notebook) runs `score_t.backward()` once per word through the whole network.
Here the target-layer activations A (C, h, w) are computed once, without gradient, and each word's
gradient d score_t / dA comes from one of three routes (`gradient_route`), none of which goes below
the target layer or computes a parameter gradient:

- "replicated" (any model): A is replicated as one leaf (R, C, h, w) with a row per (image, word).
  One pass of the upper encoder and the teacher-forced decoder over the R rows, then one
  `torch.autograd.grad` of the sum of row r's score of its own word t_r (the "diagonal"), gives in
  row r exactly d score_{t_r} / dA, because rows do not interact.
- "pooled" (Show-and-Tell): when the rest of the trunk is one global average pool,
  d score / dA_kij = d score / dp_k / (h w), so the replicated leaf is the pooled (R, C) feature.
- "bptt" (Show-Attend-Tell): the rows of the replicated pass all run the same forward, and on a CPU
  that forward plus the (R, N, C) attention-context gradient of every step cost more than the
  ResNet-50 trunk. The attention decoder's backward is written out instead
  (`ShowAttendTellModel.word_feature_grads`): one forward per image, one reverse sweep with a
  cotangent row per word, then autograd from the decoder's features back to A.
`shortcut=False` forces the replicated route (the tests check all routes against each other and
against pytorch-grad-cam, Captum and a backward-per-word loop).

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
GradientRoute = Literal["pooled", "bptt", "replicated"]
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


def gradient_route(model: CaptionModel, split: LayerSplit, shortcut: bool = True) -> GradientRoute:
    """How `word_cams` gets every word's gradient: "pooled" (Show-and-Tell, layer followed by the global
    pool only), "bptt" (a decoder with a written-out `word_feature_grads`, the attention model) or
    "replicated" (one autograd pass over a row per word: any model, and `shortcut=False`)."""
    if shortcut and pools_globally(model, split):
        return "pooled"
    if shortcut and hasattr(model, "word_feature_grads"):
        return "bptt"
    return "replicated"


def word_cams(model: CaptionModel, split: LayerSplit, activations: torch.Tensor, captions: torch.Tensor,
              lengths: Sequence[int], kind: CamKind = "gradcam", score: Score = "log_prob",
              max_batch: int = 256, shortcut: bool = True) -> list[torch.Tensor]:
    """Post-ReLU CAMs (T_i, h, w) of every word of every image.

    `activations` (B, C, h, w) are the target-layer activations, `captions` (B, L) the padded
    `<START> words <END> <PAD>..` tensors and `lengths` the word counts T_i (padded positions are
    never scored). At most about `max_batch` (image, word) rows are differentiated at a time.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    activations = activations.detach()
    route = gradient_route(model, split, shortcut)
    if route == "bptt":
        chunks = [_bptt_cams(model, split, activations[lo:hi], captions[lo:hi], lengths[lo:hi], kind, score)
                  for lo, hi in _image_chunks(lengths, max_batch)]
    else:
        rows = torch.tensor([(i, t) for i, n in enumerate(lengths) for t in range(n)], dtype=torch.long,
                            device=activations.device).view(-1, 2)
        chunks = [_replicated_cams(model, split, activations, captions, chunk, kind, score, route == "pooled")
                  for chunk in rows.split(max_batch)]
    if not chunks:
        return [activations.new_zeros(0, *activations.shape[2:]) for _ in lengths]
    return list(torch.cat(chunks).split(list(lengths)))


def _cams(activations: torch.Tensor, grads: torch.Tensor, kind: CamKind) -> torch.Tensor:
    return torch.einsum("rc,rchw->rhw", cam_weights(activations, grads, kind), activations).clamp(min=0)


def _replicated_cams(model: CaptionModel, split: LayerSplit, activations: torch.Tensor, captions: torch.Tensor,
                     rows: torch.Tensor, kind: CamKind, score: Score, pooled: bool) -> torch.Tensor:
    """CAMs of (image, word) `rows` from one autograd pass over a copy of the activations per row."""
    image_idx, word_idx = rows.unbind(1)
    acts = activations[image_idx]
    leaf = (acts.mean((2, 3)) if pooled else acts.detach()).requires_grad_()
    with torch.enable_grad():
        features = model.encoder.head(leaf[:, :, None, None]) if pooled else split.upper(leaf)
        target = scores_at(model, features, captions[image_idx], word_idx, score).sum()
        (grads,) = torch.autograd.grad(target, leaf)
    if pooled:
        grads = grads[:, :, None, None] / (acts.size(2) * acts.size(3))
    return _cams(acts, grads, kind)


def _bptt_cams(model: CaptionModel, split: LayerSplit, activations: torch.Tensor, captions: torch.Tensor,
               lengths: Sequence[int], kind: CamKind, score: Score) -> torch.Tensor:
    """CAMs of every word of a few images: the decoder's written-out backward gives d score_t / d features
    from one forward per image; autograd carries it back through what lies between the target layer
    and the features (the grid pool and reshaping; more trunk layers for an earlier target layer)."""
    with torch.no_grad():
        features = split.upper(activations)
    d_features = model.word_feature_grads(features, captions, lengths, score)        # (B, T, N, C)
    image_idx = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(lengths)]).to(features.device)
    word_idx = torch.cat([torch.arange(n) for n in lengths]).to(features.device)
    acts = activations[image_idx]
    leaf = acts.detach().requires_grad_()
    with torch.enable_grad():
        (grads,) = torch.autograd.grad(split.upper(leaf), leaf, d_features[image_idx, word_idx])
    return _cams(acts, grads, kind)


def _image_chunks(lengths: Sequence[int], max_rows: int) -> list[tuple[int, int]]:
    """Consecutive image ranges [lo, hi) holding at most `max_rows` words each (an image with more alone)."""
    chunks, lo, rows = [], 0, 0
    for i, n in enumerate(lengths):
        if rows and rows + n > max_rows:
            chunks.append((lo, i))
            lo, rows = i, 0
        rows += n
    if lo < len(lengths):
        chunks.append((lo, len(lengths)))
    return chunks


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
                "gradient_route": gradient_route(ctx.model, ctx.split, shortcut)}
    return MethodMaps(maps=upsample(raw, ctx.image_hw), raw=raw, settings=settings)


@register("gradcam")
def gradcam(ctx: ExplainContext, max_batch: int = 256, shortcut: bool = True) -> MethodMaps:
    """Grad-CAM of every word: ReLU(sum_k mean_ij(d score_t / dA_kij) A_k), un-normalised."""
    return _explain_cams(ctx, "gradcam", max_batch, shortcut)


@register("gradcam++")
def gradcam_plus_plus(ctx: ExplainContext, max_batch: int = 256, shortcut: bool = True) -> MethodMaps:
    """Grad-CAM++ of every word (pytorch-grad-cam's closed form; see `cam_weights`), un-normalised."""
    return _explain_cams(ctx, "gradcam++", max_batch, shortcut)
