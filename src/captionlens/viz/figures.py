"""Static figures of one `CaptionExplanation`: word grids, triptychs, method comparisons, attention over time.

Every function builds a standalone `matplotlib.figure.Figure` (Agg, never pyplot state), so nothing
leaks between calls and it works headless; `save_figure` writes it atomically and closes it.
"""
from __future__ import annotations

import math
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from skimage.segmentation import find_boundaries

from captionlens.atomic import atomic_path
from captionlens.explain.maps import peak_normalize
from captionlens.explain.registry import METHODS, is_signed, method_label, ordered_methods
from captionlens.explain.result import CaptionExplanation
from captionlens.viz.overlay import DEFAULT_CMAP, SIGNED_CMAP, check_image, method_maps, overlay, unit_scale

DPI = 120
PANEL_INCHES = 2.0
COMPARISON_INCHES = 1.7
BAR_INCHES = 0.75
SAVE_FORMATS = ("png", "pdf", "svg")
SIGNED_NOTE = "red = raises the word's score, blue = lowers it"
OUTLINE_RGB = (0, 255, 0)        # LIME's top-k positive superpixels
SEGMENT_EDGE_RGB = (255, 255, 255)


def word_grid(expl: CaptionExplanation, method: str = "gradcam", max_cols: int = 5,
              alpha: float = 0.45) -> Figure:
    """One overlay panel per word (any number of words), titled with the word and its log-probability."""
    return _word_panels(expl, method, max_cols, alpha, sequence_style=False)


def attention_over_time(expl: CaptionExplanation, max_cols: int = 5, alpha: float = 0.7,
                        method: str | None = None) -> Figure:
    """The Show-Attend-Tell figure: each word's attention over the image, in order, word written on it.

    `method` defaults to the explanation's first method that reads the decoder's attention (registry
    entries with `needs_attention`). Attention is blended in proportion to its strength, so unattended
    regions show the photo.
    """
    if method is None:
        method = next((m for m in ordered_methods(expl.methods) if m in METHODS and METHODS[m].needs_attention),
                      None)
        if method is None:
            raise ValueError(f"explanation has no attention maps (it has {sorted(expl.methods)}); explain a "
                             "model with attention with methods=('attention',)")
    return _word_panels(expl, method, max_cols, alpha, sequence_style=True)


def triptych(expl: CaptionExplanation, method: str, word_index: int, alpha: float = 0.45) -> Figure:
    """Original image / heatmap alone (with colour bar) / overlay, for one word."""
    maps = method_maps(expl, method)
    index = _word_index(expl, word_index)
    signed = is_signed(method, maps)
    image = check_image(expl.image)
    scaled = _display_scale(maps[index:index + 1], signed)[0]
    word, log_prob = expl.tokens[index], float(expl.log_probs[index])
    note = f"\n{SIGNED_NOTE}" if signed else ""
    title = _text(f"“{word}” (log p = {log_prob:.2f}) — {method_label(method)}{note}")
    fig, grid = _panel_figure(1, 3, PANEL_INCHES, _aspect(image), title, gap_h=0.3, below=0.45)
    axes = grid[0]
    axes[0].imshow(image)
    norm = Normalize(-1.0, 1.0) if signed else Normalize(0.0, 1.0)
    heat = axes[1].imshow(scaled, cmap=SIGNED_CMAP if signed else DEFAULT_CMAP, norm=norm, interpolation="bilinear")
    fig.colorbar(heat, cax=axes[1].inset_axes((0.0, -0.12, 1.0, 0.06)), orientation="horizontal").ax.tick_params(
        labelsize=8)
    axes[2].imshow(overlay(image, scaled, alpha=alpha, normalize=False, signed=signed))
    for ax, label in zip(axes, ("image", "value / max |value|" if signed else "heatmap (min-max)", "overlay")):
        ax.set_title(label, fontsize=9)
    return fig


