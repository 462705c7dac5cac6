"""Show, Attend and Tell (Xu et al., 2015): soft additive attention over the spatial feature map."""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from captionlens.models.base import CaptionModel, CaptionOutput
from captionlens.models.encoders import SpatialEncoder


class StepParts(NamedTuple):
    """One attention-decoder step's inputs, intermediates and outputs (all batch-first)."""

    h_prev: torch.Tensor
    c_prev: torch.Tensor
    tanh_att: torch.Tensor   # (B, N, A) tanh(W_e a_i + W_h h)
    alpha: torch.Tensor      # (B, N)
    context: torch.Tensor    # (B, C) sum_i alpha_i a_i, before the gate
    gate: torch.Tensor       # (B, C) sigmoid(f_beta(h))
    i: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    o: torch.Tensor
    tanh_c: torch.Tensor
    h: torch.Tensor
    c: torch.Tensor


class AdditiveAttention(nn.Module):
    """The weights of alpha = softmax(w^T tanh(W_e a_i + W_h h)) (`ShowAttendTellModel._attend` applies them)."""

    def __init__(self, encoder_dim: int, hidden_size: int, attention_dim: int) -> None:
        super().__init__()
        self.encoder_att = nn.Linear(encoder_dim, attention_dim)
        self.decoder_att = nn.Linear(hidden_size, attention_dim)
        self.full_att = nn.Linear(attention_dim, 1)


