"""`CaptionService`: what the live page asks of the model (captions, their words' probabilities and
alternatives, any method's maps, with or without a contrast), each request checked first, then
computed by the one `Worker` thread and kept, keyed by what it depends on.

Every answer comes from the library's own functions: decoding (`models.decoding`, continuing a prefix
when asked), teacher forcing (`explain.scoring`), `captionlens.explain` for the maps (so the page shows
exactly what the Python API returns) and `viz.page.heat_sprite` for how the viewer receives them.
"""
from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from captionlens.data.vocabulary import END, PAD, START, tokenize
from captionlens.evaluate.result import ExplanationEvaluation
from captionlens.explain.api import check_explain_arguments, explain
from captionlens.explain.contrast import Contrast, check_contrast, resolve_contrast
from captionlens.explain.registry import is_signed, method_label, runnable_methods
from captionlens.explain.scoring import caption_tensor, next_word_log_probs
from captionlens.explain.statistics import flag_words
from captionlens.explain.suspect import SuspectRule
from captionlens.models.decoding import check_decoding, decode_features
from captionlens.models.protocol import Captioner, eval_mode, model_device, require_vocab
from captionlens.serve.views import Alternative, CaptionView, ImageView, MapsView
from captionlens.serve.worker import Job, Worker
from captionlens.viz.overlay import method_maps
from captionlens.viz.page import fit, heat_sprite

