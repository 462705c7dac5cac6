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

    def teacher_forced_hidden(self, features: torch.Tensor,
                              captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, captions: torch.Tensor,
                image_index: torch.Tensor | None = None) -> CaptionOutput:
        """Teacher-forced logits of `captions` (N, L), targets `captions[:, 1:]`. With `image_index` (N,),
        caption n describes image `image_index[n]`, so each image is encoded once for all its captions."""
        features = self.encode(images)
        if image_index is not None:
            features = features.index_select(0, image_index)
        hidden, alphas = self.teacher_forced_hidden(features, captions)
        return CaptionOutput(self.output_logits(hidden), alphas)
