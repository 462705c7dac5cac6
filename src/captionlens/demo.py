"""`captionlens demo`: generate the shapes data, train the tiny captioner, evaluate it, caption held-out images.

Sized for two CPU cores: the attention model reaches test BLEU-4 >= 0.6 in well under three minutes
all told. Each step is timed and writes into its own place under `out_dir`; adding a step is adding
one `with steps.timed(...)` block to `run_demo`.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from captionlens.data.datasets import load_dataset
from captionlens.data.images import ImageLoadError
from captionlens.data.shapes import generate_shapes
from captionlens.evaluate.caption_metrics import evaluate_model
from captionlens.evaluate.explanations import evaluate_explanations
from captionlens.evaluate.result import EvaluationConfig
from captionlens.explain.registry import quick_settings, runnable_methods
from captionlens.explain.result import CaptionExplanation
from captionlens.explain.suspect import SuspectRule
from captionlens.export import EXPLANATION, ExportSummary, export_explanations
from captionlens.models.captioning import caption_files
from captionlens.models.checkpoints import load_checkpoint
from captionlens.models.decoding import Decoded
from captionlens.models.protocol import Captioner
from captionlens.reference import BINDING_SEED
from captionlens.training import TrainConfig, TrainResult, train
from captionlens.viz.figures import method_comparison, save_figure, word_grid

# (train, val, test) images; the full demo's are what the BLEU target was measured with.
DEMO_SIZES = {"full": (1500, 100, 200), "quick": (64, 8, 16)}
DEMO_EPOCHS = {"full": 5, "quick": 1}
N_CAPTIONED = 3
# The report step: (held-out images, longest caption), every method with its quick settings (`Method.quick_settings`)
REPORT_SIZES = {"full": (6, 20), "quick": (2, 5)}
BINDING_SIZES = {"full": 300, "quick": 16}   # scenes the suspect-word rule is chosen on
CAPTION_METRICS = "caption_metrics.json"
DOCS_DPI = 80


@dataclass
class DemoResult:
    out_dir: Path
    train: TrainResult
    test_metrics: dict[str, Any]
    captions: list[dict[str, str]]
    timings: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


class _Steps:
    """Times each step and tells the user when it starts."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.timings: dict[str, float] = {}

    @contextmanager
    def timed(self, name: str, message: str) -> Iterator[None]:
        self.echo(message)
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start


def demo_config(data: Path, out_dir: Path, architecture: str = "show-attend-tell", quick: bool = False
                ) -> TrainConfig:
    """The demo's training recipe (TrainConfig's defaults are this recipe too)."""
    return TrainConfig(data=data, format="shapes", architecture=architecture, out_dir=out_dir,
                       epochs=DEMO_EPOCHS["quick" if quick else "full"])


