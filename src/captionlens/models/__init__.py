"""Captioning models: encoders, Show-and-Tell and Show-Attend-Tell decoders, decoding, checkpoints."""
from captionlens.models.base import CaptionModel, CaptionOutput
from captionlens.models.checkpoints import (Checkpoint, CheckpointError, build_model, load, load_checkpoint,
                                            save_checkpoint)
from captionlens.models.decoding import Decoded, beam_search, decode, decode_features, greedy
from captionlens.models.encoders import BACKBONES, PretrainedWeightsMissing
from captionlens.models.show_attend_tell import ShowAttendTellModel
from captionlens.models.show_tell import CNNLSTMModel

__all__ = ["BACKBONES", "CNNLSTMModel", "CaptionModel", "CaptionOutput", "Checkpoint", "CheckpointError",
           "Decoded", "PretrainedWeightsMissing", "ShowAttendTellModel", "beam_search", "build_model", "decode",
           "decode_features",
           "greedy", "load", "load_checkpoint", "save_checkpoint"]
