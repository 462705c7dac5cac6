"""Evaluation: caption quality (`caption_metrics`) and explanation quality (`explanation_metrics`)."""
from captionlens.evaluate.caption_metrics import caption_files, evaluate_checkpoint, evaluate_model, score_captions

__all__ = ["caption_files", "evaluate_checkpoint", "evaluate_model", "score_captions"]
