"""GPU check: training throughput with AMP, batched beam search, and eval-mode backward through both
decoders on CUDA (plus whether plain nn.LSTM's cuDNN eval-mode backward still fails). Prints one
Markdown table: check | result | number. Exit status 1 when a check failed.

    PYTHONPATH=src python3 benchmarks/gpu_check.py                # on the GPU machine (benchmarks/gpu_check.sh)
    PYTHONPATH=src python3 benchmarks/gpu_check.py --device cpu --steps 3 --backbone tiny --image-size 64 \
        --hidden-size 32 --batch-size 4 --beam-batch 4 --train-images 8 --workers 0   # smoke run on a CPU

To add a row, write `def check_x(ctx: Context) -> tuple[str, str]` (result, number) and append
("name", check_x) to CHECKS; an exception in a check makes its row FAIL with the exception's message.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from captionlens.data.datasets import CaptionTrainingSet, load_dataset
from captionlens.data.images import Preprocessing
from captionlens.data.shapes import generate_shapes
from captionlens.data.vocabulary import Vocabulary
from captionlens.explain.api import explain_batch
from captionlens.models import CNNLSTMModel, ShowAttendTellConfig, ShowAttendTellModel, ShowTellConfig, decode
from captionlens.models.base import CaptionModel
from captionlens.training import ImageCaptions, TrainConfig, collate_images, make_scheduler, train_epoch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cams import batch_cams  # noqa: E402  (benchmarks/)


@dataclass
class Context:
    args: argparse.Namespace
    device: torch.device
    data: Path
    vocab: Vocabulary

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def model(self, kind: type[CaptionModel]) -> CaptionModel:
        torch.manual_seed(0)
        half = self.args.hidden_size // 2
        common = {"vocab_size": len(self.vocab), "embed_size": half, "hidden_size": self.args.hidden_size,
                  "backbone": self.args.backbone, "preprocessing": Preprocessing(image_size=self.args.image_size)}
        if kind is ShowAttendTellModel:
            return ShowAttendTellModel(ShowAttendTellConfig(**common, attention_dim=half)).to(self.device)
        return CNNLSTMModel(ShowTellConfig(**common)).to(self.device)

    def images(self, n: int) -> torch.Tensor:
        return torch.randn(n, 3, self.args.image_size, self.args.image_size, device=self.device)


def check_training(ctx: Context) -> tuple[str, str]:
    """`--steps` optimizer steps of Show-Attend-Tell through training.train_epoch (AMP on CUDA), timed
    after 3 warm-up steps; images/s counts images, each with its 5 captions."""
    args, amp = ctx.args, ctx.device.type == "cuda"
    model = ctx.model(ShowAttendTellModel)
    pairs = CaptionTrainingSet(load_dataset(ctx.data, "shapes").split("train"), ctx.vocab, model.preprocessing,
                               preload=True)
    loader = DataLoader(ImageCaptions(pairs), batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=args.workers, pin_memory=amp,
                        collate_fn=functools.partial(collate_images, pad_idx=ctx.vocab.pad_idx))
    if not len(loader):
        raise ValueError(f"--train-images {len(pairs.image_paths)} is less than one batch of {args.batch_size}")
    config = TrainConfig(data=ctx.data, epochs=1, progress=False, warmup_steps=3).for_data("shapes")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = make_scheduler(optimizer, config, args.steps + 3)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    run = functools.partial(train_epoch, model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                            config=config, pad_idx=ctx.vocab.pad_idx, device=ctx.device, amp=amp)
    run(itertools.islice(batches, 3))
    ctx.synchronize()
    loss, images_per_s = run(itertools.islice(batches, args.steps))
    ctx.synchronize()
    if not torch.isfinite(torch.tensor(loss)):
        raise RuntimeError(f"loss is {loss}")
    return (f"ok: {args.steps} steps, {args.backbone} {args.image_size}px, batch {args.batch_size}, "
            f"AMP {'on' if amp else 'off'}, loss {loss:.2f}"), f"{images_per_s:.0f} train images/s"


def check_beam_search(ctx: Context) -> tuple[str, str]:
    """Batched beam search (beam 3, max 20 words, batch --beam-batch) of an untrained model, whose
    captions rarely end early: close to the worst case."""
    model = ctx.model(ShowAttendTellModel).eval()
    images = ctx.images(ctx.args.beam_batch)
    decode(model, images, ctx.vocab, max_length=20, beam_size=3)
    ctx.synchronize()
    start = time.perf_counter()
    repeats = 3
    for _ in range(repeats):
        decoded = decode(model, images, ctx.vocab, max_length=20, beam_size=3)
    ctx.synchronize()
    rate = repeats * len(images) / (time.perf_counter() - start)
    words = sum(len(d.words) for d in decoded) / len(decoded)
    return f"ok: batch {len(images)}, beam 3, {words:.1f} words per caption", f"{rate:.0f} images/s"


def _eval_backward(ctx: Context, kind: type[CaptionModel]) -> tuple[str, str]:
    """Gradient of one word's log-prob w.r.t. the last conv block, model in eval mode."""
    model = ctx.model(kind).eval()
    captions = torch.randint(4, len(ctx.vocab), (2, 8), device=ctx.device)
    hidden, _ = model.teacher_forced_hidden(model.encode(ctx.images(2)), captions)
    log_probs = model.output_logits(hidden).log_softmax(-1).gather(-1, captions[:, 1:, None]).squeeze(-1)
    log_probs[:, 3].sum().backward()
    grads = [p.grad for p in model.encoder.resnet[-2].parameters()]
    norm = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))
    if any(g is None for g in grads) or not norm > 0 or norm != norm:
        raise RuntimeError(f"no usable gradient at the last conv block (norm {norm})")
    return "ok: eval-mode backward reaches the last conv block", f"grad norm {norm:.3g}"


