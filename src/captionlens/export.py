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
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from captionlens import distributed
from captionlens.atomic import atomic_path
from captionlens.data.images import ImageLoadError, read_image
from captionlens.data.records import check_types, describe, read_json
from captionlens.explain import api
from captionlens.explain.registry import ordered_methods
from captionlens.explain.result import CaptionExplanation, ExplanationHeader
from captionlens.explain.suspect import SuspectRule
from captionlens.models.protocol import Captioner
from captionlens.viz.figures import method_comparison, save_figure, triptych
from captionlens.viz.report import ASSETS, ReportEntry, Sizes, safe_stem, write_entry, write_page
from captionlens.viz.tiles import save_tiles, word_tiles

FIGURES = ("none", "grid", "all")   # what a user needs to look at one image is "grid", the default
EXPLANATION = "explanation"        # explanation.npz + explanation.json
SUMMARY = "summary.json"
SUMMARY_VERSION = 2                # 2: the suspect rule as the rule itself (1: its description)
PARTIAL_PREFIX = ".partial-"       # temporary folders; never listed as results
REPORT_DIR = "report"              # inside each image folder: its files for index.html
ENTRY = "entry.json"               # inside REPORT_DIR: the image's `ReportEntry`
REPORT_SIZES = Sizes(heat=64)      # the page shows maps no larger


@dataclass(frozen=True)
class ExportOptions:
    """What every image of a run is explained with, and which figures it gets."""

    methods: tuple[str, ...]
    beam_size: int | None = 3
    max_length: int | None = 20
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    suspect_rule: SuspectRule | None = None
    figures: str = "grid"


@dataclass(frozen=True)
class Explained:
    """An image explained by this run, into `folder`."""

    path: str
    folder: str
    caption: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "folder": self.folder, "caption": self.caption}


@dataclass(frozen=True)
class Skipped:
    """An image whose complete folder an earlier run left (`resume`); `figures_drawn` when this run drew
    figures it lacked."""

    path: str
    folder: str
    figures_drawn: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "folder": self.folder, **({"figures_drawn": True} if self.figures_drawn else {})}


@dataclass(frozen=True)
class Failed:
    """An image that could not be read or explained, with the one-line reason."""

    path: str
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "error": self.error}


@dataclass(frozen=True)
class ExportSummary:
    """Outcome of one export run, written as summary.json (`save`, `load`)."""

    out_dir: Path
    options: ExportOptions
    done: tuple[Explained, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    failed: tuple[Failed, ...] = ()
    processes: int = 1
    seconds: float = 0.0                                      # the whole run
    timings: Mapping[str, float] = field(default_factory=dict)       # explain, figures, report: summed over ranks
    method_seconds: Mapping[str, float] = field(default_factory=dict)
    images_per_second: float | None = None                    # by the slowest rank's time
    index_html: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        options = self.options
        return {
            "format_version": SUMMARY_VERSION, "methods": list(options.methods), "settings": options.settings,
            "decoding": {"beam_size": options.beam_size, "max_length": options.max_length},
            "suspect_rule": options.suspect_rule.to_json() if options.suspect_rule else None,
            "figures": options.figures, "images": len(self.done) + len(self.skipped) + len(self.failed),
            "done": [d.to_json() for d in self.done], "skipped": [s.to_json() for s in self.skipped],
            "failed": [f.to_json() for f in self.failed], "processes": self.processes,
            "seconds": {**{k: round(v, 3) for k, v in self.timings.items()}, "total": round(self.seconds, 3)},
            "method_seconds": {k: round(v, 3) for k, v in self.method_seconds.items()},
            "images_per_second": round(self.images_per_second, 3) if self.images_per_second else None,
            "index_html": self.index_html.name if self.index_html else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], out_dir: Path) -> ExportSummary:
        decoding = data.get("decoding") or {}
        rule = data.get("suspect_rule")
        options = ExportOptions(methods=tuple(data.get("methods") or ()), beam_size=decoding.get("beam_size"),
                                max_length=decoding.get("max_length"), settings=data.get("settings") or {},
                                suspect_rule=SuspectRule.from_json(rule) if isinstance(rule, dict) else None,
                                figures=data.get("figures", "grid"))
        seconds = dict(data.get("seconds") or {})
        index = data.get("index_html")
        return cls(out_dir, options, tuple(Explained(d["path"], d["folder"], d.get("caption", ""))
                                           for d in data.get("done", [])),
                   tuple(Skipped(s["path"], s["folder"], bool(s.get("figures_drawn")))
                         for s in data.get("skipped", [])),
                   tuple(Failed(f["path"], f["error"]) for f in data.get("failed", [])), int(data.get("processes", 1)),
                   float(seconds.pop("total", 0.0)), seconds, dict(data.get("method_seconds") or {}),
                   data.get("images_per_second"), out_dir / index if index else None)

    def save(self) -> Path:
        path = self.out_dir / SUMMARY
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=2), encoding="utf-8")
        return path

    @classmethod
    def load(cls, out_dir: Path) -> ExportSummary | None:
        """The summary.json of `out_dir`, or None when there is none; one ValueError naming it when it is not
        one whole (every field of its type, the lists lists, `index_html` a file name in `out_dir`)."""
        path = out_dir / SUMMARY
        if not path.is_file():
            return None
        try:
            data = read_json(path)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            for key in ("methods", "done", "skipped", "failed"):
                if not isinstance(data.get(key) or [], list):
                    raise ValueError(f"'{key}' is not a list")
            index = data.get("index_html")
            if index is not None and (not isinstance(index, str) or index in ("", ".", "..")
                                      or Path(index).name != index):
                raise ValueError(f"'index_html' is {index!r:.60}, not a file name")
            summary = cls.from_json(data, out_dir)
            check_types(summary, "summary")
            if summary.options.figures not in FIGURES:
                raise ValueError(f"'figures' is {summary.options.figures!r:.40}; expected one of {FIGURES}")
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
            reason = str(exc) if isinstance(exc, ValueError) and str(exc).startswith(str(path)) else describe(exc)
            raise ValueError(f"{path}: not a readable summary ({reason}); move it away to rebuild from the "
                             "folders") from None
        return summary


