"""Evaluation: caption quality (`caption_metrics`) and explanation quality (`explanations` and the modules
it draws on: `localisation`, `faithfulness`, `sanity`, `hallucination`, `insights`)."""
from captionlens.evaluate.caption_metrics import caption_files, evaluate_checkpoint, evaluate_model, score_captions
from captionlens.evaluate.explanations import EvaluationConfig, ExplanationEvaluation, evaluate_explanations

__all__ = ["EvaluationConfig", "ExplanationEvaluation", "caption_files", "evaluate_checkpoint",
           "evaluate_explanations", "evaluate_model", "score_captions"]
