"""Show and Tell (Vinyals et al., 2015): the image feature is the LSTM's first input."""
from __future__ import annotations

import torch
from torch import nn

from captionlens.models.base import CaptionModel, CaptionOutput
from captionlens.models.encoders import EncoderCNN
from captionlens.models.rnn import EvalGradLSTM


class DecoderRNN(nn.Module):
    """`embed`, `lstm`, `fc` — the names the seed notebook drives by hand."""

    def __init__(self, embed_size: int, hidden_size: int, vocab_size: int, num_layers: int = 1,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.lstm = EvalGradLSTM(embed_size, hidden_size, num_layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size, vocab_size)

    def hiddens(self, features: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """LSTM outputs (B, L, H) for inputs [feature, embed(captions[:, :-1])]: position 0 predicts <START>."""
        inputs = torch.cat([features.unsqueeze(1), self.embed(captions[:, :-1])], dim=1)
        return self.lstm(inputs)[0]

    def forward(self, features: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, V), position 0 predicting <START>."""
        return self.fc(self.dropout(self.hiddens(features, captions)))


class CNNLSTMModel(CaptionModel):
    """ResNet (or tiny CNN) encoder + LSTM decoder, "Show and Tell"."""

    def __init__(self, vocab_size: int, embed_size: int = 256, hidden_size: int = 512, num_layers: int = 1,
                 backbone: str = "resnet50", pretrained: bool = False, dropout: float = 0.3,
                 image_size: int = 224) -> None:
        super().__init__()
        self.config = {"architecture": "show-tell", "vocab_size": vocab_size, "embed_size": embed_size,
                       "hidden_size": hidden_size, "num_layers": num_layers, "backbone": backbone,
                       "dropout": dropout, "image_size": image_size}
        self.encoder = EncoderCNN(embed_size, backbone, pretrained)
        self.decoder = DecoderRNN(embed_size, hidden_size, vocab_size, num_layers, dropout)

    def forward(self, images: torch.Tensor, captions: torch.Tensor) -> CaptionOutput:
        logits = self.decoder(self.encoder(images), captions)
        return CaptionOutput(logits, captions, None)

    def teacher_forced_hidden(self, features: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.decoder.hiddens(features, captions)[:, 1:], None

    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Feed the image feature; the state is (h, c) with the batch first."""
        _, (h, c) = self.decoder.lstm(features.unsqueeze(1))
        return h.transpose(0, 1), c.transpose(0, 1)

    def step(self, tokens: torch.Tensor, state: tuple[torch.Tensor, ...]):
        h, c = (s.transpose(0, 1).contiguous() for s in state)
        out, (h, c) = self.decoder.lstm(self.decoder.embed(tokens).unsqueeze(1), (h, c))
        return self.output_logits(out.squeeze(1)), (h.transpose(0, 1), c.transpose(0, 1)), None
