"""`TargetLayer`: a model's trunk cut at one conv stage, the only way explanations touch the image encoder.

`lower` maps images to the stage's activations A; `upper` maps A on to the decoder's features, so a
gradient taken at A never goes below the stage. Built from the `Captioner` protocol's `trunk()`.
"""
from __future__ import annotations

import torch
from torch import nn

from captionlens.explain.geometry import Centres, cell_centres
from captionlens.explain.maps import Drawing
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
        self.input_size = model.preprocessing.image_size
        self._centres: dict[bool, Centres | None] = {}

    def pooled(self, activations: torch.Tensor) -> torch.Tensor:
        """The pooled map (B, C, gh, gw) the decoder's features come from (an attention model's grid)."""
        return self._pool(self._rest(activations))

    def upper(self, activations: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(activations))

    def centres(self, pooled: bool = False) -> Centres | None:
        """Receptive-field centres of this layer's cells (`pooled`: of the pooled map's), in model-input
        pixels; None when a layer's geometry is unknown (`explain.geometry`)."""
        if pooled not in self._centres:
            layers = nn.Sequential(self.lower, self._rest, self._pool) if pooled else self.lower
            self._centres[pooled] = cell_centres(layers, self.input_size)
        return self._centres[pooled]

    def drawing(self, grid: tuple[int, int], image_hw: tuple[int, int], pooled: bool = False,
                sigma: float = 0.0) -> Drawing:
        """How maps on this layer's `grid` (or the pooled map's) are drawn on an image: each cell at its
        receptive field's centre, or, for a layer of unknown geometry, by plain bilinear upsampling."""
        centres = self.centres(pooled)
        if centres is None or tuple(len(c) for c in centres) != tuple(grid):
            return Drawing("upsample", image_hw, self.input_size, sigma=sigma)
        return Drawing("centres", image_hw, self.input_size, centres[0], centres[1], sigma)

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
