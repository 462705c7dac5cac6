"""Faithfulness of per-word maps: does hiding what a word's map points at change the model's word?

- Deletion and insertion curves (Petsiuk et al., 2018): the word's log-probability as the pixels of
  the model input are replaced, most salient first by the word's own map, with the image's mean colour
  (deletion), or put back into an all-mean image (insertion), in `steps` equal steps; the same for a
  random pixel order is the baseline. AUC is the mean of the curve over the fraction of pixels
  (trapezoid rule), in log-prob units: a faithful map's deletion AUC lies below the random order's,
  its insertion AUC above.
- Word disappearance (the image ablation of Sun et al., 2022): the `cells` highest cells of a
  `grid` x `grid` partition of the model input (ranked by the map's mean over each cell) are filled
  with the mean colour and the image is captioned again (greedy): has the word vanished, i.e. does the
  new caption hold it fewer times than the old one? The baseline hides as many random cells.
- Word selectivity: both ablations also record every other word of the caption, so that hiding what a
  word's map points at can be compared with what the same hiding does to the caption's other words
  (`deletion_selectivity`): damaging the scene lowers every word, a word-specific map lowers its own more.
Every perturbed image of every word of an image is scored in batches of forward passes.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from captionlens.explain.scoring import auto_batch_size, batched_word_scores, caption_tensor
from captionlens.models.decoding import decode
from captionlens.models.protocol import Captioner, eval_mode, require_vocab


@dataclass
class PerturbationCurves:
    """Deletion and insertion curves (K orders, T words, steps + 1 points) and their areas (K, T), and
    `deletion_all` (K, T, T, steps + 1): the score of word s (third axis) as the pixels of word t's order
    (second axis; an order shared by every word repeats) are deleted."""

    deletion: np.ndarray
    insertion: np.ndarray
    deletion_all: np.ndarray

    @property
    def deletion_auc(self) -> np.ndarray:
        return curve_area(self.deletion)

    @property
    def insertion_auc(self) -> np.ndarray:
        return curve_area(self.insertion)


def curve_area(curves: np.ndarray) -> np.ndarray:
    """Area under curves sampled at equal steps of a [0, 1] axis (last dimension), trapezoid rule."""
    steps = curves.shape[-1] - 1
    return (curves[..., 1:] + curves[..., :-1]).sum(-1) / (2 * steps)


def maps_at_input(maps: np.ndarray, size: int) -> torch.Tensor:
    """(K, T, H, W) maps at the image's resolution -> (K, T, size, size) at the model input's."""
    tensor = torch.as_tensor(np.asarray(maps, np.float32))
    k, t = tensor.shape[:2]
    resized = F.interpolate(tensor.reshape(k * t, 1, *tensor.shape[2:]), size=(size, size), mode="bilinear",
                            align_corners=False, antialias=True)
    return resized.reshape(k, t, size, size)


def salience_ranks(maps: torch.Tensor) -> torch.Tensor:
    """(K, T, S, S) maps -> (K, T, S*S) rank of each pixel, 0 the most salient (ties by position)."""
    flat = maps.flatten(2)
    order = torch.sort(-flat, dim=2, stable=True).indices
    return torch.argsort(order, dim=2)


def random_ranks(orders: int, items: int, generator: torch.Generator) -> torch.Tensor:
    """(orders, items) ranks of random orders."""
    return torch.stack([torch.randperm(items, generator=generator) for _ in range(orders)])


def background(image_tensor: torch.Tensor) -> torch.Tensor:
    """The mean colour of the model input, (1, 3, 1, 1): what hidden pixels become."""
    return image_tensor.mean((2, 3), keepdim=True)


@torch.no_grad()
def perturbation_curves(model: Captioner, image_tensor: torch.Tensor, token_ids: Sequence[int],
                        word_ranks: torch.Tensor, shared_ranks: torch.Tensor | None = None, steps: int = 10,
                        batch_size: int | None = None) -> PerturbationCurves:
    """Deletion and insertion curves of each word t under K + J pixel orders: `word_ranks` (K, T, P),
    one order per word (from its own map, `salience_ranks`), and `shared_ranks` (J, P), one order for
    every word (a random order: its images are scored once, on all words). Point s hides (deletion) or
    shows (insertion) the pixels of rank below round(s / steps * P). `image_tensor` is (1, 3, S, S)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    vocab = require_vocab(model)
    k, t, pixels = word_ranks.shape
    shared = torch.empty(0, pixels, dtype=torch.long) if shared_ranks is None else shared_ranks
    device = image_tensor.device
    captions = caption_tensor(token_ids, vocab, device)
    counts = torch.linspace(0, pixels, steps + 1).round().long()
    # rows: (rank vector, step, mode); a word's own order needs only its own word's score
    ranks = torch.cat([word_ranks.reshape(k * t, pixels), shared]).to(device)
    index = torch.cartesian_prod(torch.arange(len(ranks)), torch.arange(steps + 1), torch.arange(2))
    scores = _masked_scores(model, image_tensor, captions, ranks, counts.to(device), index,
                            batch_size or auto_batch_size(image_tensor))          # (rows, T)
    scores = scores.view(len(ranks), steps + 1, 2, t)
    every = scores[:k * t].view(k, t, steps + 1, 2, t)                            # (K, t hid, steps+1, 2, s)
    own = every.diagonal(dim1=1, dim2=4)                                          # (K, steps+1, 2, T)
    everyone = scores[k * t:]                                                     # (J, steps+1, 2, T)
    both = torch.cat([own, everyone]).permute(0, 3, 1, 2).cpu().numpy()           # (K+J, T, steps+1, 2)
    shared_all = everyone[:, None, :, 0].expand(-1, t, -1, -1)                    # (J, t, steps+1, s)
    deletion_all = torch.cat([every[:, :, :, 0], shared_all]).permute(0, 1, 3, 2)  # (K+J, t, s, steps+1)
    return PerturbationCurves(deletion=both[..., 0], insertion=both[..., 1],
                              deletion_all=deletion_all.cpu().numpy())


