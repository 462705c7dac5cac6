"""`export_explanations`: explain many image files into one folder per image, an HTML report and a summary.

Layout of `out_dir`:
    <folder>/explanation.npz|json   the `CaptionExplanation` (json written last)
    <folder>/grid-<method>.jpg      per-word overlays, one image per method (`viz.tiles`; figures "grid", "all")
    <folder>/comparison.png         words x methods, matplotlib (figures "all", more than one method)
    <folder>/triptych-<method>.png  image / heatmap / overlay of the first word, matplotlib (figures "all")
    <folder>/report/                the image's files for the page (`viz.report.write_entry`) and entry.json
    index.html                      `viz.report.write_page` over every complete folder
    summary.json                    what was done, skipped and failed, timings, settings

Each image folder is built in a hidden temporary folder inside `out_dir` and renamed into place, so an
interrupted run never leaves a half-written folder: a visible folder is complete. A folder name is
the image's file stem, with a short hash of its full path added when the stem is taken (another
input or an earlier run's image has it), and an image keeps the folder an earlier run gave it
(found by the source path recorded in explanation.json), so `resume` finds its work again; it draws
the figures a finished folder lacks (an earlier run asked for fewer) from its explanation.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from captionlens import distributed
from captionlens.atomic import atomic_path
from captionlens.data.images import ImageLoadError, read_image
from captionlens.explain import api
from captionlens.explain.registry import ordered_methods
from captionlens.explain.result import CaptionExplanation
from captionlens.explain.statistics import SuspectRule
from captionlens.models.protocol import Captioner
from captionlens.viz.figures import method_comparison, save_figure, triptych
from captionlens.viz.report import ASSETS, Sizes, write_entry, write_page
from captionlens.viz.tiles import save_tiles, word_tiles

FIGURES = ("none", "grid", "all")   # what a user needs to look at one image is "grid", the default
EXPLANATION = "explanation"        # explanation.npz + explanation.json
SUMMARY = "summary.json"
PARTIAL_PREFIX = ".partial-"       # temporary folders; never listed as results
REPORT_DIR = "report"              # inside each image folder: its files for index.html
REPORT_SIZES = Sizes(heat=64)      # the page shows maps no larger
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class ExportSummary:
    """Outcome of one export run; `done`/`skipped` hold {"path", "folder"}, `failed` {"path", "error"}."""

    out_dir: Path
    done: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    index_html: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class _Job:
    path: Path       # absolute
    folder: str


def export_explanations(model: Captioner, image_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                        methods: Sequence[str] = ("gradcam",), beam_size: int = 3, batch_size: int = 8,
                        resume: bool = False, settings: dict[str, dict[str, Any]] | None = None,
                        figures: str = "grid", progress: bool = True,
                        max_length: int = 20, suspect_rule: SuspectRule | None = None) -> ExportSummary:
    """Explain each image's generated caption with `methods` and write it to `out_dir` (see the module doc).

    Images are explained `batch_size` at a time; an unreadable image or one whose explanation fails is
    reported in one `error: ...` line on stderr, listed under `failed` in summary.json, and the run goes on. With
    `resume`, images whose folder is complete and holds every requested method are skipped.
    """
    methods = list(dict.fromkeys(methods))
    _check_arguments(image_paths, methods, figures, batch_size)
    api.check_explain_arguments(model, methods, beam_size, max_length, "log_prob", None, settings, suspect_rule)
    options = {"beam_size": beam_size, "max_length": max_length, "settings": settings or {},
               "suspect_rule": suspect_rule}
    world = distributed.current()
    start = time.perf_counter()
    out = Path(out_dir)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _remove_partials(out)
    world.barrier()
    summary = ExportSummary(out)
    pending, redraw = _pending_jobs(out, image_paths, methods, resume, figures, summary)  # the same on every rank
    world.barrier()  # every rank has read `out` before any writes to it
    timings = {"explain": 0.0, "figures": 0.0}
    for folder in redraw[world.rank::world.size]:  # finished folders without the figures asked for now
        tick = time.perf_counter()
        _write_figures(out / folder, CaptionExplanation.load(out / folder / EXPLANATION), methods, figures)
        timings["figures"] += time.perf_counter() - tick
    method_seconds = dict.fromkeys(methods, 0.0)
    mine = pending[world.rank::world.size]
    # disable=None: tqdm stays quiet when stderr is not a terminal (logs, CI)
    with tqdm(total=len(mine), unit="img", disable=None if progress and world.is_main else True, file=sys.stderr,
              desc="explaining") as bar, ThreadPoolExecutor(1, thread_name_prefix="captionlens-writer") as writer:
        # one thread writes the folders of a batch while the next batch is explained; at most one batch
        # waits, so memory stays flat
        writing: deque[tuple[_Job, CaptionExplanation, Future[float]]] = deque()

        def finish_one() -> None:
            job, expl, future = writing.popleft()
            timings["figures"] += future.result()
            for name in methods:
                method_seconds[name] += expl[name].seconds
            summary.done.append({"path": str(job.path), "folder": job.folder, "caption": expl.caption})
            bar.update(1)

        for batch in _chunks(mine, batch_size):
            tick = time.perf_counter()
            outcomes = list(_explain_jobs(model, batch, methods, options))
            timings["explain"] += time.perf_counter() - tick
            for job, outcome in outcomes:
                if isinstance(outcome, Exception):
                    _fail(summary, job, outcome)
                    bar.update(1)
                else:
                    writing.append((job, outcome, writer.submit(_write_folder, out, job.folder, outcome, methods,
                                                                figures)))
            while len(writing) > batch_size:
                finish_one()
        while writing:
            finish_one()
    work = _merge_ranks(world, summary, pending, timings, method_seconds)
    if world.is_main:
        tick = time.perf_counter()
        summary.index_html = _write_index(out)
        work["seconds"]["report"] = time.perf_counter() - tick
        summary.seconds = time.perf_counter() - start
        _write_summary(summary, methods, options, figures, work)
    world.barrier()  # the merged files exist when any rank returns
    return summary


def _merge_ranks(world: distributed.World, summary: ExportSummary, pending: list[_Job],
                 timings: dict[str, float], method_seconds: dict[str, float]) -> dict[str, Any]:
    """Every rank's done and failed images into `summary`, in input order, and the ranks' timings:
    work summed over ranks, the slowest rank's for the throughput."""
    order = {str(job.path): i for i, job in enumerate(pending)}
    shards = world.gather((summary.done, summary.failed, timings, method_seconds))
    summary.done = sorted((d for done, _, _, _ in shards for d in done), key=lambda d: order[d["path"]])
    summary.failed = sorted((f for _, failed, _, _ in shards for f in failed), key=lambda f: order[f["path"]])
    slowest = max(sum(t.values()) for _, _, t, _ in shards)
    return {"seconds": {k: sum(t[k] for _, _, t, _ in shards) for k in timings},
            "method_seconds": {k: sum(m[k] for _, _, _, m in shards) for k in method_seconds},
            "processes": world.size,
            "images_per_second": len(summary.done) / slowest if slowest > 0 else None}


