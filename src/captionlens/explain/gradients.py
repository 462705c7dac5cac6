"""Every word's gradient at the target layer, by one of three routes (`gradient_route`), none of
which goes below the target layer or computes a parameter gradient.

- "replicated" (any `Captioner`): the activations A are replicated as one leaf (R, C, h, w) with a row
  per (image, word). One pass of the upper trunk and the teacher-forced decoder over the R rows, then
  one `torch.autograd.grad` of the sum of row r's score of its own word t_r, gives in row r exactly
  d score_{t_r} / dA, because rows do not interact.
- "pooled" (any model whose target layer is followed by a global average pool only, Show-and-Tell):
  d score / dA_kij = d score / dp_k / (h w), so the replicated leaf is the pooled (R, C) feature.
- "bptt": a decoder whose backward is written out (`register_feature_gradients`, registered per model
  class and variant; the Show-Attend-Tell decoder's is in `attention_backward`): one forward per image
  and one reverse sweep carrying a cotangent row per word give d score_t / d features, and autograd
  carries them from the features back to A.

Replication, not `torch.autograd.grad(..., is_grads_batched=True)` (vmap over one forward): vmap
cannot go through cuDNN's RNN backward, and the replicated rows batch just as well on a GPU.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

from captionlens.explain.scoring import Score, scores_at
from captionlens.explain.target import TargetLayer
from captionlens.models.protocol import Captioner
from captionlens.registries import Registry, origin_of

GradientRoute = Literal["pooled", "bptt", "replicated"]
# feature_grads(model, features (B, ...), captions (B, >= T + 1), lengths, score, targets (B, >= T) or None)
#   -> (B, T, *features[1:])
FeatureGrads = Callable[[Captioner, torch.Tensor, torch.Tensor, Sequence[int], Score, torch.Tensor | None],
                        torch.Tensor]
# model class -> (covers, feature_grads); a second registration for a class is refused
_WRITTEN_OUT: Registry[type, tuple[Callable[[Captioner], bool], FeatureGrads]] = Registry("written-out backward")


def register_feature_gradients(model_class: type, covers: Callable[[Captioner], bool]
                               ) -> Callable[[FeatureGrads], FeatureGrads]:
    """Decorator: `feature_grads` is the written-out backward of exactly `model_class` (not its
    subclasses, which may change the forward) for the instances `covers(model)` accepts. One per class:
    registering a second for the same class raises a ValueError naming both."""
    def wrap(feature_grads: FeatureGrads) -> FeatureGrads:
        _WRITTEN_OUT.add(model_class, (covers, feature_grads), origin_of(feature_grads))
        return feature_grads
    return wrap


def written_out_backward(model: Captioner) -> FeatureGrads | None:
    entry = _WRITTEN_OUT.get(type(model))
    return entry[1] if entry is not None and entry[0](model) else None


def gradient_route(model: Captioner, target: TargetLayer, shortcut: bool = True) -> GradientRoute:
    """"pooled" when only a global pool follows the target layer, "bptt" when the model's decoder has a
    registered written-out backward, else (and with `shortcut=False`) "replicated"."""
    if shortcut and target.pools_globally:
        return "pooled"
    if shortcut and written_out_backward(model) is not None:
        return "bptt"
    return "replicated"


def word_gradients(model: Captioner, target: TargetLayer, activations: torch.Tensor, captions: torch.Tensor,
                   lengths: Sequence[int], score: Score = "log_prob", max_batch: int = 256,
                   shortcut: bool = True, targets: torch.Tensor | None = None
                   ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Chunks of (activations per row (R, C, h, w), d score / dA per row, broadcastable to it), one row
    per word of every image in order: image 0's T_0 words, then image 1's, ...

    `activations` (B, C, h, w) are the target-layer activations, `captions` (B, L) the padded
    `<START> words <END> <PAD>..` tensors and `lengths` the word counts T_i (padded positions are
    never scored). At most about `max_batch` (image, word) rows are differentiated at a time. `targets`
    (B, >= T) are the words scored at each position when they are not the caption's own, or (B, >= T, 2)
    (word, foil) pairs for a contrast (`scoring`).
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    activations = activations.detach()
    route = gradient_route(model, target, shortcut)
    if route == "bptt":
        feature_grads = written_out_backward(model)
        assert feature_grads is not None
        chunks = [_bptt_grads(model, feature_grads, target, activations[lo:hi], captions[lo:hi], lengths[lo:hi],
                              score, None if targets is None else targets[lo:hi])
                  for lo, hi in _image_chunks(lengths, max_batch)]
    else:
        rows = torch.tensor([(i, t) for i, n in enumerate(lengths) for t in range(n)], dtype=torch.long,
                            device=activations.device).view(-1, 2)
        chunks = [_replicated_grads(model, target, activations, captions, chunk, score, route == "pooled", targets)
                  for chunk in rows.split(max_batch)]
    return chunks


def _replicated_grads(model: Captioner, target: TargetLayer, activations: torch.Tensor, captions: torch.Tensor,
                      rows: torch.Tensor, score: Score, pooled: bool, targets: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of (image, word) `rows` from one autograd pass over a copy of the activations per row."""
    image_idx, word_idx = rows.unbind(1)
    acts = activations[image_idx]
    leaf = (acts.mean((2, 3)) if pooled else acts.detach()).requires_grad_()
    with torch.enable_grad():
        features = target.head(leaf[:, :, None, None]) if pooled else target.upper(leaf)
        words = None if targets is None else targets[image_idx, word_idx]
        total = scores_at(model, features, captions[image_idx], word_idx, score, words).sum()
        (grads,) = torch.autograd.grad(total, leaf)
    if pooled:
        grads = grads[:, :, None, None] / (acts.size(2) * acts.size(3))
    return acts, grads


def _bptt_grads(model: Captioner, feature_grads: FeatureGrads, target: TargetLayer, activations: torch.Tensor,
                captions: torch.Tensor, lengths: Sequence[int], score: Score, targets: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of every word of a few images: the decoder's written-out backward gives d score_t /
    d features from one forward per image; autograd carries it back through what lies between the
    target layer and the features (the grid pool and reshaping; more trunk stages for an earlier layer)."""
    with torch.no_grad():
        features = target.upper(activations)
    d_features = feature_grads(model, features, captions, lengths, score, targets)  # (B, T, ...)
    device = features.device
    image_idx = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(lengths)]).to(device)
    word_idx = torch.cat([torch.arange(n) for n in lengths]).to(device)
    acts = activations[image_idx]
    leaf = acts.detach().requires_grad_()
    with torch.enable_grad():
        (grads,) = torch.autograd.grad(target.upper(leaf), leaf, d_features[image_idx, word_idx])
    return acts, grads


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