@dataclass
class _Job:
    path: Path       # absolute
    folder: str


@dataclass
class _Outcomes:
    """What one rank did: its images' outcomes, in order, and its timings."""

    done: list[Explained] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=lambda: {"explain": 0.0, "figures": 0.0})
    method_seconds: dict[str, float] = field(default_factory=dict)


def export_explanations(model: Captioner, image_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                        methods: Sequence[str] = ("gradcam",), beam_size: int = 3, batch_size: int = 8,
                        resume: bool = False, settings: Mapping[str, Mapping[str, Any]] | None = None,
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
    options = ExportOptions(tuple(methods), beam_size, max_length, dict(settings or {}), suspect_rule, figures)
    world = distributed.current()
    start = time.perf_counter()
    out = Path(out_dir)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _remove_partials(out)
    world.barrier()
    pending, redraw, skipped = _pending_jobs(out, image_paths, methods, resume, figures)  # the same on every rank
    world.barrier()  # every rank has read `out` before any writes to it
    mine = _Outcomes(method_seconds=dict.fromkeys(methods, 0.0))
    for folder in redraw[world.rank::world.size]:  # finished folders without the figures asked for now
        tick = time.perf_counter()
        _write_figures(out / folder, CaptionExplanation.load(out / folder / EXPLANATION), methods, figures)
        mine.timings["figures"] += time.perf_counter() - tick
    jobs = pending[world.rank::world.size]
    # disable=None: tqdm stays quiet when stderr is not a terminal (logs, CI)
    with tqdm(total=len(jobs), unit="img", disable=None if progress and world.is_main else True, file=sys.stderr,
              desc="explaining") as bar, ThreadPoolExecutor(1, thread_name_prefix="captionlens-writer") as writer:
        # one thread writes the folders of a batch while the next batch is explained; at most one batch
        # waits, so memory stays flat
        writing: deque[tuple[_Job, CaptionExplanation, Future[float]]] = deque()

        def finish_one() -> None:
            job, expl, future = writing.popleft()
            mine.timings["figures"] += future.result()
            for name in methods:
                mine.method_seconds[name] += expl[name].seconds
            mine.done.append(Explained(str(job.path), job.folder, expl.caption))
            bar.update(1)

        for batch in _chunks(jobs, batch_size):
            tick = time.perf_counter()
            outcomes = list(_explain_jobs(model, batch, options))
            mine.timings["explain"] += time.perf_counter() - tick
            for job, outcome in outcomes:
                if isinstance(outcome, Exception):
                    mine.failed.append(_failure(job, outcome))
                    bar.update(1)
                else:
                    writing.append((job, outcome, writer.submit(_write_folder, out, job.folder, outcome, methods,
                                                                figures)))
            while len(writing) > batch_size:
                finish_one()
        while writing:
            finish_one()
    summary = _merge_ranks(world, ExportSummary(out, options, skipped=tuple(skipped)), pending, mine)
    if world.is_main:
        tick = time.perf_counter()
        index = _write_index(out)
        timings = {**summary.timings, "report": time.perf_counter() - tick}
        summary = replace(summary, index_html=index, timings=timings, seconds=time.perf_counter() - start)
        summary.save()
    world.barrier()  # the merged files exist when any rank returns
    return summary


def _merge_ranks(world: distributed.World, summary: ExportSummary, pending: list[_Job],
                 mine: _Outcomes) -> ExportSummary:
    """Every rank's done and failed images, in input order, and the ranks' timings: work summed over
    ranks, the slowest rank's for the throughput."""
    order = {str(job.path): i for i, job in enumerate(pending)}
    shards = world.gather(mine)
    done = sorted((d for shard in shards for d in shard.done), key=lambda d: order[d.path])
    failed = sorted((f for shard in shards for f in shard.failed), key=lambda f: order[f.path])
    slowest = max(sum(shard.timings.values()) for shard in shards)
    return replace(summary, done=tuple(done), failed=tuple(failed), processes=world.size,
                   timings={k: sum(shard.timings[k] for shard in shards) for k in mine.timings},
                   method_seconds={k: sum(shard.method_seconds[k] for shard in shards) for k in mine.method_seconds},
                   images_per_second=len(done) / slowest if slowest > 0 else None)


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
    headers = _folder_headers(out)
    if not headers:
        raise ValueError(f"{out}: no complete image folder (with explanation.json and explanation.npz) to report")
    previous = ExportSummary.load(out) or ExportSummary(out, ExportOptions(methods=(), beam_size=None,
                                                                           max_length=None))
    done = tuple(Explained(str(header.image_path), name, header.caption) for name, header in headers.items())
    done_paths = {d.path for d in done}
    methods = previous.options.methods or tuple(ordered_methods({m for h in headers.values() for m in h.methods}))
    index = _write_index(out)
    seconds = time.perf_counter() - start
    summary = replace(previous, options=replace(previous.options, methods=methods), done=done, skipped=(),
                      failed=tuple(f for f in previous.failed if f.path not in done_paths), index_html=index,
                      seconds=seconds, timings={"report": seconds})
    summary.save()
    return summary


def _pending_jobs(out: Path, image_paths: Sequence[str | os.PathLike], methods: list[str], resume: bool,
                  figures: str) -> tuple[list[_Job], list[str], list[Skipped]]:
    """(the images to explain now, each with its folder; the folders to draw missing figures in; the
    images skipped). With `resume`, complete folders are skipped, and those lacking a figure `figures`
    asks for (an earlier run's were fewer) get them drawn from their explanation, which is not redone."""
    headers = _folder_headers(out)
    jobs = _assign_folders([Path(os.path.abspath(p)) for p in image_paths], _recorded_sources(headers), out)
    pending, redraw, skipped = [], [], []
    for job in jobs:
        header = headers.get(job.folder) if resume else None
        if header is None or not set(methods) <= set(header.methods):  # not complete with every method
            pending.append(job)
            continue
        missing = bool(header.tokens) and not all((out / job.folder / name).is_file()
                                                  for name in _figure_files(methods, figures))
        if missing:
            redraw.append(job.folder)
        skipped.append(Skipped(str(job.path), job.folder, figures_drawn=missing))
    return pending, redraw, skipped


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
        counts[safe_stem(path.name).lower()] = counts.get(safe_stem(path.name).lower(), 0) + 1
    folders = {}
    for path in new:
        stem = safe_stem(path.name)
        if counts[stem.lower()] > 1 or stem.lower() in taken:
            stem = f"{stem}-{_path_hash(path)}"
        taken.add(stem.lower())
        folders[path] = stem
    return [_Job(p, existing.get(str(p)) or folders[p]) for p in paths]


def _result_folders(out: Path) -> list[Path]:
    """Complete result folders (visible, with explanation.json and .npz), sorted by name."""
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / f"{EXPLANATION}.json").is_file() and (p / f"{EXPLANATION}.npz").is_file())


