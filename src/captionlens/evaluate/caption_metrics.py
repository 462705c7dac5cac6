"""Caption quality: the COCO caption metrics computed by pycocoevalcap's own scorers.

Keys of `score_captions`' result (scores on the 0-1 scale unless said otherwise):
  BLEU-1 .. BLEU-4  corpus BLEU (pycocoevalcap's "closest" reference length), 0-1;
  ROUGE-L           mean sentence ROUGE-L F (beta 1.2), 0-1;
  CIDEr-D / CIDEr   raw consensus score, 0-10 in principle (papers print it x100 as if it were a
                    percentage: we keep it raw). CIDEr-D when the installed pycocoevalcap has it,
                    else plain CIDEr; `cider_variant` says which. Its IDF comes from the evaluated
                    references, so it is only meaningful on a corpus of many images;
  METEOR            0-1, or None (with the reason under `skipped`) when `java` is not on PATH;
  SPICE             never computed (see `skipped`): it needs Stanford CoreNLP models downloaded.

Captions are tokenised by `data.vocabulary.tokenize` (lower case, punctuation dropped), the same
tokens the models are trained on. pycocoevalcap's PTBTokenizer is not used: it needs java and writes
temporary files into the installed package's folder, which may be read-only.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch

from captionlens.data.coco import CocoDataset
from captionlens.data.datasets import load_dataset
from captionlens.data.images import ImageLoadError
from captionlens.data.records import CaptionRecord
from captionlens.data.vocabulary import Vocabulary, tokenize
from captionlens.evaluate.chair import chair_on_coco
from captionlens.models.captioning import caption_files
from captionlens.models.checkpoints import load_checkpoint
from captionlens.models.protocol import Captioner

METRICS = ("BLEU", "ROUGE-L", "CIDEr", "METEOR")
SPICE_SKIPPED = "needs the Stanford CoreNLP models (a separate download); not computed"


def _cider() -> tuple[str, Any]:
    """("CIDEr-D", scorer) when the installed pycocoevalcap has it (some forks do), else ("CIDEr", scorer)."""
    try:
        from pycocoevalcap.ciderD.ciderD import CiderD
        return "CIDEr-D", CiderD()
    except ImportError:
        from pycocoevalcap.cider.cider import Cider
        return "CIDEr", Cider()


def score_captions(predictions: Mapping[Any, str], references: Mapping[Any, Sequence[str]],
                   metrics: Collection[str] = METRICS) -> dict[str, Any]:
    """Corpus scores of one predicted caption per image against that image's reference captions.

    `metrics` picks among "BLEU" (BLEU-1..4), "ROUGE-L", "CIDEr" (CIDEr-D when available) and
    "METEOR" (starts a java process: seconds). See the module doc for the keys of the result.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; choose from {', '.join(METRICS)}")
    if not predictions:
        raise ValueError("no predictions to score")
    missing = [key for key in predictions if not references.get(key)]
    if missing:
        raise ValueError(f"no reference captions for image {missing[0]!r}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    res = {key: [" ".join(tokenize(text))] for key, text in predictions.items()}
    gts = {key: [" ".join(tokenize(text)) for text in references[key]] for key in predictions}
    result: dict[str, Any] = {"images": len(res), "tokenizer": "captionlens.data.vocabulary.tokenize",
                              "skipped": {"SPICE": SPICE_SKIPPED}}
    # pycocoevalcap is imported here, not at the top, so that training runs where it is not installed.
    if "BLEU" in metrics:
        from pycocoevalcap.bleu.bleu import Bleu

        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        result.update({f"BLEU-{n}": float(score) for n, score in enumerate(bleu, 1)})
    if "ROUGE-L" in metrics:
        from pycocoevalcap.rouge.rouge import Rouge

        result["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    if "CIDEr" in metrics:
        name, scorer = _cider()
        result[name] = float(scorer.compute_score(gts, res)[0])
        result["cider_variant"] = name
    if "METEOR" in metrics:
        result["METEOR"], reason = _meteor(gts, res)
        if reason:
            result["skipped"]["METEOR"] = reason
    return result


def _meteor(gts: dict, res: dict) -> tuple[float | None, str | None]:
    """(METEOR, None), or (None, why it was skipped)."""
    if shutil.which("java") is None:
        return None, "java not found"
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        scorer = Meteor()
        score, _ = scorer.compute_score(gts, res)
    except (OSError, ValueError) as exc:  # java failed to start, or died (its reply line is empty)
        return None, f"java METEOR failed ({exc.__class__.__name__}: {exc})"
    return float(score), None


def predict_captions(model: Captioner, records: Sequence[CaptionRecord], vocab: Vocabulary | None = None,
                     beam_size: int = 3, max_length: int = 20, batch_size: int = 32) -> dict[str, str]:
    """The model's caption of each record's image, by image id; an unreadable image raises."""
    decoded = caption_files(model, [r.image_path for r in records], vocab, beam_size, max_length, batch_size)
    predictions = {}
    for record, result in zip(records, decoded):
        if isinstance(result, ImageLoadError):
            raise result
        predictions[record.image_id] = result.caption
    return predictions


def evaluate_model(model: Captioner, records: Sequence[CaptionRecord], vocab: Vocabulary | None = None,
                   beam_size: int = 3, max_length: int = 20, batch_size: int = 32,
                   metrics: Collection[str] = METRICS) -> dict[str, Any]:
    """Scores (`metrics`) of a model's free-running captions of dataset records, the decoding
    settings, and the caption of each image (`predictions`, by image id)."""
    predictions = predict_captions(model, records, vocab, beam_size, max_length, batch_size)
    references = {r.image_id: r.captions for r in records}
    return {"metrics": score_captions(predictions, references, metrics),
            "decoding": {"beam_size": beam_size, "max_length": max_length, "length_penalty": 0.0},
            "predictions": predictions}


def evaluate_checkpoint(checkpoint: str | os.PathLike, data: str | os.PathLike, split: str = "test",
                        beam_size: int = 3, max_length: int = 20, batch_size: int = 32, limit: int | None = None,
                        format: str | None = None, device: str | torch.device = "cpu",
                        metrics: Collection[str] = METRICS, chair: bool = False) -> dict[str, Any]:
    """`evaluate_model` of a checkpoint on one split of a dataset (the first `limit` images of it); with
    `chair`, also the CHAIR of its captions (`evaluate.chair.ChairResult.to_json()` under "chair"), which
    needs a COCO dataset's instance annotations."""
    dataset = load_dataset(data, format)
    if chair and not isinstance(dataset, CocoDataset):
        raise ValueError(f"{data}: CHAIR needs COCO's instance annotations (a COCO folder, --format coco)")
    records = dataset.split(split).records[:limit]
    if not records:
        raise ValueError(f"{data}: the {split!r} split has no images")
    ckpt = load_checkpoint(checkpoint, device)
    result = evaluate_model(ckpt.model, records, ckpt.vocab, beam_size, max_length, batch_size, metrics)
    if isinstance(dataset, CocoDataset) and chair:
        result["chair"] = chair_on_coco(result["predictions"], dataset.annotations).to_json()
    return {"checkpoint": str(checkpoint), "data": str(data), "split": split, **result}
