"""Evaluation: caption quality (`caption_metrics`) and explanation quality (`explanations` and the modules
it draws on: `localisation`, `faithfulness`, `sanity`, `hallucination`, `insights`; its result's types in
`result`)."""
from captionlens.evaluate.caption_metrics import evaluate_checkpoint, evaluate_model, score_captions
from captionlens.evaluate.explanations import evaluate_explanations
from captionlens.evaluate.result import EvaluationConfig, ExplanationEvaluation, load_suspect_rule

__all__ = ["EvaluationConfig", "ExplanationEvaluation", "evaluate_checkpoint", "evaluate_explanations",
           "evaluate_model", "load_suspect_rule", "score_captions"]
