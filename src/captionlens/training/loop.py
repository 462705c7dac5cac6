"""The training loop: teacher-forced cross-entropy, free-running validation BLEU-4, one run from start
(or resume) to its last epoch.

`train(TrainConfig(data=...))` builds the vocabulary from the training captions, trains, and after each
epoch writes the checkpoints, training state, log and plot (`captionlens.training.state`) into `out_dir`.

Under `torchrun` (see `captionlens.distributed`) the same function trains with DistributedDataParallel:
`batch_size` stays the global batch (split evenly over the processes), the images are shuffled into
one order for any number of processes and dealt out to them, the loss is normalised by the global word
count, and validation captions are shared out and gathered; so N processes take the same steps as one
process with the same batch (up to float rounding, and except dropout masks and, on CPU, the
trunk's BatchNorm statistics, which are per process there; on GPUs they are synchronised). Rank 0
writes every file; `resume` works as in one process.
"""
from __future__ import annotations

import functools
import math
import random
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from captionlens import distributed
from captionlens.data.datasets import CaptionTrainingSet, detect_format, load_dataset
from captionlens.data.records import CaptionRecord
from captionlens.data.vocabulary import Vocabulary
from captionlens.evaluate.caption_metrics import predict_captions, score_captions
from captionlens.models.base import CaptionModel
from captionlens.models.config import build_model
from captionlens.training.batches import ImageCaptions, collate_images
from captionlens.training.config import PRELOAD_BYTES, TrainConfig
from captionlens.training.state import BEST_NAME, LAST_NAME, LOG_NAME, STATE_NAME, Run, resume_state, write_config


