"""Pictures of explanations: overlays, word tiles (numpy/PIL, fast), static figures (matplotlib, headless) and a
self-contained HTML report."""
from captionlens.viz.figures import attention_over_time, method_comparison, save_figure, triptych, word_grid
from captionlens.viz.overlay import overlay
from captionlens.viz.report import write_report
from captionlens.viz.tiles import save_tiles, word_tiles

__all__ = ["attention_over_time", "method_comparison", "overlay", "save_figure", "save_tiles", "triptych",
           "word_grid", "word_tiles", "write_report"]
