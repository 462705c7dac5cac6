"""`explain()`: per-word maps for the caption a model produces (or a given caption), any methods at once."""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from captionlens.data.images import read_image
from captionlens.data.vocabulary import END, PAD, START, Vocabulary, tokenize
from captionlens.explain.context import ExplainContext
from captionlens.explain.contrast import Contrast, check_contrast, foil_ids, resolve_contrast
from captionlens.explain.image_share import image_shares
from captionlens.explain.registry import METHODS, MethodSettings, resolve_settings
from captionlens.explain.result import CaptionExplanation, Decoding
from captionlens.explain.scoring import Score, caption_tensor, check_score, padded_captions, scores_from_features
from captionlens.explain.statistics import flag_words
from captionlens.explain.suspect import SuspectRule
from captionlens.explain.target import TargetLayer
from captionlens.models.decoding import check_decoding, decode_features
from captionlens.models.protocol import Captioner, eval_mode, model_device, require_vocab

ImageLike = str | Path | Image.Image | np.ndarray
Settings = Mapping[str, Mapping[str, Any]]
Caption = str | Sequence[str]                  # a text (tokenised), or the caption's words as they are
Progress = Callable[[str, int, int], None]     # (method, done, total): a long method's forward passes so far


def _as_pil(image: ImageLike) -> tuple[Image.Image, str | None, bytes | None]:
    """(RGB image, its path, the file's bytes when worth keeping: `data.images.read_image`)."""
    if isinstance(image, (str, Path)):
        pil, encoded = read_image(image)
        return pil, str(image), encoded
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image array must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        return Image.fromarray(image), None, None
    if isinstance(image, Image.Image):
        return image.convert("RGB"), None, None
    raise TypeError(f"image must be a path, PIL image or (H, W, 3) uint8 array, got {type(image).__name__}")


def _given_caption_ids(caption: Caption, vocab: Vocabulary) -> list[int]:
    if not isinstance(caption, str):           # words as they are: each must be one of the vocabulary's
        words = list(caption)
        unknown = [w for w in words if not isinstance(w, str) or w not in vocab or w in (PAD, START, END)]
        if unknown or not words:
            raise ValueError(f"caption {words!r}: " + (f"words not in the vocabulary: {unknown}" if unknown
                                                          else "no words"))
        return [vocab(w) for w in words]
    tokens = tokenize(caption)
    if not tokens:
        raise ValueError(f"caption {caption!r} has no words")
    unknown = [t for t in tokens if t not in vocab]
    if unknown:
        warnings.warn(f"caption words not in the vocabulary, explained as <UNK>: {', '.join(unknown)}",
                      stacklevel=3)
    return vocab.encode(tokens, add_special=False)


def _target_ids(words: Sequence[str], caption_ids: Sequence[int], vocab: Vocabulary) -> list[int]:
    """The vocabulary ids of the words to explain at each position of a caption of `caption_ids`."""
    if len(words) != len(caption_ids):
        raise ValueError(f"{len(words)} target words given for a caption of {len(caption_ids)} words")
    unknown = [w for w in words if w not in vocab]
    if unknown:
        raise ValueError(f"target words not in the model's vocabulary: {', '.join(unknown)}")
    return [vocab(w) for w in words]


def explain(model: Captioner, image: ImageLike, methods: Sequence[str] = ("gradcam",),
            caption: Caption | None = None, vocab: Vocabulary | None = None, beam_size: int = 3,
            max_length: int = 20, score: Score = "log_prob", target_layer: str | int | None = None,
            settings: Settings | None = None, suspect_rule: SuspectRule | None = None,
            contrast: Contrast | None = None, progress: Progress | None = None) -> CaptionExplanation:
    """Explain every word of one caption of one image with each of `methods`.

    With `caption=None` the explained caption is the one the model produces with these decoding
    settings (beam search when beam_size > 1); with a string, that caption is teacher-forced (tokenised as
    `data.vocabulary.tokenize` does; words the vocabulary lacks become <UNK>, with a warning); with a list
    of words, those words exactly (each one of the vocabulary's, "<UNK>" included).
    `settings` maps a method name to its options, e.g. {"lime": {"num_samples": 500}}; every name and
    value is checked before the image is touched. The image is prepared by the model's own preprocessing.
    With a `suspect_rule` (chosen by `captionlens evaluate-explanations`), each word is flagged or not
    in `CaptionExplanation.suspect`.

    `contrast` asks "why this word and not that one?": {position: foil}, position the word's index in the
    explained caption (0 is the first word), foil a word of the vocabulary, e.g. {2: "yellow"}. At that
    position every method explains log p(word) - log p(foil) given the same image and words before it
    (equal to logit(word) - logit(foil): the softmax's normaliser cancels, so `score` does not matter
    there); the other positions keep their own score. Methods whose maps do not depend on the word
    scored (attention, EigenCAM) give the same maps. Recorded in `CaptionExplanation.contrast`.

    `progress(method, done, total)` is called by the long methods (LIME, occlusion) after each batch of
    perturbed images; an exception it raises stops the explanation and propagates (how a server cancels one).
    """
    return explain_batch(model, [image], methods, None if caption is None else [caption], vocab, beam_size,
                         max_length, score, target_layer, settings, suspect_rule,
                         contrasts=None if contrast is None else [contrast], progress=progress)[0]


