"""What both captioning models share: decoding entry points and checkpoint loading."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from captionlens.data.vocabulary import Vocabulary


class CaptionOutput(NamedTuple):
    """Training-time output: logits aligned with targets (both (B, L', ...)), and attention weights if any."""

    logits: torch.Tensor
    targets: torch.Tensor
    alphas: torch.Tensor | None


class CaptionModel(nn.Module):
    """Encoder + decoder with a step-wise interface used by decoding and explanations.

    Subclasses provide `encoder`, `decoder`, `config` and:
      - `init_state(features) -> state`: a tuple of batch-first tensors;
      - `step(tokens, state) -> (logits, state, alpha | None)`: one decoder step;
      - `teacher_forced_hidden(features, captions) -> (hidden (B, L-1, H), alphas | None)`, where
        captions are `<START> w1 .. wn <END>` and position i's hidden state predicts captions[:, i + 1]
        through `output_logits` (kept apart so explanations can project only the positions they score).
    """

    has_attention: bool = False
    config: dict
    vocab: Vocabulary | None = None  # set by checkpoint loading, so callers need not pass it again

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits from decoder hidden states (any leading shape)."""
        return self.decoder.fc(self.decoder.dropout(hidden))

    def teacher_forced(self, features: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, L-1, V) for every position of `captions`, and the attention weights if any."""
        hidden, alphas = self.teacher_forced_hidden(features, captions)
        return self.output_logits(hidden), alphas

    def word_log_probs(self, features: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """log p(captions[:, i+1] | image, captions[:, :i+1]) for every position, (B, L-1), and alphas."""
        logits, alphas = self.teacher_forced(features, captions)
        log_probs = logits.log_softmax(-1).gather(-1, captions[:, 1:, None]).squeeze(-1)
        return log_probs, alphas

    @torch.no_grad()
    def generate_caption(self, image_tensor: torch.Tensor, vocab: Vocabulary, max_length: int = 20,
                         beam_size: int = 3) -> str:
        """Caption of one image tensor (1, 3, H, W) or (3, H, W), as in the seed notebook."""
        from captionlens.models.decoding import decode

        if image_tensor.dim() == 3:
            image_tensor = image_tensor.unsqueeze(0)
        result = decode(self, image_tensor, vocab, max_length=max_length, beam_size=beam_size)[0]
        return " ".join(result.words)

    @classmethod
    def load_from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu"):
        """`(model, vocab, epoch, loss)` as the seed notebook unpacks it; model in eval mode on `device`."""
        from captionlens.models.checkpoints import load_checkpoint

        ckpt = load_checkpoint(path, device=device)
        if not isinstance(ckpt.model, cls):
            raise TypeError(f"{path}: holds a {type(ckpt.model).__name__}, not a {cls.__name__}; "
                            "use captionlens.load() for any model")
        return ckpt.model, ckpt.vocab, ckpt.epoch, ckpt.metrics.get("loss")
