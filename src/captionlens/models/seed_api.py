"""The seed notebook's entry points on captionlens' models, so a notebook runs with its imports changed:
`CNNLSTMModel.load_from_checkpoint(path, device) -> (model, vocab, epoch, loss)` and
`model.generate_caption(image_tensor, vocab, max_length, beam_size)`."""
from __future__ import annotations

import os
from typing import Any, TypeVar

import torch

from captionlens.data.vocabulary import Vocabulary
from captionlens.models.checkpoints import load_checkpoint
from captionlens.models.decoding import decode
from captionlens.models.protocol import Captioner

Model = TypeVar("Model")


class SeedNotebookAPI:
    """Mixed into the model classes; uses only the `Captioner` protocol."""

    @torch.no_grad()
    def generate_caption(self: Any, image_tensor: torch.Tensor, vocab: Vocabulary, max_length: int = 20,
                         beam_size: int = 3) -> str:
        """Caption of one image tensor (1, 3, H, W) or (3, H, W), as in the seed notebook."""
        model: Captioner = self
        if image_tensor.dim() == 3:
            image_tensor = image_tensor.unsqueeze(0)
        return decode(model, image_tensor, vocab, max_length=max_length, beam_size=beam_size)[0].caption

    @classmethod
    def load_from_checkpoint(cls: type[Model], path: str | os.PathLike[str],
                             device: str | torch.device = "cpu") -> tuple[Model, Vocabulary, int, Any]:
        """`(model, vocab, epoch, loss)` as the seed notebook unpacks it; model in eval mode on `device`."""
        ckpt = load_checkpoint(path, device=device)
        if not isinstance(ckpt.model, cls):
            raise TypeError(f"{path}: holds a {type(ckpt.model).__name__}, not a {cls.__name__}; "
                            "use captionlens.load() for any model")
        return ckpt.model, ckpt.vocab, ckpt.epoch, ckpt.metrics.get("loss")
