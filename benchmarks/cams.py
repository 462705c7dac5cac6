"""`batch_cams`: the Grad-CAM engine on tensors, for the benchmarks and the GPU check (torch and captionlens
only, so that it runs where the reference libraries are not installed)."""
from __future__ import annotations

import numpy as np
import torch

from captionlens.explain.gradcam import word_cams
from captionlens.explain.scoring import padded_captions
from captionlens.explain.target import TargetLayer
from captionlens.models import eval_mode
from captionlens.models.base import CaptionModel


def batch_cams(model: CaptionModel, images: torch.Tensor, captions: list[list[int]]) -> list[np.ndarray]:
    """Raw Grad-CAMs of B preprocessed images (B, 3, S, S) and their word-id captions from one engine pass
    (`word_cams`: every word of every image at once, what `explain_batch` runs after reading the images)."""
    with eval_mode(model):
        target = TargetLayer(model)
        with torch.no_grad():
            activations = target.lower(images)
        cams = word_cams(model, target, activations, padded_captions(captions, model.vocab, images.device),
                         [len(c) for c in captions])
    return [cam.float().cpu().numpy() for cam in cams]
