"""Checkpoints: one `.safetensors` file (weights) whose header metadata holds JSON (config, vocabulary,
epoch, metrics). Nothing is ever unpickled except legacy `.pth` files, and those only through
`torch.load(weights_only=True)`, which refuses any pickle that would build arbitrary objects.
"""
from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from captionlens.atomic import atomic_path
from captionlens.data.vocabulary import Vocabulary
from captionlens.models.base import CaptionModel
from captionlens.models.show_attend_tell import ShowAttendTellModel
from captionlens.models.show_tell import CNNLSTMModel

FORMAT_VERSION = 1
METADATA_KEY = "captionlens"
ARCHITECTURES: dict[str, type[CaptionModel]] = {"show-tell": CNNLSTMModel, "show-attend-tell": ShowAttendTellModel}
_TRUNK_NAMES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "pool")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the reason."""


@dataclass
class Checkpoint:
    model: CaptionModel
    vocab: Vocabulary
    epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


def build_model(config: dict[str, Any]) -> CaptionModel:
    """A model of the architecture and sizes in `config` (as `model.config` holds them)."""
    config = dict(config)
    arch = config.pop("architecture", None)
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**config)


def save_checkpoint(path: str | Path, model: CaptionModel, vocab: Vocabulary, epoch: int = 0,
                    metrics: dict[str, Any] | None = None) -> Path:
    """Write weights + JSON metadata atomically (temporary file, then rename)."""
    path = Path(path)
    if len(vocab) != model.config["vocab_size"]:
        raise CheckpointError(f"{path}: vocabulary has {len(vocab)} words, model expects {model.config['vocab_size']}")
    meta = {"format_version": FORMAT_VERSION, "config": model.config, "vocab": vocab.to_dict(),
            "epoch": epoch, "metrics": metrics or {}}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load our `.safetensors` format or a legacy `.pth`; the model comes back in eval mode on `device`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = _load_legacy(path) if path.suffix in (".pth", ".pt") else _load_safetensors(path)
    ckpt.model.to(device).eval()
    ckpt.model.vocab = ckpt.vocab  # so explain()/caption helpers need not be handed the vocabulary again
    return ckpt


def load(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """`captionlens.load`: whichever model class the checkpoint holds, with its vocabulary."""
    return load_checkpoint(path, device)


def _load_safetensors(path: Path) -> Checkpoint:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            raw_meta = (fh.metadata() or {}).get(METADATA_KEY)
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: truncated or not a safetensors checkpoint ({exc})") from None
    if raw_meta is None:
        raise CheckpointError(f"{path}: safetensors file has no '{METADATA_KEY}' metadata (config and vocabulary)")
    try:
        meta = json.loads(raw_meta)
        vocab = Vocabulary.from_dict(meta["vocab"])
        config = meta["config"]
    except (json.JSONDecodeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad metadata ({exc})") from None
    return _assemble(path, config, vocab, tensors, int(meta.get("epoch", 0)), dict(meta.get("metrics", {})))


def _load_legacy(path: Path) -> Checkpoint:
    """A training-script `.pth`: a dict with the state dict, a vocabulary (word list or word->index dict)
    and optionally `config`, `epoch`, `loss`. Loaded with weights_only=True: no code can run."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused to unpickle (weights_only=True allows tensors and plain "
                              f"containers only): {_unpickler_reason(exc)}") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(data).__name__}")
    state = data.get("model_state_dict", data.get("state_dict", data))
    state = {_rename_legacy_key(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    vocab = _legacy_vocab(path, data.get("vocab"))
    try:
        config = data.get("config") or infer_config(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    metrics = {"loss": float(data["loss"])} if isinstance(data.get("loss"), (int, float, torch.Tensor)) else {}
    return _assemble(path, config, vocab, state, int(data.get("epoch", 0)), metrics)


def _unpickler_reason(exc: pickle.UnpicklingError) -> str:
    """The sentence of torch's multi-paragraph refusal that names the forbidden global ("... GLOBAL
    posix.system ..."); torch's own first line advises weights_only=False, which we never want to echo."""
    for line in str(exc).splitlines():
        if "GLOBAL" in line:
            return line.partition("WeightsUnpickler error:")[2].strip().split(". ")[0] or line.strip().rstrip(".")
    return "unsafe pickle"


def _rename_legacy_key(key: str) -> str:
    """`encoder.resnet.7.0.conv1.weight` (Sequential of ResNet children) -> `encoder.resnet.layer4.0...`."""
    match = re.match(r"encoder\.resnet\.(\d+)\.(.*)", key)
    if match and int(match.group(1)) < len(_TRUNK_NAMES):
        return f"encoder.resnet.{_TRUNK_NAMES[int(match.group(1))]}.{match.group(2)}"
    return key


def _legacy_vocab(path: Path, vocab: Any) -> Vocabulary:
    if isinstance(vocab, dict) and "idx2word" in vocab:
        vocab = vocab["idx2word"]
    if isinstance(vocab, dict):  # word -> index, or index -> word
        pairs = [(int(i), w) for w, i in vocab.items()] if all(isinstance(v, int) for v in vocab.values()) \
            else [(int(i), w) for i, w in vocab.items()]
        vocab = [w for _, w in sorted(pairs)]
    if not isinstance(vocab, list):
        raise CheckpointError(f"{path}: no usable 'vocab' entry (need a word list or a word->index dict)")
    try:
        return Vocabulary.from_dict({"idx2word": vocab})
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def infer_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Architecture and sizes read off a state dict's keys and shapes (for `.pth` files without a config)."""
    try:
        vocab_size, embed_size = state["decoder.embed.weight"].shape
        hidden_size = state["decoder.fc.weight"].shape[1]
    except KeyError as exc:
        raise CheckpointError(f"state dict lacks {exc}; is this a captioning checkpoint?") from None
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.resnet\.layer3\.(\d+)\.", k))}
    bottleneck = any(".conv3." in k for k in state)
    if any(k.startswith("encoder.resnet.stem.") for k in state):
        backbone = "tiny"
    else:
        backbone = {(2, False): "resnet18", (6, False): "resnet34", (6, True): "resnet50",
                    (23, True): "resnet101"}.get((len(blocks), bottleneck), "resnet50")
    common = {"vocab_size": int(vocab_size), "embed_size": int(embed_size), "hidden_size": int(hidden_size),
              "backbone": backbone}
    if "decoder.attention.full_att.weight" in state:
        return {"architecture": "show-attend-tell", **common,
                "attention_dim": int(state["decoder.attention.full_att.weight"].shape[1])}
    layers = len([k for k in state if re.match(r"decoder\.lstm\.weight_ih_l\d+$", k)])
    return {"architecture": "show-tell", **common, "num_layers": max(layers, 1)}


def _assemble(path: Path, config: dict[str, Any], vocab: Vocabulary, state: dict[str, torch.Tensor],
              epoch: int, metrics: dict[str, Any]) -> Checkpoint:
    if config.get("vocab_size") != len(vocab):
        raise CheckpointError(f"{path}: vocabulary has {len(vocab)} words but the model was built for "
                              f"{config.get('vocab_size')}")
    try:
        model = build_model({**config, "pretrained": False})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad model config ({exc})") from None
    _load_state(path, model, state)
    return Checkpoint(model, vocab, epoch, metrics)


def _load_state(path: Path, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
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
    model.load_state_dict(state)
