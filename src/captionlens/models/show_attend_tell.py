"""Show, Attend and Tell (Xu et al., 2015): soft additive attention over the spatial feature map."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from captionlens.models.base import CaptionModel, check_lengths
from captionlens.models.config import CaptionerConfig, register_architecture
from captionlens.models.encoders import SpatialEncoder
from captionlens.models.protocol import State
from captionlens.models.seed_api import SeedNotebookAPI

ATTENTION_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}
# An LSTM cell: (inputs (B, I), (h, c)) -> (h, c), as `nn.LSTMCell` is called.
LSTMCellFn = Callable[[torch.Tensor, tuple[torch.Tensor, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]


class StepTrace(NamedTuple):
    """What one step's attention computes (all batch-first), kept for callers that need more than alpha."""

    activated: torch.Tensor  # (B, N, A) f(W_e a_i + W_h h)
    alpha: torch.Tensor      # (B, N) attention weights
    context: torch.Tensor    # (B, C) sum_i alpha_i a_i, before the gate
    gate: torch.Tensor       # (B, C) sigmoid(f_beta(h))


@dataclass(frozen=True, kw_only=True)
class ShowAttendTellConfig(CaptionerConfig):
    """`grid_size`: the pooled grid (None keeps the trunk's map); `attention_activation`: the
    nonlinearity f of alpha = softmax(w^T f(W_e a_i + W_h h)): "tanh" (Xu et al.) or "relu" (sgrvinod's tutorial)."""

    architecture: ClassVar[str] = "show-attend-tell"
    attention_dim: int = 256
    grid_size: int | None = 7
    attention_activation: str = "tanh"

    MAX_GRID_SIZE: ClassVar[int] = 128  # a file's config asking for more would pool to a grid no memory holds

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.grid_size is not None and not (isinstance(self.grid_size, int)
                                               and 1 <= self.grid_size <= self.MAX_GRID_SIZE):
            raise ValueError(f"grid_size must be None or an integer in 1..{self.MAX_GRID_SIZE}, got {self.grid_size!r}")


class AdditiveAttention(nn.Module):
    """The weights of alpha = softmax(w^T f(W_e a_i + W_h h)) (`ShowAttendTellModel.attend` applies them)."""

    def __init__(self, encoder_dim: int, hidden_size: int, attention_dim: int) -> None:
        super().__init__()
        self.encoder_att = nn.Linear(encoder_dim, attention_dim)
        self.decoder_att = nn.Linear(hidden_size, attention_dim)
        self.full_att = nn.Linear(attention_dim, 1)


class AttentionDecoder(nn.Module):
    """LSTMCell decoder (no cuDNN, so it differentiates in eval mode on CUDA) with a gated context."""

    def __init__(self, encoder_dim: int, config: ShowAttendTellConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(config.vocab_size, config.embed_size)
        self.attention = AdditiveAttention(encoder_dim, config.hidden_size, config.attention_dim)
        self.init_h = nn.Linear(encoder_dim, config.hidden_size)
        self.init_c = nn.Linear(encoder_dim, config.hidden_size)
        self.f_beta = nn.Linear(config.hidden_size, encoder_dim)
        self.lstm = nn.LSTMCell(config.embed_size + encoder_dim, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(config.hidden_size, config.vocab_size)


@register_architecture
class ShowAttendTellModel(SeedNotebookAPI, CaptionModel):
    """Spatial encoder + attention LSTM decoder; every step returns its attention weights."""

    config_class = ShowAttendTellConfig
    config: ShowAttendTellConfig
    has_attention = True

    def __init__(self, config: ShowAttendTellConfig, *, pretrained: bool = False) -> None:
        super().__init__(config)
        if config.attention_activation not in ATTENTION_ACTIVATIONS:
            raise ValueError(f"unknown attention_activation {config.attention_activation!r}; "
                             f"choose one of {', '.join(ATTENTION_ACTIVATIONS)}")
        self.encoder = SpatialEncoder(config.backbone, config.grid_size, pretrained)
        self.decoder = AttentionDecoder(self.encoder.channels, config)
        self.activation = ATTENTION_ACTIVATIONS[config.attention_activation]

    def init_state(self, features: torch.Tensor) -> State:
        """(h, c, annotations, projected annotations): all batch-first so beams can reorder them."""
        mean = features.mean(dim=1)
        d = self.decoder
        return d.init_h(mean), d.init_c(mean), features, d.attention.encoder_att(features)

    def attend(self, h: torch.Tensor, features: torch.Tensor, projected: torch.Tensor) -> StepTrace:
        """Attention of one step: (f(W_e a_i + W_h h), alpha, context, gate)."""
        att = self.decoder.attention
        activated = self.activation(projected + att.decoder_att(h).unsqueeze(1))
        alpha = att.full_att(activated).squeeze(2).softmax(dim=1)
        context = torch.bmm(alpha.unsqueeze(1), features).squeeze(1)
        return StepTrace(activated, alpha, context, torch.sigmoid(self.decoder.f_beta(h)))

    def advance(self, tokens: torch.Tensor, state: State,
                cell: LSTMCellFn | None = None) -> tuple[State, StepTrace]:
        """One step up to the new hidden state: (state, the step's attention `StepTrace`).

        The one place Show-Attend-Tell's step is written: training, decoding and the written-out
        backward all take it. `cell` runs the LSTM cell on `decoder.lstm`'s weights, by default
        `decoder.lstm` itself (the fused kernel); the written-out backward passes one that records its gates.
        """
        h, c, features, projected = state
        trace = StepTrace._make(self.attend(h, features, projected))   # an override may return a plain tuple
        inputs = torch.cat([self.decoder.embed(tokens), trace.gate * trace.context], dim=1)
        h, c = (self.decoder.lstm if cell is None else cell)(inputs, (h, c))
        return (h, c, features, projected), trace

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State, torch.Tensor]:
        state, trace = self.advance(tokens, state)
        return self.output_logits(state[0]), state, trace.alpha

    def teacher_forced_hidden(self, features: torch.Tensor, captions: torch.Tensor,
                              lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """With `lengths`, each step runs only the rows still inside their caption (a prefix of the batch,
        as Xu et al.'s decreasing batch does), so padding costs nothing."""
        check_lengths(lengths, captions)
        state = self.init_state(features)
        hiddens, alphas = [], []
        steps, rows = captions.size(1) - 1, features.size(0)
        running = [rows] * steps if lengths is None else (lengths.cpu() > torch.arange(steps)[:, None]).sum(1).tolist()
        for t in range(steps):
            state = tuple(s[:running[t]] for s in state)
            state, trace = self.advance(captions[:running[t], t], state)
            hiddens.append(_pad_rows(state[0], rows))
            alphas.append(_pad_rows(trace.alpha, rows))
        return torch.stack(hiddens, 1), torch.stack(alphas, 1)


def _pad_rows(rows: torch.Tensor, count: int) -> torch.Tensor:
    """`rows` (n, ...) with zero rows appended up to `count`."""
    return rows if rows.size(0) == count else torch.cat([rows, rows.new_zeros(count - rows.size(0), *rows.shape[1:])])