def run_demo(out_dir: str | os.PathLike, architecture: str = "show-attend-tell", quick: bool = False,
             echo: Callable[[str], None] = print, docs_dir: str | os.PathLike | None = None) -> DemoResult:
    """Run every step of the demo into `out_dir` (data/, train/, caption_metrics.json, captions.json,
    hallucination/ (scenes built to provoke binding errors and the suspect-word rule chosen on them), report/);
    with `docs_dir`, also write a word grid and a method comparison there as small PNGs (for the README)."""
    out = Path(out_dir)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    steps = _Steps(echo)
    n_train, n_val, n_test = DEMO_SIZES["quick" if quick else "full"]
    with steps.timed("data", f"generating {n_train}/{n_val}/{n_test} synthetic shape images ..."):
        data = generate_shapes(out / "data", n_train=n_train, n_val=n_val, n_test=n_test, image_size=96)
    with steps.timed("train", f"training the tiny {architecture} model ..."):
        trained = train(demo_config(data, out / "train", architecture, quick))
    test_records = load_dataset(data, "shapes").split("test").records
    best = load_checkpoint(trained.best_checkpoint)
    with steps.timed("evaluate", f"captioning the {len(test_records)} test images ..."):
        evaluation = {"checkpoint": str(trained.best_checkpoint), "split": "test",
                      **evaluate_model(best.model, test_records, best.vocab, metrics=("BLEU", "ROUGE-L", "CIDEr"))}
        _write_json(out / CAPTION_METRICS, evaluation)
    with steps.timed("caption", f"captioning {N_CAPTIONED} held-out images ..."):
        shown = test_records[:N_CAPTIONED]
        decoded = caption_files(best.model, [r.image_path for r in shown], best.vocab)
        captions = [{"image": str(r.image_path), "caption": _caption(d), "reference": r.captions[0]}
                    for r, d in zip(shown, decoded)]
        _write_json(out / "captions.json", captions)
    n_binding = BINDING_SIZES["quick" if quick else "full"]
    with steps.timed("suspect", f"choosing a suspect-word rule on {n_binding} scenes built to provoke binding "
                                f"errors ..."):
        rule = _suspect_rule(best.model, out / "hallucination", n_binding)
        echo(f"  suspect words: {rule.describe()}" if rule else "  too few unsupported words to choose a rule")
    n_report, max_length = REPORT_SIZES["quick" if quick else "full"]
    methods = runnable_methods(best.model)
    with steps.timed("report", f"explaining {n_report} held-out images with {', '.join(methods)} ..."):
        exported = export_explanations(best.model, [r.image_path for r in test_records[:n_report]], out / "report",
                                       methods, max_length=max_length, figures="none", progress=False,
                                       settings=quick_settings(methods, best.model.preprocessing.image_size),
                                       suspect_rule=rule)
        docs = _docs_figures(exported, Path(docs_dir)) if docs_dir else {}
    files = {"data": data, "checkpoint": trained.last_checkpoint, "best checkpoint": trained.best_checkpoint,
             "training log": trained.out_dir / "train_log.jsonl", "curves": trained.out_dir / "training_curves.png",
             "caption metrics": out / CAPTION_METRICS, "captions": out / "captions.json",
             "suspect rule": out / "hallucination" / "evaluation.json", **docs}
    if exported.index_html is not None:
        files["report"] = exported.index_html
    return DemoResult(out, trained, evaluation["metrics"], captions, steps.timings, files)


def _suspect_rule(model: Captioner, out: Path, images: int) -> SuspectRule | None:
    """The suspect-word rule the hallucination evaluation chooses for `model` on `images` binding scenes
    (statistics that need no map: the words' log-prob and image share), saved as out/evaluation.json."""
    scenes = generate_shapes(out / "data", n_train=0, n_val=0, n_test=images, image_size=96, seed=BINDING_SEED,
                             scenes="binding")
    config = EvaluationConfig(methods=(), limit=None, faithfulness_images=0, sanity_images=0)
    evaluation = evaluate_explanations(model, scenes, "shapes", config)
    evaluation.save(out / "evaluation.json")
    chosen = evaluation.hallucination.rule if evaluation.hallucination else None
    return chosen.rule if chosen else None


def _docs_figures(exported: ExportSummary, docs_dir: Path) -> dict[str, Path]:
    """Grad-CAM word grid and method comparison of the report's shortest caption, as 256-colour PNGs."""
    explanations = [CaptionExplanation.load(exported.out_dir / done.folder / EXPLANATION) for done in exported.done]
    explanations = [e for e in explanations if e.tokens]
    if not explanations:
        return {}
    expl = min(explanations, key=lambda e: len(e.tokens))
    figures = {"docs word grid": (word_grid(expl, "gradcam"), docs_dir / "demo-word-grid.png"),
               "docs comparison": (method_comparison(expl), docs_dir / "demo-method-comparison.png")}
    for fig, path in figures.values():
        save_figure(fig, path, dpi=DOCS_DPI)
        with Image.open(path) as image:
            small = image.convert("RGB").quantize(256)
        small.save(path, optimize=True)
    return {name: path for name, (_, path) in figures.items()}


def _caption(decoded: Decoded | ImageLoadError) -> str:
    if isinstance(decoded, ImageLoadError):
        raise decoded
    return decoded.caption


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