def deletion_selectivity(deletion_all: np.ndarray) -> np.ndarray:
    """(K, T, T, points) -> (K, T): how much more word t's score falls than the caption's other words'
    (mean over them) as word t's order deletes pixels, as an area over the curve like `curve_area`;
    nan for a one-word caption. 0: the deletion hurts every word alike."""
    drop = deletion_all[..., :1] - deletion_all                                  # fall from nothing deleted
    t = drop.shape[1]
    if t < 2:
        return np.full(drop.shape[:2], np.nan)
    own = np.einsum("kttp->ktp", drop)
    others = (drop.sum(2) - own) / (t - 1)
    return curve_area(own - others)


def _masked_scores(model: Captioner, image: torch.Tensor, captions: torch.Tensor, ranks: torch.Tensor,
                   counts: torch.Tensor, index: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(len(index), T) word scores of the images `index` rows describe: (rank vector, step, mode 0 =
    deletion (hide rank < count) or 1 = insertion (show only those)), composed in batches."""
    size = image.shape[-1]
    fill = background(image)
    out = []
    with eval_mode(model):
        for start in range(0, len(index), batch_size):
            rows = index[start:start + batch_size].to(image.device)
            hidden = ranks[rows[:, 0]] < counts[rows[:, 1], None]
            keep = torch.where(rows[:, 2:3] == 0, ~hidden, hidden).view(-1, 1, size, size)
            out.append(batched_word_scores(model, torch.where(keep, image, fill), captions, batch_size=len(rows)))
    return torch.cat(out)


def cell_ranks(maps: torch.Tensor, grid: int) -> torch.Tensor:
    """(K, T, S, S) maps -> (K, T, grid*grid) rank of each cell by the map's mean over it, 0 the highest."""
    k, t = maps.shape[:2]
    means = F.adaptive_avg_pool2d(maps.reshape(k * t, 1, *maps.shape[2:]), grid).reshape(k, t, grid * grid)
    return torch.argsort(torch.sort(-means, dim=2, stable=True).indices, dim=2)


@torch.no_grad()
def word_disappearance(model: Captioner, image_tensor: torch.Tensor, token_ids: Sequence[int],
                       word_ranks: torch.Tensor, shared_ranks: torch.Tensor | None = None, grid: int = 8,
                       cells: int = 6, max_length: int = 20, batch_size: int | None = None) -> np.ndarray:
    """(K + J, T, T) bool: whether word s's count (third axis) in the greedy caption falls once the cells
    of rank below `cells` of word t's order (second axis) are hidden, under `word_ranks` (K, T, grid*grid:
    one order per word, `cell_ranks`) and `shared_ranks` (J, grid*grid: one order for all words, captioned
    once, repeated along the second axis). The diagonal is each word's own disappearance."""
    if not 1 <= cells <= grid * grid:
        raise ValueError(f"cells must be in 1..{grid * grid} for a {grid}x{grid} grid, got {cells}")
    vocab = require_vocab(model)
    k, t, _ = word_ranks.shape
    shared = torch.empty(0, grid * grid, dtype=torch.long) if shared_ranks is None else shared_ranks
    ranks = torch.cat([word_ranks.reshape(k * t, -1), shared]).to(image_tensor.device)
    size = image_tensor.shape[-1]
    hidden = F.interpolate((ranks < cells).float().view(-1, 1, grid, grid), size=(size, size), mode="nearest")
    images = torch.where(hidden.bool(), background(image_tensor), image_tensor)
    batch_size = batch_size or auto_batch_size(image_tensor)
    before = list(token_ids)
    counts = []
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            counts += [[d.token_ids.count(w) for w in before]
                       for d in decode(model, images[start:start + batch_size], vocab, max_length=max_length)]
    fewer = np.asarray(counts, dtype=np.int64).reshape(-1, t) < np.asarray([before.count(w) for w in before])
    own = fewer[:k * t].reshape(k, t, t)
    return np.concatenate([own, np.repeat(fewer[k * t:, None, :], t, axis=1)])