def rebuild_report(out_dir: str | os.PathLike) -> ExportSummary:
    """index.html and summary.json of `out_dir` rebuilt from its complete image folders (`captionlens report`).

    For a run whose processes were stopped before the merged files were written, or folders gathered
    from several runs. Settings and failures are kept from an existing summary.json (a failure that now
    has a complete folder is dropped); `done` lists every complete folder.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"{out}: no such folder")
    metas = _folder_metas(out)
    if not metas:
        raise ValueError(f"{out}: no complete image folder (with explanation.json and explanation.npz) to report")
    previous = _read_previous_summary(out / SUMMARY)
    summary = ExportSummary(out)
    summary.done = [{"path": str(meta.get("image_path")), "folder": name, "caption": meta.get("caption", "")}
                    for name, meta in metas.items()]
    done_paths = {d["path"] for d in summary.done}
    summary.failed = [f for f in previous.get("failed", []) if f.get("path") not in done_paths]
    methods = previous.get("methods") or ordered_methods({m for meta in metas.values()
                                                          for m in meta.get("methods", {})})
    summary.index_html = _write_index(out)
    summary.seconds = time.perf_counter() - start
    decoding = previous.get("decoding", {})
    options = {"beam_size": decoding.get("beam_size"), "max_length": decoding.get("max_length"),
               "settings": previous.get("settings", {}), "suspect_rule": None}
    work = {"seconds": {"report": summary.seconds}, "method_seconds": previous.get("method_seconds", {}),
            "processes": previous.get("processes", 1), "images_per_second": previous.get("images_per_second")}
    _write_summary(summary, list(methods), options, previous.get("figures", "grid"), work,
                   suspect_rule=previous.get("suspect_rule"))
    return summary


def _read_previous_summary(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not a readable summary ({exc}); move it away to rebuild from the folders") from None
    return data if isinstance(data, dict) else {}


def _pending_jobs(out: Path, image_paths: Sequence[str | os.PathLike], methods: list[str], resume: bool,
                  figures: str, summary: ExportSummary) -> tuple[list[_Job], list[str]]:
    """(the images to explain now, each with its folder; the folders to draw missing figures in). With
    `resume`, complete folders go to summary.skipped, and those lacking a figure `figures` asks for
    (an earlier run's were fewer) get them drawn from their explanation, which is not redone."""
    metas = _folder_metas(out)
    jobs = _assign_folders([Path(os.path.abspath(p)) for p in image_paths], _recorded_sources(metas), out)
    pending, redraw = [], []
    for job in jobs:
        meta = metas.get(job.folder, {}) if resume else {}
        if not meta or not set(methods) <= set(meta.get("methods", {})):  # not complete with every method
            pending.append(job)
            continue
        skipped: dict[str, Any] = {"path": str(job.path), "folder": job.folder}
        if meta.get("tokens") and not all((out / job.folder / name).is_file()
                                          for name in _figure_files(methods, figures)):
            redraw.append(job.folder)
            skipped["figures_drawn"] = True
        summary.skipped.append(skipped)
    return pending, redraw


def _check_arguments(image_paths: Sequence[Any], methods: Sequence[str], figures: str,
                     batch_size: int) -> None:
    """Usage errors of the export itself, raised before any work (they would otherwise fail every image alike);
    `api.check_explain_arguments` checks the explanation's."""
    if not image_paths:
        raise ValueError("no images to explain")
    if not methods:
        raise ValueError("no explanation methods given")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if figures not in FIGURES:
        raise ValueError(f"unknown figures {figures!r}; choose from {FIGURES}")


def _chunks(items: list[_Job], size: int) -> Iterator[list[_Job]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _safe_stem(path: Path) -> str:
    return _UNSAFE.sub("_", path.stem).strip("_")[:60] or "image"


def _path_hash(path: Path) -> str:
    return hashlib.sha1(str(path).encode("utf-8")).hexdigest()[:8]


def _assign_folders(paths: list[Path], existing: dict[str, str], out: Path) -> list[_Job]:
    """One folder per distinct image: the one an earlier run recorded for it, else its safe stem, else
    stem-<hash of its full path> when the stem is shared by several inputs or already taken."""
    paths = list(dict.fromkeys(paths))
    taken = {ASSETS.lower()} | {entry.name.lower() for entry in out.iterdir()}
    new = [p for p in paths if str(p) not in existing]
    counts: dict[str, int] = {}
    for path in new:
        counts[_safe_stem(path).lower()] = counts.get(_safe_stem(path).lower(), 0) + 1
    folders = {}
    for path in new:
        stem = _safe_stem(path)
        if counts[stem.lower()] > 1 or stem.lower() in taken:
            stem = f"{stem}-{_path_hash(path)}"
        taken.add(stem.lower())
        folders[path] = stem
    return [_Job(p, existing.get(str(p)) or folders[p]) for p in paths]


def _result_folders(out: Path) -> list[Path]:
    """Complete result folders (visible, with explanation.json and .npz), sorted by name."""
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / f"{EXPLANATION}.json").is_file() and (p / f"{EXPLANATION}.npz").is_file())


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / f"{EXPLANATION}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _folder_metas(out: Path) -> dict[str, dict[str, Any]]:
    """Folder name -> its explanation.json ({} when unreadable), for every complete folder, read once."""
    return {folder.name: _read_meta(folder) or {} for folder in _result_folders(out)}