class AttentionDecoder(nn.Module):
    """LSTMCell decoder (no cuDNN, so it differentiates in eval mode on CUDA) with a gated context."""

    def __init__(self, encoder_dim: int, embed_size: int, hidden_size: int, vocab_size: int,
                 attention_dim: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.attention = AdditiveAttention(encoder_dim, hidden_size, attention_dim)
        self.init_h = nn.Linear(encoder_dim, hidden_size)
        self.init_c = nn.Linear(encoder_dim, hidden_size)
        self.f_beta = nn.Linear(hidden_size, encoder_dim)
        self.lstm = nn.LSTMCell(embed_size + encoder_dim, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size, vocab_size)


class ShowAttendTellModel(CaptionModel):
    """Spatial encoder + attention LSTM decoder; every step returns its attention weights."""

    has_attention = True

    def __init__(self, vocab_size: int, embed_size: int = 256, hidden_size: int = 512, attention_dim: int = 256,
                 backbone: str = "resnet50", grid_size: int | None = 7, pretrained: bool = False,
                 dropout: float = 0.3, image_size: int = 224) -> None:
        super().__init__()
        self.config = {"architecture": "show-attend-tell", "vocab_size": vocab_size, "embed_size": embed_size,
                       "hidden_size": hidden_size, "attention_dim": attention_dim, "backbone": backbone,
                       "grid_size": grid_size, "dropout": dropout, "image_size": image_size}
        self.encoder = SpatialEncoder(backbone, grid_size, pretrained)
        self.decoder = AttentionDecoder(self.encoder.channels, embed_size, hidden_size, vocab_size,
                                        attention_dim, dropout)

    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(h, c, annotations, projected annotations): all batch-first so beams can reorder them."""
        mean = features.mean(dim=1)
        d = self.decoder
        return d.init_h(mean), d.init_c(mean), features, d.attention.encoder_att(features)

    def _attend(self, h: torch.Tensor, features: torch.Tensor,
                projected: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Attention of one step: (tanh(W_e a_i + W_h h), alpha, context, gate)."""
        d = self.decoder
        att = d.attention
        tanh_att = torch.tanh(projected + att.decoder_att(h).unsqueeze(1))
        alpha = att.full_att(tanh_att).squeeze(2).softmax(dim=1)
        context = torch.bmm(alpha.unsqueeze(1), features).squeeze(1)
        return tanh_att, alpha, context, torch.sigmoid(d.f_beta(h))

    def _advance(self, tokens: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """One step up to the new hidden state: (state, alpha)."""
        h, c, features, projected = state
        _, alpha, context, gate = self._attend(h, features, projected)
        h, c = self.decoder.lstm(torch.cat([self.decoder.embed(tokens), gate * context], dim=1), (h, c))
        return (h, c, features, projected), alpha

    def _step_parts(self, tokens: torch.Tensor, state: tuple[torch.Tensor, ...]) -> StepParts:
        """`_advance` with every intermediate kept, for `word_feature_grads`: the same attention, and
        the LSTM cell's gates written out on `decoder.lstm`'s weights (PyTorch's i, f, g, o order;
        tested equal to the `nn.LSTMCell` call `_advance` makes, which training and decoding use)."""
        h, c, features, projected = state
        tanh_att, alpha, context, gate = self._attend(h, features, projected)
        lstm = self.decoder.lstm
        inputs = torch.cat([self.decoder.embed(tokens), gate * context], dim=1)
        gates = F.linear(inputs, lstm.weight_ih, lstm.bias_ih) + F.linear(h, lstm.weight_hh, lstm.bias_hh)
        i, f, g, o = gates.chunk(4, dim=1)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c_new = f * c + i * g
        tanh_c = c_new.tanh()
        return StepParts(h, c, tanh_att, alpha, context, gate, i, f, g, o, tanh_c, o * tanh_c, c_new)

    def step(self, tokens: torch.Tensor, state: tuple[torch.Tensor, ...]):
        state, alpha = self._advance(tokens, state)
        return self.output_logits(state[0]), state, alpha

    def teacher_forced_hidden(self, features: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.init_state(features)
        hiddens, alphas = [], []
        for t in range(captions.size(1) - 1):
            state, alpha = self._advance(captions[:, t], state)
            hiddens.append(state[0])
            alphas.append(alpha)
        return torch.stack(hiddens, 1), torch.stack(alphas, 1)

    @torch.no_grad()
    def word_feature_grads(self, features: torch.Tensor, captions: torch.Tensor, lengths: Sequence[int],
                           score: str = "log_prob") -> torch.Tensor:
        """(B, T, N, C): d score_t / d features of every word t < lengths[b] of every image b (0 past it).

        Backpropagation through time written out for this decoder, in eval mode (no dropout): the
        teacher-forced forward runs once per image, not once per word, then one reverse sweep carries a
        cotangent row per word, row t joining at step t, where word t is scored (log-probability or
        raw logit). The annotations' gradient through the contexts, sum_s alpha_s (x) dcontext_s, is
        formed once at the end instead of as a (B, T, N, C) term per step. `features` (B, N, C) are
        the annotations, `captions` (B, >= T + 1) `<START> words ..` rows.
        """
        if score not in ("log_prob", "logit"):
            raise ValueError(f"score must be 'log_prob' or 'logit', got {score!r}")
        if self.training:
            raise RuntimeError("word_feature_grads needs the model in eval mode (it assumes no dropout): "
                               "call model.eval() first")
        d = self.decoder
        batch, regions, _ = features.shape
        steps = max(lengths, default=0)
        state = self.init_state(features)
        parts = []
        for s in range(steps):
            parts.append(self._step_parts(captions[:, s], state))
            state = (parts[-1].h, parts[-1].c, state[2], state[3])
        if not parts:
            return features.new_zeros(batch, 0, *features.shape[1:])
        targets = captions[:, 1:steps + 1]
        if score == "logit":
            d_out = d.fc.weight[targets]                                              # (B, T, H)
        else:
            probs = self.output_logits(torch.stack([p.h for p in parts], 1)).softmax(-1)
            d_out = (F.one_hot(targets, probs.size(-1)).to(probs) - probs) @ d.fc.weight
        lengths_t = torch.as_tensor(lengths, device=features.device)
        d_out = d_out * (torch.arange(steps, device=features.device) < lengths_t[:, None]).unsqueeze(2)

        def row(x: torch.Tensor) -> torch.Tensor:
            """(B, ...) -> (B, 1, ...): one image's value, broadcast over its word rows."""
            return x.unsqueeze(1)

        embed_size = d.embed.embedding_dim
        full_att = d.attention.full_att.weight[0]
        dh = dc = d_out.new_zeros(batch, 0, d_out.size(2))
        d_projected = features.new_zeros(batch, steps, regions, full_att.numel())
        d_contexts = features.new_zeros(batch, steps, steps, features.size(2))      # [b, word t, step s]
        for s in reversed(range(steps)):
            p = parts[s]
            dh = torch.cat([d_out[:, s:s + 1], dh], 1)                                  # word s joins
            dc = torch.cat([dc.new_zeros(batch, 1, dc.size(2)), dc], 1)
            dc = dc + dh * row(p.o * (1 - p.tanh_c ** 2))
            d_gates = torch.cat([dc * row(p.g * p.i * (1 - p.i)), dc * row(p.c_prev * p.f * (1 - p.f)),
                                 dc * row(p.i * (1 - p.g ** 2)), dh * row(p.tanh_c * p.o * (1 - p.o))], 2)
            d_gated = d_gates @ d.lstm.weight_ih[:, embed_size:]                      # d (gate * context)
            d_context = d_gated * row(p.gate)
            d_contexts[:, s:, s] = d_context
            d_alpha = torch.bmm(d_context, features.transpose(1, 2))                    # (B, n, N)
            d_scores = row(p.alpha) * (d_alpha - (d_alpha * row(p.alpha)).sum(2, keepdim=True))
            d_pre = d_scores.unsqueeze(3) * full_att * row(1 - p.tanh_att ** 2)          # (B, n, N, A)
            d_projected[:, s:] += d_pre
            d_gate_in = d_gated * row(p.context * p.gate * (1 - p.gate))                # before the sigmoid
            dh = (d_gates @ d.lstm.weight_hh + d_gate_in @ d.f_beta.weight
                  + d_pre.sum(2) @ d.attention.decoder_att.weight)
            dc = dc * row(p.f)
        alphas = torch.stack([p.alpha for p in parts], 1)                                # (B, S, N)
        d_mean = dh @ d.init_h.weight + dc @ d.init_c.weight                             # (B, T, C)
        return (torch.einsum("bsn,btsc->btnc", alphas, d_contexts)
                + d_projected @ d.attention.encoder_att.weight + d_mean.unsqueeze(2) / regions)

    def forward(self, images: torch.Tensor, captions: torch.Tensor) -> CaptionOutput:
        logits, alphas = self.teacher_forced(self.encoder(images), captions)
        return CaptionOutput(logits, captions[:, 1:], alphas)
