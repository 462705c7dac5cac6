"""LIME on every word of a caption: ours vs Captum's `Lime` vs the `lime` package, same N and superpixels.

- ours: all T words from the same N perturbed images (one teacher-forced pass scores every word);
- Captum `Lime`: one target per call, so T calls of N images (same superpixel feature mask, N, fill,
  alpha=1 ridge and lime's kernel);
- lime package at its best: one `explain_instance`, a classifier returning one column per word,
  `labels=range(T)`, its default batch_size 10, the same SLIC superpixels via `segmentation_fn` (computed
  inside the call, as ours computes them inside its own: both pay for the segmentation).

Rows give seconds, images scored by the model ("forward passes") and, for ours, the share of its time
outside the model's forward passes (encoder + teacher-forced decoder). Standalone:
`python benchmarks/lime_bench.py [--quick] [--device cpu|cuda] [--repeats N]`; bench_explain.py
runs `lime_section` as one of its sections.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # the lime package draws a progress bar over its samples otherwise

import numpy as np
import torch
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr import Lime
from lime.lime_image import LimeImageExplainer
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from captionlens.data.vocabulary import Vocabulary  # noqa: E402
from captionlens.explain.context import ExplainContext  # noqa: E402
from captionlens.explain.lime import (  # noqa: E402
    LimeSettings,
    cosine_distance_to_ones,
    fill_tensor,
    lime,
    lime_kernel,
    resize_labels,
    segment,
)
from captionlens.explain.scoring import auto_batch_size, batched_word_scores, caption_tensor  # noqa: E402
from captionlens.explain.target import TargetLayer  # noqa: E402
from captionlens.models.base import CaptionModel  # noqa: E402
from gradcam_bench import RESNET50, TINY, make_setup, synchronize  # noqa: E402
from tables import markdown  # noqa: E402

SAMPLES = {"tiny": 200, "quick": 50, "resnet50": 24}   # small N for ResNet-50: Captum needs T * N passes
OUTSIDE_FORWARD_TARGET = 0.15


class ForwardMeter:
    """Counts the images a model encodes and the seconds spent in its forward passes (encoder,
    teacher-forced decoder and output layer), by shadowing those methods on the instance while `active`."""

    def __init__(self, model: CaptionModel) -> None:
        self.model, self.images, self.seconds = model, 0, 0.0
        self.device = next(model.parameters()).device

    @contextlib.contextmanager
    def active(self) -> Iterator[ForwardMeter]:
        model = self.model
        encode, decode, project = model.encode, model.teacher_forced_hidden, model.output_logits

        def counted_encode(images: torch.Tensor) -> torch.Tensor:
            self.images += len(images)
            return self._timed(encode, images)

        model.encode = counted_encode
        model.teacher_forced_hidden = lambda *args: self._timed(decode, *args)
        model.output_logits = lambda *args: self._timed(project, *args)
        try:
            yield self
        finally:
            del model.encode, model.teacher_forced_hidden, model.output_logits

    def _timed(self, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            synchronize(self.device)
            self.seconds += time.perf_counter() - start


def _median_run(model: CaptionModel, fn: Callable[[], Any], repeats: int) -> tuple[float, ForwardMeter, Any]:
    """(median seconds, meter of the median run, its result) over `repeats` runs of `fn`."""
    runs = []
    for _ in range(repeats):
        meter = ForwardMeter(model)
        with meter.active():
            start = time.perf_counter()
            result = fn()
            synchronize(meter.device)
            runs.append((time.perf_counter() - start, meter, result))
    return sorted(runs, key=lambda run: run[0])[(len(runs) - 1) // 2]


def run_lime_rows(model: CaptionModel, image: np.ndarray, caption_ids: Sequence[int], vocab: Vocabulary,
                  num_samples: int = 200, n_segments: int = 50, batch_size: int | None = None, seed: int = 0,
                  repeats: int = 1) -> list[dict[str, Any]]:
    """Three rows (ours, Captum Lime per word, lime package all labels) at the same N and superpixels.

    Keys: method, s (median seconds of `repeats` runs; Captum, with T times the passes, runs once),
    forward passes (images scored), outside forward (ours: share of its time outside forward passes),
    target, holds. One untimed warm-up batch runs first. `batch_size` (default: ours' `auto_batch_size`)
    is ours' and Captum's images per forward pass; the lime package keeps its own default, 10.
    """
    model.eval()
    device = next(model.parameters()).device
    size = model.preprocessing.image_size
    transform = model.preprocessing.transform
    x = transform(Image.fromarray(image))[None].to(device)
    captions = caption_tensor(caption_ids, vocab, device)
    batch_size = auto_batch_size(x) if batch_size is None else batch_size
    target = TargetLayer(model)
    with torch.no_grad():
        ctx = ExplainContext(model, vocab, image, x, captions, list(caption_ids), target, target.lower(x))
    batched_word_scores(model, x.expand(batch_size, -1, -1, -1), captions)
    num_words = len(caption_ids)

    settings = LimeSettings(num_samples=num_samples, n_segments=n_segments, batch_size=batch_size, seed=seed)
    seconds, meter, ours = _median_run(model, lambda: lime([ctx], settings)[0], repeats)
    segments = ours.drawing.segments
    outside = 1 - meter.seconds / seconds
    rows = [{"method": f"ours: LIME, all {num_words} words, N={num_samples}, {segments.max() + 1} superpixels",
             "s": round(seconds, 2), "forward passes": meter.images, "outside forward": f"{outside:.1%}",
             "target": f"<= {OUTSIDE_FORWARD_TARGET:.0%} outside forward",
             "holds": "yes" if outside <= OUTSIDE_FORWARD_TARGET else "NO"}]

    def lime_similarity(original: torch.Tensor, perturbed: torch.Tensor, interpretable: torch.Tensor,
                        **kwargs: Any) -> float:
        return float(lime_kernel(cosine_distance_to_ones(interpretable.cpu().numpy().reshape(1, -1)))[0])

    feature_mask = torch.as_tensor(resize_labels(segments, (size, size)), device=device)[None, None]
    captum_lime = Lime(lambda images: batched_word_scores(model, images, captions, batch_size=batch_size),
                       interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=lime_similarity)
    background = fill_tensor(ctx, "mean").expand_as(x)

    def captum_per_word() -> None:
        for t in range(num_words):
            captum_lime.attribute(x, baselines=background, target=t, feature_mask=feature_mask,
                                  n_samples=num_samples, perturbations_per_eval=batch_size)

    captum_seconds, captum_meter, _ = _median_run(model, captum_per_word, 1)
    rows.append({"method": "Captum Lime, one word per call", "s": round(captum_seconds, 2),
                 "forward passes": captum_meter.images, "outside forward": "", "target": "T x ours' passes",
                 "holds": "yes" if captum_meter.images == num_words * meter.images else "NO"})

    def classifier_fn(images: np.ndarray) -> np.ndarray:
        batch = torch.stack([transform(Image.fromarray(img)) for img in images]).to(device)
        return batched_word_scores(model, batch, captions, batch_size=len(batch)).cpu().numpy()

    mean_colour = tuple(int(round(c)) for c in image.reshape(-1, 3).mean(0))
    explainer = LimeImageExplainer(random_state=seed)
    lime_seconds, lime_meter, _ = _median_run(model, lambda: explainer.explain_instance(
        image, classifier_fn, labels=range(num_words), top_labels=None, hide_color=mean_colour,
        num_samples=num_samples, segmentation_fn=lambda img: segment(img, n_segments=n_segments)), repeats)
    rows.append({"method": "lime package, all labels in one call", "s": round(lime_seconds, 2),
                 "forward passes": lime_meter.images, "outside forward": "", "target": "slower than ours",
                 "holds": "yes" if lime_seconds > seconds else "NO"})
    return rows


def lime_section(args: argparse.Namespace) -> list[dict[str, Any]]:
    """bench_explain.py section: the three LIME rows for a random-weight ResNet-50 (224 px) and the tiny
    model (96 px) Show-and-Tell, on the shared 375x500 image and 12-word caption (`--quick`: tiny only)."""
    device = torch.device(args.device)
    specs = ((TINY[0], SAMPLES["quick"]),) if args.quick else (
        (RESNET50[0], SAMPLES["resnet50"]), (TINY[0], SAMPLES["tiny"]))
    rows = []
    for spec, num_samples in specs:
        s = make_setup(spec, device)
        rows += [{"model": spec.label, **row}
                 for row in run_lime_rows(s.model, s.image, s.ids, s.vocab, num_samples, repeats=args.repeats)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only, N=50")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of ours and the lime package")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(markdown(lime_section(args)))


if __name__ == "__main__":
    main()
