"""`CaptionExplanation`: the one result every explanation method fills in, saved as .npz + .json.

Storage (format 2): the image once, losslessly: the bytes of the file it was read from when that is a
JPEG, PNG or WebP that decodes to exactly the explained pixels (checked when saving; another build of
the same decoder may differ from them by a unit in a few pixels of a JPEG), else as PNG. Per method its
raw maps and how they are drawn, never the full-resolution maps (they are redrawn on load, behind the
same API). Raw maps are kept in float16 after dividing each word's map by its largest |value| (the
scale is kept in float32), so a value is off by at most 2^-11 of its map's largest |value| (float16's
half-unit in the last place) wherever it lands, and so is every drawn pixel, a convex combination of
raw values: one 4,096th of a map's range where a figure shows 256 colours. Files of format 1
(full-resolution float32 maps) load.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from captionlens.atomic import atomic_path
from captionlens.data.images import ImageLoadError, decode_image
from captionlens.explain.maps import Drawing

FORMAT_VERSION = 2


class MethodMaps:
    """One method's per-word maps for one caption.

    `raw` is the method's own low-resolution result (e.g. (T, 7, 7) for Grad-CAM, (T, S) superpixel
    weights for LIME, (T, S, S) at the model input for occlusion) and `drawing` how it becomes `maps`,
    (T, H, W) float32 at the original image's resolution, drawn when first read (or given as they
    are). Values are the method's own units, not normalised: Grad-CAM/attention are >= 0, LIME and
    occlusion are signed. `extras` holds method-specific arrays (LIME: `segments` (H, W), `weights`
    (T, S), `r2` (T,); attention: `alphas`) and `settings` the arguments the method ran with.
    """

    def __init__(self, raw: np.ndarray, maps: np.ndarray | None = None, drawing: Drawing | None = None,
                 settings: dict[str, Any] | None = None, seconds: float = 0.0,
                 extras: dict[str, np.ndarray] | None = None) -> None:
        if maps is None and drawing is None:
            raise ValueError("MethodMaps needs its maps or the drawing that makes them from the raw maps")
        self.raw = raw
        self.drawing = drawing
        self.settings = settings or {}
        self.seconds = seconds
        self.extras = extras or {}
        self._maps = maps

    @property
    def maps(self) -> np.ndarray:
        if self._maps is None:
            assert self.drawing is not None
            self._maps = self.drawing.render(self.raw, self.extras)
        return self._maps


@dataclass
class CaptionExplanation:
    """What the model looked at for each word of one caption of one image."""

    image: np.ndarray                 # (H, W, 3) uint8, the original image as the user sees it
    tokens: list[str]                 # the explained words, without <START>/<END>
    token_ids: list[int]
    log_probs: np.ndarray             # (T,) log p(word_t | image, words_<t)
    methods: dict[str, MethodMaps] = field(default_factory=dict)
    source: str = "generated"         # "generated" (the model's own caption) or "given" (teacher-forced)
    decoding: dict[str, Any] = field(default_factory=dict)
    image_path: str | None = None
    suspect: list[dict[str, Any]] | None = None      # per word {"suspect", "value"} under `suspect_rule`
    suspect_rule: dict[str, Any] | None = None       # the `explain.statistics.SuspectRule` that set them
    image_file: bytes | None = field(default=None, repr=False)  # the file `image` was decoded from, if kept

    @property
    def caption(self) -> str:
        return " ".join(self.tokens)

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
                                "tokens": self.tokens, "source": self.source, "decoding": self.decoding,
                                "image_path": self.image_path,
                                "log_probs": [float(x) for x in self.log_probs], "methods": {},
                                "suspect": self.suspect, "suspect_rule": self.suspect_rule}
        for name, result in self.methods.items():
            arrays[f"{name}/raw"], arrays[f"{name}/raw_scale"] = _half(result.raw)
            info: dict[str, Any] = {"settings": result.settings, "seconds": result.seconds,
                                    "extras": sorted(result.extras)}
            if result.drawing is None:                     # maps given as they are: keep them
                arrays[f"{name}/maps"], arrays[f"{name}/maps_scale"] = _half(result.maps)
            else:
                info["drawing"] = result.drawing.to_json()
                for axis in ("rows", "cols"):
                    if getattr(result.drawing, axis) is not None:
                        arrays[f"{name}/drawing/{axis}"] = np.asarray(getattr(result.drawing, axis), np.float32)
            for key, value in result.extras.items():
                arrays[f"{name}/extras/{key}"] = _compact(np.asarray(value))
            meta["methods"][name] = info
        npz_path, json_path = stem.with_suffix(".npz"), stem.with_suffix(".json")
        with atomic_path(npz_path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=2, default=_jsonable), encoding="utf-8")
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
        """An explanation `save` wrote (format 1 or 2); maps are redrawn from the raw maps when first read."""
        stem = Path(stem)
        json_path, npz_path = stem.with_suffix(".json"), stem.with_suffix(".npz")
        try:
            meta = json.loads(json_path.read_text(encoding="utf-8"))
            arrays = np.load(npz_path, allow_pickle=False)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"explanation file not found: {exc.filename}") from None
        except (json.JSONDecodeError, ValueError, OSError) as exc:
            raise ValueError(f"{stem}: unreadable explanation ({exc})") from None
        with arrays:
            methods = {name: _method(arrays, name, info) for name, info in meta["methods"].items()}
            image_file = arrays["image_file"].tobytes() if "image_file" in arrays else None
            encoded = image_file if image_file is not None else (
                arrays["image_png"].tobytes() if "image_png" in arrays else None)
            image = np.asarray(decode_image(encoded, npz_path)) if encoded is not None else arrays["image"]
            return cls(image=image, image_file=image_file, tokens=list(meta["tokens"]),
                       token_ids=[int(i) for i in arrays["token_ids"]], log_probs=arrays["log_probs"],
                       methods=methods, source=meta["source"], decoding=meta["decoding"],
                       image_path=meta.get("image_path"), suspect=meta.get("suspect"),
                       suspect_rule=meta.get("suspect_rule"))


def _method(arrays: Any, name: str, info: dict[str, Any]) -> MethodMaps:
    extras = {k: arrays[f"{name}/extras/{k}"] for k in info["extras"]}
    raw = _full(arrays, f"{name}/raw")
    common = {"settings": info["settings"], "seconds": info["seconds"], "extras": extras}
    if "drawing" not in info:                             # format 1, or maps given as they were
        return MethodMaps(raw=raw, maps=_full(arrays, f"{name}/maps"), **common)
    spec = info["drawing"]
    centres = {axis: arrays[f"{name}/drawing/{axis}"].astype(np.float64) for axis in ("rows", "cols")
               if f"{name}/drawing/{axis}" in arrays}
    drawing = Drawing(spec["kind"], tuple(spec["image_hw"]), int(spec["input_size"]), centres.get("rows"),
                      centres.get("cols"), float(spec["sigma"]))
    return MethodMaps(raw=raw, drawing=drawing, **common)


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


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)
