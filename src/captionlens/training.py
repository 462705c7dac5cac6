"""Training: teacher-forced cross-entropy, free-running validation BLEU-4, resumable checkpoints.

`train(TrainConfig(data=...))` builds the vocabulary from the training captions, trains, and keeps
`best.safetensors` (highest validation BLEU-4), `last.safetensors` and `last.train.pt` (optimizer,
scheduler and grad-scaler state, read back with weights_only=True) in `out_dir`, with a JSONL log
(`train_log.jsonl`, one line per epoch) and a loss/BLEU plot (`training_curves.png`).

Under `torchrun` (see `captionlens.distributed`) the same function trains with DistributedDataParallel:
`batch_size` stays the global batch (split evenly over the processes), the images are shuffled into
one order for any number of processes and dealt out to them, the loss is normalised by the global word
count, and validation captions are shared out and gathered; so N processes take the same steps as one
process with the same batch (up to float rounding, and except dropout masks and, on CPU, the
trunk's BatchNorm statistics, which are per process there; on GPUs they are synchronised). Rank 0
writes every file; `resume` works as in one process.

Each batch holds whole images with all their captions: the encoder runs once per image, not once per
caption. The model's sizes follow the data unless given (`RECIPES`): the tiny Show-Attend-Tell model
on the synthetic shapes data (`captionlens demo`), an ImageNet-pretrained ResNet-50 at 224 px for
photos (which also want more epochs than the default 5). The attention penalty is off by default: with
144 regions and ~10 words it can only pull attention towards uniform, and it slowed learning on the
shapes data.
"""
from __future__ import annotations

import functools
import json
import math
import pickle
import random
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from captionlens import distributed
from captionlens.atomic import atomic_path
from captionlens.data.datasets import CaptionTrainingSet, detect_format, load_dataset
from captionlens.data.images import Preprocessing
from captionlens.data.records import CaptionRecord
from captionlens.data.vocabulary import Vocabulary
from captionlens.evaluate.caption_metrics import predict_captions, score_captions
from captionlens.models.base import CaptionModel
from captionlens.models.checkpoints import CheckpointError, assemble, save_checkpoint
from captionlens.models.config import CaptionerConfig, build_model, config_from_dict
from captionlens.models.show_attend_tell import ShowAttendTellConfig
from captionlens.models.show_tell import ShowTellConfig

