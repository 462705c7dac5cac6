"""Independent re-implementations of the two most-used PyTorch captioning tutorials, written from their
documented formats (no captionlens code is used here): their models, the files their training scripts
write, their inference-time preprocessing, a greedy decoder and a backward-per-word Grad-CAM over them.

The importer tests convert these files with captionlens and compare everything captionlens reports
against what these reference models compute.

1. yunjey/pytorch-tutorial `tutorials/03-advanced/image_captioning`: `encoder-E-S.ckpt` and
   `decoder-E-S.ckpt` are `torch.save(model.state_dict())`; `vocab.pkl` is `pickle.dump` of a
   `__main__.Vocabulary` (build_vocab.py ran as a script).
2. sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning: `BEST_checkpoint_<name>.pth.tar` is `torch.save` of a
   dict holding the whole pickled `models.Encoder` / `models.DecoderWithAttention` and the optimizers;
   `WORDMAP_<name>.json` maps word -> index with <pad> = 0, the words, then <unk>, <start>, <end>.

Models trained wrapped in `nn.DataParallel` (`data_parallel`), as some forks do, are saved differently:
yunjey's state dicts carry its `module.` key prefix, sgrvinod's checkpoint pickles the wrapper around each module.
"""
from __future__ import annotations

import contextlib
import copy
import json
import pickle
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

MEAN = (0.485, 0.456, 0.406)  # the tutorials' transforms.Normalize arguments
STD = (0.229, 0.224, 0.225)
LAYER4 = 7  # index of layer4 in a ResNet's children: conv1 bn1 relu maxpool layer1..layer4 (avgpool fc)


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers


def prepare(image: Image.Image, size: int, resample: int) -> torch.Tensor:
    """An inference script's input: PIL resize to size x size, to [0, 1], ImageNet normalisation -> (1, 3, S, S)."""
    array = np.asarray(image.convert("RGB").resize((size, size), resample), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return ((tensor - mean) / std).unsqueeze(0)


def noise_images(count: int, seed: int = 0, hw: tuple[int, int] = (72, 80)) -> list[Image.Image]:
    """Random RGB images of different colour, blockiness and noise (non-square, so the resize matters)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        block = int(rng.integers(4, 24))
        coarse = rng.uniform(0, 255, (hw[0] // block + 1, hw[1] // block + 1, 3))
        smooth = coarse.repeat(block, 0).repeat(block, 1)[:hw[0], :hw[1]]
        noise = rng.normal(0, rng.uniform(0, 80), (*hw, 3))
        tint = rng.uniform(-100, 100, 3)
        images.append(Image.fromarray(np.clip(smooth + noise + tint, 0, 255).astype(np.uint8)))
    return images


def calibrate_batchnorm(module: nn.Module, images: torch.Tensor) -> None:
    """Running statistics of every BatchNorm from one batch (a random trunk's activations would otherwise
    grow by orders of magnitude with depth), then eval mode; the momenta are put back as they were.

    Each residual branch's last BatchNorm is scaled by 1/sqrt(blocks) first, so that the residual stream
    of a deep trunk stays near unit scale, as a trained one's does: otherwise ResNet-101's features are
    so large that the attention is nearly one-hot and float32 rounding alone changes a Grad-CAM by 30%."""
    blocks = [m for m in module.modules() if isinstance(m, (torchvision.models.resnet.BasicBlock,
                                                            torchvision.models.resnet.Bottleneck))]
    with torch.no_grad():
        for block in blocks:
            last = block.bn3 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.bn2
            last.weight.fill_(len(blocks) ** -0.5)
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    module.train()
    with torch.no_grad():
        module(images)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    module.eval()


def calibration_batch(size: int, resample: int, seed: int) -> torch.Tensor:
    """Eight prepared images like (but not among) the ones the tests caption."""
    return torch.cat([prepare(image, size, resample) for image in noise_images(8, seed=1000 + seed)])


def scale_parameters(module: nn.Module, factor: float) -> None:
    """Sharpen a random decoder so that its next-word distributions are peaked and depend on the image."""
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(factor)


def _resnet(depth: int) -> nn.Module:
    return getattr(torchvision.models, f"resnet{depth}")()


@dataclass
class Greedy:
    """A reference caption: the tutorial's word ids and words (without <start>/<end>), each word's
    log-probability (log-softmax over the whole vocabulary) and, for attention, each word's alphas (N,)."""

    ids: list[int]
    words: list[str]
    log_probs: list[float]
    ended: bool
    end_log_prob: float | None
    alphas: list[torch.Tensor]


def _pick(log_probs: torch.Tensor, banned: Sequence[int]) -> int:
    """The most likely next token, never <start> or <pad> (captionlens' decoding convention)."""
    masked = log_probs.clone()
    masked[list(banned)] = float("-inf")
    return int(masked.argmax())


def reference_gradcam(layer: nn.Module, word_scores: Callable[[], list[torch.Tensor]]) -> list[np.ndarray]:
    """Grad-CAM (T_i, h, w) of every word of every image at `layer`'s output A: one backward per word of
    that word's score (`word_scores()` runs the whole model on a batch and returns each image's (T_i,)
    teacher-forced log-probs); weights = spatial mean of the gradient, cam = relu(sum_k w_k A_k).

    Run it (and `greedy`) on the same batch as the captionlens call it is compared with: float32
    convolutions round differently for another batch size, and a deep trunk and a recurrent decoder
    amplify that beyond the tolerances the tests use."""
    captured: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, output: captured.__setitem__("A", output))
    try:
        with torch.enable_grad():
            scores = word_scores()
    finally:
        handle.remove()
    activations = captured["A"]
    results = []
    for i, image_scores in enumerate(scores):
        cams = []
        for t in range(image_scores.numel()):
            (grad,) = torch.autograd.grad(image_scores[t], activations, retain_graph=True)
            weights = grad[i].mean(dim=(1, 2), keepdim=True)
            cams.append(torch.relu((weights * activations[i]).sum(dim=0)))
        empty = np.zeros((0, *activations.shape[2:]), np.float32)
        results.append(torch.stack(cams).detach().numpy() if cams else empty)
    return results


