"""How much of each word's score comes from the image, against the caption written so far.

For word t, gradient x input of its score (log p(word_t | image, words_<t)) on the decoder's image
features and on the embeddings of the tokens it read before it (`<START>` and words 0..t-1): the image
share is sum |features * d score / d features| / (that + sum |embeddings * d score / d embeddings|). A
word the language prior wrote leans on its prefix and gets a low share; a word the image supports, a
high one. One teacher-forced pass over a row per word and one backward give every word's share.
Needs the decoder's token embedding as `decoder.embed` (captionlens' models and the tutorials' have it);
its outputs are made leaves by a forward hook, each embedded token taking its caption position in the
order the decoder reads them (all at once as a (rows, positions) tensor, or one position per call).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from captionlens.explain.scoring import scores_at
from captionlens.models.protocol import Captioner


def image_shares(model: Captioner, features: torch.Tensor, captions: torch.Tensor,
                 lengths: Sequence[int]) -> list[np.ndarray]:
    """Per image, (T_i,): each word's image share (module doc). `features` (B, ...) are the decoder's
    features, `captions` (B, L) padded `<START> words <END>` rows, `lengths` the word counts."""
    embed = getattr(getattr(model, "decoder", None), "embed", None)
    if not isinstance(embed, nn.Module):
        raise ValueError(f"{type(model).__name__} has no decoder.embed: the image share needs the token embedding")
    rows = [(i, t) for i, n in enumerate(lengths) for t in range(n)]
    if not rows:
        return [np.zeros(0) for _ in lengths]
    image_idx = torch.tensor([i for i, _ in rows], device=features.device)
    word_idx = torch.tensor([t for _, t in rows], device=features.device)
    read: list[torch.Tensor] = []

    def leaf(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        output = output.detach().requires_grad_()
        read.append(output)
        return output

    feature_leaf = features.detach()[image_idx].requires_grad_()
    handle = embed.register_forward_hook(leaf)
    try:
        with torch.enable_grad():
            total = scores_at(model, feature_leaf, captions[image_idx], word_idx).sum()
            grads = torch.autograd.grad(total, [feature_leaf, *read], allow_unused=True)
    finally:
        handle.remove()
    on_image = (feature_leaf * grads[0]).abs().flatten(1).sum(1)
    per_position = _per_position(read, grads[1:], len(rows))                       # (R, positions)
    positions = torch.arange(per_position.size(1), device=per_position.device)
    on_prefix = (per_position * (positions[None] <= word_idx[:, None])).sum(1)     # <START> and words before t
    share = (on_image / (on_image + on_prefix).clamp(min=1e-30)).detach().double().cpu().numpy()
    return list(np.split(share, np.cumsum(lengths)[:-1]))


def _per_position(embedded: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None], rows: int) -> torch.Tensor:
    """(rows, positions) |embedding * gradient| summed over each embedding, in the order the tokens were read."""
    columns = []
    for value, grad in zip(embedded, grads):
        attribution = (value * grad).abs() if grad is not None else value.new_zeros(value.shape)
        columns.append(attribution.sum(-1).reshape(rows, -1))                        # (rows,) or (rows, L)
    return torch.cat(columns, 1)
