"""`TargetLayer`: a model's trunk cut at one conv stage, the only way explanations touch the image encoder.

`lower` maps images to the stage's activations A; `upper` maps A on to the decoder's features, so a
gradient taken at A never goes below the stage. Built from the `Captioner` protocol's `trunk()`.
"""
from __future__ import annotations

import torch
from torch import nn

from captionlens.models.protocol import Captioner


class TargetLayer:
    def __init__(self, model: Captioner, layer: str | int | None = None) -> None:
        trunk = model.trunk()
        names = [name for name, _ in trunk.stages.named_children()]
        self.index = resolve_layer(names, layer)
        self.name = names[self.index]
        self.module = trunk.stages[self.index]
        self.lower = trunk.stages[: self.index + 1]
        self._rest = trunk.stages[self.index + 1:]
        self._pool = trunk.pool
        self.head = trunk.head

    def pooled(self, activations: torch.Tensor) -> torch.Tensor:
        """The pooled map (B, C, gh, gw) the decoder's features come from (an attention model's grid)."""
        return self._pool(self._rest(activations))

    def upper(self, activations: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(activations))

    @property
    def pools_globally(self) -> bool:
        """True when nothing but a global average pool lies between this stage and the head, so that
        d score / dA_kij = d score / dp_k / (h w) with p the pooled feature."""
        pool = self._pool
        return (len(self._rest) == 0 and isinstance(pool, nn.AdaptiveAvgPool2d)
                and pool.output_size in (1, (1, 1)))


def resolve_layer(names: list[str], layer: str | int | None) -> int:
    """Index among the trunk's stages of a layer given by name ("layer4", "encoder.resnet.layer4"),
    index (-1, "3": negative from the end) or None (the last stage, the seed notebook's `encoder.resnet[-2]`)."""
    if layer is None:
        return len(names) - 1
    if isinstance(layer, str):
        key = layer.removeprefix("encoder.").removeprefix("resnet.")
        if key in names:
            return names.index(key)
        try:
            layer = int(key)
        except ValueError:
            raise ValueError(f"unknown target layer {layer!r}; choose one of {names} or an index") from None
    if not -len(names) <= layer < len(names):
        raise ValueError(f"target layer index {layer} out of range for a trunk of {len(names)} stages {names}")
    return layer % len(names)