def method_comparison(expl: CaptionExplanation, methods: Sequence[str] | None = None, top_k: int = 3,
                      alpha: float = 0.5) -> Figure:
    """Rows = words, columns = methods (in the registry's display order).

    Colour scales: each non-negative map is divided by its own peak, so every non-negative panel of a
    row shares one 0..1 scale ("fraction of the map's peak", 0 anchored at 0 rather than at the map's
    minimum); raw units are not comparable across methods, so no cross-method raw scale is attempted.
    Signed maps (LIME, occlusion) use a diverging colormap on their own symmetric -1..1 scale
    (value / max|value|), with a second colour bar. Maps painted on regions (LIME's superpixels) also show
    the region boundaries (white) and outline the word's `top_k` positive regions (green).
    """
    names = ordered_methods(expl.methods if methods is None else methods)
    if not names:
        raise ValueError("explanation has no methods to compare")
    image = check_image(expl.image)
    stacks = {name: method_maps(expl, name) for name in names}
    signed = {name: is_signed(name, maps) for name, maps in stacks.items()}
    scaled = {name: peak_normalize(maps) for name, maps in stacks.items()}
    n_words = _word_count(expl)
    bars = []
    if not all(signed.values()):
        bars.append((DEFAULT_CMAP, Normalize(0.0, 1.0), "non-negative methods: fraction of the map's peak"))
    if any(signed.values()):
        bars.append((SIGNED_CMAP, Normalize(-1.0, 1.0), f"signed methods: value / max |value| ({SIGNED_NOTE})"))
    caption = _wrap(f"“{expl.caption}”", len(names) * COMPARISON_INCHES)
    fig, axes = _panel_figure(n_words, len(names), COMPARISON_INCHES, _aspect(image), caption, left=0.55, gap_h=0.08,
                              below=BAR_INCHES * len(bars))
    for row, (word, log_prob) in enumerate(zip(expl.tokens, expl.log_probs)):
        for col, name in enumerate(names):
            ax = axes[row, col]
            rgb = overlay(image, scaled[name][row], alpha=alpha, normalize=False, signed=signed[name])
            drawing = expl[name].drawing
            if drawing is not None and drawing.segments is not None:
                rgb = _mark_regions(rgb, drawing.segments, expl[name].raw[row], top_k)
            ax.imshow(rgb)
            if row == 0:
                ax.set_title(_text(method_label(name)), fontsize=10)
        axes[row, 0].set_ylabel(_text(f"{word}\n{float(log_prob):.2f}"), fontsize=9)
    for i, (cmap, norm, label) in enumerate(bars):
        bar_ax = fig.add_axes((0.2, _y(fig, BAR_INCHES * (len(bars) - i) - 0.3), 0.6, _y(fig, 0.13)))
        fig.colorbar(ScalarMappable(norm, cmap), cax=bar_ax, orientation="horizontal").set_label(label, fontsize=8)
        bar_ax.tick_params(labelsize=7)
    return fig


def save_figure(fig: Figure, path: str | Path, formats: Sequence[str] = ("png",),
                dpi: float | None = None) -> list[Path]:
    """Write `fig` as `<path stem>.<format>` for each format (png, pdf, svg), each atomically
    (temporary name + os.replace), then close the figure. Returns the written paths."""
    unknown = [f for f in formats if f not in SAVE_FORMATS]
    if unknown or not formats:
        raise ValueError(f"unsupported figure format(s) {list(unknown) or formats}; choose from {SAVE_FORMATS}")
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lstrip(".").lower() in SAVE_FORMATS else path
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for fmt in formats:
            target = stem.parent / f"{stem.name}.{fmt}"
            with atomic_path(target) as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi or fig.dpi)
            written.append(target)
    finally:
        _close(fig)
    return written


def _word_panels(expl: CaptionExplanation, method: str, max_cols: int, alpha: float, sequence_style: bool) -> Figure:
    maps = method_maps(expl, method)
    image = check_image(expl.image)
    signed = is_signed(method, maps)
    n_words = _word_count(expl)
    if max_cols < 1:
        raise ValueError(f"max_cols must be >= 1, got {max_cols}")
    cols = min(n_words, max_cols)
    note = f" ({SIGNED_NOTE})" if signed else ""
    title = _wrap(f"“{expl.caption}” — {method_label(method)}{note}", cols * PANEL_INCHES)
    fig, axes = _panel_figure(math.ceil(n_words / cols), cols, PANEL_INCHES, _aspect(image), title,
                              gap_h=0.1 if sequence_style else 0.4)
    for index, ax in enumerate(axes.flat):
        if index >= n_words:
            ax.set_visible(False)
            continue
        word, log_prob = expl.tokens[index], float(expl.log_probs[index])
        ax.imshow(overlay(image, maps[index], alpha=alpha, signed=signed, alpha_by_heat=sequence_style))
        if sequence_style:
            ax.text(0.03, 0.97, _text(word), transform=ax.transAxes, va="top", ha="left", fontsize=11,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 2})
        else:
            ax.set_title(_text(f"{word}  (log p {log_prob:.2f})"), fontsize=9)
    return fig


