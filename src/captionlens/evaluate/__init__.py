"""Evaluation: caption quality (`caption_metrics`), hallucinated objects (`chair`: CHAIR) and explanation
quality (`explanations` and the modules it draws on: `localisation`, `faithfulness`, `sanity`,
`hallucination`, `insights`; its result's types in `result`)."""
from captionlens.evaluate.caption_metrics import evaluate_checkpoint, evaluate_model, score_captions
from captionlens.evaluate.chair import (
    CaptionObjects,
    CategoryCount,
    ChairResult,
    ObjectMention,
    SynonymTable,
    chair,
    chair_on_coco,
    coco_ground_truth,
    coco_synonyms,
    load_captions,
)
from captionlens.evaluate.explanations import evaluate_explanations
from captionlens.evaluate.result import EvaluationConfig, ExplanationEvaluation, load_suspect_rule

__all__ = ["EvaluationConfig", "ExplanationEvaluation", "evaluate_checkpoint", "evaluate_explanations",
           "evaluate_model", "load_suspect_rule", "score_captions",
           "CaptionObjects", "CategoryCount", "ChairResult", "ObjectMention", "SynonymTable", "chair", "chair_on_coco",
           "coco_ground_truth", "coco_synonyms", "load_captions"]
