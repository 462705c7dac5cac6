"""The one front end of the static report and the live page (`captionlens serve`): both fill a template of
`viz/static` with the shared viewer (viewer.html, viewer.css, viewer.js: words, methods, the heatmap over
the photo, colour scale, keyboard walk) and their own part (<name>.css, <name>.js), and both hand the
viewer the same heatmap sprites (`heat_sprite`) and colour tables (`colormap_tables`).
"""
from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

import numpy as np
from PIL import Image

from captionlens.viz.overlay import DEFAULT_CMAP, SIGNED_CMAP, colormap_lut, colormap_positions


def static_text(name: str) -> str:
    """A file of `viz/static`."""
    return (resources.files("captionlens.viz") / "static" / name).read_text(encoding="utf-8")


def page(name: str, parts: Mapping[str, str]) -> str:
    """`static/<name>.html` filled: {{VIEWER}} the viewer's markup, {{CSS}} and {{JS}} the viewer's and the
    page's own styles and script, every other {{KEY}} from `parts`. One regex pass, so inserted content is
    never re-scanned for placeholders."""
    filled = {"VIEWER": static_text("viewer.html"),
              "CSS": static_text("viewer.css") + static_text(f"{name}.css"),
              "JS": static_text("viewer.js") + static_text(f"{name}.js"), **parts}
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda match: filled[match.group(1)], static_text(f"{name}.html"))


def script_json(data: Any) -> str:
    """JSON to place inside <script type="application/json">: compact, with "<" escaped so no "</script>"."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")


def colormap_tables() -> dict[str, list[int]]:
    """The viewer's colour scales: 256 RGB entries of the unsigned and the signed colormap, flattened."""
    return {"unsigned": colormap_lut(DEFAULT_CMAP).ravel().tolist(),
            "signed": colormap_lut(SIGNED_CMAP).ravel().tolist()}


def fit(hw: tuple[int, int], longest: int) -> tuple[int, int]:
    """(H, W) shrunk (never enlarged) so that the longer side is at most `longest`."""
    scale = min(1.0, longest / max(hw))
    return max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale))


def heat_sprite(maps: np.ndarray, signed: bool, heat_hw: tuple[int, int]) -> str:
    """(T, H, W) maps -> PNG data URL of a (T * h, w) uint8 stack of colormap positions (0..255); scaled
    after shrinking, so each word's map spans the whole colour scale."""
    stack = colormap_positions(maps, heat_hw, signed).reshape(-1, heat_hw[1])
    buffer = io.BytesIO()
    Image.fromarray(stack, mode="L").save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
