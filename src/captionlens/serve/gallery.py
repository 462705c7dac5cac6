"""`Gallery`: the images `captionlens serve --images` offers, and the only files the server reads for a client.

The folder (or glob) is listed once, at start: the image files it holds (by suffix, as the command line
expands folders), each under its path relative to the listing's root. A client names an image by that
name, and a name is looked up in the listing, never joined to a path: `../x`, absolute paths and
URL-encoded forms of either are simply not names of the listing. Symbolic links are followed only where
they stay inside the root, when listing and again when reading (a link changed after the start is refused).
"""
from __future__ import annotations

import glob
import os
from pathlib import Path

from captionlens.data.images import IMAGE_SUFFIXES


class NotInGallery(LookupError):
    """A name that is not one of the gallery's images."""


class Gallery:
    def __init__(self, images: str | os.PathLike[str] | None) -> None:
        """`images`: a folder (its image files, not recursive), a glob ("photos/*.jpg", quoted), or None."""
        self.root: Path | None = None
        self._files: dict[str, Path] = {}
        if images is None:
            return
        spec = str(images)
        if glob.has_magic(spec):
            root, matches = _glob_root(spec), [Path(p) for p in sorted(glob.glob(spec))]
        else:
            root = Path(spec)
            if not root.is_dir():
                raise ValueError(f"--images {spec}: not a folder, and not a glob that matches files")
            matches = sorted(root.iterdir())
        self.root = root.resolve()
        for path in matches:
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and self._inside(path):
                self._files[path.relative_to(root).as_posix()] = path
        if not self._files:
            raise ValueError(f"--images {spec}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) there")

    @property
    def names(self) -> list[str]:
        return list(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def path(self, name: str) -> Path:
        """The file of image `name`, checked again to lie inside the root; `NotInGallery` for anything else."""
        path = self._files.get(name)
        if path is None or not path.is_file() or not self._inside(path):
            raise NotInGallery(f"no image {name!r} in the gallery")
        return path.resolve()

    def _inside(self, path: Path) -> bool:
        assert self.root is not None
        return path.resolve().is_relative_to(self.root)


def _glob_root(pattern: str) -> Path:
    """The folder a glob's matches lie under: its parts before the first one with a wildcard."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    return Path(*parts[:fixed]) if fixed else Path(".")
