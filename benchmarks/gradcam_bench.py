"""Whole-caption Grad-CAM timings: ours (one replicated pass) against greedy captioning and three baselines.

Baselines, each producing every word's Grad-CAM for one image:
  - seed loop: the seed notebook's algorithm: one full forward with hooks on encoder.resnet[-2], then
    `score_t.backward(retain_graph=True)` per word through the whole network (parameter gradients
    included, as a trained model's parameters require them);
  - pytorch-grad-cam: `GradCAM` called once per word (a forward and a full backward each);
  - Captum: one `LayerGradCam.attribute` call on the input repeated T times with targets 0..T-1.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from captionlens.data.images import Preprocessing
from captionlens.data.vocabulary import Vocabulary
from captionlens.explain.context import ExplainContext
from captionlens.explain.maps import upsample
from captionlens.explain.registry import METHODS
from captionlens.explain.scoring import caption_tensor, scores_from_features
from captionlens.explain.target import TargetLayer
from captionlens.models import CNNLSTMModel, ShowAttendTellConfig, ShowAttendTellModel, ShowTellConfig, decode
from captionlens.models.base import CaptionModel

IMAGE_HW = (375, 500)  # a typical Flickr8k photo: maps are upsampled to it, as the product does


@dataclass(frozen=True)
class ModelSpec:
    label: str
    architecture: str       # "show-tell" or "show-attend-tell"
    backbone: str
    image_size: int
    vocab_size: int = 3000
    embed_size: int = 256
    hidden_size: int = 512


RESNET50 = (ModelSpec("ResNet-50 Show-and-Tell", "show-tell", "resnet50", 224),
            ModelSpec("ResNet-50 Show-Attend-Tell", "show-attend-tell", "resnet50", 224))
# The tiny model as trained on the synthetic shapes captions: 96 px, a vocabulary of tens of words.
TINY = (ModelSpec("tiny Show-and-Tell", "show-tell", "tiny", 96, vocab_size=50, embed_size=64, hidden_size=128),
        ModelSpec("tiny Show-Attend-Tell", "show-attend-tell", "tiny", 96, vocab_size=50, embed_size=64,
                  hidden_size=128))


@dataclass
class Setup:
    """A random-weight model, an image and a fixed caption, on one device."""

    spec: ModelSpec
    model: CaptionModel
    vocab: Vocabulary
    image: np.ndarray
    x: torch.Tensor
    ids: list[int]
    captions: torch.Tensor


def build_model(spec: ModelSpec, device: torch.device) -> CaptionModel:
    """Random weights (pretrained=False), eval mode; `model.vocab` set to a synthetic vocabulary."""
    vocab = Vocabulary(f"w{i}" for i in range(spec.vocab_size - 4))
    common = dict(vocab_size=len(vocab), embed_size=spec.embed_size, hidden_size=spec.hidden_size,
                  backbone=spec.backbone, preprocessing=Preprocessing(image_size=spec.image_size))
    model: CaptionModel = (CNNLSTMModel(ShowTellConfig(**common)) if spec.architecture == "show-tell"
                           else ShowAttendTellModel(ShowAttendTellConfig(**common)))
    model.vocab = vocab
    return model.to(device).eval()


def make_setup(spec: ModelSpec, device: torch.device, n_words: int = 12, seed: int = 0) -> Setup:
    torch.manual_seed(seed)
    model = build_model(spec, device)
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(*IMAGE_HW, 3), dtype=np.uint8)
    x = model.preprocessing.transform(Image.fromarray(image)).unsqueeze(0).to(device)
    ids = rng.integers(4, len(model.vocab), size=n_words).tolist()
    return Setup(spec, model, model.vocab, image, x, ids, caption_tensor(ids, model.vocab, device))


class WordScores(nn.Module):
    """Image tensor -> (B, T) teacher-forced log-probs of one fixed caption, for the reference libraries."""

    def __init__(self, model: CaptionModel, captions: torch.Tensor) -> None:
        super().__init__()
        self.model, self.captions = model, captions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scores_from_features(self.model, self.model.encode(x), self.captions)


def registered(s: Setup, name: str) -> np.ndarray:
    """The registered method `name` with its default settings on the given caption, the encoder's lower
    pass included, the maps drawn at the photo's resolution."""
    target = TargetLayer(s.model)
    with torch.no_grad():
        activations = target.lower(s.x)
    ctx = ExplainContext(s.model, s.vocab, s.image, s.x, s.captions, s.ids, target, activations)
    method = METHODS[name]
    return method.explain([ctx], method.settings().for_input(s.model.preprocessing.image_size))[0].maps


def ours(s: Setup) -> np.ndarray:
    """The registered 'gradcam' method on the given caption, the encoder's lower pass included."""
    return registered(s, "gradcam")


def greedy_caption(s: Setup) -> list:
    """Greedy captioning alone, as many steps as writing this caption and its <END> takes."""
    return decode(s.model, s.x, s.vocab, max_length=len(s.ids) + 1, beam_size=1)


