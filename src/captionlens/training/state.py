"""What a run writes into its `out_dir` after each epoch, and how `resume` reads it back.

`best.safetensors` (highest validation BLEU-4), `last.safetensors`, `last.train.pt` (weights,
optimizer, scheduler and grad-scaler state, read back with weights_only=True), the JSONL log
(`train_log.jsonl`, one line per epoch), the loss/BLEU plot (`training_curves.png`) and, once per run,
`train_config.json`. Every file is written atomically, so a run killed at any point resumes from the
last complete state.
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from captionlens.atomic import atomic_path
from captionlens.data.vocabulary import Vocabulary
from captionlens.models.base import CaptionModel
from captionlens.models.checkpoints import CheckpointError, assemble, save_checkpoint
from captionlens.models.config import config_from_dict
from captionlens.training.config import TrainConfig

LOG_NAME, PLOT_NAME, STATE_NAME = "train_log.jsonl", "training_curves.png", "last.train.pt"
BEST_NAME, LAST_NAME = "best.safetensors", "last.safetensors"
CONFIG_NAME = "train_config.json"


@dataclass
class Run:
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
        from captionlens.viz.training import save_training_curves  # matplotlib loads only here

        save_training_curves(self.history, self.out / PLOT_NAME)

    def load_state(self, state: dict[str, Any]) -> int:
        """Take the optimizer, scheduler and grad-scaler state, history and best BLEU-4 of `resume_state`'s
        "train" entry; the first epoch still to train."""
        for name in ("optimizer", "scheduler", "scaler"):
            getattr(self, name).load_state_dict(state[name])
        self.history, self.best_bleu4 = state["history"], state["best_bleu4"]
        return int(state["epoch"]) + 1


def write_config(out: Path, config: TrainConfig, processes: int) -> Path:
    """`train_config.json`: the resolved config and the number of processes that trained."""
    with atomic_path(out / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps({**config.to_json(), "processes": processes}, indent=2), encoding="utf-8")
    return out / CONFIG_NAME


def resume_state(out: Path, device: torch.device) -> dict[str, Any]:
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
