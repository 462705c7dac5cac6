"""Checkpoints: one `.safetensors` file (weights) whose header metadata holds JSON (config with its
preprocessing, vocabulary, epoch, metrics). Nothing is ever unpickled except legacy training-script
`.pth` files, and those only through `torch.load(weights_only=True)`, which refuses any pickle that
would build arbitrary objects.

A file is recognised by its content, not its name: a safetensors file loads whatever its suffix; a
torch or pickle file that is not a captionlens training-script checkpoint (a tutorial's checkpoint,
a pickled vocabulary) gets a message saying what it is and which `captionlens convert` reads it. What
each such format looks like is said by its importer (`importers/`), which registers a `ForeignFormat`
in `FOREIGN_FORMATS` when it is imported (importing `captionlens.models` imports the importers).
"""
from __future__ import annotations

import json
import os
import pickle
import re
import struct
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from captionlens.atomic import atomic_path
from captionlens.data.records import check_types, describe, parse_json
from captionlens.data.vocabulary import Vocabulary
from captionlens.models.config import ARCHITECTURES, CaptionerConfig, build_model, config_from_dict
from captionlens.models.encoders import identify_trunk
from captionlens.models.protocol import Captioner
from captionlens.models.safe_pickle import pickle_globals
from captionlens.registries import Registry, caller

FORMAT_VERSION = 2  # 2: the config carries the preprocessing; version 1 files still load
METADATA_KEY = "captionlens"
VOCAB_ROWS = ("decoder.embed.weight", "decoder.fc.weight", "decoder.fc.bias")  # one row per vocabulary word
TRUNK_PREFIX = "encoder.resnet."
_TRUNK_NAMES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "pool")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the reason."""


@dataclass
class Checkpoint:
    model: Any  # a CaptionModel (Captioner); Any so that callers reach its attributes without casts
    vocab: Vocabulary
    epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | os.PathLike[str], model: Captioner, vocab: Vocabulary, epoch: int = 0,
                    metrics: dict[str, Any] | None = None) -> Path:
    """Write weights + JSON metadata atomically (temporary file, then rename)."""
    path = Path(path)
    config = getattr(model, "config", None)
    if not isinstance(config, CaptionerConfig) or config.architecture not in ARCHITECTURES:
        raise TypeError(f"{path}: only captionlens' registered architectures ({', '.join(ARCHITECTURES)}) "
                        f"are saved in its format; {type(model).__name__} is not one")
    if len(vocab) != config.vocab_size:
        raise CheckpointError(f"{path}: vocabulary has {len(vocab)} words, model expects {config.vocab_size}")
    meta = {"format_version": FORMAT_VERSION, "config": config.to_dict(), "vocab": vocab.to_dict(),
            "epoch": epoch, "metrics": metrics or {}}
    module: nn.Module = model  # type: ignore[assignment]
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    return path


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Checkpoint:
    """Load our safetensors format or a legacy training-script `.pth` (whatever the file is called);
    the model comes back in eval mode on `device`, with `model.vocab` set."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    kind = file_kind(path)
    if kind == "safetensors":
        loaded = _load_safetensors(path)
    elif kind in ("torch-zip", "pickle"):
        loaded = _load_torch_dict(path)
    else:
        raise CheckpointError(f"{path}: not a checkpoint (neither safetensors nor a PyTorch or pickle file)")
    loaded.model.to(device)
    return loaded


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Checkpoint:
    """`captionlens.load`: whichever model class the checkpoint holds, with its vocabulary."""
    return load_checkpoint(path, device)