DISPLAY_SIZE = 800     # longest side of the photo the page shows
HEAT_SIZE = 96         # longest side of each word's heatmap in a sprite


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """How the server decodes and explains: the default and largest beam, the longest caption, how many
    alternatives per position, each method's settings (as `explain` takes them), the images and results
    it keeps, and an evaluation.json whose suspect-word rule and recommended method it uses."""

    beam_size: int = 3
    max_beam_size: int = 10
    max_length: int = 20
    top_k: int = 5
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    cache_size: int = 256
    images_kept: int = 64
    evaluation: Path | None = None

    def __post_init__(self) -> None:
        check_decoding(self.beam_size, self.max_length)
        if not isinstance(self.max_beam_size, int) or self.max_beam_size < self.beam_size:
            raise ValueError(f"max_beam_size must be an integer >= beam_size ({self.beam_size}), got "
                             f"{self.max_beam_size!r}")
        for name in ("top_k", "cache_size", "images_kept"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class StoredImage:
    id: str
    name: str
    pixels: np.ndarray            # (H, W, 3) uint8

    def view(self) -> ImageView:
        height, width = self.pixels.shape[:2]
        heat_h, heat_w = fit((height, width), HEAT_SIZE)
        return ImageView(self.id, self.name, width, height, (heat_w, heat_h))


class ImageStore:
    """The images clients opened or uploaded, by content id (the same pixels get the same id), the last
    `capacity` kept; shared by the request handlers and the worker, so every access takes a lock."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._images: OrderedDict[str, StoredImage] = OrderedDict()
        self._jpegs: dict[str, bytes] = {}

    def add(self, image: Image.Image, name: str) -> StoredImage:
        pixels = np.ascontiguousarray(np.asarray(image.convert("RGB"), np.uint8))
        digest = hashlib.sha1(pixels.tobytes())
        digest.update(repr(pixels.shape).encode())
        stored = StoredImage(digest.hexdigest()[:16], name, pixels)
        with self._lock:
            self._images[stored.id] = stored                 # the same pixels under the name last given
            self._images.move_to_end(stored.id)
            while len(self._images) > self.capacity:
                gone, _ = self._images.popitem(last=False)
                self._jpegs.pop(gone, None)
            return stored

    def get(self, image_id: str) -> StoredImage:
        with self._lock:
            try:
                return self._images[image_id]
            except KeyError:
                raise LookupError(f"no image {image_id!r} on the server (open or upload it again)") from None

    def jpeg(self, image_id: str) -> bytes:
        """The photo as the page shows it: a JPEG, longest side at most `DISPLAY_SIZE`."""
        image = self.get(image_id)
        with self._lock:
            cached = self._jpegs.get(image_id)
        if cached is None:
            cached = jpeg_bytes(Image.fromarray(image.pixels), DISPLAY_SIZE)
            with self._lock:
                self._jpegs[image_id] = cached
        return cached


def jpeg_bytes(image: Image.Image, longest: int, quality: int = 90) -> bytes:
    h, w = fit((image.height, image.width), longest)
    resized = image if (w, h) == image.size else image.resize((w, h), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    resized.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class CaptionService:
    """The model behind the page (see the module docstring)."""

    def __init__(self, model: Captioner, settings: ServeSettings = ServeSettings()) -> None:
        self.model = model
        self.vocab = require_vocab(model)
        self.config = settings
        self.methods = runnable_methods(model)
        check_explain_arguments(model, self.methods, settings.beam_size, settings.max_length, "log_prob", None,
                                settings.settings)
        self.suspect_rule: SuspectRule | None = None
        self.recommended: str | None = None
        if settings.evaluation is not None:
            evaluation = ExplanationEvaluation.load(settings.evaluation)
            chosen = evaluation.hallucination.rule if evaluation.hallucination else None
            self.suspect_rule = chosen.rule if chosen else None
            if self.suspect_rule is not None and self.suspect_rule.method not in (None, *self.methods):
                raise ValueError(f"{settings.evaluation}: its suspect rule reads {self.suspect_rule.method}, which "
                                 "this model cannot run")
            self.recommended = evaluation.recommended if evaluation.recommended in self.methods else None
        self.images = ImageStore(settings.images_kept)
        self.worker = Worker(settings.cache_size)
        self._device = model_device(model)
        self._special = {self.vocab.start_idx, self.vocab.pad_idx}

    def close(self) -> None:
        self.worker.shutdown()

    def info(self) -> dict[str, Any]:
        """What the page needs to know of the server before any request."""
        return {"methods": [{"name": m, "label": method_label(m), "signed": is_signed(m)} for m in self.methods],
                "recommended": self.recommended, "beam_size": self.config.beam_size,
                "max_beam_size": self.config.max_beam_size, "top_k": self.config.top_k,
                "suspect_rule": self.suspect_rule.describe() if self.suspect_rule else None}

    # ---- requests: checked here, computed on the worker ----

    def caption(self, image_id: str, beam_size: int | None = None, prefix: Sequence[str] | None = None,
                text: str | None = None, words: Sequence[str] | None = None) -> Job:
        """The model's caption of an image (continuing `prefix` words when given), or a given caption,
        teacher-forced: typed `text` (tokenised; words the vocabulary lacks read as <UNK>) or exact `words`
        of the vocabulary. A `Job` whose result is a `CaptionView`."""
        image = self.images.get(image_id)
        beam = self.config.beam_size if beam_size is None else beam_size
        if not isinstance(beam, int) or isinstance(beam, bool) or not 1 <= beam <= self.config.max_beam_size:
            raise ValueError(f"beam size must be an integer from 1 to {self.config.max_beam_size}, got {beam!r}")
        if sum(x is not None and x != [] for x in (prefix, text, words)) > 1:
            raise ValueError("give one of a typed caption, its words or a prefix to continue")
        if text is not None or words is not None:
            if text is not None:
                typed = tokenize(str(text))
                unknown = tuple(dict.fromkeys(w for w in typed if w not in self.vocab or w in (PAD, START, END)))
                ids = tuple(self.vocab(w) if w not in unknown else self.vocab.unk_idx for w in typed)
            else:
                ids, unknown = tuple(self._word_ids(words or (), "caption")), ()
            if not ids:
                raise ValueError(f"the caption {text if text is not None else words!r} has no words")
            key: tuple[Any, ...] = ("caption", image.id, "given", ids, unknown)
            return self.worker.submit(key, lambda job: self._caption(image.id, None, ids, unknown, beam))
        prefix_ids = tuple(self._word_ids(prefix or (), "prefix"))
        key = ("caption", image.id, "generated", beam, prefix_ids)
        return self.worker.submit(key, lambda job: self._caption(image.id, prefix_ids, None, (), beam))

    def maps(self, image_id: str, tokens: Sequence[str], method: str, contrast: Contrast | None = None) -> Job:
        """One method's maps of every word of a caption (`tokens`, words of the vocabulary as a caption
        view lists them), optionally against foils: a `Job` whose result is a `MapsView`."""
        image = self.images.get(image_id)
        if method not in self.methods:
            raise ValueError(f"unknown method {method!r}; this model runs {', '.join(self.methods)}")
        ids = tuple(self._word_ids(tokens, "caption"))
        if not ids:
            raise ValueError("the caption to explain has no words")
        check_contrast(contrast)
        foils = resolve_contrast(contrast, ids, self.vocab)
        key = ("maps", image.id, ids, method, tuple((f.position, f.token_id) for f in foils))
        return self.worker.submit(key, lambda job: self._maps(job, image.id, ids, method, contrast or None))

    def _word_ids(self, words: Sequence[str], what: str) -> list[int]:
        if isinstance(words, str) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"the {what} must be a list of words")
        bad = [w for w in words if w not in self.vocab or w in (PAD, START, END)]
        if bad:
            raise ValueError(f"{what} word(s) not in the model's vocabulary: {', '.join(map(repr, bad))}")
        return [self.vocab(w) for w in words]

    # ---- computations: on the worker thread only ----

    def _distributions(self, pixels: np.ndarray, ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(features of the image, (T + 1, V) next-word log-probabilities along the caption)."""
        x = self.model.preprocessing.transform(Image.fromarray(pixels))[None].to(self._device)
        features = self.model.encode(x)
        return features, next_word_log_probs(self.model, features, caption_tensor(ids, self.vocab, self._device))[0]

    def _caption(self, image_id: str, prefix: tuple[int, ...] | None, given: tuple[int, ...] | None,
                 unknown: tuple[str, ...], beam: int) -> CaptionView:
        image = self.images.get(image_id)
        with eval_mode(self.model), torch.no_grad():
            if given is None:
                x = self.model.preprocessing.transform(Image.fromarray(image.pixels))[None].to(self._device)
                decoded = decode_features(self.model, self.model.encode(x), self.vocab, self.config.max_length, beam,
                                          prefix=prefix or ())[0]
                ids: Sequence[int] = decoded.token_ids
            else:
                ids = given
            _, log_probs = self._distributions(image.pixels, ids)
        log_probs = log_probs.float().cpu()
        words = [self.vocab.idx2word[i] for i in ids]
        ranked = log_probs.clone()
        ranked[:, sorted(self._special)] = float("-inf")
        top = ranked.topk(min(self.config.top_k, ranked.size(1) - len(self._special)), dim=1)
        alternatives = tuple(tuple(Alternative(self.vocab.idx2word[int(i)], float(v)) for v, i in zip(vs, is_))
                             for vs, is_ in zip(top.values.tolist(), top.indices.tolist()))
        suspect, rule = self._suspect(image, words) if words and self.suspect_rule else (None, None)
        return CaptionView(image=image.id, tokens=tuple(words),
                           log_probs=tuple(float(log_probs[t, i]) for t, i in enumerate(ids)),
                           alternatives=alternatives, end_log_prob=float(log_probs[len(ids), self.vocab.end_idx]),
                           source="generated" if given is None else "given",
                           beam_size=beam if given is None else None, prefix=len(prefix or ()), unknown=unknown,
                           suspect=suspect, suspect_rule=rule)

    def _suspect(self, image: StoredImage, words: list[str]) -> tuple[tuple[Any, ...], str]:
        """Each word's flag under the evaluation's rule (reading its method's maps, which are kept for the page)."""
        rule = self.suspect_rule
        assert rule is not None
        methods = () if rule.method is None else (rule.method,)
        expl = explain(self.model, image.pixels, methods, caption=words, settings=self.config.settings,
                       max_length=self.config.max_length)
        if rule.method is not None:
            ids = tuple(self.vocab(w) for w in words)
            view = self._view(image, expl, rule.method)
            self.worker.submit(("maps", image.id, ids, rule.method, ()), lambda job: view)
        return tuple(flag_words(rule, expl)), rule.describe()

    def _maps(self, job: Job, image_id: str, ids: tuple[int, ...], method: str,
              contrast: Contrast | None) -> MapsView:
        image = self.images.get(image_id)
        words = [self.vocab.idx2word[i] for i in ids]
        expl = explain(self.model, image.pixels, (method,), caption=words, settings=self.config.settings,
                       max_length=self.config.max_length, contrast=contrast, progress=job.report)
        foil_log_probs: tuple[float, ...] = ()
        if expl.contrast:
            with eval_mode(self.model), torch.no_grad():
                _, log_probs = self._distributions(image.pixels, ids)
            foil_log_probs = tuple(float(log_probs[f.position, f.token_id]) for f in expl.contrast)
        return self._view(image, expl, method, foil_log_probs)

    def _view(self, image: StoredImage, expl: Any, method: str, foil_log_probs: tuple[float, ...] = ()) -> MapsView:
        maps = method_maps(expl, method)
        signed = is_signed(method, maps)
        heat_w, heat_h = image.view().heat_size
        flat = maps.reshape(len(maps), -1)
        return MapsView(image=image.id, tokens=tuple(expl.tokens), method=method, signed=signed,
                        sprite=heat_sprite(maps, signed, (heat_h, heat_w)), heat_size=(heat_w, heat_h),
                        ranges=tuple((float(lo), float(hi)) for lo, hi in zip(flat.min(1), flat.max(1))),
                        contrast=expl.contrast, foil_log_probs=foil_log_probs, seconds=expl[method].seconds)
