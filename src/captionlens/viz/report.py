"""`write_report`: a self-contained interactive HTML page (no server, no network) for many explanations.

Layout of `out_dir`:
    index.html                 page, inline CSS/JS, entry metadata as <script type="application/json">
    assets/<stem>/image.jpg    the photo (longer side <= max_image_size)
    assets/<stem>/thumb.jpg    gallery thumbnail (only when the photo is larger than thumb_size)
    assets/<stem>/heat.js      heatmaps, loaded when the image is opened

The two halves are public for runs over many images (`captionlens explain`): `write_entry` writes one
image's files into any folder when the image is explained, and `write_page` writes index.html over
entries that say where their files are, so the page over 10,000 images needs no explanation reloaded.

Heatmaps are not pre-blended: for each method, all words' maps are normalised (min-max, or
value / max|value| for signed methods, so 0 sits at 128), shrunk to <= heat_size px and stacked into one
small grayscale PNG; the browser colours them with the same matplotlib colormaps (as lookup tables) and
blends them over the photo with a <canvas> and an opacity slider. That keeps 1000 images small and the
page fast: the gallery is plain lazy-loaded thumbnails, and an image's words, heatmaps and controls are
built only when it is opened. heat.js wraps the PNGs as data: URLs in a script so the canvas stays
readable when index.html is opened from file:// (images loaded from file:// would taint it). The page's
viewer is the one `captionlens serve` shows too (`viz.page`).
"""
from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from captionlens.atomic import atomic_path
from captionlens.explain.registry import is_signed, method_label, ordered_methods
from captionlens.explain.result import CaptionExplanation
from captionlens.explain.suspect import SuspectFlag
from captionlens.viz.overlay import check_image, method_maps
from captionlens.viz.page import colormap_tables, fit, heat_sprite, page, script_json

ASSETS = "assets"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_stem(name: str) -> str:
    """A file-system-safe folder name from an image name: its stem, other characters as "_", at most 60."""
    return _UNSAFE.sub("_", Path(name).stem).strip("_")[:60] or "image"


@dataclass(frozen=True)
class ReportEntry:
    """One image on the page: its caption and what the page needs to draw it. `write_entry` makes it with
    the image's files; the page adds where they are (`assets`, relative to index.html) and its `name`."""

    stem: str                                 # unique within a page: the image's files call back with it
    tokens: tuple[str, ...]
    log_probs: tuple[float, ...]
    methods: tuple[str, ...]
    signed: tuple[str, ...]                   # the methods whose maps carry a sign
    width: int
    height: int
    heat_size: tuple[int, int]                # (w, h) of each word's heatmap in heat.js
    thumb: tuple[str, int, int]               # (file, w, h) of the gallery thumbnail
    suspect: tuple[SuspectFlag, ...] | None = None
    suspect_rule: str | None = None           # the rule that flagged the words, described
    name: str = ""
    assets: str = ""

    def placed(self, name: str, assets: str) -> ReportEntry:
        return dataclasses.replace(self, name=name, assets=assets)

    def to_json(self) -> dict[str, Any]:
        return {"stem": self.stem, "tokens": list(self.tokens),
                "suspect": None if self.suspect is None else [f.to_json() for f in self.suspect],
                "suspect_rule": self.suspect_rule, "log_probs": list(self.log_probs), "methods": list(self.methods),
                "signed": list(self.signed), "width": self.width, "height": self.height,
                "heat_size": list(self.heat_size), "thumb": list(self.thumb), "name": self.name,
                "assets": self.assets}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReportEntry:
        thumb = data["thumb"]
        return cls(stem=data["stem"], tokens=tuple(data["tokens"]), log_probs=tuple(data["log_probs"]),
                   methods=tuple(data["methods"]), signed=tuple(data["signed"]), width=int(data["width"]),
                   height=int(data["height"]), heat_size=(int(data["heat_size"][0]), int(data["heat_size"][1])),
                   thumb=(str(thumb[0]), int(thumb[1]), int(thumb[2])),
                   suspect=None if data.get("suspect") is None else tuple(SuspectFlag.from_json(f)
                                                                          for f in data["suspect"]),
                   suspect_rule=data.get("suspect_rule"), name=data.get("name", ""), assets=data.get("assets", ""))


def write_report(explanations: Iterable[CaptionExplanation], out_dir: str | os.PathLike[str],
                 image_names: Sequence[str] | None = None, title: str = "captionlens: what the captioner looked at",
                 heat_size: int = 64, thumb_size: int = 200, max_image_size: int = 800, appendix: str = "") -> Path:
    """Write the report into `out_dir` and return the path of its index.html.

    `explanations` is read once, one at a time (a generator of loaded files keeps memory flat however
    many images there are). Everything is first written into a temporary folder inside `out_dir`, then
    moved into place with renames (index.html last), so an interrupted run never leaves a half-written
    page; an earlier report's `assets/` in `out_dir` is replaced. `appendix` is HTML placed after the
    gallery (the explanation evaluation's section, `viz.evaluation.html_section`).
    """
    sizes = Sizes(heat=heat_size, thumb=thumb_size, image=max_image_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=".report-build-", dir=out_dir))
    try:
        entries, stems = [], _Stems()
        for i, expl in enumerate(explanations):
            if image_names is not None and i >= len(image_names):
                raise ValueError(f"{len(image_names)} image_names given for more explanations")
            name = str(image_names[i]) if image_names is not None else \
                (Path(expl.image_path).name if expl.image_path else f"image {i + 1}")
            stem = stems.add(name)
            try:
                entry = write_entry(expl, build / ASSETS / stem, stem, sizes)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
            entries.append(entry.placed(name, f"{ASSETS}/{stem}"))
        if not entries:
            raise ValueError("write_report needs at least one explanation")
        if image_names is not None and len(image_names) != len(entries):
            raise ValueError(f"{len(image_names)} image_names given for {len(entries)} explanations")
        (build / "index.html").write_text(_page(title, entries, appendix), encoding="utf-8")
        if (out_dir / ASSETS).exists():
            os.rename(out_dir / ASSETS, build / "previous-assets")
        os.rename(build / ASSETS, out_dir / ASSETS)
        os.replace(build / "index.html", out_dir / "index.html")
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return out_dir / "index.html"