def _recorded_sources(metas: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Absolute source image path -> folder name, for the complete folders an earlier run left."""
    sources: dict[str, str] = {}
    for name, meta in metas.items():
        if meta.get("image_path"):
            sources.setdefault(meta["image_path"], name)
    return sources


def _explain_jobs(model: Captioner, jobs: list[_Job], methods: list[str], options: dict[str, Any]
                  ) -> Iterator[tuple[_Job, CaptionExplanation | Exception]]:
    """Each job with its explanation or its error: loaded one by one, explained as one batch, and one
    by one again when the batch fails, so only the image at fault is lost."""
    loaded: list[tuple[_Job, Image.Image, bytes | None]] = []
    for job in jobs:
        try:
            loaded.append((job, *read_image(job.path)))
        except ImageLoadError as exc:
            yield job, exc
    if len(loaded) > 1:
        try:
            results = _explain_images(model, loaded, methods, options)
        except (ValueError, RuntimeError):
            results = None  # find the image at fault below
        if results is not None:
            yield from zip((job for job, _, _ in loaded), results)
            return
    for item in loaded:
        try:
            result: CaptionExplanation | Exception = _explain_images(model, [item], methods, options)[0]
        except (ValueError, RuntimeError) as exc:
            result = exc
        yield item[0], result


def _explain_images(model: Captioner, loaded: list[tuple[_Job, Image.Image, bytes | None]], methods: list[str],
                    options: dict[str, Any]) -> list[CaptionExplanation]:
    """explain_batch on loaded images (with their files' bytes, kept by the explanation files); `options` are
    its beam_size, max_length and settings."""
    results = api.explain_batch(model, [image for _, image, _ in loaded], methods, **options)
    for (job, _, encoded), result in zip(loaded, results):
        result.image_path, result.image_file = str(job.path), encoded
    return results


def _fail(summary: ExportSummary, job: _Job, error: Exception) -> None:
    message = " ".join(str(error).split())
    if str(job.path) not in message and job.path.name not in message:
        message = f"{job.path}: {message}"
    tqdm.write(f"error: {message}", file=sys.stderr)
    summary.failed.append({"path": str(job.path), "error": message})


def _write_folder(out: Path, folder: str, expl: CaptionExplanation, methods: list[str], figures: str) -> float:
    """Figures, the page's files, then explanation.npz and .json, into a temporary folder renamed to
    out/folder; returns the seconds it took."""
    start = time.perf_counter()
    build = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=out))
    try:
        if expl.tokens:
            _write_figures(build, expl, methods, figures)
        _write_report_entry(expl, build / REPORT_DIR, folder)
        expl.save(build / EXPLANATION)
        os.chmod(build, 0o755)  # mkdtemp makes it private; results are ordinary folders
        target = out / folder
        if target.exists():  # a rerun: swap the old folder out, the new one in, then drop the old
            old = build.with_name(build.name + "-old")
            os.rename(target, old)
            os.rename(build, target)
            shutil.rmtree(old)
        else:
            os.rename(build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return time.perf_counter() - start


def _figure_files(methods: list[str], figures: str) -> dict[str, Callable[[CaptionExplanation, Path], object]]:
    """The figure files `figures` puts in an image folder (see the module doc), each with what writes it."""
    if figures == "none":
        return {}
    files: dict[str, Callable[[CaptionExplanation, Path], object]] = {
        f"grid-{name}.jpg": partial(_save_word_tiles, method=name) for name in methods}
    if figures == "all":
        if len(methods) > 1:
            files["comparison.png"] = lambda expl, path: save_figure(method_comparison(expl, methods), path)
        files[f"triptych-{methods[0]}.png"] = lambda expl, path: save_figure(triptych(expl, methods[0], 0), path)
    return files


def _save_word_tiles(expl: CaptionExplanation, path: Path, method: str) -> Path:
    return save_tiles(word_tiles(expl, method), path)


def _write_figures(folder: Path, expl: CaptionExplanation, methods: list[str], figures: str) -> None:
    """`_figure_files`, each written atomically."""
    for name, write in _figure_files(methods, figures).items():
        write(expl, folder / name)


def _remove_partials(out: Path) -> None:
    """Temporary folders an interrupted (killed) earlier run could not clean up."""
    for entry in out.glob(f"{PARTIAL_PREFIX}*"):
        shutil.rmtree(entry, ignore_errors=True)


def _write_report_entry(expl: CaptionExplanation, report: Path, stem: str) -> dict[str, Any]:
    """The image's page files and their entry (report/entry.json), written when it is explained, so
    that index.html over any number of folders reads only these small entries."""
    entry = write_entry(expl, report, stem, REPORT_SIZES)
    (report / "entry.json").write_text(json.dumps(entry), encoding="utf-8")
    return entry


def _folder_entry(folder: Path) -> dict[str, Any]:
    """The page entry of a complete folder: its report/entry.json, or, for a folder without one (an
    earlier version's) or whose name changed, one made now from its explanation."""
    try:
        entry = json.loads((folder / REPORT_DIR / "entry.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        entry = None
    if not isinstance(entry, dict) or entry.get("stem") != folder.name:
        build = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=folder))
        try:
            entry = _write_report_entry(CaptionExplanation.load(folder / EXPLANATION), build / REPORT_DIR,
                                        folder.name)
            shutil.rmtree(folder / REPORT_DIR, ignore_errors=True)
            os.rename(build / REPORT_DIR, folder / REPORT_DIR)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return {**entry, "name": folder.name, "assets": f"{folder.name}/{REPORT_DIR}"}


def _write_index(out: Path) -> Path | None:
    """index.html over every complete folder in `out` (this run's and earlier ones'), or None if there is none."""
    folders = _result_folders(out)
    if not folders:
        return None
    return write_page([_folder_entry(folder) for folder in folders], out)


def _write_summary(summary: ExportSummary, methods: list[str], options: dict[str, Any], figures: str,
                   work: dict[str, Any], suspect_rule: str | None = None) -> None:
    rule = options["suspect_rule"]
    data = {
        "format_version": 1, "methods": methods, "settings": options["settings"],
        "decoding": {"beam_size": options["beam_size"], "max_length": options["max_length"]},
        "suspect_rule": rule.describe() if rule else suspect_rule,
        "figures": figures, "images": len(summary.done) + len(summary.skipped) + len(summary.failed),
        "done": summary.done, "skipped": summary.skipped, "failed": summary.failed,
        "processes": work["processes"],
        "seconds": {**{k: round(v, 3) for k, v in work["seconds"].items()}, "total": round(summary.seconds, 3)},
        "method_seconds": {k: round(v, 3) for k, v in work["method_seconds"].items()},
        "images_per_second": round(work["images_per_second"], 3) if work["images_per_second"] else None,
        "index_html": summary.index_html.name if summary.index_html else None,
    }
    with atomic_path(summary.out_dir / SUMMARY) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
