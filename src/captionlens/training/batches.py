"""Training batches of whole images with all their captions: the encoder runs once per image, not once
per caption."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from captionlens.data.datasets import CaptionTrainingSet


class ImageCaptions(Dataset):
    """Items are whole images with all their captions, from a `CaptionTrainingSet`'s (image, caption) pairs."""

    def __init__(self, pairs: CaptionTrainingSet) -> None:
        self.pairs = pairs
        groups: dict[int, list[int]] = {}
        for index, (image_index, _) in enumerate(pairs.pairs):
            groups.setdefault(image_index, []).append(index)
        self.groups = list(groups.values())

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        group = self.groups[index]
        return self.pairs[group[0]][0], [self.pairs.pairs[i][1] for i in group]


def collate_images(batch: Sequence[tuple[torch.Tensor, list[torch.Tensor]]], pad_idx: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (B, 3, s, s), captions (N, L) padded, owner (N,): the image row of each caption)."""
    images = torch.stack([image for image, _ in batch])
    captions = [c for _, caps in batch for c in caps]
    owner = torch.tensor([i for i, (_, caps) in enumerate(batch) for _ in caps])
    return images, pad_sequence(captions, batch_first=True, padding_value=pad_idx), owner
