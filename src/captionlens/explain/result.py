"""`CaptionExplanation`: the one result every explanation method fills in, saved as .npz + .json.

Storage (format 3): the image once, losslessly: the bytes of the file it was read from when that is a
JPEG, PNG or WebP that decodes to exactly the explained pixels (checked when saving; another build of
the same decoder may differ from them by a unit in a few pixels of a JPEG), else as PNG. Per method its
raw maps, its settings and how its maps are drawn (with the drawing's arrays: centres, region labels),
never the full-resolution maps (they are redrawn on load, behind the same API). Raw maps are kept in
float16 after dividing each word's map by its largest |value| (the scale is kept in float32), so a value
is off by at most 2^-11 of its map's largest |value| (float16's half-unit in the last place) wherever it
lands, and so is every drawn pixel, a convex combination of raw values: one 4,096th of a map's range
where a figure shows 256 colours. Files of formats 1 (full-resolution float32 maps) and 2 (settings as
free dicts, LIME's labels among its extras) load.
This module is the only reader and writer of explanation.json / .npz.
"""
from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from captionlens.atomic import atomic_path
from captionlens.data.images import ImageLoadError, decode_image
from captionlens.data.records import check_types, describe, read_json
from captionlens.explain.contrast import Foil
from captionlens.explain.maps import Drawing
from captionlens.explain.registry import MethodSettings, settings_from_json
from captionlens.explain.suspect import SuspectFlag, SuspectRule

FORMAT_VERSION = 3  # 3: settings as the method's settings, drawings keep their own arrays; 1 and 2 load


class MethodMaps:
    """One method's per-word maps for one caption.

    `raw` is the method's own low-resolution result (e.g. (T, 7, 7) for Grad-CAM, (T, S) superpixel
    weights for LIME, (T, S, S) at the model input for occlusion) and `drawing` how it becomes `maps`,
    (T, H, W) float32 at the original image's resolution, drawn when first read (or given as they
    are). Values are the method's own units, not normalised: Grad-CAM/attention are >= 0, LIME and
    occlusion are signed. `settings` are the method's settings as it ran (its settings dataclass, with
    what it chose itself filled in, e.g. a batch size), `extras` method-specific arrays (LIME: `r2`
    (T,), `intercepts`; attention: `alphas`), `gradient_route` which route computed a gradient
    method's gradients (`explain.gradients`).
    """

    def __init__(self, *, method: str, raw: np.ndarray, settings: MethodSettings, maps: np.ndarray | None = None,
                 drawing: Drawing | None = None, seconds: float = 0.0, extras: dict[str, np.ndarray] | None = None,
                 gradient_route: str | None = None) -> None:
        if maps is None and drawing is None:
            raise ValueError("MethodMaps needs its maps or the drawing that makes them from the raw maps")
        self.method = method
        self.raw = raw
        self.drawing = drawing
        self.settings = settings
        self.seconds = seconds
        self.extras = extras or {}
        self.gradient_route = gradient_route
        self._maps = maps

    @property
    def maps(self) -> np.ndarray:
        if self._maps is None:
            assert self.drawing is not None
            self._maps = self.drawing.render(self.raw)
        return self._maps

    def release(self) -> None:
        """Forget the drawn maps (they are drawn again when next read); maps given as they are stay."""
        if self.drawing is not None:
            self._maps = None


@dataclass(frozen=True)
class Decoding:
    """Where the explained caption came from and what was explained: `source` "generated" (the model's own
    caption, with its `beam_size` and `max_length`) or "given" (teacher-forced); the `score` of each word
    and the `target_layer` the gradient methods differentiate at."""

    source: str = "generated"
    score: str = "log_prob"
    target_layer: str | None = None
    beam_size: int | None = None
    max_length: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = {"beam_size": self.beam_size, "max_length": self.max_length} if self.source == "generated" else {}
        return {**data, "source": self.source, "score": self.score, "target_layer": self.target_layer}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decoding:
        return cls(source=data.get("source", "generated"), score=data.get("score", "log_prob"),
                   target_layer=data.get("target_layer"), beam_size=data.get("beam_size"),
                   max_length=data.get("max_length"))


