"""What a training run depends on (`TrainConfig`), and the sizes it takes from the data (`Recipe`).

The model's sizes follow the data unless given (`RECIPES`): the tiny Show-Attend-Tell model on the
synthetic shapes data (`captionlens demo`), an ImageNet-pretrained ResNet-50 at 224 px for photos
(which also want more epochs than the default 5). The attention penalty is off by default: with 144
regions and ~10 words it can only pull attention towards uniform, and it slowed learning on the shapes
data.

The architecture is a name in the model registry (`captionlens.models.config.ARCHITECTURES`); its
config class says which of the sizes below it takes (`model_config`) and `describe` says them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from captionlens.data.images import Preprocessing
from captionlens.models.config import ARCHITECTURES, CaptionerConfig

PRELOAD_BYTES = 2**30  # preload (decode once, keep as uint8) training sets up to this size


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """The sizes a `TrainConfig` leaves open (None) are taken from the recipe for its kind of data."""

    backbone: str
    pretrained: bool
    image_size: int
    embed_size: int
    hidden_size: int
    attention_dim: int
    grid_size: int                            # 0 keeps the trunk's map


# Sizes by kind of data. The shapes recipe is the demo's (test BLEU-4 about 0.6 in 5 epochs on two CPU
# cores); photos get the usual ResNet-50 setup (its 7x7 map at 224 px needs no pooling).
SHAPES_RECIPE = Recipe(backbone="tiny", pretrained=False, image_size=96, embed_size=64, hidden_size=256,
                       attention_dim=64, grid_size=0)
PHOTOS_RECIPE = Recipe(backbone="resnet50", pretrained=True, image_size=224, embed_size=256, hidden_size=512,
                       attention_dim=256, grid_size=7)
RECIPES = {"shapes": SHAPES_RECIPE, "photos": PHOTOS_RECIPE}


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything a training run depends on; saved as `train_config.json` next to the checkpoints."""

    data: str | Path
    format: str | None = None                 # kaggle | flickr | karpathy | shapes; None: guessed
    architecture: str = "show-attend-tell"    # a name in ARCHITECTURES: show-attend-tell | show-tell
    # None below: the recipe for the data (`RECIPES`: the tiny CNN for the synthetic shapes, an
    # ImageNet-pretrained ResNet-50 at 224 px for photos); `describe()` says what was chosen.
    backbone: str | None = None               # tiny | resnet18 | resnet34 | resnet50 | resnet101 | resnet152 | ...
    pretrained: bool | None = None            # ImageNet weights for a ResNet backbone
    embed_size: int | None = None
    hidden_size: int | None = None
    attention_dim: int | None = None          # show-attend-tell only
    grid_size: int | None = None              # show-attend-tell: pool the map to grid x grid; 0 keeps the map
    image_size: int | None = None
    num_layers: int = 1                       # show-tell only
    dropout: float = 0.1
    epochs: int = 5
    batch_size: int = 16                      # images per step (each with all its captions), over all processes
    lr: float = 1e-3                          # 1.5e-3 and up trained the demo model worse
    weight_decay: float = 1e-4
    schedule: str = "cosine"                  # cosine | step (x step_gamma every step_epochs epochs)
    step_epochs: int = 2
    step_gamma: float = 0.5
    warmup_steps: int = 50
    grad_clip: float = 5.0
    fine_tune_encoder: bool = True            # False freezes the conv trunk (sensible with pretrained=True)
    min_word_freq: int = 1
    max_length: int = 20                      # of validation captions
    beam_size: int = 3                        # of validation captions
    attention_lambda: float = 0.0             # doubly stochastic attention regularisation (Xu et al. use 1)
    out_dir: str | Path = "outputs/train"
    resume: bool = False
    seed: int = 0
    device: str = "auto"                      # auto | cpu | cuda | cuda:N
    amp: bool | None = None                   # None: on for CUDA, off otherwise
    num_workers: int = 0
    val_limit: int | None = None              # validate on the first N val images only
    preload: bool | None = None               # None: when the decoded training images fit PRELOAD_BYTES
    progress: bool = True                     # a progress bar, when stderr is a terminal

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    def for_data(self, format: str) -> TrainConfig:
        """This config with every None size taken from the recipe for data of `format`."""
        recipe = RECIPES["shapes" if format == "shapes" else "photos"]
        if self.backbone == "tiny":
            recipe = replace(recipe, pretrained=False)  # the tiny CNN has no ImageNet weights
        return replace(self, **{f.name: getattr(recipe, f.name) for f in fields(recipe)
                                if getattr(self, f.name) is None})

    def config_class(self) -> type[CaptionerConfig]:
        """The model config class of `architecture`; ValueError naming the registered ones."""
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; use one of {', '.join(ARCHITECTURES)}")
        return ARCHITECTURES[self.architecture].config_class

    def describe(self) -> str:
        """One line: the architecture and sizes this (resolved) config trains."""
        takes = {f.name for f in fields(self.config_class())}
        weights = "ImageNet weights" if self.pretrained else "random init"
        parts = [f"{self.architecture}", f"backbone {self.backbone} ({weights})", f"{self.image_size} px input",
                 f"embed {self.embed_size}", f"hidden {self.hidden_size}"]
        if "attention_dim" in takes:
            parts.append(f"attention {self.attention_dim}")
        if "grid_size" in takes:
            parts.append(f"grid {self.grid_size or 'as the trunk gives it'}")
        if "num_layers" in takes:
            parts.append(f"{self.num_layers} LSTM layer{'s' * (self.num_layers != 1)}")
        return "model: " + ", ".join(parts)

    def model_config(self, vocab_size: int) -> CaptionerConfig:
        """The model config this (resolved) training config builds: of the values below, those its
        architecture's config class has fields for."""
        config_class = self.config_class()
        image_size = self.image_size
        if self.backbone is None or image_size is None or self.attention_dim is None:
            raise ValueError("the config has sizes left open: call for_data() first")
        values: dict[str, Any] = {"vocab_size": vocab_size, "embed_size": self.embed_size,
                                  "hidden_size": self.hidden_size, "backbone": self.backbone,
                                  "dropout": self.dropout, "preprocessing": Preprocessing(image_size=image_size),
                                  "num_layers": self.num_layers, "attention_dim": self.attention_dim,
                                  "grid_size": self.grid_size or None}
        takes = {f.name for f in fields(config_class) if f.init}
        return config_class(**{name: value for name, value in values.items() if name in takes})
