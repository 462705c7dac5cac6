"""Per-word explanations of captions: one module per method over one `CaptionExplanation` result."""
from captionlens.explain.api import METHODS, ExplainContext, explain, explain_batch, register
from captionlens.explain.result import CaptionExplanation, MethodMaps

# Importing the method modules registers them in METHODS.
from captionlens.explain import attention, gradcam, lime, occlusion  # noqa: E402,F401  isort: skip

__all__ = ["METHODS", "CaptionExplanation", "ExplainContext", "MethodMaps", "explain", "explain_batch", "register"]