@dataclass(frozen=True)
class ExplanationHeader:
    """What explanation.json says of an explanation without its arrays: enough to find and list it."""

    image_path: str | None
    caption: str
    tokens: tuple[str, ...]
    methods: tuple[str, ...]


@dataclass
class CaptionExplanation:
    """What the model looked at for each word of one caption of one image."""

    image: np.ndarray                 # (H, W, 3) uint8, the original image as the user sees it
    tokens: list[str]                 # the explained words, without <START>/<END>
    token_ids: list[int]
    log_probs: np.ndarray             # (T,) log p(word_t | image, words_<t)
    methods: dict[str, MethodMaps] = field(default_factory=dict)
    decoding: Decoding = field(default_factory=Decoding)
    image_path: str | None = None
    suspect: list[SuspectFlag] | None = None         # per word, under `suspect_rule`
    suspect_rule: SuspectRule | None = None          # the rule that set them (`explain.statistics.flag_words`)
    targets: list[str] | None = None  # the word each position's maps explain, when not the caption's own
    contrast: tuple[Foil, ...] = ()   # positions explained against a foil: log p(word) - log p(foil) there
    image_share: np.ndarray | None = None  # (T,) each word's share of image evidence (`explain.image_share`)
    image_file: bytes | None = field(default=None, repr=False)  # the file `image` was decoded from, if kept

    @property
    def caption(self) -> str:
        return " ".join(self.tokens)

    @property
    def source(self) -> str:
        """"generated" (the model's own caption) or "given" (teacher-forced)."""
        return self.decoding.source

    def release_maps(self) -> None:
        """Forget every method's drawn full-resolution maps: a run over many images keeps its memory flat."""
        for result in self.methods.values():
            result.release()

    def __getitem__(self, method: str) -> MethodMaps:
        try:
            return self.methods[method]
        except KeyError:
            raise KeyError(f"no '{method}' maps in this explanation; it has {sorted(self.methods)}") from None

    def save(self, stem: str | Path) -> tuple[Path, Path]:
        """Write `<stem>.npz` (arrays) and `<stem>.json` (everything else), each atomically. No pickle anywhere."""
        stem = Path(stem)
        arrays: dict[str, Any] = dict([self._stored_image()], log_probs=np.asarray(self.log_probs, np.float32),
                                      token_ids=np.asarray(self.token_ids, np.int64))
        meta: dict[str, Any] = {"format_version": FORMAT_VERSION, "caption": self.caption,
                                "tokens": self.tokens, "source": self.source, "decoding": self.decoding.to_json(),
                                "image_path": self.image_path,
                                "log_probs": [float(x) for x in self.log_probs], "methods": {},
                                "suspect": None if self.suspect is None else [f.to_json() for f in self.suspect],
                                "suspect_rule": None if self.suspect_rule is None else self.suspect_rule.to_json(),
                                "targets": self.targets, "contrast": [f.to_json() for f in self.contrast],
                                "image_share": None if self.image_share is None else
                                [float(x) for x in self.image_share]}
        for name, result in self.methods.items():
            arrays[f"{name}/raw"], arrays[f"{name}/raw_scale"] = _half(result.raw)
            info: dict[str, Any] = {"method": result.method, "settings": result.settings.to_json(),
                                    "seconds": result.seconds, "gradient_route": result.gradient_route,
                                    "extras": sorted(result.extras)}
            if result.drawing is None:                     # maps given as they are: keep them
                arrays[f"{name}/maps"], arrays[f"{name}/maps_scale"] = _half(result.maps)
            else:
                info["drawing"] = result.drawing.to_json()
                for key in Drawing.ARRAYS:
                    value = getattr(result.drawing, key)
                    if value is not None:
                        arrays[f"{name}/drawing/{key}"] = (_compact(np.asarray(value)) if key == "segments"
                                                           else np.asarray(value, np.float32))
            for key, value in result.extras.items():
                arrays[f"{name}/extras/{key}"] = _compact(np.asarray(value))
            meta["methods"][name] = info
        npz_path, json_path = stem.with_suffix(".npz"), stem.with_suffix(".json")
        with atomic_path(npz_path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return npz_path, json_path

    def _stored_image(self) -> tuple[str, np.ndarray]:
        """("image_file", the source file's bytes) when they decode to exactly `image`, else ("image_png", a PNG)."""
        if self.image_file is not None:
            try:
                same = np.array_equal(np.asarray(decode_image(self.image_file, "image_file")), self.image)
            except ImageLoadError:
                same = False
            if same:
                return "image_file", np.frombuffer(self.image_file, np.uint8)
        return "image_png", _png(self.image)

    @classmethod
    def load(cls, stem: str | Path) -> CaptionExplanation:
        """An explanation `save` wrote (format 1, 2 or 3); maps are redrawn from the raw maps when first read.
        Anything else (truncated, mutated, parts that disagree: words, ids, maps, image size) is one ValueError
        naming the file, and no array is inflated past what its zip entry holds (`_read_arrays`)."""
        stem = Path(stem)
        meta = _read_meta(stem)
        npz_path = stem.with_suffix(".npz")
        arrays = _read_arrays(npz_path)
        try:
            methods = {name: _method(arrays, name, info) for name, info in meta["methods"].items()}
            image_file = arrays["image_file"].tobytes() if "image_file" in arrays else None
            encoded = image_file if image_file is not None else (
                arrays["image_png"].tobytes() if "image_png" in arrays else None)
            image = np.asarray(decode_image(encoded, npz_path)) if encoded is not None else arrays["image"]
            decoding = Decoding.from_json({"source": meta.get("source", "generated"), **meta.get("decoding", {})})
            expl = cls(image=image, image_file=image_file, tokens=list(meta["tokens"]),
                       token_ids=[int(i) for i in arrays["token_ids"]], log_probs=arrays["log_probs"],
                       methods=methods, decoding=decoding, image_path=meta.get("image_path"),
                       suspect=None if meta.get("suspect") is None else [SuspectFlag.from_json(f)
                                                                          for f in meta["suspect"]],
                       suspect_rule=None if meta.get("suspect_rule") is None else SuspectRule.from_json(
                           meta["suspect_rule"]), targets=meta.get("targets"),
                       contrast=tuple(Foil.from_json(f) for f in meta.get("contrast") or ()),
                       image_share=None if meta.get("image_share") is None else np.asarray(meta["image_share"]))
            _check_whole(expl)
        except ImageLoadError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, RecursionError) as exc:
            raise ValueError(f"{stem}: not a readable explanation ({describe(exc)})") from None
        return expl

    @staticmethod
    def read_header(stem: str | Path) -> ExplanationHeader:
        """`<stem>.json`'s caption, words, methods and source image, without reading the arrays."""
        json_path = Path(stem).with_suffix(".json")
        meta = _read_meta(Path(stem))
        try:
            header = ExplanationHeader(meta.get("image_path"), meta.get("caption", ""),
                                       tuple(meta.get("tokens", ())), tuple(meta.get("methods", {})))
            check_types(header, str(json_path))
        except TypeError as exc:
            raise ValueError(f"{json_path}: not a readable explanation ({describe(exc)})") from None
        return header


