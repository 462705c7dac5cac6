"""What captionlens' two architectures share: the config, the trunk as explanations see it, the output
layer and the training forward. Nothing here knows about decoding, checkpoints or explanations."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from captionlens.data.images import Preprocessing
from captionlens.data.vocabulary import Vocabulary
from captionlens.models.config import CaptionerConfig
from captionlens.models.protocol import CaptionOutput, State, Trunk


class CaptionModel(nn.Module):
    """An encoder (`encoder.resnet` + `encoder.head`) and a decoder (`decoder.embed`, `decoder.fc`, ...).

    Subclasses build both from their config and implement `init_state`, `step` and
    `teacher_forced_hidden` (the `Captioner` protocol's decoder half).
    """

    has_attention: ClassVar[bool] = False
    config_class: ClassVar[type[CaptionerConfig]]
    encoder: Any
    decoder: Any

    def __init__(self, config: Any, *, pretrained: bool = False) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        self.config = config
        self.vocab: Vocabulary | None = None  # set by checkpoint loading, so callers need not pass it again

    @property
    def preprocessing(self) -> Preprocessing:
        return self.config.preprocessing

    def trunk(self) -> Trunk:
        resnet = self.encoder.resnet
        return Trunk(resnet[:-1], resnet[-1], self.encoder.head)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder.fc(self.decoder.dropout(hidden))

    def init_state(self, features: torch.Tensor) -> State:
        raise NotImplementedError

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        raise NotImplementedError

    def teacher_forced_hidden(self, features: torch.Tensor, captions: torch.Tensor,
                              lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, captions: torch.Tensor, image_index: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> CaptionOutput:
        """Teacher-forced logits of `captions` (N, L), targets `captions[:, 1:]`. With `image_index` (N,),
        caption n describes image `image_index[n]`, so each image is encoded once for all its captions.
        With `lengths` (N,), non-increasing, row n's positions from `lengths[n]` on are padding: they are
        not computed and come out zero (`check_lengths`)."""
        features = self.encode(images)
        if image_index is not None:
            features = features.index_select(0, image_index)
        hidden, alphas = self.teacher_forced_hidden(features, captions, lengths)
        return CaptionOutput(self.output_logits(hidden), alphas)


def check_lengths(lengths: torch.Tensor | None, captions: torch.Tensor) -> None:
    """`lengths` (N,) of positions to compute per row of `captions` (N, L): at most L - 1 and non-increasing
    (rows sorted longest first, so the rows still running at a step are a prefix of the batch)."""
    if lengths is None:
        return
    if lengths.shape != captions.shape[:1] or (lengths < 0).any() or (lengths > captions.size(1) - 1).any():
        raise ValueError(f"lengths must be (N,) in 0..{captions.size(1) - 1} for captions of shape "
                         f"{tuple(captions.shape)}, got {lengths.tolist()}")
    if (lengths[1:] > lengths[:-1]).any():
        raise ValueError("lengths must be non-increasing (rows sorted longest first)")
