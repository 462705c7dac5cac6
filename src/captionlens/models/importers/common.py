"""What both tutorial importers share: reading weights, mapping their key names onto ours, and writing
the result as an ordinary captionlens checkpoint. Every mismatch is an error naming the file and key."""
from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from captionlens.data.vocabulary import Vocabulary
from captionlens.models.checkpoints import (
    TRUNK_PREFIX,
    VOCAB_ROWS,
    Checkpoint,
    CheckpointError,
    assemble,
    file_kind,
    permute_vocab_rows,
    rename_trunk_key,
    save_checkpoint,
    trunk_state_shapes,
)
from captionlens.models.config import CaptionerConfig
from captionlens.models.encoders import identify_trunk
from captionlens.models.safe_pickle import children, stand_in

# nn.DataParallel wraps a model as its one child `module`, so a state dict saved from it prefixes every key
# with `module.`; pickled whole, it is that class, and on a GPU machine it also holds a `torch.device`.
DATA_PARALLEL = "torch.nn.parallel.data_parallel.DataParallel"
DATA_PARALLEL_CHILD = "module"
DATA_PARALLEL_GLOBALS: dict[str, Any] = {DATA_PARALLEL: stand_in(DATA_PARALLEL), "torch.device": torch.device}


class ConversionError(CheckpointError):
    """A tutorial file that does not fit what we can load exactly; the message names the file, key or value."""


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A `torch.save(state_dict)` file (whatever its suffix), read with weights_only=True."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    if file_kind(path) not in ("torch-zip", "pickle"):
        raise ConversionError(f"{path}: not a PyTorch file (expected torch.save(state_dict) output for the {what})")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConversionError(f"{path}: holds more than tensors (weights_only=True refused it); the {what} must be "
                              "a state dict") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ConversionError(f"{path}: truncated or not a PyTorch file ({exc})") from None
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ConversionError(f"{path}: expected a state dict (names -> tensors) for the {what}, "
                              f"got {type(data).__name__}")
    return without_data_parallel_prefix(path, data)


def without_data_parallel_prefix(path: Path, state: Mapping[str, Any]) -> dict[str, Any]:
    """`state` with nn.DataParallel's `module.` taken off every key when every key has it, else as it is;
    a state dict where only some keys have it is an error."""
    prefix = DATA_PARALLEL_CHILD + "."
    wrapped = [key for key in state if isinstance(key, str) and key.startswith(prefix)]
    if not wrapped:
        return dict(state)
    if len(wrapped) < len(state):
        plain = next(key for key in state if key not in wrapped)
        raise ConversionError(f"{path}: {len(wrapped)} of {len(state)} keys carry nn.DataParallel's '{prefix}' "
                              f"prefix (e.g. '{wrapped[0]}') and the others do not (e.g. '{plain}'); expected "
                              "all or none")
    return {key[len(prefix):]: value for key, value in state.items()}


def unwrap_data_parallel(module: Any) -> Any:
    """The model inside a pickled `nn.DataParallel` (a stand-in), else `module` itself."""
    if getattr(module, "pickled_name", None) == DATA_PARALLEL:
        return children(module).get(DATA_PARALLEL_CHILD, module)
    return module


def map_keys(path: Path, state: Mapping[str, torch.Tensor], rules: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """`state` with each key's first matching prefix in `rules` replaced (`{"linear.": "encoder.linear."}`);
    a numbered trunk child (`resnet.7.`) becomes its torchvision name. A key no rule covers is an error."""
    out = {}
    for key, value in state.items():
        prefix = next((p for p in rules if key.startswith(p)), None)
        if prefix is None:
            raise ConversionError(f"{path}: unexpected key '{key}' {tuple(value.shape)} (expected keys starting "
                                  f"with {', '.join(rules)})")
        out[rename_trunk_key(rules[prefix] + key[len(prefix):])] = value
    return out


def require_shape(path: Path, state: Mapping[str, torch.Tensor], key: str, dims: int) -> tuple[int, ...]:
    if key not in state:
        raise ConversionError(f"{path}: missing key '{key}'")
    shape = tuple(state[key].shape)
    if len(shape) != dims:
        raise ConversionError(f"{path}: '{key}' has shape {shape}, expected {dims} dimensions")
    return shape


def lstm_layers(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    return len([k for k in state if re.fullmatch(rf"{re.escape(prefix)}weight_ih_l\d+", k)])


def backbone_of(path: Path, state: Mapping[str, torch.Tensor]) -> str:
    """The registered trunk whose weights are exactly the `encoder.resnet.*` ones in `state`."""
    try:
        return identify_trunk(trunk_state_shapes(state, TRUNK_PREFIX))
    except ValueError as exc:
        raise ConversionError(f"{path}: {exc} (keys as torchvision names a ResNet's children: the file's "
                              "resnet.4-7 are layer1-4)") from None


def build_checkpoint(path: Path, config: CaptionerConfig, vocab: Vocabulary, order: list[int],
                     state: dict[str, torch.Tensor], metrics: dict[str, Any], epoch: int = 0) -> Checkpoint:
    """Our model of `config` holding exactly `state` (see `assemble`), vocabulary rows permuted to `vocab`'s order."""
    try:
        state = permute_vocab_rows(state, order, VOCAB_ROWS)
    except ValueError as exc:
        raise ConversionError(f"{path}: {exc}") from None
    return assemble(path, config, vocab, state, epoch, metrics)


def write(converted: Checkpoint, out: Path) -> Path:
    """Save a converted model as an ordinary captionlens checkpoint file at `out`."""
    return save_checkpoint(out, converted.model, converted.vocab, converted.epoch, converted.metrics)
