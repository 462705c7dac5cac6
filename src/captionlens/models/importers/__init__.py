"""Importers for checkpoints from where users actually train: the two most-used PyTorch captioning tutorials."""
from captionlens.models.importers.common import ConversionError
from captionlens.models.importers.sgrvinod import convert_sgrvinod, sgrvinod_checkpoint
from captionlens.models.importers.yunjey import convert_yunjey, yunjey_checkpoint

__all__ = ["ConversionError", "convert_sgrvinod", "convert_yunjey", "sgrvinod_checkpoint", "yunjey_checkpoint"]
