"""`CaptionExplanation`: the one result every explanation method fills in, saved as .npz + .json."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from captionlens.atomic import atomic_path

FORMAT_VERSION = 1


@dataclass
class MethodMaps:
    """One method's per-word maps for one caption.

    `maps` is (T, H, W) float32 at the original image's resolution, `raw` the method's own
    low-resolution maps (e.g. (T, 7, 7) for Grad-CAM). Values are the method's own units,
    not normalised: Grad-CAM/attention are >= 0, LIME and occlusion are signed.
    `extras` holds method-specific arrays (LIME: `segments` (H, W), `weights` (T, S), `r2` (T,);
    attention: `alphas`) and `settings` the arguments the method ran with.
    """

    maps: np.ndarray
    raw: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    extras: dict[str, np.ndarray] = field(default_factory=dict)


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
        arrays: dict[str, Any] = {
            "image": self.image, "log_probs": np.asarray(self.log_probs, np.float32),
            "token_ids": np.asarray(self.token_ids, np.int64)}
        meta: dict[str, Any] = {"format_version": FORMAT_VERSION, "caption": self.caption,
                                "tokens": self.tokens, "source": self.source, "decoding": self.decoding,
                                "image_path": self.image_path,
                                "log_probs": [float(x) for x in self.log_probs], "methods": {},
                                "suspect": self.suspect, "suspect_rule": self.suspect_rule}
        for name, result in self.methods.items():
            arrays[f"{name}/maps"] = result.maps.astype(np.float32)
            arrays[f"{name}/raw"] = result.raw.astype(np.float32)
            for key, value in result.extras.items():
                arrays[f"{name}/extras/{key}"] = np.asarray(value)
            meta["methods"][name] = {"settings": result.settings, "seconds": result.seconds,
                                     "extras": sorted(result.extras)}
        npz_path, json_path = stem.with_suffix(".npz"), stem.with_suffix(".json")
        with atomic_path(npz_path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=2, default=_jsonable), encoding="utf-8")
        return npz_path, json_path

    @classmethod
    def load(cls, stem: str | Path) -> CaptionExplanation:
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
            methods = {
                name: MethodMaps(maps=arrays[f"{name}/maps"], raw=arrays[f"{name}/raw"],
                                 settings=info["settings"], seconds=info["seconds"],
                                 extras={k: arrays[f"{name}/extras/{k}"] for k in info["extras"]})
                for name, info in meta["methods"].items()}
            return cls(image=arrays["image"], tokens=list(meta["tokens"]),
                       token_ids=[int(i) for i in arrays["token_ids"]], log_probs=arrays["log_probs"],
                       methods=methods, source=meta["source"], decoding=meta["decoding"],
                       image_path=meta.get("image_path"), suspect=meta.get("suspect"),
                       suspect_rule=meta.get("suspect_rule"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)