def _read_meta(stem: Path) -> dict[str, Any]:
    json_path = stem.with_suffix(".json")
    try:
        meta = read_json(json_path)
    except FileNotFoundError:
        raise FileNotFoundError(f"explanation file not found: {json_path}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("methods"), dict):
        raise ValueError(f"{json_path}: not an explanation file (no 'methods')")
    return meta


MAX_ARRAY_BYTES = 1 << 30  # an explanation's arrays inflated (a format-3 photo's take well under a megabyte)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an explanation's .npz, read whole and never unpickled. Before anything is inflated, the
    zip entries' sizes are held to `MAX_ARRAY_BYTES` and each array's size, as its .npy header declares it,
    to its entry's: a decompression bomb, or a header claiming more than its entry holds, is refused without
    the memory. Whatever a corrupt zip or .npy makes zipfile, zlib or numpy raise is one ValueError."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            total = sum(info.file_size for info in infos)
            if total > MAX_ARRAY_BYTES:
                raise ValueError(f"its arrays inflate to {total} bytes, more than an explanation's {MAX_ARRAY_BYTES}")
            arrays = {}
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"{info.filename[:60]!r} is not an array (.npy)")
                with archive.open(info) as fh:
                    _check_npy_header(fh, info)
                with archive.open(info) as fh:
                    arrays[info.filename.removesuffix(".npy")] = np.lib.format.read_array(fh, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"explanation file not found: {path}") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable explanation ({describe(exc)})") from None
    return arrays