def seed_loop(s: Setup) -> np.ndarray:
    """The seed notebook: one forward, then a backward per word through the whole network."""
    store: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        store["act"] = output
        output.register_hook(lambda grad: store.__setitem__("grad", grad))

    handle = s.model.encoder.resnet[-2].register_forward_hook(hook)
    try:
        scores = scores_from_features(s.model, s.model.encode(s.x), s.captions)
        cams = []
        for t in range(len(s.ids)):
            s.model.zero_grad()
            scores[0, t].backward(retain_graph=True)
            weights = store["grad"].mean((2, 3), keepdim=True)
            cams.append(F.relu((weights * store["act"]).sum(1))[0].detach())
    finally:
        handle.remove()
    return upsample(torch.stack(cams), IMAGE_HW)


def pytorch_grad_cam_per_word(s: Setup) -> list[np.ndarray]:
    with GradCAM(WordScores(s.model, s.captions), [s.model.encoder.resnet[-2]]) as cam:
        return [cam(s.x, [ClassifierOutputTarget(t)])[0] for t in range(len(s.ids))]


def captum_batched(s: Setup) -> np.ndarray:
    n = len(s.ids)
    attribution = LayerGradCam(WordScores(s.model, s.captions), s.model.encoder.resnet[-2]).attribute(
        s.x.expand(n, -1, -1, -1), target=list(range(n)), relu_attributions=True)
    return upsample(attribution[:, 0].detach(), IMAGE_HW)


BASELINES: dict[str, Callable[[Setup], object]] = {
    "greedy captioning": greedy_caption,
    "seed notebook loop": seed_loop,
    "pytorch-grad-cam per word": pytorch_grad_cam_per_word,
    "Captum batched": captum_batched,
}
# The targets, as (label, test of the ratio baseline ms / ours ms).
TARGETS = {"greedy captioning": ("ours <= 1.5x", lambda r: r >= 1 / 1.5),
           "seed notebook loop": (">= 10x faster", lambda r: r >= 10),
           "pytorch-grad-cam per word": (">= 10x faster", lambda r: r >= 10),
           "Captum batched": (">= 4x faster", lambda r: r >= 4)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall_ms(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device,
            warmup: int = 1) -> dict[str, list[float]]:
    """Wall times (ms) of each function, run round-robin so that a change in the machine's load hits all
    of them alike, each timed call right after `warmup` untimed calls of the same function: a method
    timed straight after another that freed gigabytes (the seed loop, pytorch-grad-cam) paid 30-40 ms
    of re-faulting memory on a ResNet-50, whichever method it was."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def gradcam_rows(specs: tuple[ModelSpec, ...], device: torch.device, repeats: int = 3,
                 n_words: int = 12) -> list[dict]:
    """One row per (model, method): median and best ms, median ms / ours' median ms, the issue target."""
    ours_label = "ours: Grad-CAM, all words"
    rows = []
    for spec in specs:
        s = make_setup(spec, device, n_words)
        fns = {ours_label: ours, **BASELINES}
        times = wall_ms({name: (lambda fn=fn, s=s: fn(s)) for name, fn in fns.items()}, repeats, device)
        base = statistics.median(times[ours_label])
        for name, values in times.items():
            ratio = statistics.median(values) / base
            label, check = TARGETS.get(name, ("", None))
            rows.append({"model": spec.label, "method": name, "median ms": round(statistics.median(values), 1),
                         "best ms": round(min(values), 1), "x ours": round(ratio, 2), "target": label,
                         "holds": "" if check is None else ("yes" if check(ratio) else "NO")})
    return rows


# The engine's methods (one pass, or one per step, for every word), timed against Grad-CAM's.
ENGINE_METHODS = ("gradcam", "gradcam++", "hirescam", "layercam", "xgradcam", "eigencam", "integrated-gradients",
                  "attention")


def method_rows(specs: tuple[ModelSpec, ...], device: torch.device, repeats: int = 3, n_words: int = 12
                ) -> list[dict]:
    """One row per (model, registered engine method): median and best ms, and median / Grad-CAM's median;
    the target a recommended method must meet is at most 3x Grad-CAM."""
    rows = []
    for spec in specs:
        s = make_setup(spec, device, n_words)
        names = [n for n in ENGINE_METHODS if s.model.has_attention or not METHODS[n].needs_attention]
        times = wall_ms({n: (lambda n=n, s=s: registered(s, n)) for n in names}, repeats, device)
        base = statistics.median(times["gradcam"])
        for name, values in times.items():
            ratio = statistics.median(values) / base
            rows.append({"model": spec.label, "method": name, "median ms": round(statistics.median(values), 1),
                         "best ms": round(min(values), 1), "x Grad-CAM": round(ratio, 2),
                         "<= 3x Grad-CAM": "yes" if ratio <= 3 else "NO"})
    return rows