LOG_NAME, PLOT_NAME, STATE_NAME = "train_log.jsonl", "training_curves.png", "last.train.pt"
BEST_NAME, LAST_NAME = "best.safetensors", "last.safetensors"
PRELOAD_BYTES = 2**30  # preload (decode once, keep as uint8) training sets up to this size


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved as `train_config.json` next to the checkpoints."""

    data: str | Path
    format: str | None = None                 # kaggle | flickr | karpathy | shapes; None: guessed
    model: str = "show-attend-tell"           # or "show-tell"
    # None below: the recipe for the data (`RECIPES`: the tiny CNN for the synthetic shapes, an
    # ImageNet-pretrained ResNet-50 at 224 px for photos); `describe()` says what was chosen.
    backbone: str | None = None               # tiny | resnet18 | resnet34 | resnet50 | resnet101 | resnet152 | ...
    pretrained: bool | None = None            # ImageNet weights for a ResNet backbone
    embed_size: int | None = None
    hidden_size: int | None = None
    attention_dim: int | None = None          # show-attend-tell only
    grid_size: int | None = None              # show-attend-tell: pool the map to grid x grid; 0 keeps the map
    image_size: int | None = None
    num_layers: int = 1                       # show-tell only
    dropout: float = 0.1
    epochs: int = 5
    batch_size: int = 16                      # images per step (each with all its captions), over all processes
    lr: float = 1e-3                          # 1.5e-3 and up trained the demo model worse
    weight_decay: float = 1e-4
    schedule: str = "cosine"                  # cosine | step (x step_gamma every step_epochs epochs)
    step_epochs: int = 2
    step_gamma: float = 0.5
    warmup_steps: int = 50
    grad_clip: float = 5.0
    fine_tune_encoder: bool = True            # False freezes the conv trunk (sensible with pretrained=True)
    min_word_freq: int = 1
    max_length: int = 20                      # of validation captions
    beam_size: int = 3                        # of validation captions
    attention_lambda: float = 0.0             # doubly stochastic attention regularisation (Xu et al. use 1)
    out_dir: str | Path = "outputs/train"
    resume: bool = False
    seed: int = 0
    device: str = "auto"                      # auto | cpu | cuda | cuda:N
    amp: bool | None = None                   # None: on for CUDA, off otherwise
    num_workers: int = 0
    val_limit: int | None = None              # validate on the first N val images only
    preload: bool | None = None               # None: when the decoded training images fit PRELOAD_BYTES
    progress: bool = True                     # a progress bar, when stderr is a terminal

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    def for_data(self, format: str) -> TrainConfig:
        """This config with every None size taken from the recipe for data of `format`."""
        recipe = dict(RECIPES["shapes" if format == "shapes" else "photos"])
        if self.backbone == "tiny":
            recipe["pretrained"] = False  # the tiny CNN has no ImageNet weights
        return replace(self, **{k: v for k, v in recipe.items() if getattr(self, k) is None})

    def describe(self) -> str:
        """One line: the architecture and sizes this (resolved) config trains."""
        weights = "ImageNet weights" if self.pretrained else "random init"
        parts = [f"{self.model}", f"backbone {self.backbone} ({weights})", f"{self.image_size} px input",
                 f"embed {self.embed_size}", f"hidden {self.hidden_size}"]
        if self.model == "show-attend-tell":
            parts += [f"attention {self.attention_dim}", f"grid {self.grid_size or 'as the trunk gives it'}"]
        else:
            parts.append(f"{self.num_layers} LSTM layer{'s' * (self.num_layers != 1)}")
        return "model: " + ", ".join(parts)

    def model_config(self, vocab_size: int) -> CaptionerConfig:
        """The model config this (resolved) training config builds."""
        attention_dim, image_size = self.attention_dim, self.image_size
        if self.backbone is None or image_size is None or attention_dim is None:
            raise ValueError("the config has sizes left open: call for_data() first")
        common: dict[str, Any] = {"vocab_size": vocab_size, "embed_size": self.embed_size,
                                  "hidden_size": self.hidden_size, "backbone": self.backbone,
                                  "dropout": self.dropout, "preprocessing": Preprocessing(image_size=image_size)}
        if self.model == "show-tell":
            return ShowTellConfig(**common, num_layers=self.num_layers)
        if self.model == "show-attend-tell":
            return ShowAttendTellConfig(**common, attention_dim=attention_dim, grid_size=self.grid_size or None)
        raise ValueError(f"unknown model {self.model!r}; use show-tell or show-attend-tell")


# Sizes by kind of data. The shapes recipe is the demo's (test BLEU-4 about 0.6 in 5 epochs on two CPU
# cores); photos get the usual ResNet-50 setup (its 7x7 map at 224 px needs no pooling).
RECIPES: dict[str, dict[str, Any]] = {
    "shapes": {"backbone": "tiny", "pretrained": False, "image_size": 96, "embed_size": 64, "hidden_size": 256,
               "attention_dim": 64, "grid_size": 0},
    "photos": {"backbone": "resnet50", "pretrained": True, "image_size": 224, "embed_size": 256, "hidden_size": 512,
               "attention_dim": 256, "grid_size": 7},
}


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


def pick_device(name: str = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; anything else as torch spells it ("cpu", "cuda:1")."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class ImageCaptions(Dataset):
    """Items are whole images with all their captions, from a `CaptionTrainingSet`'s (image, caption) pairs."""

    def __init__(self, pairs: CaptionTrainingSet) -> None:
        self.pairs = pairs
        groups: dict[int, list[int]] = {}
        for index, (image_index, _) in enumerate(pairs.pairs):
            groups.setdefault(image_index, []).append(index)
        self.groups = list(groups.values())

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        group = self.groups[index]
        return self.pairs[group[0]][0], [self.pairs.pairs[i][1] for i in group]