@contextlib.contextmanager
def global_name(module: str, name: str, obj: object) -> Iterator[None]:
    """`obj` reachable as the global `module.name` (an attribute of an already imported `module`), so that
    pickle writes, and a plain unpickling reads, exactly that name; only inside the block."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys.modules[module], name, obj, raising=False)
        yield


def data_parallel(module: nn.Module) -> nn.DataParallel:
    """`nn.DataParallel` around a copy of `module` (on a one-GPU machine its __init__ moves the module onto the
    GPU), holding wherever this runs what that __init__ sets on a CUDA machine: dim, device ids, output device
    and the source `torch.device`, which a whole pickled wrapper carries."""
    wrapped = nn.DataParallel(copy.deepcopy(module))
    if not wrapped.device_ids:  # no GPU here: __init__ kept only the module
        wrapped.dim, wrapped.device_ids, wrapped.output_device = 0, [0], 0
        wrapped.src_device_obj = torch.device("cuda", 0)
    return wrapped


# ---------------------------------------------------------------------------------------------------------------
# 1. yunjey/pytorch-tutorial image_captioning


class YunjeyEncoderCNN(nn.Module):
    """model.py's EncoderCNN: a ResNet less its fc, then linear and BatchNorm1d (momentum 0.01)."""

    def __init__(self, embed_size: int, depth: int = 152) -> None:
        super().__init__()
        resnet = _resnet(depth)
        self.resnet = nn.Sequential(*list(resnet.children())[:-1])
        self.linear = nn.Linear(resnet.fc.in_features, embed_size)
        self.bn = nn.BatchNorm1d(embed_size, momentum=0.01)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.resnet(images)
        features = features.reshape(features.size(0), -1)
        return self.bn(self.linear(features))


