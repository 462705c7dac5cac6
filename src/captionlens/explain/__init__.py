"""Per-word explanations of captions: one module per method over one `CaptionExplanation` result."""
from captionlens.explain.api import METHODS, ExplainContext, explain, explain_batch, register
from captionlens.explain.result import CaptionExplanation, MethodMaps

__all__ = ["METHODS", "CaptionExplanation", "ExplainContext", "MethodMaps", "explain", "explain_batch", "register"]