def file_kind(path: Path) -> str:
    """"safetensors", "torch-zip", "pickle" or "unknown", from the first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    size = path.stat().st_size
    if len(head) == 9 and struct.unpack("<Q", head[:8])[0] + 8 <= size and head[8:9] == b"{":
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return "unknown"


def _load_safetensors(path: Path) -> Checkpoint:
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw_meta = (fh.metadata() or {}).get(METADATA_KEY)
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - whatever a corrupt file makes the safetensors reader raise
        raise CheckpointError(f"{path}: truncated or not a safetensors checkpoint ({describe(exc)})") from None
    if raw_meta is None:
        raise CheckpointError(f"{path}: safetensors file has no '{METADATA_KEY}' metadata (config and vocabulary)")
    try:
        meta = parse_json(raw_meta, f"{path}: metadata '{METADATA_KEY}'")
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: metadata '{METADATA_KEY}' is not a JSON object")
        for key, kind in (("vocab", dict), ("config", dict), ("epoch", int), ("metrics", dict)):
            value = meta.get(key, kind())
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{path}: metadata '{key}' is {_shown(value)}, expected a {kind.__name__}")
        vocab = Vocabulary.from_dict(meta["vocab"])
        config = config_from_dict(meta["config"])
    except KeyError as exc:
        raise CheckpointError(f"{path}: bad metadata (no {exc})") from None
    except (ValueError, TypeError) as exc:
        message = str(exc)
        raise CheckpointError(message if message.startswith(str(path)) else
                              f"{path}: bad metadata ({describe(exc)})") from None
    return assemble(path, config, vocab, tensors, meta.get("epoch", 0), meta.get("metrics", {}))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _load_torch_dict(path: Path) -> Checkpoint:
    """A training-script checkpoint: a dict with the state dict, a vocabulary (word list or word->index
    dict) and optionally `config`, `epoch`, `loss`. Loaded with weights_only=True: no code can run.
    Anything else gets a message saying what the file is."""
    try:
        with warnings.catch_warnings():  # torch warns about a plain (non-torch) pickle before refusing it
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: {describe_refused(path, exc)}") from None
    except Exception as exc:  # noqa: BLE001 - whatever a corrupt file makes torch's readers raise
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({describe(exc)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(data).__name__}")
    hint = describe_foreign_dict(data, path)
    if hint:
        raise CheckpointError(f"{path}: {hint}")
    entry = next((data[k] for k in ("model_state_dict", "state_dict") if k in data), data)
    if not isinstance(entry, Mapping):
        raise CheckpointError(f"{path}: 'model_state_dict' is a {type(entry).__name__}, not a state dict")
    state = {rename_trunk_key(k): v for k, v in entry.items() if isinstance(v, torch.Tensor)}
    if "vocab" not in data:
        raise CheckpointError(f"{path}: no 'vocab' entry (need a word list or a word->index dict beside "
                              "'model_state_dict')")
    try:
        vocab, order = vocabulary_from_entry(data["vocab"])
        state = permute_vocab_rows(state, order, VOCAB_ROWS)
        if data.get("config") is not None and not isinstance(data["config"], dict):
            raise ValueError(f"'config' is {_shown(data['config'])}, expected a dict")
        config = config_from_dict(data["config"]) if data.get("config") else infer_config(state)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: {describe(exc) if isinstance(exc, TypeError) else exc}") from None
    loss, epoch = data.get("loss"), data.get("epoch", 0)
    if isinstance(loss, torch.Tensor):
        loss = loss.item() if loss.numel() == 1 and not loss.is_complex() else None
    metrics = {"loss": float(loss)} if isinstance(loss, (int, float)) and not isinstance(loss, bool) else {}
    if isinstance(epoch, torch.Tensor) and epoch.numel() == 1 and not epoch.is_complex():
        epoch = epoch.item()
    if isinstance(epoch, float) and epoch.is_integer():
        epoch = int(epoch)
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        raise CheckpointError(f"{path}: 'epoch' is {_shown(epoch)}, expected an integer")
    return assemble(path, config, vocab, state, epoch, metrics)


@dataclass(frozen=True)
class ForeignFormat:
    """How `load_checkpoint` recognises a file of another program's format that it does not read, to say
    which `captionlens convert` command reads it. `refused(names, path)` sees the globals named by a pickle
    that torch's weights-only loader refused; `loaded(data, path)` sees a dict that loader read. Each
    returns the message (what the file is, the command that reads it), or None: not this format."""

    refused: Callable[[set[str], Path], str | None] | None = None
    loaded: Callable[[Mapping[str, Any], Path], str | None] | None = None


FOREIGN_FORMATS: Registry[str, ForeignFormat] = Registry("foreign checkpoint format")


def register_foreign_format(name: str, *, refused: Callable[[set[str], Path], str | None] | None = None,
                            loaded: Callable[[Mapping[str, Any], Path], str | None] | None = None) -> ForeignFormat:
    """Register the recognisers of format `name` (see `ForeignFormat`); they are asked in registration order."""
    return FOREIGN_FORMATS.add(name, ForeignFormat(refused, loaded), caller())


def describe_refused(path: Path, refusal: BaseException | None = None) -> str:
    """Why a torch/pickle file was refused, and which converter reads it when it is a registered foreign format."""
    try:
        names = pickle_globals(path)
    except Exception:  # noqa: BLE001 - a pickle too broken to list its globals is refused all the same
        shown = f" ({describe(refusal)})" if refusal is not None else ""
        return f"refused to unpickle (weights_only=True allows tensors and plain containers only){shown}"
    for foreign in FOREIGN_FORMATS.values():
        message = foreign.refused(names, path) if foreign.refused else None
        if message:
            return message
    unsafe = sorted(n for n in names if not n.startswith(("torch.", "collections.OrderedDict", "__builtin__.",
                                                        "builtins.set", "builtins.dict")))
    shown = (", ".join(n if n.isprintable() else ascii(n)[:80] for n in unsafe[:3]) if unsafe
             else "objects torch's weights-only loader does not allow")
    return f"refused to unpickle (weights_only=True allows tensors and plain containers only): it names {shown}"


def describe_foreign_dict(data: Mapping[str, Any], path: Path) -> str | None:
    """What a loaded dict that is a registered foreign format is and which converter reads it, else None."""
    for foreign in FOREIGN_FORMATS.values():
        message = foreign.loaded(data, path) if foreign.loaded else None
        if message:
            return message
    return None


def rename_trunk_key(key: str, prefix: str = TRUNK_PREFIX) -> str:
    """`encoder.resnet.7.0.conv1.weight` (an `nn.Sequential` of a ResNet's children) ->
    `encoder.resnet.layer4.0.conv1.weight`."""
    match = re.match(rf"{re.escape(prefix)}(\d+)\.(.*)", key)
    if match and int(match.group(1)) < len(_TRUNK_NAMES):
        return f"{prefix}{_TRUNK_NAMES[int(match.group(1))]}.{match.group(2)}"
    return key


def vocabulary_from_entry(vocab: Any) -> tuple[Vocabulary, list[int]]:
    """(Vocabulary, row order) from a word list, a word->index or an index->word dict, or
    `{"idx2word": ...}`; the special tokens may be spelt and placed otherwise (see
    `Vocabulary.from_index_words`)."""
    if isinstance(vocab, dict) and "idx2word" in vocab:
        vocab = vocab["idx2word"]
    if isinstance(vocab, dict):
        try:
            pairs = ([(int(i), w) for w, i in vocab.items()] if all(isinstance(v, int) for v in vocab.values())
                     else [(int(i), w) for i, w in vocab.items()])
        except (TypeError, ValueError, OverflowError):
            raise ValueError("vocabulary dict maps neither words to indices nor indices to words") from None
        indices = sorted(i for i, _ in pairs)
        if indices != list(range(len(indices))):
            raise ValueError("vocabulary indices are not 0..N-1 without gaps")
        vocab = [w for _, w in sorted(pairs)]
    if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
        raise ValueError("no usable vocabulary (need a word list or a word->index dict)")
    return Vocabulary.from_index_words(vocab)


def permute_vocab_rows(state: dict[str, torch.Tensor], order: Sequence[int],
                       keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """`state` with the first dimension of `keys` reordered so row i is old row order[i]."""
    if list(order) == list(range(len(order))):
        return state
    index = torch.as_tensor(order)
    out = dict(state)
    for key in keys:
        if key in out:
            if out[key].shape[0] != len(order):
                raise ValueError(f"'{key}' has {out[key].shape[0]} rows but the vocabulary {len(order)} words")
            out[key] = out[key].index_select(0, index)
    return out


def trunk_state_shapes(state: Mapping[str, torch.Tensor], prefix: str = TRUNK_PREFIX) -> dict[str, tuple[int, ...]]:
    return {k.removeprefix(prefix): tuple(v.shape) for k, v in state.items() if k.startswith(prefix)}


def infer_config(state: dict[str, torch.Tensor]) -> CaptionerConfig:
    """A Show-and-Tell config read off a state dict's keys and shapes (for `.pth` files without a config):
    the backbone must match a registered trunk's weights exactly; the input is the seed notebook's
    224 px ImageNet preprocessing. An attention model's grid is not in its weights: refused."""
    try:
        vocab_size, embed_size = state["decoder.embed.weight"].shape
        hidden_size = state["decoder.fc.weight"].shape[1]
    except KeyError as exc:
        raise ValueError(f"state dict lacks {exc}; is this a captioning checkpoint?") from None
    backbone = identify_trunk(trunk_state_shapes(state))
    if "decoder.attention.full_att.weight" in state:
        raise ValueError("a Show-Attend-Tell state dict without a 'config' entry: its grid size and input size "
                         "are not in its weights, so they would have to be guessed; save it with its config "
                         "(captionlens' own checkpoints do) or convert it with `captionlens convert`")
    common = {"vocab_size": int(vocab_size), "embed_size": int(embed_size), "hidden_size": int(hidden_size),
              "backbone": backbone, "architecture": _architecture_without_attention()}
    layers = len([k for k in state if re.match(r"decoder\.lstm\.weight_ih_l\d+$", k)])
    head = "linear-batchnorm" if "encoder.bn.weight" in state else "linear"
    return config_from_dict({**common, "num_layers": max(layers, 1), "head": head})


def _architecture_without_attention() -> str:
    """The registered architecture that a state dict without attention weights is (Show-and-Tell's name,
    as its config class states it), read from the registry: the model classes import this module."""
    names = [name for name, model_class in ARCHITECTURES.items() if not model_class.has_attention]
    if len(names) != 1:
        raise ValueError(f"cannot tell the architecture of a state dict without a 'config' entry: "
                         f"{len(names)} registered architectures have no attention ({', '.join(names) or 'none'})")
    return names[0]


def assemble(path: Path, config: CaptionerConfig, vocab: Vocabulary, state: Mapping[str, torch.Tensor],
             epoch: int = 0, metrics: dict[str, Any] | None = None) -> Checkpoint:
    """The model of `config` holding exactly `state` (every key, every shape), or a CheckpointError; in
    eval mode, with `model.vocab` set so that explain() and the caption helpers need not be handed it.
    The model is first built without memory (on torch's meta device) and compared with `state`, so a
    config that does not fit the file's tensors never allocates its model, however large it claims to be."""
    try:
        check_types(config, f"{path}: config")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    if config.vocab_size != len(vocab):
        raise CheckpointError(f"{path}: vocabulary has {len(vocab)} words but the model was built for "
                              f"{config.vocab_size}")
    try:
        with torch.device("meta"):
            check_exact_state(path, build_model(config), state)
        model = build_model(config)
    except CheckpointError:
        raise
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        message = str(exc)
        raise CheckpointError(message if message.startswith(str(path)) else
                              f"{path}: bad model config ({describe(exc)})") from None
    model.load_state_dict(state)
    model.eval()
    model.vocab = vocab
    return Checkpoint(model, vocab, epoch, metrics or {})


def check_exact_state(path: Path, model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """A CheckpointError unless `state`'s keys and shapes are exactly `model`'s, and its tensors are of a dtype
    the model's can be loaded from (real numbers, or the integer counters batch norm keeps)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{path}: architecture mismatch: {len(missing)} missing keys "
                              f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(f"{path}: '{key}' has shape {tuple(tensor.shape)}, model expects "
                                  f"{tuple(expected[key].shape)}")
        if tensor.is_complex() or tensor.dtype.is_floating_point != expected[key].dtype.is_floating_point:
            raise CheckpointError(f"{path}: '{key}' holds {tensor.dtype}, model expects {expected[key].dtype}")
