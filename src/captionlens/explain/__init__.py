"""Per-word explanations of captions: one module per method over one `CaptionExplanation` result.

Importing this package registers every method (`METHODS`) and the Show-Attend-Tell decoder's
written-out backward.
"""
from captionlens.explain import (  # noqa: F401  (registration)
    attention,
    attention_backward,
    gradcam,
    integrated_gradients,
    lime,
    occlusion,
)
from captionlens.explain.api import check_explain_arguments, explain, explain_batch
from captionlens.explain.context import ExplainContext
from captionlens.explain.registry import (
           METHODS,
           CliOption,
           Method,
           MethodSettings,
           check_methods,
           ordered_methods,
           register_method,
)
from captionlens.explain.result import CaptionExplanation, Decoding, MethodMaps
from captionlens.explain.suspect import SuspectFlag, SuspectRule
from captionlens.explain.target import TargetLayer

__all__ = ["METHODS", "CaptionExplanation", "CliOption", "Decoding", "ExplainContext", "Method", "MethodMaps",
           "MethodSettings", "SuspectFlag", "SuspectRule", "TargetLayer", "check_explain_arguments", "check_methods",
           "explain", "explain_batch", "ordered_methods", "register_method"]
