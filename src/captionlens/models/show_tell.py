"""Show and Tell (Vinyals et al., 2015): the image feature is the LSTM's first input."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from captionlens.models.base import CaptionModel
from captionlens.models.config import CaptionerConfig, register_architecture
from captionlens.models.encoders import EncoderCNN
from captionlens.models.protocol import State
from captionlens.models.rnn import EvalGradLSTM
from captionlens.models.seed_api import SeedNotebookAPI


@dataclass(frozen=True, kw_only=True)
class ShowTellConfig(CaptionerConfig):
    """`head`: "linear" (ours) or "linear-batchnorm" (a BatchNorm1d after the projection, as yunjey's tutorial)."""

    architecture: ClassVar[str] = "show-tell"
    num_layers: int = 1
    head: str = "linear"


class DecoderRNN(nn.Module):
    """`embed`, `lstm`, `fc` — the names the seed notebook drives by hand."""

    def __init__(self, config: ShowTellConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(config.vocab_size, config.embed_size)
        self.lstm = EvalGradLSTM(config.embed_size, config.hidden_size, config.num_layers, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(config.hidden_size, config.vocab_size)


@register_architecture
class CNNLSTMModel(SeedNotebookAPI, CaptionModel):
    """ResNet (or tiny CNN) encoder + LSTM decoder, "Show and Tell"."""

    config_class = ShowTellConfig
    config: ShowTellConfig

    def __init__(self, config: ShowTellConfig, *, pretrained: bool = False) -> None:
        super().__init__(config)
        self.encoder = EncoderCNN(config.embed_size, config.backbone, pretrained, config.head)
        self.decoder = DecoderRNN(config)

    def init_state(self, features: torch.Tensor) -> State:
        """Feed the image feature; the state is (h, c) with the batch first."""
        _, (h, c) = self.decoder.lstm(features.unsqueeze(1))
        return h.transpose(0, 1), c.transpose(0, 1)

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State, None]:
        h, c = (s.transpose(0, 1).contiguous() for s in state)
        out, (h, c) = self.decoder.lstm(self.decoder.embed(tokens).unsqueeze(1), (h, c))
        return self.output_logits(out.squeeze(1)), (h.transpose(0, 1), c.transpose(0, 1)), None

    def teacher_forced_hidden(self, features: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, None]:
        """LSTM outputs for inputs [feature, embed(captions[:, :-1])], less the feature's (which would
        predict <START>): position i predicts captions[:, i + 1]."""
        inputs = torch.cat([features.unsqueeze(1), self.decoder.embed(captions[:, :-1])], dim=1)
        return self.decoder.lstm(inputs)[0][:, 1:], None
