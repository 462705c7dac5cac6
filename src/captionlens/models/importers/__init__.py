"""Importers for checkpoints from where users actually train: the two most-used PyTorch captioning tutorials.

Importing an importer registers its format with `load_checkpoint` (`checkpoints.FOREIGN_FORMATS`), which then
names the `captionlens convert` command for that format's files; `captionlens.models` imports this package."""
from captionlens.models.importers.common import ConversionError
from captionlens.models.importers.sgrvinod import convert_sgrvinod, sgrvinod_checkpoint
from captionlens.models.importers.yunjey import convert_yunjey, yunjey_checkpoint

__all__ = ["ConversionError", "convert_sgrvinod", "convert_yunjey", "sgrvinod_checkpoint", "yunjey_checkpoint"]
