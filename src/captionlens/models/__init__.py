"""Captioning models: the `Captioner` contract, encoders, Show-and-Tell and Show-Attend-Tell, decoding,
captioning image files, checkpoints (and the tutorials' importers, which register their formats with
`load_checkpoint` when imported: so they are imported here)."""
from captionlens.models import importers
from captionlens.models.captioning import caption_files
from captionlens.models.checkpoints import Checkpoint, CheckpointError, load, load_checkpoint, save_checkpoint
from captionlens.models.config import ARCHITECTURES, CaptionerConfig, build_model, config_from_dict
from captionlens.models.decoding import Decoded, beam_search, decode, decode_features, greedy
from captionlens.models.encoders import TRUNKS, PretrainedWeightsMissing, register_trunk
from captionlens.models.protocol import Captioner, CaptionOutput, Trunk, eval_mode
from captionlens.models.show_attend_tell import ShowAttendTellConfig, ShowAttendTellModel
from captionlens.models.show_tell import CNNLSTMModel, ShowTellConfig

__all__ = ["ARCHITECTURES", "CNNLSTMModel", "CaptionOutput", "Captioner", "CaptionerConfig", "Checkpoint",
           "CheckpointError", "Decoded", "PretrainedWeightsMissing", "ShowAttendTellConfig", "ShowAttendTellModel",
           "ShowTellConfig", "TRUNKS", "Trunk", "beam_search", "build_model", "caption_files", "config_from_dict",
           "decode", "decode_features", "eval_mode", "greedy", "importers", "load", "load_checkpoint",
           "register_trunk", "save_checkpoint"]