def _check_npy_header(fh: Any, info: zipfile.ZipInfo) -> None:
    """ValueError unless the .npy header read from `fh` declares a plain array that fits in its zip entry."""
    version = np.lib.format.read_magic(fh)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"{info.filename[:60]}: .npy version {version} (1.0 and 2.0 are read)")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(fh)
    if dtype.hasobject or any(not isinstance(n, int) or n < 0 for n in shape):
        raise ValueError(f"{info.filename[:60]}: an array of {dtype} {shape} (objects are never unpickled)")
    size = math.prod(shape) * dtype.itemsize
    if size > info.file_size:
        raise ValueError(f"{info.filename[:60]}: declares {size} bytes of data in a zip entry of {info.file_size}")


def _check_whole(expl: CaptionExplanation) -> None:
    """ValueError unless a loaded explanation's parts agree: typed fields; an 8-bit RGB image; one token id,
    log-prob and suspect flag per word; per method, a row of raw maps per word that draws at the image's size."""
    check_types(expl, "explanation")
    image = expl.image
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or not image.size:
        raise ValueError(f"the image is a {image.dtype} array of shape {image.shape}, not 8-bit RGB")
    words = len(expl.tokens)
    counts = {"token ids": len(expl.token_ids), "suspect flags": words if expl.suspect is None else len(expl.suspect)}
    if expl.log_probs.dtype.kind != "f" or expl.log_probs.shape != (words,) or any(n != words for n in counts.values()):
        raise ValueError(f"{words} words but {len(expl.token_ids)} token ids, log-probs of shape "
                         f"{expl.log_probs.shape} and {counts['suspect flags']} suspect flags")
    for name, result in expl.methods.items():
        _check_maps(name, result, words, image.shape[:2])


def _check_maps(name: str, result: MethodMaps, words: int, image_hw: tuple[int, int]) -> None:
    raw, drawing = result.raw, result.drawing
    if raw.dtype.kind != "f" or raw.ndim < 2 or len(raw) != words:
        raise ValueError(f"{name}: raw maps of shape {raw.shape} for {words} words")
    if drawing is None:
        maps = result.maps
        if maps.dtype.kind != "f" or maps.shape != (words, *image_hw):
            raise ValueError(f"{name}: maps of shape {maps.shape}, expected {(words, *image_hw)}")
        return
    if tuple(drawing.image_hw) != tuple(image_hw):
        raise ValueError(f"{name}: drawn at {drawing.image_hw}, but the image is {image_hw}")
    if drawing.kind == "segments":
        segments = np.asarray(drawing.segments)
        if (raw.ndim != 2 or segments.dtype.kind not in "iu" or segments.shape != tuple(image_hw)
                or (segments.size and not 0 <= segments.min() <= segments.max() < raw.shape[1])):
            raise ValueError(f"{name}: region labels of shape {segments.shape} do not fit weights of shape {raw.shape}")
        return
    if raw.ndim != 3 or not (math.isfinite(drawing.sigma) and 0 <= drawing.sigma <= max(raw.shape[1:])):
        raise ValueError(f"{name}: raw maps of shape {raw.shape} drawn with sigma {drawing.sigma}")
    if drawing.rows is None and drawing.cols is None:
        return
    for key, centres, cells in (("rows", drawing.rows, raw.shape[1]), ("cols", drawing.cols, raw.shape[2])):
        if (centres is None or centres.shape != (cells,) or not np.isfinite(centres).all()
                or (np.diff(centres) <= 0).any()):
            raise ValueError(f"{name}: {key} centres do not place {cells} cells")
    if drawing.input_size < 1:
        raise ValueError(f"{name}: centres in an input of {drawing.input_size} px")