def check_plain_lstm(ctx: Context) -> tuple[str, str]:
    """What EvalGradLSTM works around: cuDNN refuses an RNN backward in eval mode."""
    if ctx.device.type != "cuda":
        return "n/a: no cuDNN on this device", "-"
    lstm = nn.LSTM(16, 32, batch_first=True).to(ctx.device).eval()
    inputs = torch.randn(2, 5, 16, device=ctx.device, requires_grad=True)
    try:
        lstm(inputs)[0].sum().backward()
    except RuntimeError as exc:
        if "cudnn" in str(exc).lower():
            return "expected failure reproduced", str(exc).splitlines()[0][:60]
        raise
    return "expected failure NOT reproduced (this torch/cuDNN allows it)", "-"


def _gradcam_inputs(ctx: Context, batch: int,
                    kind: type[CaptionModel]) -> tuple[CaptionModel, torch.Tensor, list[list[int]]]:
    model = ctx.model(kind).eval()
    model.vocab = ctx.vocab
    torch.manual_seed(1)
    captions = torch.randint(4, len(ctx.vocab), (batch, 12)).tolist()
    return model, ctx.images(batch), captions


def _explain_throughput(ctx: Context, kind: type[CaptionModel]) -> tuple[str, str]:
    """Grad-CAM for all 12 words of --beam-batch images per `explain_batch` call (the product's path:
    preprocessing, one encoder pass, the gradient pass across all images, maps drawn on the images)."""
    model, _, ids = _gradcam_inputs(ctx, ctx.args.beam_batch, kind)
    rng = np.random.default_rng(0)
    size = ctx.args.image_size
    photos = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in ids]
    captions = [" ".join(ctx.vocab.idx2word[i] for i in caption) for caption in ids]
    explain_batch(model, photos, ("gradcam",), captions=captions)
    ctx.synchronize()
    start = time.perf_counter()
    repeats = 3
    for _ in range(repeats):
        explain_batch(model, photos, ("gradcam",), captions=captions)
    ctx.synchronize()
    rate = repeats * len(photos) / (time.perf_counter() - start)
    return f"ok: batch {len(photos)}, 12 words each, explain_batch", f"{rate:.0f} images/s"


def check_gradcam_matches_cpu(ctx: Context) -> tuple[str, str]:
    """Grad-CAM maps computed on the device equal the same model's maps computed on the CPU, for both
    models (the pooled route of Show-and-Tell, the written-out backward of Show-Attend-Tell)."""
    if ctx.device.type == "cpu":
        return "n/a: already on the CPU", "-"
    error = 0.0
    for kind in (CNNLSTMModel, ShowAttendTellModel):
        model, images, captions = _gradcam_inputs(ctx, 2, kind)
        on_device = batch_cams(model, images, captions)
        on_cpu = batch_cams(model.cpu(), images.cpu(), captions)
        error = max(error, *(float(abs(a - b).max() / (abs(b).max() + 1e-12)) for a, b in zip(on_device, on_cpu)))
    if error > 1e-3:
        raise RuntimeError(f"device and CPU Grad-CAM differ: relative error {error:.2e}")
    return "ok: device maps equal CPU maps, both models", f"max rel. error {error:.1e}"


CHECKS: list[tuple[str, Callable[[Context], tuple[str, str]]]] = [
    ("train Show-Attend-Tell", check_training),
    ("batched beam search", check_beam_search),
    ("eval backward, Show-and-Tell", functools.partial(_eval_backward, kind=CNNLSTMModel)),
    ("eval backward, Show-Attend-Tell", functools.partial(_eval_backward, kind=ShowAttendTellModel)),
    ("plain nn.LSTM eval backward (cuDNN)", check_plain_lstm),
    ("Grad-CAM on the device == on the CPU", check_gradcam_matches_cpu),
    ("explanation throughput, Show-and-Tell (Grad-CAM, all words)",
     functools.partial(_explain_throughput, kind=CNNLSTMModel)),
    ("explanation throughput, Show-Attend-Tell (Grad-CAM, all words)",
     functools.partial(_explain_throughput, kind=ShowAttendTellModel)),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=300, help="timed training steps")
    parser.add_argument("--batch-size", type=int, default=32, help="training images per step")
    parser.add_argument("--beam-batch", type=int, default=32, help="images per beam-search batch")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--hidden-size", type=int, default=512, help="LSTM size; embedding and attention: half")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--train-images", type=int, default=256, help="synthetic shapes images to train on")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers")
    parser.add_argument("--only", action="append", help="run only the checks whose name contains this")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        data = generate_shapes(Path(tmp) / "shapes", n_train=args.train_images, n_val=0, n_test=0,
                               image_size=args.image_size, seed=0)
        vocab = Vocabulary.build(load_dataset(data, "shapes").split("train").all_captions())
        ctx = Context(args, device, data, vocab)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"device {name}, torch {torch.__version__}\n")
        print("| check | result | number |\n| --- | --- | --- |")
        failed = False
        for title, check in CHECKS:
            if args.only and not any(word in title for word in args.only):
                continue
            try:
                result, number = check(ctx)
            except Exception as exc:  # a failing check is a row of the table, not the end of the run
                traceback.print_exc(file=sys.stderr)
                result, number, failed = f"FAIL: {' '.join(str(exc).split())[:120]}", "-", True
            print(f"| {title} | {result} | {number} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
