"""Pictures of explanations: overlays, static figures (matplotlib, headless) and a self-contained HTML report."""
from captionlens.viz.figures import attention_over_time, method_comparison, save_figure, triptych, word_grid
from captionlens.viz.overlay import overlay
from captionlens.viz.report import write_report

__all__ = ["attention_over_time", "method_comparison", "overlay", "save_figure", "triptych", "word_grid",
           "write_report"]
