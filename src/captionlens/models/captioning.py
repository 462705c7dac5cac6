"""Captioning image files: each file read and prepared by the model's own preprocessing, decoded in batches,
an unreadable file reported in its place (as its `ImageLoadError`) instead of stopping the others."""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from captionlens.data.images import ImageLoadError, load_image
from captionlens.data.vocabulary import Vocabulary
from captionlens.models.decoding import Decoded, check_decoding, decode
from captionlens.models.protocol import Captioner, eval_mode, model_device, require_vocab


def caption_files(model: Captioner, paths: Sequence[str | os.PathLike], vocab: Vocabulary | None = None,
                  beam_size: int = 3, max_length: int = 20, batch_size: int = 32) -> list[Decoded | ImageLoadError]:
    """The model's caption of each image file (prepared by the model's preprocessing), decoded
    `batch_size` images at a time.

    A file that cannot be read gets its `ImageLoadError` in its place, so one bad file does not stop
    the others; callers that cannot go on without every image raise it.
    """
    vocab = require_vocab(model, vocab)
    check_decoding(beam_size, max_length)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    device = model_device(model)
    results: list[Decoded | ImageLoadError | None] = [None] * len(paths)
    with eval_mode(model):
        for start in range(0, len(paths), batch_size):
            loaded = []
            for i in range(start, min(start + batch_size, len(paths))):
                try:
                    loaded.append((i, model.preprocessing.transform(load_image(paths[i]))))
                except ImageLoadError as exc:
                    results[i] = exc
            if loaded:
                images = torch.stack([tensor for _, tensor in loaded]).to(device)
                decoded = decode(model, images, vocab, max_length=max_length, beam_size=beam_size)
                for (i, _), caption in zip(loaded, decoded):
                    results[i] = caption
    return [r for r in results if r is not None]
