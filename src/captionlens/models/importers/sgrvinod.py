"""sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning -> a captionlens checkpoint.

What that tutorial writes, and how it maps:
  BEST_checkpoint_<name>.pth.tar  `torch.save` of a dict with `epoch`, `epochs_since_improvement`, `bleu-4`,
      the whole pickled `encoder` (`models.Encoder`: `resnet` = a ResNet's children[:-2], ResNet-101 in the
      tutorial; `adaptive_pool` to `enc_image_size` = 14) and `decoder` (`models.DecoderWithAttention`:
      `attention.encoder_att/decoder_att/full_att` with ReLU, `embedding`, `decode_step` (LSTMCell on
      [embedding, f_beta-gated context]), `init_h`/`init_c`, `f_beta`, `fc` after dropout), and optimizers.
      Read by a restricted unpickler: the tutorial's classes, the torch.nn modules and Adam become inert
      stand-ins whose parameters we collect; any other global is refused. Forks that train with
      `nn.DataParallel(encoder)` pickle that wrapper (and a `torch.device`): its child `module` is the model.
  WORDMAP_<name>.json  word -> index with <pad> = 0, words 1..N, then <unk>, <start>, <end>.
Ours: Show-Attend-Tell with `attention_activation` read from the pickled attention module (ReLU), the grid
from the pickled pool, `embedding` -> `decoder.embed`, `decode_step` -> `decoder.lstm`. The input is
caption.py's: 256 x 256 (bilinear), ImageNet normalisation (so ResNet-101's 8x8 map is pooled up to 14x14).

Recognised by `load_checkpoint` (which does not read it) as a pickle naming the tutorial's classes
(`TUTORIAL_CLASSES`), with a message naming `captionlens convert sgrvinod`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from captionlens.data.images import Preprocessing
from captionlens.data.records import read_json
from captionlens.data.vocabulary import Vocabulary
from captionlens.models.checkpoints import Checkpoint, register_foreign_format, vocabulary_from_entry
from captionlens.models.importers.common import (
    DATA_PARALLEL_GLOBALS,
    ConversionError,
    backbone_of,
    build_checkpoint,
    map_keys,
    require_shape,
    unwrap_data_parallel,
    write,
)
from captionlens.models.safe_pickle import (
    BrokenPickle,
    UnsafePickle,
    children,
    load_torch,
    module_state,
    stand_in,
)
from captionlens.models.show_attend_tell import ATTENTION_ACTIVATIONS, ShowAttendTellConfig

TUTORIAL_CLASSES = ("models.Encoder", "models.DecoderWithAttention", "models.Attention")
MODULE_CLASSES = tuple(f"torch.nn.modules.{name}" for name in (
    "container.Sequential", "conv.Conv2d", "batchnorm.BatchNorm2d", "activation.ReLU", "activation.Sigmoid",
    "activation.Softmax", "activation.Tanh", "pooling.MaxPool2d", "pooling.AdaptiveAvgPool2d", "linear.Linear",
    "sparse.Embedding", "dropout.Dropout", "rnn.LSTMCell"))
OTHER_CLASSES = ("torchvision.models.resnet.Bottleneck", "torchvision.models.resnet.BasicBlock",
                 "torch.optim.adam.Adam")
GLOBALS = {**{name: stand_in(name) for name in (*TUTORIAL_CLASSES, *MODULE_CLASSES, *OTHER_CLASSES)},
           **DATA_PARALLEL_GLOBALS}
PREPROCESSING = Preprocessing(image_size=256, interpolation="bilinear")
ENCODER_KEYS = {"resnet.": "encoder.resnet."}
DECODER_KEYS = {"attention.": "decoder.attention.", "embedding.": "decoder.embed.", "decode_step.": "decoder.lstm.",
                "init_h.": "decoder.init_h.", "init_c.": "decoder.init_c.", "f_beta.": "decoder.f_beta.",
                "fc.": "decoder.fc."}
ACTIVATION_MODULES = {"torch.nn.modules.activation.ReLU": "relu", "torch.nn.modules.activation.Tanh": "tanh"}


def recognise_refused(names: set[str], path: Path) -> str | None:
    """The convert command for a pickle (refused by torch's weights-only loader) that names the tutorial's
    classes, else None."""
    if not names & set(TUTORIAL_CLASSES):
        return None
    return ("a checkpoint of sgrvinod's a-PyTorch-Tutorial-to-Image-Captioning (pickled models.Encoder / "
            "DecoderWithAttention): convert it with `captionlens convert sgrvinod --checkpoint "
            f"{path.name} --word-map WORDMAP_<name>.json --out model.safetensors`")


register_foreign_format("sgrvinod", refused=recognise_refused)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The tutorial's checkpoint dict, its modules (unwrapped from `nn.DataParallel`) and optimizers read
    into inert stand-ins."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        data = load_torch(path, GLOBALS)
    except BrokenPickle as exc:
        raise ConversionError(f"{path}: truncated or not a PyTorch checkpoint ({exc})") from None
    except UnsafePickle as exc:
        raise ConversionError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or not {"encoder", "decoder"} <= set(data):
        raise ConversionError(f"{path}: expected the tutorial's checkpoint dict with 'encoder' and 'decoder'")
    for key, expected in (("encoder", "models.Encoder"), ("decoder", "models.DecoderWithAttention")):
        data[key] = unwrap_data_parallel(data[key])
        found = getattr(data[key], "pickled_name", type(data[key]).__name__)
        if found != expected:
            raise ConversionError(f"{path}: '{key}' is a {found}, expected the tutorial's {expected}")
    return data


def read_word_map(path: Path) -> tuple[Vocabulary, list[int]]:
    if not path.is_file():
        raise FileNotFoundError(f"word map not found: {path}")
    try:
        word_to_index = read_json(path)
    except ValueError as exc:
        raise ConversionError(str(exc)) from None
    if not isinstance(word_to_index, dict) or not all(isinstance(i, int) for i in word_to_index.values()):
        raise ConversionError(f"{path}: expected a JSON object mapping each word to its index")
    try:
        return vocabulary_from_entry(word_to_index)
    except ValueError as exc:
        raise ConversionError(f"{path}: {exc}") from None


def _grid_size(path: Path, encoder: Any) -> int:
    pool = children(encoder).get("adaptive_pool")
    size = vars(pool).get("output_size") if pool is not None else None
    size = (size, size) if isinstance(size, int) else tuple(size or ())
    if len(size) != 2 or size[0] != size[1] or not all(isinstance(s, int) and s > 0 for s in size):
        raise ConversionError(f"{path}: encoder.adaptive_pool must pool to a square grid, got output_size {size!r}")
    return int(size[0])


def _attention_activation(path: Path, decoder: Any) -> str:
    attention = children(decoder).get("attention")
    kinds = {ACTIVATION_MODULES[n] for n in (getattr(m, "pickled_name", "") for m in children(attention).values())
             if n in ACTIVATION_MODULES} if attention is not None else set()
    if len(kinds) != 1:
        raise ConversionError(f"{path}: cannot tell decoder.attention's nonlinearity (expected one ReLU or Tanh "
                              f"module among its children, found {sorted(kinds) or 'none'})")
    activation = kinds.pop()
    assert activation in ATTENTION_ACTIVATIONS
    return activation


def sgrvinod_checkpoint(checkpoint_path: str | Path, word_map: str | Path,
                        preprocessing: Preprocessing = PREPROCESSING, grid_size: int | None = None) -> Checkpoint:
    """The tutorial's model (its checkpoint file at `checkpoint_path`, its word map file at `word_map`) as our
    Show-Attend-Tell, exactly: sizes, depth, grid and attention nonlinearity read from the file
    (`grid_size` overrides the pickled pool's)."""
    checkpoint_path, word_map_path = Path(checkpoint_path), Path(word_map)
    data = read_checkpoint(checkpoint_path)
    enc = map_keys(checkpoint_path, module_state(data["encoder"]), ENCODER_KEYS)
    dec = map_keys(checkpoint_path, module_state(data["decoder"]), DECODER_KEYS)
    vocab_size, embed_size = require_shape(checkpoint_path, dec, "decoder.embed.weight", 2)
    hidden_size, _ = require_shape(checkpoint_path, dec, "decoder.init_h.weight", 2)
    _, attention_dim = require_shape(checkpoint_path, dec, "decoder.attention.full_att.weight", 2)
    vocab, order = read_word_map(word_map_path)
    if len(vocab) != vocab_size:
        raise ConversionError(f"{word_map_path}: {len(vocab)} words, but the decoder's 'embedding.weight' has "
                              f"{vocab_size} rows")
    dropout = vars(children(data["decoder"]).get("dropout") or object()).get("p", 0.5)
    config = ShowAttendTellConfig(
        vocab_size=vocab_size, embed_size=embed_size, hidden_size=hidden_size, attention_dim=attention_dim,
        backbone=backbone_of(checkpoint_path, enc), grid_size=grid_size or _grid_size(checkpoint_path, data["encoder"]),
        dropout=float(dropout), attention_activation=_attention_activation(checkpoint_path, data["decoder"]),
        preprocessing=preprocessing)
    metrics = {"source": "sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning",
               "converted_from": [checkpoint_path.name, word_map_path.name],
               **{k: data[k] for k in ("epoch", "bleu-4") if isinstance(data.get(k), (int, float))}}
    epoch = int(data["epoch"]) if isinstance(data.get("epoch"), int) else 0
    return build_checkpoint(checkpoint_path, config, vocab, order, {**enc, **dec}, metrics, epoch)


def convert_sgrvinod(checkpoint_path: str | Path, word_map: str | Path, out: str | Path,
                     preprocessing: Preprocessing = PREPROCESSING, grid_size: int | None = None) -> Path:
    """`captionlens convert sgrvinod`: write the tutorial's model (files `checkpoint_path`, `word_map`) as a
    captionlens checkpoint at `out`."""
    return write(sgrvinod_checkpoint(checkpoint_path, word_map, preprocessing, grid_size), Path(out))
