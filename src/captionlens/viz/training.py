"""The training run's figure: loss and validation BLEU-4 per epoch (`training_curves.png` next to the checkpoints).

`training_curves_figure` builds a standalone `matplotlib.figure.Figure` (Agg, never pyplot state) from the
run's history rows (the lines of `train_log.jsonl`); `save_training_curves` writes it atomically through
`save_figure`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from captionlens.viz.figures import save_figure

CURVES_DPI = 100


def training_curves_figure(history: Sequence[Mapping[str, Any]]) -> Figure:
    """Training loss and validation BLEU-4 per epoch, side by side (rows with epoch, train_loss, val_bleu4)."""
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(9, 3.5))
    loss_ax, bleu_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [row["train_loss"] for row in history], marker="o")
    loss_ax.set(title="training loss", xlabel="epoch")
    bleu_ax.plot(epochs, [row["val_bleu4"] for row in history], marker="o", color="tab:green")
    bleu_ax.set(title="validation BLEU-4", xlabel="epoch", ylim=(0, 1))
    fig.tight_layout()
    return fig


def save_training_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """`training_curves_figure(history)` as the PNG `path` (written atomically); returns the path."""
    [written] = save_figure(training_curves_figure(history), path, ("png",), dpi=CURVES_DPI)
    return written