def _method(arrays: Any, name: str, info: dict[str, Any]) -> MethodMaps:
    extras = {k: arrays[f"{name}/extras/{k}"] for k in info["extras"]}
    raw = _full(arrays, f"{name}/raw")
    recorded = dict(info["settings"])
    common = {"method": info.get("method", recorded.get("method", name)), "seconds": info["seconds"],
              "settings": settings_from_json(name, recorded),
              "gradient_route": info.get("gradient_route", recorded.get("gradient_route"))}
    if "drawing" not in info:                             # format 1, or maps given as they were
        return MethodMaps(raw=raw, maps=_full(arrays, f"{name}/maps"), extras=extras, **common)
    spec = info["drawing"]
    drawn = {key: arrays[f"{name}/drawing/{key}"] for key in Drawing.ARRAYS if f"{name}/drawing/{key}" in arrays}
    if spec["kind"] == "segments" and "segments" not in drawn:     # format 2 kept LIME's labels as an extra
        drawn["segments"] = extras.pop("segments")
    centres: dict[str, np.ndarray] = {key: np.asarray(drawn[key], np.float64) for key in ("rows", "cols")
                                      if key in drawn}
    drawing = Drawing.from_json(spec, {**drawn, **centres})
    return MethodMaps(raw=raw, drawing=drawing, extras=extras, **common)


def _half(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values / each map's largest |value| in float16, those scales in float32); a zero map keeps scale 1."""
    values = np.asarray(values, np.float32)
    flat = values.reshape(len(values), -1) if values.ndim > 1 else values.reshape(-1, 1)
    scale = np.abs(flat).max(1) if flat.size else np.zeros(len(flat), np.float32)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    return (flat / scale[:, None]).reshape(values.shape).astype(np.float16), scale


def _full(arrays: Any, key: str) -> np.ndarray:
    """The float32 values `_half` packed under `key` (or stored as they were, format 1)."""
    values = arrays[key]
    if f"{key}_scale" not in arrays:
        return np.asarray(values, np.float32)
    scale = arrays[f"{key}_scale"].astype(np.float32)
    if scale.ndim != 1 or values.ndim < 1 or len(values) != len(scale):
        raise ValueError(f"'{key}' of shape {values.shape} has scales of shape {scale.shape}")
    if not values.size:
        return values.astype(np.float32)
    return (values.astype(np.float32).reshape(len(scale), -1) * scale[:, None]).reshape(values.shape)


def _compact(values: np.ndarray) -> np.ndarray:
    """Integer arrays in the smallest unsigned (or signed) type that holds them; others as they are."""
    if values.dtype.kind in "iu" and values.size:
        for dtype in (np.uint8, np.uint16, np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= values.min() and values.max() <= info.max:
                return values.astype(dtype)
    return values


def _png(image: np.ndarray) -> np.ndarray:
    """Lossless; the fastest deflate level, as stronger ones shrink a photo by a few per cent for far more time."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG", compress_level=1)
    return np.frombuffer(buffer.getvalue(), np.uint8)