def check_explain_arguments(model: Captioner, methods: Sequence[str], beam_size: int, max_length: int,
                            score: str, target_layer: str | int | None, settings: Settings | None,
                            suspect_rule: SuspectRule | None = None) -> dict[str, MethodSettings]:
    """Every usage error of an explanation run, raised before any image is read; the checked settings."""
    check_decoding(beam_size, max_length)
    if suspect_rule is not None and suspect_rule.method is not None and suspect_rule.method not in methods:
        raise ValueError(f"the suspect rule ({suspect_rule.describe()}) reads {suspect_rule.method}'s maps: "
                         f"add {suspect_rule.method} to the methods")
    check_score(score)
    TargetLayer(model, target_layer)
    return resolve_settings(model, methods, settings)


def explain_batch(model: Captioner, images: Sequence[ImageLike], methods: Sequence[str] = ("gradcam",),
                  captions: Sequence[Caption] | None = None, vocab: Vocabulary | None = None, beam_size: int = 3,
                  max_length: int = 20, score: Score = "log_prob", target_layer: str | int | None = None,
                  settings: Settings | None = None, suspect_rule: SuspectRule | None = None,
                  targets: Sequence[Sequence[str]] | None = None,
                  contrasts: Sequence[Contrast | None] | None = None,
                  progress: Progress | None = None) -> list[CaptionExplanation]:
    """`explain` for many images: the encoder runs once per image (its target-layer activations are
    reused by decoding, scoring and the gradient methods), captions are decoded in one batch, and each
    method runs once over all the images (the gradient methods and attention batched across images,
    LIME and occlusion image by image, each with large batches of perturbed images of its own).

    `targets` (with given `captions`): per image, the word each position's map explains instead of the
    caption's own, with the caption's words before it as the prefix ("where would it look for 'square'
    here?"); recorded in `CaptionExplanation.targets`. `contrasts`: per image, `explain`'s `contrast`
    (None: none), applied to the word each position explains; `progress` as `explain`'s."""
    methods = list(dict.fromkeys(methods))
    checked = check_explain_arguments(model, methods, beam_size, max_length, score, target_layer, settings,
                                      suspect_rule)
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions given for {len(images)} images")
    if targets is not None and (captions is None or len(targets) != len(images)):
        raise ValueError("targets need the given captions, one list of words per image")
    if contrasts is not None and len(contrasts) != len(images):
        raise ValueError(f"{len(contrasts)} contrasts given for {len(images)} images")
    for contrast in contrasts or ():
        check_contrast(contrast)
    vocab = require_vocab(model, vocab)
    if not images:
        return []
    device = model_device(model)
    loaded = [_as_pil(img) for img in images]
    tensors = torch.stack([model.preprocessing.transform(pil) for pil, _, _ in loaded]).to(device)
    with eval_mode(model):
        target = TargetLayer(model, target_layer)
        with torch.no_grad():
            activations = target.lower(tensors)
            features = target.upper(activations)
        if captions is None:
            decoded = decode_features(model, features, vocab, max_length=max_length, beam_size=beam_size)
            id_lists = [d.token_ids for d in decoded]
            log_prob_lists = [d.log_probs for d in decoded]  # decoding's own, equal to teacher forcing
            decoding = Decoding("generated", score, target.name, beam_size, max_length)
        else:
            id_lists = [_given_caption_ids(c, vocab) for c in captions]
            with torch.no_grad():
                log_prob_lists = [scores_from_features(model, features[i:i + 1], caption_tensor(ids, vocab, device),
                                                       "log_prob")[0].tolist() for i, ids in enumerate(id_lists)]
            decoding = Decoding("given", score, target.name)
        scored = [None] * len(id_lists) if targets is None else [_target_ids(words, ids, vocab)
                                                                for words, ids in zip(targets, id_lists)]
        foils = [resolve_contrast(contrast, ids if words is None else words, vocab)
                 for contrast, ids, words in zip(contrasts or [None] * len(images), id_lists, scored)]
        contexts = [ExplainContext(model, vocab, np.asarray(pil), tensors[i:i + 1], caption_tensor(ids, vocab, device),
                                   list(ids), target, activations[i:i + 1], score, scored[i],
                                   foil_ids(foils[i], len(ids)))
                    for i, ((pil, _, _), ids) in enumerate(zip(loaded, id_lists))]
        results = [CaptionExplanation(image=ctx.image, tokens=[vocab.idx2word[i] for i in ctx.token_ids],
                                      token_ids=list(ctx.token_ids), log_probs=np.asarray(lp, np.float32),
                                      decoding=decoding, image_path=path, image_file=encoded,
                                      targets=None if ctx.targets is None else [vocab.idx2word[i]
                                                                                for i in ctx.targets],
                                      contrast=foils_i)
                   for ctx, lp, (_, path, encoded), foils_i in zip(contexts, log_prob_lists, loaded, foils)]
        worded = [k for k, ctx in enumerate(contexts) if ctx.token_ids]   # a caption without words has no maps
        for name, options in checked.items():
            for ctx in contexts:
                ctx.progress = None if progress is None else partial(progress, name)
            start = time.perf_counter()
            maps = METHODS[name].explain([contexts[k] for k in worded], options)
            seconds = (time.perf_counter() - start) / max(len(worded), 1)
            for k, one in zip(worded, maps):
                one.seconds = seconds
                results[k].methods[name] = one
        if suspect_rule is not None and suspect_rule.statistic == "image_share":
            shares = image_shares(model, features, padded_captions(id_lists, vocab, device), [len(i) for i in id_lists])
            for result, share in zip(results, shares):
                result.image_share = share
        if suspect_rule is not None:
            for result in results:
                if result.tokens:
                    result.suspect, result.suspect_rule = flag_words(suspect_rule, result), suspect_rule
        return results

