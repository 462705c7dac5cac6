"""Show, Attend and Tell (Xu et al., 2015): soft additive attention over the spatial feature map."""
from __future__ import annotations

import torch
from torch import nn

from captionlens.models.base import CaptionModel, CaptionOutput
from captionlens.models.encoders import SpatialEncoder


class AdditiveAttention(nn.Module):
    """alpha = softmax(w^T tanh(W_e a_i + W_h h)); returns the weighted annotation and alpha."""

    def __init__(self, encoder_dim: int, hidden_size: int, attention_dim: int) -> None:
        super().__init__()
        self.encoder_att = nn.Linear(encoder_dim, attention_dim)
        self.decoder_att = nn.Linear(hidden_size, attention_dim)
        self.full_att = nn.Linear(attention_dim, 1)

    def forward(self, annotations: torch.Tensor, projected: torch.Tensor, hidden: torch.Tensor):
        scores = self.full_att(torch.tanh(projected + self.decoder_att(hidden).unsqueeze(1))).squeeze(2)
        alpha = scores.softmax(dim=1)
        return (annotations * alpha.unsqueeze(2)).sum(dim=1), alpha


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

    def _advance(self, tokens: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """One step up to the new hidden state: (state, alpha)."""
        h, c, features, projected = state
        d = self.decoder
        context, alpha = d.attention(features, projected, h)
        context = torch.sigmoid(d.f_beta(h)) * context
        h, c = d.lstm(torch.cat([d.embed(tokens), context], dim=1), (h, c))
        return (h, c, features, projected), alpha

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

    def forward(self, images: torch.Tensor, captions: torch.Tensor) -> CaptionOutput:
        logits, alphas = self.teacher_forced(self.encoder(images), captions)
        return CaptionOutput(logits, captions[:, 1:], alphas)
