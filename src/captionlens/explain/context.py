"""`ExplainContext`: everything a method needs for one image and one caption."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from captionlens.data.vocabulary import Vocabulary
from captionlens.explain.scoring import Score
from captionlens.explain.target import TargetLayer
from captionlens.models.protocol import Captioner


@dataclass
class ExplainContext:
    model: Captioner
    vocab: Vocabulary
    image: np.ndarray             # (H, W, 3) uint8 original
    image_tensor: torch.Tensor    # (1, 3, S, S) model input (the model's preprocessing), on its device
    captions: torch.Tensor        # (1, T + 2) <START> words <END>
    token_ids: list[int]
    target: TargetLayer           # the trunk cut at the target layer
    activations: torch.Tensor     # (1, C, h, w) target-layer activations of image_tensor, no grad
    score: Score = "log_prob"

    @property
    def num_words(self) -> int:
        return len(self.token_ids)

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]