class YunjeyDecoderRNN(nn.Module):
    """model.py's DecoderRNN: the image feature is the LSTM's first input, then the words' embeddings."""

    def __init__(self, embed_size: int, hidden_size: int, vocab_size: int, num_layers: int = 1) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.lstm = nn.LSTM(embed_size, hidden_size, num_layers, batch_first=True)
        self.linear = nn.Linear(hidden_size, vocab_size)


class YunjeyVocabulary:
    """build_vocab.py's Vocabulary, pickled under the name build_vocab.py gives it when run as a script."""

    __module__ = "__main__"
    __qualname__ = "Vocabulary"

    def __init__(self) -> None:
        self.word2idx: dict[str, int] = {}
        self.idx2word: dict[int, str] = {}
        self.idx = 0

    def add_word(self, word: str) -> None:
        if word not in self.word2idx:
            self.word2idx[word] = self.idx
            self.idx2word[self.idx] = word
            self.idx += 1

    def __call__(self, word: str) -> int:
        return self.word2idx.get(word, self.word2idx["<unk>"])

    def __len__(self) -> int:
        return len(self.word2idx)


def yunjey_vocabulary(words: Sequence[str]) -> YunjeyVocabulary:
    vocab = YunjeyVocabulary()
    for word in ("<pad>", "<start>", "<end>", "<unk>", *words):
        vocab.add_word(word)
    return vocab


