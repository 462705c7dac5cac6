"""`ExplainContext`: everything a method needs for one image and one caption."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from captionlens.data.vocabulary import Vocabulary
from captionlens.explain.scoring import NO_FOIL, Score
from captionlens.explain.target import TargetLayer
from captionlens.models.protocol import Captioner

Progress = Callable[[int, int], None]   # (done, total) forward passes of a long method


@dataclass
class ExplainContext:
    model: Captioner
    vocab: Vocabulary
    image: np.ndarray             # (H, W, 3) uint8 original
    image_tensor: torch.Tensor    # (1, 3, S, S) model input (the model's preprocessing), on its device
    captions: torch.Tensor        # (1, T + 2) <START> words <END>
    token_ids: list[int]
    target: TargetLayer           # the trunk cut at the target layer
    activations: torch.Tensor     # (1, C, h, w) target-layer activations of image_tensor, no grad
    score: Score = "log_prob"
    targets: list[int] | None = None   # the word scored at each position, when not the caption's own
    foils: list[int] | None = None     # per position, the foil its word is scored against (`scoring.NO_FOIL`: none)
    progress: Progress | None = None   # a long method reports (done, total) forward passes here; may raise to stop

    @property
    def num_words(self) -> int:
        return len(self.token_ids)

    @property
    def scored_ids(self) -> torch.Tensor | None:
        """(1, T) the words scored instead of the caption's own, (1, T, 2) (word, foil) pairs under a
        contrast, or None (the caption's own words)."""
        if self.targets is None and self.foils is None:
            return None
        return torch.tensor([self._scored_row()], dtype=torch.long, device=self.captions.device)

    def _scored_row(self) -> list[int] | list[list[int]]:
        words = self.targets if self.targets is not None else self.token_ids
        return list(words) if self.foils is None else [[w, f] for w, f in zip(words, self.foils)]

    def report(self, done: int, total: int) -> None:
        """A long method's progress: `done` of `total` forward passes (see `progress`)."""
        if self.progress is not None:
            self.progress(done, total)

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]


def padded_targets(contexts: Sequence[ExplainContext]) -> torch.Tensor | None:
    """(B, max T) the words scored at each position of each context's caption (the caption's own where a
    context names none), right-padded with <PAD>, or (B, max T, 2) (word, foil) pairs when a context has a
    contrast (foil `NO_FOIL` where none); None when every context scores its own words."""
    if all(c.targets is None and c.foils is None for c in contexts):
        return None
    first = contexts[0]
    pad: int | list[int] = first.vocab.pad_idx
    if any(c.foils is not None for c in contexts):
        contexts = [replace(c, foils=c.foils if c.foils is not None else [NO_FOIL] * c.num_words) for c in contexts]
        pad = [first.vocab.pad_idx, NO_FOIL]
    rows = [c._scored_row() for c in contexts]
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [pad] * (width - len(r)) for r in rows], dtype=torch.long,
                        device=first.captions.device)
