"""Keyword focus (`explain.focus`) as figures and files: each keyword's maps over its images and their mean."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from captionlens.atomic import atomic_path
from captionlens.explain.focus import FocusResult, KeywordFocus
from captionlens.viz.figures import save_figure
from captionlens.viz.overlay import DEFAULT_CMAP, SIGNED_CMAP, overlay

FOCUS_JSON = "focus.json"
FOCUS_NPZ = "focus.npz"


def focus_figure(focus: KeywordFocus, method: str, max_images: int = 11, cols: int = 6) -> Figure:
    """The first `max_images` matching images with the keyword's map over them, then the mean map."""
    if not focus.count:
        raise ValueError(f"no images matched '{focus.keyword}'")
    shown = min(focus.count, max_images)
    panels = shown + 1
    cols = min(cols, panels)
    rows = -(-panels // cols)
    fig = Figure(figsize=(1.8 * cols, 1.8 * rows + 0.4), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, path, thumb, heat in zip(axes, focus.paths, focus.thumbnails, focus.maps[:shown]):
        ax.imshow(overlay(thumb, heat, normalize=False, signed=focus.signed))
        ax.set_title(Path(path).name[:24], fontsize=7)
    norm = Normalize(-1.0, 1.0) if focus.signed else Normalize(0.0, 1.0)
    mean = axes[shown].imshow(focus.mean_map, cmap=SIGNED_CMAP if focus.signed else DEFAULT_CMAP, norm=norm)
    fig.colorbar(mean, ax=axes[shown], shrink=0.8).ax.tick_params(labelsize=7)
    axes[shown].set_title(f"mean of {focus.count}", fontsize=8, fontweight="bold")
    fig.suptitle(f"'{focus.keyword}' — {method}: {focus.count} image{'s' * (focus.count != 1)}", fontsize=10)
    return fig


def save_focus(result: FocusResult, out_dir: str | os.PathLike) -> Path:
    """Write focus-<keyword>.png per matched keyword, focus.npz (mean maps) and focus.json, each atomically;
    return focus.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"method": result.method, "size": result.size, "images": len(result.captions),
               "failed": result.failed, "unknown_keywords": result.unknown, "keywords": {}}
    means: dict[str, Any] = {}
    for word, focus in result.keywords.items():
        entry = {"count": focus.count, "images": [{"path": p, "caption": c, "word_index": i} for p, c, i in
                                                  zip(focus.paths, focus.captions, focus.word_index)]}
        if focus.count:
            entry["figure"] = save_figure(focus_figure(focus, result.method), out / f"focus-{word}.png")[0].name
            means[word] = focus.mean_map
        summary["keywords"][word] = entry
    with atomic_path(out / FOCUS_NPZ) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **means)
    with atomic_path(out / FOCUS_JSON) as tmp:
        tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return out / FOCUS_JSON