@dataclass
class Yunjey:
    encoder: YunjeyEncoderCNN
    decoder: YunjeyDecoderRNN
    vocab: YunjeyVocabulary
    encoder_path: Path
    decoder_path: Path
    vocab_path: Path

    size: int = 64

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """sample.py: `image.resize([S, S], Image.LANCZOS)`, ToTensor, Normalize."""
        return prepare(image, self.size, Image.LANCZOS)

    def greedy(self, images: torch.Tensor, max_length: int) -> list[Greedy]:
        v = self.vocab.word2idx
        results = []
        with torch.no_grad():
            features = self.encoder(images)
            for feature in features:
                _, states = self.decoder.lstm(feature.view(1, 1, -1))  # the feature step (it predicts <start>)
                token, ids, log_probs, end = v["<start>"], [], [], None
                for _ in range(max_length):
                    out, states = self.decoder.lstm(self.decoder.embed(torch.tensor([[token]])), states)
                    logp = self.decoder.linear(out[0, 0]).log_softmax(-1)
                    token = _pick(logp, (v["<start>"], v["<pad>"]))
                    if token == v["<end>"]:
                        end = float(logp[token])
                        break
                    ids.append(token)
                    log_probs.append(float(logp[token]))
                words = [self.vocab.idx2word[i] for i in ids]
                results.append(Greedy(ids, words, log_probs, end is not None, end, []))
        return results

    def word_scores(self, images: torch.Tensor, captions: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Teacher-forced (T_i,) log-probs of each image's caption (tutorial ids): LSTM inputs
        [feature, <start>, w1 .. w_{T-1}], the output after <start> predicting w1."""
        scores = []
        for feature, ids in zip(self.encoder(images), captions, strict=True):
            tokens = torch.tensor([[self.vocab.word2idx["<start>"], *ids[:-1]]])
            out, _ = self.decoder.lstm(torch.cat([feature.view(1, 1, -1), self.decoder.embed(tokens)], dim=1))
            log_probs = self.decoder.linear(out[0, 1:]).log_softmax(-1)
            scores.append(log_probs[torch.arange(len(ids)), torch.tensor(ids, dtype=torch.long)])
        return scores

    def gradcam(self, images: torch.Tensor, captions: Sequence[Sequence[int]]) -> list[np.ndarray]:
        return reference_gradcam(self.encoder.resnet[LAYER4], lambda: self.word_scores(images, captions))


def make_yunjey(folder: Path, words: Sequence[str], depth: int = 152, embed_size: int = 16, hidden_size: int = 32,
                num_layers: int = 1, seed: int = 0, size: int = 64, sharpen: float = 3.0,
                feature_scale: float = 3.0) -> Yunjey:
    """A seeded random yunjey model, calibrated on random images, saved as train.py and build_vocab.py
    save it."""
    torch.manual_seed(seed)
    vocab = yunjey_vocabulary(words)
    encoder = YunjeyEncoderCNN(embed_size, depth)
    decoder = YunjeyDecoderRNN(embed_size, hidden_size, len(vocab), num_layers)
    calibrate_batchnorm(encoder, calibration_batch(size, Image.LANCZOS, seed))
    scale_parameters(decoder, sharpen)
    with torch.no_grad():
        encoder.bn.weight.mul_(feature_scale)  # features spread wider: the caption depends on the image
    decoder.eval()
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "encoder-5-3000.ckpt", folder / "decoder-5-3000.ckpt", folder / "vocab.pkl"
    torch.save(encoder.state_dict(), paths[0])
    torch.save(decoder.state_dict(), paths[1])
    write_yunjey_vocab(paths[2], vocab)
    return Yunjey(encoder, decoder, vocab, *paths, size=size)


def save_yunjey_data_parallel(folder: Path, ref: Yunjey) -> tuple[Path, Path]:
    """`ref`'s encoder and decoder state dicts as train.py saves them when the models are wrapped in
    `nn.DataParallel` (torch prefixes every key with `module.`)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "encoder-5-3000.ckpt", folder / "decoder-5-3000.ckpt"
    for module, path in zip((ref.encoder, ref.decoder), paths, strict=True):
        torch.save(data_parallel(module).state_dict(), path)
    return paths


def write_yunjey_vocab(path: Path, vocab: YunjeyVocabulary) -> Path:
    with global_name("__main__", "Vocabulary", YunjeyVocabulary), open(path, "wb") as fh:
        pickle.dump(vocab, fh)
    return path


def load_yunjey_vocab_unsafely(path: Path) -> object:
    """The oracle: a plain `pickle.load`, as the tutorial's sample.py reads vocab.pkl."""
    with global_name("__main__", "Vocabulary", YunjeyVocabulary), open(path, "rb") as fh:
        return pickle.load(fh)


# ---------------------------------------------------------------------------------------------------------------
# 2. sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning (the classes as its models.py names them)


class Encoder(nn.Module):
    """models.py's Encoder: a ResNet less avgpool and fc, adaptive-pooled to enc_image_size, channels last."""

    __module__ = "models"

    def __init__(self, encoded_image_size: int = 14, depth: int = 101) -> None:
        super().__init__()
        self.enc_image_size = encoded_image_size
        resnet = _resnet(depth)
        self.resnet = nn.Sequential(*list(resnet.children())[:-2])
        self.adaptive_pool = nn.AdaptiveAvgPool2d((encoded_image_size, encoded_image_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.adaptive_pool(self.resnet(images)).permute(0, 2, 3, 1)


class Attention(nn.Module):
    """alpha = softmax(full_att(relu(encoder_att(f) + decoder_att(h)))), context = sum_i alpha_i f_i."""

    __module__ = "models"

    def __init__(self, encoder_dim: int, decoder_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.encoder_att = nn.Linear(encoder_dim, attention_dim)
        self.decoder_att = nn.Linear(decoder_dim, attention_dim)
        self.full_att = nn.Linear(attention_dim, 1)
        self.relu = nn.ReLU()
        self.softmax = nn.Softmax(dim=1)

    def forward(self, encoder_out: torch.Tensor, decoder_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        att = self.full_att(self.relu(self.encoder_att(encoder_out) + self.decoder_att(decoder_hidden).unsqueeze(1)))
        alpha = self.softmax(att.squeeze(2))
        return (encoder_out * alpha.unsqueeze(2)).sum(dim=1), alpha


class DecoderWithAttention(nn.Module):
    """models.py's decoder: LSTMCell on [embedding, sigmoid(f_beta(h)) * context], fc after dropout."""

    __module__ = "models"

    def __init__(self, attention_dim: int, embed_dim: int, decoder_dim: int, vocab_size: int,
                 encoder_dim: int = 2048, dropout: float = 0.5) -> None:
        super().__init__()
        self.encoder_dim, self.attention_dim, self.embed_dim = encoder_dim, attention_dim, embed_dim
        self.decoder_dim, self.vocab_size, self.dropout = decoder_dim, vocab_size, dropout
        self.attention = Attention(encoder_dim, decoder_dim, attention_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(p=self.dropout)
        self.decode_step = nn.LSTMCell(embed_dim + encoder_dim, decoder_dim, bias=True)
        self.init_h = nn.Linear(encoder_dim, decoder_dim)
        self.init_c = nn.Linear(encoder_dim, decoder_dim)
        self.f_beta = nn.Linear(decoder_dim, encoder_dim)
        self.sigmoid = nn.Sigmoid()
        self.fc = nn.Linear(decoder_dim, vocab_size)

    def init_hidden_state(self, encoder_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = encoder_out.mean(dim=1)
        return self.init_h(mean), self.init_c(mean)

    def step(self, encoder_out: torch.Tensor, token: torch.Tensor, h: torch.Tensor,
             c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, h, c, alpha) of one step, `encoder_out` (B, N, encoder_dim)."""
        context, alpha = self.attention(encoder_out, h)
        gate = self.sigmoid(self.f_beta(h))
        h, c = self.decode_step(torch.cat([self.embedding(token), gate * context], dim=1), (h, c))
        return self.fc(self.dropout(h)), h, c, alpha


SHARPENED = ("embedding", "decode_step", "fc", "f_beta")  # not those reading the 2048-d encoding: they'd saturate
MODELS = types.ModuleType("models")  # the tutorial's models.py, as its pickles name it
MODELS.Encoder, MODELS.Attention, MODELS.DecoderWithAttention = Encoder, Attention, DecoderWithAttention
DATA_NAME = "flickr8k_5_cap_per_img_5_min_word_freq"


@contextlib.contextmanager
def sgrvinod_globals() -> Iterator[None]:
    """`models.Encoder` etc. importable, as when train.py or caption.py runs next to models.py."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "models", MODELS)
        yield


def sgrvinod_word_map(words: Sequence[str]) -> dict[str, int]:
    """create_input_files: {k: v + 1 for the words}, then <unk>, <start>, <end>, and <pad> = 0."""
    word_map = {w: i + 1 for i, w in enumerate(words)}
    for special in ("<unk>", "<start>", "<end>"):
        word_map[special] = len(word_map) + 1
    word_map["<pad>"] = 0
    return word_map


@dataclass
class Sgrvinod:
    encoder: Encoder
    decoder: DecoderWithAttention
    word_map: dict[str, int]
    checkpoint_path: Path
    word_map_path: Path
    saved: dict  # what train.py's save_checkpoint saved at checkpoint_path

    size: int = 64

    @property
    def rev_word_map(self) -> dict[int, str]:
        return {i: w for w, i in self.word_map.items()}

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """caption.py: resize to S x S (bilinear), to [0, 1], Normalize."""
        return prepare(image, self.size, Image.BILINEAR)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        out = self.encoder(images)
        return out.reshape(out.size(0), -1, out.size(3))  # (B, N, encoder_dim), pixels row-major

    def greedy(self, images: torch.Tensor, max_length: int) -> list[Greedy]:
        w = self.word_map
        rev = self.rev_word_map
        results = []
        with torch.no_grad():
            for encoder_out in self.encode(images):
                encoder_out = encoder_out.unsqueeze(0)
                h, c = self.decoder.init_hidden_state(encoder_out)
                token, ids, log_probs, alphas, end = w["<start>"], [], [], [], None
                for _ in range(max_length):
                    logits, h, c, alpha = self.decoder.step(encoder_out, torch.tensor([token]), h, c)
                    logp = logits[0].log_softmax(-1)
                    token = _pick(logp, (w["<start>"], w["<pad>"]))
                    if token == w["<end>"]:
                        end = float(logp[token])
                        break
                    ids.append(token)
                    log_probs.append(float(logp[token]))
                    alphas.append(alpha[0].clone())
                results.append(Greedy(ids, [rev[i] for i in ids], log_probs, end is not None, end, alphas))
        return results

    def word_scores(self, images: torch.Tensor, captions: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Teacher-forced (T_i,) log-probs of each image's caption (tutorial ids), first input <start>."""
        scores = []
        for encoder_out, ids in zip(self.encode(images), captions, strict=True):
            encoder_out = encoder_out.unsqueeze(0)
            h, c = self.decoder.init_hidden_state(encoder_out)
            image_scores = []
            for previous, word in zip([self.word_map["<start>"], *ids[:-1]], ids):
                logits, h, c, _ = self.decoder.step(encoder_out, torch.tensor([previous]), h, c)
                image_scores.append(logits[0].log_softmax(-1)[word])
            scores.append(torch.stack(image_scores) if image_scores else torch.zeros(0))
        return scores

    def gradcam(self, images: torch.Tensor, captions: Sequence[Sequence[int]]) -> list[np.ndarray]:
        return reference_gradcam(self.encoder.resnet[LAYER4], lambda: self.word_scores(images, captions))


def make_sgrvinod(folder: Path, words: Sequence[str], depth: int = 101, embed_dim: int = 16, decoder_dim: int = 32,
                  attention_dim: int = 16, grid: int = 14, seed: int = 0, size: int = 64, sharpen: float = 3.0,
                  legacy: bool = False, encoder_dim: int | None = None) -> Sgrvinod:
    """A seeded random sgrvinod model, calibrated on random images, saved as train.py's save_checkpoint
    saves the best epoch (with a decoder optimizer that has taken a step, so it has state). `encoder_dim`
    builds a decoder for another trunk's width than the encoder's."""
    torch.manual_seed(seed)
    word_map = sgrvinod_word_map(words)
    encoder = Encoder(grid, depth)
    channels = encoder.resnet[LAYER4][-1].conv1.in_channels if encoder_dim is None else encoder_dim
    decoder = DecoderWithAttention(attention_dim, embed_dim, decoder_dim, len(word_map), channels)
    calibrate_batchnorm(encoder, calibration_batch(size, Image.BILINEAR, seed))
    for name in SHARPENED:
        scale_parameters(getattr(decoder, name), sharpen)
    decoder.eval()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=4e-4)
    for p in decoder.parameters():
        p.grad = torch.zeros_like(p)  # a step with zero gradients: state filled, weights unchanged
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    assert optimizer.state  # exp_avg, exp_avg_sq and step of every parameter
    state = {"epoch": 7, "epochs_since_improvement": 0, "bleu-4": 0.2345, "encoder": encoder, "decoder": decoder,
             "encoder_optimizer": None, "decoder_optimizer": optimizer}
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint_path = folder / f"BEST_checkpoint_{DATA_NAME}.pth.tar"
    word_map_path = folder / f"WORDMAP_{DATA_NAME}.json"
    save_sgrvinod(checkpoint_path, state, legacy)
    word_map_path.write_text(json.dumps(word_map))
    return Sgrvinod(encoder, decoder, word_map, checkpoint_path, word_map_path, state, size=size)


def save_sgrvinod(path: Path, state: dict, legacy: bool = False) -> Path:
    with sgrvinod_globals():
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def load_sgrvinod_unsafely(path: Path) -> dict:
    """The oracle: what caption.py does, `torch.load` with whole pickled modules (weights_only=False)."""
    with sgrvinod_globals():
        return torch.load(path, map_location="cpu", weights_only=False)