def collate_images(batch: Sequence[tuple[torch.Tensor, list[torch.Tensor]]], pad_idx: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (B, 3, s, s), captions (N, L) padded, owner (N,): the image row of each caption)."""
    images = torch.stack([image for image, _ in batch])
    captions = [c for _, caps in batch for c in caps]
    owner = torch.tensor([i for i, (_, caps) in enumerate(batch) for _ in caps])
    return images, pad_sequence(captions, batch_first=True, padding_value=pad_idx), owner


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
    logits, alphas = model(images, captions, owner)
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


@dataclass
class _Run:
    """The state a run carries from epoch to epoch, and what it writes after each."""

    out: Path
    model: CaptionModel
    vocab: Vocabulary
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    history: list[dict[str, Any]]
    best_bleu4: float = -1.0

    def save_epoch(self, row: dict[str, Any]) -> None:
        """Checkpoints (best when BLEU-4 improved, last always), then the training state, then the log and
        plot, each file written atomically. The state (last.train.pt) is what `resume` reads, and it holds
        the weights too: a run killed anywhere in here resumes from the last complete state, and an epoch
        it had partly saved is trained again exactly as before (it depends on the seed and epoch only)."""
        self.history.append(row)
        metrics = {"loss": row["train_loss"], "bleu4": row["val_bleu4"], "epoch": row["epoch"]}
        best = max(self.best_bleu4, row["val_bleu4"])
        if row["val_bleu4"] > self.best_bleu4:
            save_checkpoint(self.out / BEST_NAME, self.model, self.vocab, row["epoch"], metrics)
        save_checkpoint(self.out / LAST_NAME, self.model, self.vocab, row["epoch"], metrics)
        with atomic_path(self.out / STATE_NAME) as tmp:
            torch.save({"epoch": row["epoch"], "model": self.model.state_dict(), "config": self.model.config.to_dict(),
                        "vocab": self.vocab.to_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                        "history": self.history, "best_bleu4": best}, tmp)
        self.best_bleu4 = best
        with atomic_path(self.out / LOG_NAME) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.history), encoding="utf-8")
        with atomic_path(self.out / PLOT_NAME) as tmp:
            plot_curves(self.history, tmp)


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
    resumed = _resume_state(out, device) if config.resume else None
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
    run = _Run(out, model, vocab, optimizer, make_scheduler(optimizer, config, len(loader)),
               torch.amp.GradScaler("cuda", enabled=amp), [])
    first_epoch = 1
    if resumed is not None:
        for name in ("optimizer", "scheduler", "scaler"):
            getattr(run, name).load_state_dict(resumed["train"][name])
        run.history, run.best_bleu4 = resumed["train"]["history"], resumed["train"]["best_bleu4"]
        first_epoch = resumed["epoch"] + 1
    if world.is_main:
        with atomic_path(out / "train_config.json") as tmp:
            tmp.write_text(json.dumps({**config.to_json(), "processes": world.size}, indent=2), encoding="utf-8")

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


def _resume_state(out: Path, device: torch.device) -> dict[str, Any]:
    """Model, vocabulary, epoch, optimizer & co. from last.train.pt (read with weights_only=True)."""
    path = out / STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        vocab = Vocabulary.from_dict(state["vocab"])
        ckpt = assemble(path, config_from_dict(state["config"]), vocab, state["model"], int(state["epoch"]))
    except (KeyError, ValueError, RuntimeError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"cannot resume from {path}: {exc}") from None
    return {"model": ckpt.model.to(device), "vocab": vocab, "epoch": ckpt.epoch, "train": state}


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


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Training loss and validation BLEU-4 per epoch, side by side (Agg, no display needed)."""
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(9, 3.5))
    loss_ax, bleu_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [row["train_loss"] for row in history], marker="o")
    loss_ax.set(title="training loss", xlabel="epoch")
    bleu_ax.plot(epochs, [row["val_bleu4"] for row in history], marker="o", color="tab:green")
    bleu_ax.set(title="validation BLEU-4", xlabel="epoch", ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    return path