def _folder_headers(out: Path) -> dict[str, ExplanationHeader]:
    """Folder name -> what its explanation.json says (an unreadable one: nothing), for every complete
    folder, each read once."""
    headers = {}
    for folder in _result_folders(out):
        try:
            headers[folder.name] = CaptionExplanation.read_header(folder / EXPLANATION)
        except (OSError, ValueError):
            headers[folder.name] = ExplanationHeader(None, "", (), ())
    return headers


def _recorded_sources(headers: Mapping[str, ExplanationHeader]) -> dict[str, str]:
    """Absolute source image path -> folder name, for the complete folders an earlier run left."""
    sources: dict[str, str] = {}
    for name, header in headers.items():
        if header.image_path:
            sources.setdefault(header.image_path, name)
    return sources


def _explain_jobs(model: Captioner, jobs: list[_Job], options: ExportOptions
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
            results = _explain_images(model, loaded, options)
        except (ValueError, RuntimeError):
            results = None  # find the image at fault below
        if results is not None:
            yield from zip((job for job, _, _ in loaded), results)
            return
    for item in loaded:
        try:
            result: CaptionExplanation | Exception = _explain_images(model, [item], options)[0]
        except (ValueError, RuntimeError) as exc:
            result = exc
        yield item[0], result


def _explain_images(model: Captioner, loaded: list[tuple[_Job, Image.Image, bytes | None]],
                    options: ExportOptions) -> list[CaptionExplanation]:
    """explain_batch on loaded images (with their files' bytes, kept by the explanation files)."""
    results = api.explain_batch(model, [image for _, image, _ in loaded], options.methods,
                                beam_size=options.beam_size or 3, max_length=options.max_length or 20,
                                settings=options.settings, suspect_rule=options.suspect_rule)
    for (job, _, encoded), result in zip(loaded, results):
        result.image_path, result.image_file = str(job.path), encoded
    return results


def _failure(job: _Job, error: Exception) -> Failed:
    """The failure, reported in one line naming the image."""
    message = " ".join(str(error).split())
    if str(job.path) not in message and job.path.name not in message:
        message = f"{job.path}: {message}"
    tqdm.write(f"error: {message}", file=sys.stderr)
    return Failed(str(job.path), message)


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


def _figure_files(methods: Sequence[str], figures: str) -> dict[str, Callable[[CaptionExplanation, Path], object]]:
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


def _write_report_entry(expl: CaptionExplanation, report: Path, stem: str) -> ReportEntry:
    """The image's page files and their entry (report/entry.json), written when it is explained, so
    that index.html over any number of folders reads only these small entries."""
    entry = write_entry(expl, report, stem, REPORT_SIZES)
    (report / ENTRY).write_text(json.dumps(entry.to_json()), encoding="utf-8")
    return entry


def _folder_entry(folder: Path) -> ReportEntry:
    """The page entry of a complete folder: its report/entry.json, or, for a folder without one (an
    earlier version's) or whose name changed, one made now from its explanation."""
    try:
        entry: ReportEntry | None = ReportEntry.from_json(
            json.loads((folder / REPORT_DIR / ENTRY).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        entry = None
    if entry is None or entry.stem != folder.name:
        build = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=folder))
        try:
            entry = _write_report_entry(CaptionExplanation.load(folder / EXPLANATION), build / REPORT_DIR,
                                        folder.name)
            shutil.rmtree(folder / REPORT_DIR, ignore_errors=True)
            os.rename(build / REPORT_DIR, folder / REPORT_DIR)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return entry.placed(folder.name, f"{folder.name}/{REPORT_DIR}")


def _write_index(out: Path) -> Path | None:
    """index.html over every complete folder in `out` (this run's and earlier ones'), or None if there is none."""
    folders = _result_folders(out)
    if not folders:
        return None
    return write_page([_folder_entry(folder) for folder in folders], out)