def _mark_regions(rgb: np.ndarray, segments: np.ndarray, weights: np.ndarray, top_k: int) -> np.ndarray:
    """Lighten the region boundaries and outline the top_k regions of positive weight (one word's)."""
    segments = np.asarray(segments)
    if segments.shape != rgb.shape[:2]:
        raise ValueError(f"region labels have shape {segments.shape}, image is {rgb.shape[:2]}")
    out = rgb.astype(np.float32)
    edges = find_boundaries(segments, mode="inner")
    out[edges] = 0.5 * out[edges] + 0.5 * np.array(SEGMENT_EDGE_RGB, np.float32)
    best = [s for s in np.argsort(weights)[::-1][:top_k] if weights[s] > 0]
    outline = find_boundaries(np.isin(segments, best), mode="inner")
    out[outline] = OUTLINE_RGB
    return np.rint(out).astype(np.uint8)


def _display_scale(maps: np.ndarray, signed: bool) -> np.ndarray:
    """Maps for imshow: signed -> value / max|value| in [-1, 1]; non-negative -> min-max in [0, 1]."""
    unit, _ = unit_scale(maps, signed)
    return unit * 2.0 - 1.0 if signed else unit


def _panel_figure(rows: int, cols: int, panel: float, aspect: float, title: str, left: float = 0.08,
                  gap_h: float = 0.4, below: float = 0.0) -> tuple[Figure, np.ndarray]:
    """A figure of rows x cols bare image panels of `panel` inches wide, laid out by hand in inches
    (constrained layout costs seconds for 60+ panels). Room on top for the title (and panel titles)."""
    gap_w, top = 0.08, 0.35 + 0.22 * title.count("\n") + max(gap_h, 0.3)
    width = left + 0.08 + cols * panel + (cols - 1) * gap_w
    height = top + 0.08 + below + rows * panel * aspect + (rows - 1) * gap_h
    fig = Figure(figsize=(width, height), dpi=DPI)
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw={
        "left": left / width, "right": 1 - 0.08 / width, "bottom": (0.08 + below) / height,
        "top": 1 - top / height, "wspace": gap_w / panel, "hspace": gap_h / (panel * aspect)})
    for ax in axes.flat:
        _bare(ax)
    fig.suptitle(title, fontsize=11, y=1 - 0.1 / height, va="top")
    return fig, axes


def _y(fig: Figure, inches: float) -> float:
    """Inches from the bottom as a fraction of the figure's height."""
    return inches / fig.get_size_inches()[1]


def _word_count(expl: CaptionExplanation) -> int:
    if not expl.tokens:
        raise ValueError("explanation has no words to show")
    return len(expl.tokens)


def _word_index(expl: CaptionExplanation, word_index: int) -> int:
    n_words = _word_count(expl)
    if not -n_words <= word_index < n_words:
        raise ValueError(f"word_index {word_index} out of range for {n_words} words")
    return word_index % n_words


def _aspect(image: np.ndarray) -> float:
    """Height / width, clipped so very thin images still get usable panels."""
    return float(np.clip(image.shape[0] / image.shape[1], 0.3, 2.5))


def _bare(ax: Axes) -> None:
    """No ticks or frame, but keep the axis labels (used for row labels)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _text(text: str) -> str:
    """Escape '$' so caption words are never parsed as mathtext."""
    return text.replace("$", r"\$")


def _wrap(text: str, width_inches: float) -> str:
    return _text(textwrap.fill(text, width=max(20, int(width_inches * 11))))


def _close(fig: Figure) -> None:
    """Release a figure: drop it from pyplot's registry if a caller put it there, and clear its artists."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
    fig.clear()
