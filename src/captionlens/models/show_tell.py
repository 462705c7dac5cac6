"""Show and Tell (Vinyals et al., 2015): the image feature is the LSTM's first input."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from captionlens.models.base import CaptionModel, check_lengths
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

    MAX_LAYERS: ClassVar[int] = 64  # a file's config asking for more would build layers past any memory or time

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.num_layers, int) or not 1 <= self.num_layers <= self.MAX_LAYERS:
            raise ValueError(f"num_layers must be an integer in 1..{self.MAX_LAYERS}, got {self.num_layers!r}")


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

    def teacher_forced_hidden(self, features: torch.Tensor, captions: torch.Tensor,
                              lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        """LSTM outputs for inputs [feature, embed(captions[:, :-1])], less the feature's (which would
        predict <START>): position i predicts captions[:, i + 1]. With `lengths`, the padding is packed away."""
        check_lengths(lengths, captions)
        inputs = torch.cat([features.unsqueeze(1), self.decoder.embed(captions[:, :-1])], dim=1)
        if lengths is None:
            return self.decoder.lstm(inputs)[0][:, 1:], None
        packed = nn.utils.rnn.pack_padded_sequence(inputs, lengths.cpu() + 1, batch_first=True)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(self.decoder.lstm(packed)[0], batch_first=True,
                                                      total_length=inputs.size(1))
        return outputs[:, 1:], None