@dataclass
class TrainResult:
    """Where the run wrote its files, its per-epoch history, and the model as the last epoch left it."""

    out_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_bleu4: float
    model: CaptionModel
    vocab: Vocabulary
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def caption_loss(model: nn.Module, images: torch.Tensor, captions: torch.Tensor, owner: torch.Tensor,
                 pad_idx: int, attention_lambda: float, world: distributed.World = distributed.SINGLE
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(objective, cross-entropy): the cross-entropy of every next word (<PAD> ignored) under the model's
    training forward (`model` is the CaptionModel or its DistributedDataParallel wrapper), plus for
    attention models the doubly stochastic penalty lambda * mean((1 - sum_t alpha_t)^2) over the non-pad
    steps (Xu et al., 2015, eq. 14). The penalty never reaches 0 when a caption is shorter than the number
    of regions, so the log reports the cross-entropy alone (this process's batch's).

    Across processes, both means are over the global batch: sums divided by the counts summed over the
    ranks, times the world size because DistributedDataParallel averages the ranks' gradients."""
    lengths = (captions[:, 1:] != pad_idx).sum(1)
    order = lengths.argsort(descending=True, stable=True)   # longest first, so padding is never computed
    captions, owner, lengths = captions[order], owner[order], lengths[order]
    logits, alphas = model(images, captions, owner, lengths)
    targets = captions[:, 1:]
    ce_sum = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                             ignore_index=pad_idx, reduction="sum")
    words = (targets != pad_idx).sum()
    penalty_sum, penalty_count = ce_sum.new_zeros(()), 1.0
    if alphas is not None and attention_lambda > 0:
        coverage = (alphas.float() * (targets != pad_idx).unsqueeze(-1)).sum(1)
        penalty_sum, penalty_count = ((1 - coverage) ** 2).sum(), float(coverage.numel())
    counts = torch.stack([words.to(ce_sum.dtype), ce_sum.new_tensor(penalty_count)])
    totals = world.all_sum(counts.detach())
    objective = world.size * (ce_sum / totals[0] + attention_lambda * penalty_sum / totals[1])
    return objective, ce_sum.detach() / words


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero at the last epoch, or x step_gamma every step_epochs
    epochs; stepped per batch. (Resuming with more epochs than the first run stretches the cosine.)"""
    total, warmup = max(1, config.epochs * steps_per_epoch), config.warmup_steps
    if config.schedule not in ("cosine", "step"):
        raise ValueError(f"unknown LR schedule {config.schedule!r}; use cosine or step")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
        return config.step_gamma ** (step // (steps_per_epoch * config.step_epochs))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(config: TrainConfig) -> TrainResult:
    """Train (or resume) a captioning model as `config` says; see the module doc for what it writes."""
    start = time.perf_counter()
    world = distributed.current()
    device = world.device(config.device)
    amp = device.type == "cuda" if config.amp is None else config.amp
    if amp and device.type != "cuda":
        raise ValueError("amp=True needs a CUDA device")
    if config.batch_size % world.size:
        raise ValueError(f"batch_size {config.batch_size} (the global batch) does not split evenly over "
                         f"{world.size} processes")
    out = Path(config.out_dir)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
    world.barrier()
    seed_everything(config.seed)
    dataset = load_dataset(config.data, config.format)
    config = config.for_data(config.format or detect_format(config.data))
    train_split, val_split = dataset.split("train"), dataset.split("val")
    if not len(train_split) or not len(val_split):
        raise ValueError(f"{config.data}: needs images in both the train and the val split "
                         f"(has {len(train_split)} and {len(val_split)})")
    resumed = resume_state(out, device) if config.resume else None
    say = config.progress and world.is_main
    if say:
        tqdm.write(config.describe() if resumed is None else f"resuming {type(resumed['model']).__name__} after "
                   f"epoch {resumed['epoch']} from {out / STATE_NAME}", file=sys.stderr)
    if resumed is None:
        vocab = Vocabulary.build(train_split.all_captions(), config.min_word_freq)
        model = build_model(config.model_config(len(vocab)), pretrained=bool(config.pretrained)).to(device)
        if world.is_main:
            (out / LOG_NAME).unlink(missing_ok=True)
    else:
        model, vocab = resumed["model"], resumed["vocab"]
    model.encoder.resnet.requires_grad_(config.fine_tune_encoder)  # the projection always trains
    preload = _preload(model, len(train_split), config.preload)
    pairs = CaptionTrainingSet(train_split, vocab, model.preprocessing, preload=preload)
    images = ImageCaptions(pairs)
    # one shuffled order for any number of processes, dealt out rank by rank: process r's k-th batch
    # holds the r-th share of the k-th global batch
    sampler: DistributedSampler[int] = DistributedSampler(images, num_replicas=world.size, rank=world.rank,
                                                          shuffle=True, seed=config.seed)
    loader = DataLoader(images, batch_size=config.batch_size // world.size, sampler=sampler,
                        num_workers=config.num_workers, pin_memory=device.type == "cuda",
                        collate_fn=functools.partial(collate_images, pad_idx=vocab.pad_idx))
    forward = _parallel(model, world, device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    run = Run(out, model, vocab, optimizer, make_scheduler(optimizer, config, len(loader)),
              torch.amp.GradScaler("cuda", enabled=amp), [])
    first_epoch = 1 if resumed is None else run.load_state(resumed["train"])
    if world.is_main:
        write_config(out, config, world.size)

    for epoch in range(first_epoch, config.epochs + 1):
        seed_everything(config.seed + epoch)  # shuffling and dropout depend on the epoch only: resumable
        sampler.set_epoch(epoch)
        epoch_start = time.perf_counter()
        loss, images_per_s = train_epoch(forward, loader, optimizer, run.scheduler, run.scaler, config,
                                         vocab.pad_idx, device, amp, f"epoch {epoch}/{config.epochs}", world)
        row = {"epoch": epoch, "train_loss": loss,
               "val_bleu4": validate(model, val_split.records[:config.val_limit], vocab, config, world),
               "seconds": time.perf_counter() - epoch_start, "images_per_s": images_per_s,
               "lr": optimizer.param_groups[0]["lr"]}
        if world.is_main:
            run.save_epoch(row)
        else:
            run.history.append(row)
            run.best_bleu4 = max(run.best_bleu4, row["val_bleu4"])
        world.barrier()  # every rank sees the epoch's files before going on (or returning)
        if say:
            tqdm.write(f"epoch {epoch}/{config.epochs}: loss {loss:.3f}, val BLEU-4 {row['val_bleu4']:.3f}, "
                       f"{row['seconds']:.1f} s, {images_per_s:.0f} images/s", file=sys.stderr)
    return TrainResult(out, out / BEST_NAME, out / LAST_NAME, run.best_bleu4, model, vocab, run.history,
                       time.perf_counter() - start)


def _parallel(model: CaptionModel, world: distributed.World, device: torch.device) -> nn.Module:
    """What the training steps call: the model itself, or across processes its DistributedDataParallel
    wrapper (on GPUs with synchronised BatchNorm, so its statistics are the global batch's)."""
    if world.size == 1:
        return model
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def validate(model: CaptionModel, records: Sequence[CaptionRecord], vocab: Vocabulary, config: TrainConfig,
             world: distributed.World = distributed.SINGLE) -> float:
    """Corpus BLEU-4 of the model's free-running captions of `records`; each rank captions its share."""
    mine = predict_captions(model, records[world.rank::world.size], vocab, config.beam_size, config.max_length)
    predictions = {image_id: caption for shard in world.gather(mine) for image_id, caption in shard.items()}
    return score_captions(predictions, {r.image_id: r.captions for r in records}, ("BLEU",))["BLEU-4"]


def _preload(model: CaptionModel, n_images: int, preload: bool | None = None) -> bool:
    if preload is not None:
        return preload
    return n_images * 3 * model.preprocessing.image_size ** 2 <= PRELOAD_BYTES


def train_epoch(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                scaler: torch.amp.GradScaler, config: TrainConfig, pad_idx: int, device: torch.device,
                amp: bool, desc: str = "training", world: distributed.World = distributed.SINGLE
                ) -> tuple[float, float]:
    """(cross-entropy per word, training images per second) over `batches` of `collate_images` (one epoch, or any
    number of steps: benchmarks/gpu_check.py times it), both over all ranks. `model` is the CaptionModel
    or its DistributedDataParallel wrapper. AMP (autocast + grad scaling) when `amp`."""
    model.train()
    captioner = model.module if isinstance(model, DistributedDataParallel) else model
    if not config.fine_tune_encoder:
        captioner.get_submodule("encoder.resnet").eval()  # a frozen trunk keeps its BatchNorm statistics too
    params = [p for p in model.parameters() if p.requires_grad]
    total_loss, total_words, total_images, start = 0.0, 0, 0, time.perf_counter()
    bar = tqdm(batches, desc=desc, unit="batch", leave=False,
               disable=None if config.progress and world.is_main else True)  # None: only on a terminal
    for images, captions, owner in bar:
        images, captions, owner = (t.to(device, non_blocking=True) for t in (images, captions, owner))
        with torch.autocast(device.type, enabled=amp):
            objective, ce = caption_loss(model, images, captions, owner, pad_idx, config.attention_lambda, world)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(objective).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        words = int((captions[:, 1:] != pad_idx).sum())
        total_loss += ce.item() * words
        total_words += words
        total_images += len(images)
        bar.set_postfix(loss=f"{ce.item():.3f}", img_s=f"{total_images / (time.perf_counter() - start):.0f}")
    seconds = time.perf_counter() - start
    loss_sum, word_count, image_count = world.sum(total_loss, total_words, total_images)
    return loss_sum / max(word_count, 1), image_count / seconds