def write_page(entries: Sequence[ReportEntry], out_dir: str | os.PathLike[str],
               title: str = "captionlens: what the captioner looked at", appendix: str = "") -> Path:
    """index.html (written atomically) over `write_entry` entries, each `placed` (its name, and its folder
    relative to `out_dir`); returns its path."""
    if not entries:
        raise ValueError("write_page needs at least one entry")
    missing = [e.stem for e in entries if not (e.name and e.assets)]
    if missing:
        raise ValueError(f"report entries not placed on the page (no name or assets): {missing[:3]}")
    out = Path(out_dir) / "index.html"
    with atomic_path(out) as tmp:
        tmp.write_text(_page(title, entries, appendix), encoding="utf-8")
    return out


@dataclass(frozen=True)
class Sizes:
    """Longest side, in pixels, of the stored heatmaps, thumbnails and photos."""

    heat: int = 64
    thumb: int = 200
    image: int = 800


class _Stems:
    """File-system-safe, case-insensitively unique folder names derived from the image names, one by one."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def add(self, name: str) -> str:
        stem = safe_stem(name)
        if stem.lower() in self.seen:
            stem = f"{stem}-{len(self.seen)}"
        self.seen.add(stem.lower())
        return stem


def write_entry(expl: CaptionExplanation, folder: Path, stem: str, sizes: Sizes = Sizes()) -> ReportEntry:
    """Write one image's files into `folder` (created): image.jpg, thumb.jpg when the photo is larger
    than a thumbnail, heat.js (whose callback names the image by `stem`, unique within a page); return
    its entry, not yet `placed` on a page."""
    image = check_image(expl.image)
    folder.mkdir(parents=True)
    photo = Image.fromarray(image)
    _save_jpeg(photo, sizes.image, folder / "image.jpg")
    thumb = "image.jpg"
    if max(photo.size) > sizes.thumb:
        thumb = "thumb.jpg"
        _save_jpeg(photo, sizes.thumb, folder / thumb)
    heat_hw = fit(image.shape[:2], sizes.heat)
    methods = ordered_methods(expl.methods) if expl.tokens else []
    sprites, signed = {}, []
    for method in methods:
        maps = method_maps(expl, method)
        if is_signed(method, maps):
            signed.append(method)
        sprites[method] = heat_sprite(maps, method in signed, heat_hw)
    (folder / "heat.js").write_text(f"captionlensHeat({json.dumps(stem)}, {json.dumps(sprites)});\n",
                                    encoding="utf-8")
    thumb_h, thumb_w = fit(image.shape[:2], sizes.thumb)
    return ReportEntry(stem=stem, tokens=tuple(expl.tokens),
                       log_probs=tuple(round(float(x), 4) for x in expl.log_probs), methods=tuple(methods),
                       signed=tuple(signed), width=int(image.shape[1]), height=int(image.shape[0]),
                       heat_size=(heat_hw[1], heat_hw[0]), thumb=(thumb, thumb_w, thumb_h),
                       suspect=None if expl.suspect is None else tuple(expl.suspect),
                       suspect_rule=expl.suspect_rule.describe() if expl.suspect_rule else None)


def _card(index: int, entry: ReportEntry) -> str:
    """The gallery card of an entry: its thumbnail (lazy-loaded) and caption."""
    thumb, width, height = entry.thumb
    caption = " ".join(entry.tokens) or "(no words)"
    return (f'<li><button type="button" class="card" data-entry="{index}"><img src="{html.escape(entry.assets)}/'
            f'{thumb}" loading="lazy" decoding="async" width="{width}" height="{height}" '
            f'alt="{html.escape(entry.name)}"><span>{html.escape(caption)}</span></button></li>')


def _save_jpeg(photo: Image.Image, longest: int, path: Path) -> None:
    h, w = fit((photo.height, photo.width), longest)
    resized = photo if (w, h) == photo.size else photo.resize((w, h), Image.Resampling.LANCZOS)
    resized.save(path, format="JPEG", quality=90)


def _page(title: str, entries: Sequence[ReportEntry], appendix: str = "") -> str:
    """The report's page: the shared viewer (`viz.page`) in a dialog over the gallery."""
    methods = ordered_methods({m for e in entries for m in e.methods})
    data = {"format_version": 1, "entries": [e.to_json() for e in entries],
            "labels": {m: method_label(m) for m in methods}, "colormaps": colormap_tables()}
    return page("report", {
        "TITLE": html.escape(title),
        "SUMMARY": html.escape(f"{len(entries)} image{'s' * (len(entries) != 1)} · methods: "
                               f"{', '.join(map(method_label, methods)) or 'none'} · click an image, then a word"),
        "GALLERY": "\n".join(_card(i, entry) for i, entry in enumerate(entries)),
        "APPENDIX": appendix,
        "DATA": script_json(data),
    })
