"""The contract between a captioning model and everything that uses it (decoding, scoring, explanations).

A model is anything with these attributes and methods; captionlens' own models are two of them, and
`examples/custom_captioner.py` is a third, written from scratch. Explanations reach the image encoder
only through `trunk()`; they never look at attributes the protocol does not name.

Shapes (batch first everywhere):
  images      (B, 3, S, S), made from photos by `preprocessing`
  features    what `encode` returns and `init_state` takes (e.g. (B, E) or (B, N, C) annotations)
  captions    (B, L) token ids `<START> w1 .. wn <END> <PAD>..`
  hidden      (B, L - 1, H) from `teacher_forced_hidden`: position i predicts captions[:, i + 1]
  alphas      (B, L - 1, N) attention weights over the N cells of the pooled map, row-major, or None
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

from captionlens.data.images import Preprocessing
from captionlens.data.vocabulary import Vocabulary

State = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Trunk:
    """The image encoder as explanations see it: `head(pool(stages(images))) == encode(images)`.

    `stages` are the named conv stages, image first (a Grad-CAM target layer is one of them, by
    default the last); `pool` turns the last stage's map into the pooled map (global average for
    Show-and-Tell, a grid for Show-Attend-Tell); `head` turns the pooled map into the decoder's features.
    """

    stages: nn.Sequential
    pool: nn.Module
    head: Callable[[torch.Tensor], torch.Tensor]


class CaptionOutput(NamedTuple):
    """A model's training forward: `logits` (B, L - 1, V) where position i predicts captions[:, i + 1]
    (so the targets are `captions[:, 1:]`), and the attention weights (B, L - 1, N) or None."""

    logits: torch.Tensor
    alphas: torch.Tensor | None


@runtime_checkable
class Captioner(Protocol):
    """What decoding and every explanation method use of a captioning model (an `nn.Module`)."""

    vocab: Vocabulary | None          # index <-> word; special tokens at 0..3
    training: bool

    @property
    def preprocessing(self) -> Preprocessing:
        """How photos become `images` for this model."""

    @property
    def has_attention(self) -> bool:
        """Whether `step` and `teacher_forced_hidden` return attention weights."""

    def trunk(self) -> Trunk:
        """The encoder cut into stages, pooling and head (see `Trunk`)."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Features of a batch of images."""

    def init_state(self, features: torch.Tensor) -> State:
        """The decoder state before `<START>` is read: a tuple of batch-first tensors (beams reorder rows)."""

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        """Read one token per row: (next-word logits (B, V), new state, attention (B, N) or None)."""

    def teacher_forced_hidden(self, features: torch.Tensor,
                              captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states (B, L - 1, H) for every position of `captions`, and alphas (B, L - 1, N) or None."""

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits from hidden states of any leading shape (..., H) -> (..., V)."""

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def train(self, mode: bool = True) -> nn.Module: ...

    def eval(self) -> nn.Module: ...


def model_device(model: Captioner) -> torch.device:
    """The device of the model's (first) parameter."""
    return next(model.parameters()).device


def require_vocab(model: Captioner, vocab: Vocabulary | None = None) -> Vocabulary:
    """`vocab`, else the model's own; one clear error when neither is there."""
    vocab = vocab if vocab is not None else model.vocab
    if vocab is None:
        raise ValueError("no vocabulary: pass vocab=..., or load the model with captionlens.load() "
                         "(or set model.vocab)")
    return vocab


@contextmanager
def eval_mode(model: Captioner) -> Iterator[Captioner]:
    """The model in eval mode inside the block (no dropout, batch-norm running statistics), its own mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
