"""`captionlens` command line: thin wrappers over the Python API, one function per command.

Errors the library raises for bad input (missing files, broken checkpoints or images, bad values)
print as one `error: ...` line and exit with status 2; `_Main.invoke` does that for every command.
Shared helpers (image-path expansion, device choice, JSON output) sit at the top; a new command is
one more `@main.command()` function below them.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from captionlens import distributed
from captionlens.data.datasets import FORMATS
from captionlens.data.images import IMAGE_SUFFIXES, INTERPOLATIONS, ImageLoadError, Preprocessing
from captionlens.evaluate.caption_metrics import METRICS
from captionlens.evaluate.chair import ChairResult
from captionlens.evaluate.explanations import EVALUATION_FORMATS
from captionlens.explain.registry import METHODS, CliOption, Method, ordered_methods
from captionlens.models.checkpoints import CheckpointError
from captionlens.models.config import ARCHITECTURES
from captionlens.models.encoders import TRUNKS, PretrainedWeightsMissing
from captionlens.runtime import configure_threads, pick_device
from captionlens.training import TrainConfig

LIBRARY_ERRORS = (FileNotFoundError, CheckpointError, ImageLoadError, PretrainedWeightsMissing, ValueError, TypeError)
POSITIVE = click.IntRange(min=1)
EXPLAIN_WAIT = timedelta(days=7)   # how long explain's ranks wait for each other under torchrun


def expand_images(patterns: Sequence[str]) -> list[Path]:
    """Files as given, the image files of folders (sorted, not recursive) and glob matches (sorted).

    A name that is neither a folder nor matches anything is kept as it is, so that it fails later
    with the same one-line "no such file" as any unreadable image.
    """
    paths: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif glob.has_magic(pattern):
            paths += [Path(p) for p in sorted(glob.glob(pattern))] or [path]
        else:
            paths.append(path)
    return paths


def one_line(message: object) -> str:
    return " ".join(str(message).split())


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def train_default(name: str) -> Any:
    """TrainConfig's default for an option, so the CLI and the Python API cannot drift apart."""
    return next(f.default for f in dataclasses.fields(TrainConfig) if f.name == name)


def methods_help() -> str:
    """The --methods help, from the method registry."""
    names = [f"{n}{' (needs attention)' if METHODS[n].needs_attention else ''}" for n in ordered_methods(METHODS)]
    return "Comma-separated: " + ", ".join(names) + "."


def comma_list(value: str) -> list[str]:
    """"gradcam, lime" -> ["gradcam", "lime"]: the --methods and --keywords syntax."""
    return [item.strip() for item in value.split(",") if item.strip()]


def _shortcut_dest(method: Method, option: CliOption) -> str:
    return f"method_option__{method.name}__{option.setting}".replace("+", "_plus").replace("-", "_")


def _checked_shortcut(method: Method, option: CliOption) -> Any:
    """A click callback: the value, checked by the method's settings dataclass (one line naming the option)."""
    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            try:
                method.settings(**{option.setting: value})
            except (TypeError, ValueError) as exc:
                raise click.BadParameter(f"{value} ({method.name}: {exc})") from None
        return value
    return check


def methods_and_rule(methods: str | None, evaluation: Path | None, suspect_rule: Path | None
                     ) -> tuple[list[str], Any]:
    """The methods `explain` runs and the suspect rule it applies: --methods, else the evaluation's
    recommended method, else gradcam; --suspect-rule, else the evaluation's rule (whose method then runs too)."""
    from captionlens.evaluate.result import ExplanationEvaluation, load_suspect_rule

    chosen = ExplanationEvaluation.load(evaluation) if evaluation else None
    names = comma_list(methods) if methods else [chosen.recommended if chosen and chosen.recommended else "gradcam"]
    rule = load_suspect_rule(suspect_rule) if suspect_rule else None
    if rule is None and chosen is not None and chosen.hallucination is not None and chosen.hallucination.rule:
        rule = chosen.hallucination.rule.rule
        if rule.method is not None and rule.method not in names:
            names.append(rule.method)
    return names, rule


def method_setting_options(command: Any) -> Any:
    """`--setting METHOD.NAME=VALUE` (repeatable: any setting of any registered method) and the shortcuts
    each method's registry entry adds (`Method.cli_options`, e.g. LIME's --lime-samples)."""
    for method in reversed([METHODS[name] for name in ordered_methods(METHODS)]):
        for option in reversed(method.cli_options):
            field = next(f for f in dataclasses.fields(method.settings) if f.name == option.setting)
            default = field.default if field.default is not dataclasses.MISSING else None
            kind = {bool: click.BOOL, int: click.INT, float: click.FLOAT}.get(type(default), click.STRING)
            command = click.option(option.flag, _shortcut_dest(method, option), type=kind, default=None,
                                   callback=_checked_shortcut(method, option),
                                   help=f"{option.help} Default: {default!r} "
                                        f"({method.name}.{option.setting}).")(command)
    return click.option("--setting", "setting_pairs", multiple=True, metavar="METHOD.NAME=VALUE",
                        help="Any setting of any method, e.g. lime.num_samples=500 or occlusion.window=16 "
                             "(values read as JSON, else as text); repeat for more.")(command)


def method_settings_from(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-method settings `method_setting_options` collected (removed from `options`): shortcuts,
    then --setting pairs (which win)."""
    settings: dict[str, dict[str, Any]] = {}
    for method in METHODS.values():
        for option in method.cli_options:
            value = options.pop(_shortcut_dest(method, option), None)
            if value is not None:
                settings.setdefault(method.name, {})[option.setting] = value
    for pair in options.pop("setting_pairs", ()):
        key, sep, text = pair.partition("=")
        method, dot, name = key.strip().partition(".")
        if not sep or not dot or not method or not name:
            raise ValueError(f"--setting {pair!r}: expected METHOD.NAME=VALUE, e.g. lime.num_samples=500")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        settings.setdefault(method, {})[name.strip()] = value
    return settings


class _LibraryError(click.ClickException):
    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {one_line(self.message)}", err=True)


class _Main(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a bad option value: one line naming the option, like library errors
            raise _LibraryError(exc.format_message()) from None
        except LIBRARY_ERRORS as exc:
            raise _LibraryError(str(exc)) from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="captionlens")
def main() -> None:
    """See what an image-captioning model looks at for each word it writes."""
    configure_threads()


@main.command()
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Dataset folder or JSON file.")
@click.option("--format", "format_", type=click.Choice(FORMATS), default=None, help="Guessed when left out.")
@click.option("--architecture", "--model", "architecture", type=click.Choice(list(ARCHITECTURES)),
              default=train_default("architecture"), show_default=True)
@click.option("--backbone", type=click.Choice(list(TRUNKS)), default=None,
              help="Default: tiny for the shapes data, resnet50 for photos (printed at the start).")
@click.option("--pretrained/--no-pretrained", default=None,
              help="ImageNet weights for a ResNet backbone. Default: on for photos, off for the shapes data.")
@click.option("--image-size", type=POSITIVE, default=None, help="Input size. Default: 96 for shapes, 224 for photos.")
@click.option("--embed-size", type=POSITIVE, default=None)
@click.option("--hidden-size", type=POSITIVE, default=None)
@click.option("--attention-dim", type=POSITIVE, default=None, help="Show-Attend-Tell only.")
@click.option("--grid-size", type=click.IntRange(min=0), default=None,
              help="Show-Attend-Tell: pool the map to a grid (0: keep it). Default: 7 for photos, 0 for shapes.")
@click.option("--fine-tune-encoder/--freeze-encoder", default=train_default("fine_tune_encoder"),
              show_default=True)
@click.option("--epochs", type=POSITIVE, default=train_default("epochs"), show_default=True)
@click.option("--batch-size", type=POSITIVE, default=train_default("batch_size"), show_default=True,
              help="Images per step, each with all its captions (over all processes under torchrun).")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=train_default("dropout"),
              show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=train_default("lr"), show_default=True)
@click.option("--beam-size", type=POSITIVE, default=train_default("beam_size"), show_default=True,
              help="Beam of the validation captions.")
@click.option("--val-limit", type=POSITIVE, default=None, help="Validate on the first N val images only.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path(train_default("out_dir")),
              show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last epoch.")
@click.option("--seed", type=int, default=train_default("seed"), show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def train(format_: str | None, **options: Any) -> None:
    """Train a captioning model; checkpoints, log and curves go to --out. The architecture and sizes
    follow the data unless given, and are printed before training starts. Under `torchrun
    --nproc_per_node N -m captionlens train ...` it trains with DistributedDataParallel (NCCL on GPUs,
    gloo on CPU); --batch-size stays the global batch."""
    from captionlens.training import train as run_training

    world = distributed.join()  # under torchrun: DistributedDataParallel over the processes
    try:
        result = run_training(TrainConfig(format=format_, **options))
    finally:
        distributed.leave()
    if world.is_main:
        click.echo(f"best val BLEU-4 {result.best_bleu4:.3f} in {result.seconds:.0f} s; "
                   f"best checkpoint {result.best_checkpoint}, last {result.last_checkpoint}")


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Dataset folder or JSON file.")
@click.option("--format", "format_", type=click.Choice(FORMATS), default=None, help="Guessed when left out.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--beam-size", type=POSITIVE, default=3, show_default=True)
@click.option("--max-length", type=POSITIVE, default=20, show_default=True)
@click.option("--limit", type=POSITIVE, default=None, help="Evaluate the first N images only.")
@click.option("--metric", "metrics", type=click.Choice(METRICS), multiple=True,
              help="Repeat to pick metrics; all when left out (METEOR starts java: seconds).")
@click.option("--device", default="auto", show_default=True)
@click.option("--chair", "with_chair", is_flag=True,
              help="Also CHAIR, the share of object words naming an object the image lacks (COCO folders).")
@click.option("--json", "as_json", is_flag=True, help="Print the full result (with every caption) as JSON.")
def evaluate(checkpoint: Path, data: Path, format_: str | None, split: str, beam_size: int, max_length: int,
             limit: int | None, metrics: tuple[str, ...], device: str, with_chair: bool, as_json: bool) -> None:
    """Caption a dataset split and score the captions (BLEU, ROUGE-L, CIDEr, METEOR when java is there;
    with --chair, CHAIR_i and CHAIR_s)."""
    from captionlens.evaluate.caption_metrics import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, data, split, beam_size, max_length, limit=limit, format=format_,
                                 device=pick_device(device), metrics=metrics or METRICS, chair=with_chair)
    if as_json:
        print_json(result)
        return
    scores = result["metrics"]
    click.echo(f"{scores['images']} {split} images, beam {beam_size}:")
    for name, value in scores.items():
        if isinstance(value, float):
            click.echo(f"  {name:8s} {value:.4f}")
    for name, reason in scores["skipped"].items():
        click.echo(f"  {name:8s} skipped: {reason}")
    if with_chair:
        for line in chair_lines(ChairResult.from_json(result["chair"])):
            click.echo(f"  {line}")


def chair_lines(result: ChairResult) -> list[str]:
    """CHAIR_i and CHAIR_s with the counts behind them, and the categories hallucinated most."""
    rate = "–" if result.chair_i is None else f"{result.chair_i:.4f}"
    lines = [f"CHAIR_i  {rate}  ({result.mentions_hallucinated} of {result.mentions} object mentions name an "
             "object the image lacks)",
             f"CHAIR_s  {result.chair_s:.4f}  ({result.captions_hallucinating} of {result.captions} captions have "
             "at least one)"]
    worst = sorted((c for c in result.categories.items() if c[1].hallucinated), key=lambda c: -c[1].hallucinated)
    if worst:
        lines.append("hallucinated most: " + ", ".join(f"{name} {c.hallucinated} of {c.mentions}"
                                                       for name, c in worst[:5]))
    return lines


@main.command("chair")
@click.option("--captions", required=True, type=click.Path(path_type=Path),
              help="JSON: {image id: caption}, or COCO's results list [{image_id, caption}]; an id is COCO's "
                   "file name or numeric id.")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="The COCO folder (annotations/captions_*.json and instances_*.json; images not needed).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result, per caption too, as JSON.")
def chair_command(captions: Path, data: Path, as_json: bool) -> None:
    """CHAIR of captions you bring: which object words name an object the image does not have (COCO's
    instances and reference captions), CHAIR_i and CHAIR_s."""
    from captionlens.data.coco import load_coco_annotations
    from captionlens.evaluate.chair import chair_on_coco, load_captions

    result = chair_on_coco(load_captions(captions), load_coco_annotations(data))
    if as_json:
        print_json(result.to_json())
        return
    click.echo(f"{result.captions} captions of {captions}:")
    for line in chair_lines(result):
        click.echo(f"  {line}")


@main.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path))
@click.option("--beam-size", type=POSITIVE, default=3, show_default=True)
@click.option("--max-length", type=POSITIVE, default=20, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {image, caption, log_prob}.")
def caption(images: tuple[str, ...], checkpoint: Path, beam_size: int, max_length: int, device: str,
            as_json: bool) -> None:
    """Caption IMAGES (files, folders or quoted globs). Unreadable ones are reported and skipped (exit 1)."""
    from captionlens.models.captioning import caption_files
    from captionlens.models.checkpoints import load_checkpoint

    ckpt = load_checkpoint(checkpoint, pick_device(device))
    paths = expand_images(images)
    if not paths:
        raise ValueError(f"no image files in {', '.join(images)}")
    results = caption_files(ckpt.model, paths, ckpt.vocab, beam_size, max_length)
    good = [{"image": str(p), "caption": r.caption, "log_prob": r.score}
            for p, r in zip(paths, results) if not isinstance(r, ImageLoadError)]
    for result in results:
        if isinstance(result, ImageLoadError):
            click.echo(f"error: {one_line(result)}", err=True)
    if as_json:
        print_json(good)
    else:
        for row in good:
            click.echo(f"{row['image']}\t{row['caption']}")
    if len(good) < len(results):
        sys.exit(1)


@main.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path))
@click.option("--methods", default=None, help=methods_help() + " Default: the recommended method of --evaluation, "
              "else gradcam.")
@click.option("--evaluation", type=click.Path(path_type=Path), default=None,
              help="evaluation.json of `captionlens evaluate-explanations`: its recommended method is the default "
                   "--methods, and its suspect-word rule flags words (unless --suspect-rule names another).")
@click.option("--beam-size", type=POSITIVE, default=3, show_default=True)
@click.option("--max-length", type=POSITIVE, default=20, show_default=True)
@click.option("--output-dir", type=click.Path(path_type=Path), default=Path("outputs/explain"), show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", type=POSITIVE, default=8, show_default=True, help="Images explained together.")
@click.option("--resume", is_flag=True, help="Skip images whose folder in --output-dir is already complete "
              "(drawing any figure --figures asks for that it lacks).")
@method_setting_options
@click.option("--suspect-rule", type=click.Path(path_type=Path), default=None,
              help="evaluation.json of `captionlens evaluate-explanations`: flag suspect words by its rule.")
@click.option("--figures", type=click.Choice(["none", "grid", "all"]), default="grid", show_default=True,
              help="grid: one image of word overlays per method (fast); all: also the matplotlib method "
                   "comparison and triptych; none: explanation files and the report only.")
def explain(images: tuple[str, ...], checkpoint: Path, methods: str | None, evaluation: Path | None, beam_size: int,
            max_length: int, output_dir: Path, device: str, batch_size: int, resume: bool, suspect_rule: Path | None,
            figures: str, **options: Any) -> None:
    """Explain every word of the captions of IMAGES (files, folders or quoted globs): per-image figures and
    explanation files, index.html and summary.json in --output-dir. Unreadable images are reported and
    skipped (exit 1). Under `torchrun --nproc_per_node N -m captionlens explain ...` each process explains
    a disjoint share and rank 0 writes one report and summary over all."""
    from captionlens.export import export_explanations
    from captionlens.models.checkpoints import load_checkpoint

    names, rule = methods_and_rule(methods, evaluation, suspect_rule)
    settings = method_settings_from(options)
    # under torchrun: each process explains its share of the images. The ranks meet only at the start and
    # the end, where the first done waits for the slowest share (hours apart on a large dataset), so the
    # wait is not torch's default; a rank that crashes makes torchrun stop the others instead.
    world = distributed.join("gloo", timeout=EXPLAIN_WAIT)
    try:
        ckpt = load_checkpoint(checkpoint, world.device(device))
        summary = export_explanations(ckpt.model, expand_images(images), output_dir, names, beam_size=beam_size,
                                      max_length=max_length, batch_size=batch_size, resume=resume,
                                      settings=settings, suspect_rule=rule, figures=figures)
    finally:
        distributed.leave()
    if world.is_main:
        click.echo(f"{len(summary.done)} explained, {len(summary.skipped)} already done, {len(summary.failed)} "
                   f"failed in {summary.seconds:.1f} s; summary: {output_dir / 'summary.json'}")
        if summary.index_html:
            click.echo(f"report: {summary.index_html}")
        if not summary.ok:  # rank 0 alone says so: torchrun passes its code on, and stops no sibling early
            sys.exit(1)


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
def report(folder: Path) -> None:
    """Rebuild index.html and summary.json of FOLDER (an `explain` --output-dir) from its finished image
    folders: after a run stopped before writing them, or to merge folders of several runs. Exit 1 when
    the summary lists failed images."""
    from captionlens.export import rebuild_report

    summary = rebuild_report(folder)
    click.echo(f"{len(summary.done)} images, {len(summary.failed)} failed; report: {summary.index_html}")
    if not summary.ok:
        sys.exit(1)


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path))
@click.option("--images", multiple=True, required=True, help="Files, folders or quoted globs; repeat for more.")
@click.option("--keywords", required=True, help="Comma-separated words, e.g. dog,person,ball.")
@click.option("--limit", type=POSITIVE, default=100, show_default=True, help="Caption the first N images only.")
@click.option("--method", type=click.Choice(ordered_methods(METHODS)), default="gradcam", show_default=True,
              help="One explanation method.")
@click.option("--beam-size", type=POSITIVE, default=1, show_default=True)
@click.option("--batch-size", type=POSITIVE, default=16, show_default=True)
@click.option("--output-dir", type=click.Path(path_type=Path), default=Path("outputs/focus"), show_default=True)
@click.option("--device", default="auto", show_default=True)
def focus(checkpoint: Path, images: tuple[str, ...], keywords: str, limit: int, method: str, beam_size: int,
          batch_size: int, output_dir: Path, device: str) -> None:
    """Where the model looks for each keyword: captions the images once, explains the word in every caption
    that has it, and writes each keyword's maps and their mean to --output-dir. Unreadable images: exit 1."""
    from captionlens.explain.focus import keyword_focus
    from captionlens.models.checkpoints import load_checkpoint
    from captionlens.viz.focus import save_focus

    ckpt = load_checkpoint(checkpoint, pick_device(device))
    result = keyword_focus(ckpt.model, expand_images(images), comma_list(keywords), method, limit=limit,
                           beam_size=beam_size, batch_size=batch_size)
    click.echo(f"wrote {save_focus(result, output_dir)}")
    if result.failed:
        sys.exit(1)


@main.command("evaluate-explanations")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="A shapes, Flickr30k Entities or COCO folder (referents known).")
@click.option("--format", "format_", type=click.Choice(EVALUATION_FORMATS), default=None,
              help="Guessed when left out.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--limit", type=POSITIVE, default=40, show_default=True, help="Images explained and localised.")
@click.option("--faithfulness-images", type=click.IntRange(min=0), default=16, show_default=True,
              help="Of those, how many get deletion/insertion curves and word disappearance.")
@click.option("--sanity-images", type=click.IntRange(min=0), default=4, show_default=True)
@click.option("--methods", default=None, help=methods_help() + " Default: every one the model can run.")
@click.option("--beam-size", type=POSITIVE, default=3, show_default=True)
@click.option("--target-layer", default=None, help="The gradient methods' layer: a trunk stage by name (layer3) or "
              "index (-1). Default: the last stage.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Write evaluation.json / .md, figures and index.html (the explained images + this evaluation).")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as one JSON object.")
@method_setting_options
def evaluate_explanations(checkpoint: Path, data: Path, format_: str | None, split: str, limit: int,
                          faithfulness_images: int, sanity_images: int, methods: str | None, beam_size: int,
                          target_layer: str | None, out_dir: Path | None, device: str, as_json: bool,
                          **options: Any) -> None:
    """Can the maps be trusted? Localisation against known referents, faithfulness, sanity checks, per word
    class, hallucinated words; every rate with a bootstrap interval and a baseline."""
    from captionlens.evaluate.explanations import evaluate_explanations as run
    from captionlens.evaluate.result import EvaluationConfig
    from captionlens.models.checkpoints import load_checkpoint
    from captionlens.viz.evaluation import markdown, save_evaluation

    ckpt = load_checkpoint(checkpoint, pick_device(device))
    config = EvaluationConfig(methods=comma_list(methods) if methods else None, split=split, limit=limit,
                              beam_size=beam_size, faithfulness_images=faithfulness_images,
                              sanity_images=sanity_images, settings=method_settings_from(options),
                              target_layer=target_layer)
    say = None if as_json else (lambda message: click.echo(message, err=True))
    evaluation = run(ckpt.model, data, format_, config, progress=say)
    if as_json:
        print_json(evaluation.to_json())
    else:
        click.echo(markdown(evaluation))
    if out_dir is not None:
        files = save_evaluation(evaluation, out_dir)
        click.echo(f"wrote {', '.join(str(p) for p in files.values())}", err=as_json)


@main.command()
@click.argument("evaluation", type=click.Path(path_type=Path))
def insights(evaluation: Path) -> None:
    """The seed notebook's key insights, computed: one sentence per claim from an evaluation.json."""
    from captionlens.evaluate.insights import insights as compute
    from captionlens.evaluate.result import ExplanationEvaluation

    for item in compute(ExplanationEvaluation.load(evaluation).methods):
        click.echo(f"- {item.claim}: {item.finding}")


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path))
@click.option("--images", default=None, help="The gallery: a folder or a quoted glob (the page also takes uploads).")
@click.option("--evaluation", type=click.Path(path_type=Path), default=None,
              help="evaluation.json of `captionlens evaluate-explanations`: mark suspect words by its rule and "
                   "preselect the method it recommends.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but this machine's own is announced with a warning.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--beam-size", type=POSITIVE, default=3, show_default=True, help="The page's default beam size.")
@click.option("--max-length", type=POSITIVE, default=20, show_default=True)
@click.option("--top-k", type=POSITIVE, default=5, show_default=True, help="Alternatives shown per word.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True)
@click.option("--max-pixels", type=POSITIVE, default=40_000_000, show_default=True,
              help="Largest image accepted, width x height (checked before it is decoded).")
@method_setting_options
def serve(checkpoint: Path, images: str | None, evaluation: Path | None, host: str, port: int, device: str,
          beam_size: int, max_length: int, top_k: int, max_upload_mb: float, max_pixels: int, **options: Any) -> None:
    """A local web page to ask the model: pick or drop an image, see its caption with every word's probability
    and the words it could have written instead, explain any word with any method, type your own caption,
    and ask why a word and not another (a contrast). Binds 127.0.0.1 unless --host says otherwise."""
    from captionlens.models.checkpoints import load_checkpoint
    from captionlens.serve import CaptionService, Gallery, Limits, ServeSettings, create_app, run

    settings = ServeSettings(beam_size=beam_size, max_beam_size=max(10, beam_size), max_length=max_length,
                             top_k=top_k, settings=method_settings_from(options), evaluation=evaluation)
    gallery = Gallery(images)
    limits = Limits(max_bytes=int(max_upload_mb * (1 << 20)), max_pixels=max_pixels)
    ckpt = load_checkpoint(checkpoint, pick_device(device))
    service = CaptionService(ckpt.model, settings)
    click.echo(f"model: {type(ckpt.model).__name__}, {len(ckpt.vocab)} words; methods: {', '.join(service.methods)}"
               f"; gallery: {len(gallery)} images" + (f"; recommended: {service.recommended}" if service.recommended
                                                     else ""))
    run(create_app(service, gallery, limits), host=host, port=port, say=click.echo)


@main.group()
def convert() -> None:
    """Turn a model trained elsewhere into a captionlens checkpoint (exactly, or not at all)."""


def preprocessing_options(size: int, interpolation: str) -> Any:
    """--image-size and --interpolation, defaulting to the tutorial's own preprocessing."""
    def wrap(fn: Any) -> Any:
        fn = click.option("--interpolation", type=click.Choice(list(INTERPOLATIONS)), default=interpolation,
                          show_default=True, help="Resize filter of the tutorial's inference script.")(fn)
        return click.option("--image-size", type=POSITIVE, default=size, show_default=True,
                            help="Input size the tutorial's inference script resizes to.")(fn)
    return wrap


def _converted(path: Path) -> None:
    from captionlens.models.checkpoints import load_checkpoint

    ckpt = load_checkpoint(path)
    click.echo(f"wrote {path}: {type(ckpt.model).__name__}, {ckpt.model.config.backbone}, "
               f"{len(ckpt.vocab)} words, {ckpt.model.preprocessing.image_size} px input")


@convert.command("yunjey")
@click.option("--encoder", required=True, type=click.Path(path_type=Path), help="encoder-E-S.ckpt")
@click.option("--decoder", required=True, type=click.Path(path_type=Path), help="decoder-E-S.ckpt")
@click.option("--vocab", required=True, type=click.Path(path_type=Path), help="vocab.pkl")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="model.safetensors")
@preprocessing_options(224, "lanczos")
def convert_yunjey(encoder: Path, decoder: Path, vocab: Path, out: Path, image_size: int, interpolation: str) -> None:
    """yunjey/pytorch-tutorial's image_captioning (ResNet + LSTM) -> a captionlens checkpoint."""
    from captionlens.models.importers import convert_yunjey as run

    _converted(run(encoder, decoder, vocab, out, Preprocessing(image_size=image_size, interpolation=interpolation)))


@convert.command("sgrvinod")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path), help="BEST_checkpoint_<name>.pth.tar")
@click.option("--word-map", required=True, type=click.Path(path_type=Path), help="WORDMAP_<name>.json")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="model.safetensors")
@click.option("--grid-size", type=POSITIVE, default=None, help="Default: the pickled encoder's adaptive_pool size.")
@preprocessing_options(256, "bilinear")
def convert_sgrvinod(checkpoint: Path, word_map: Path, out: Path, grid_size: int | None, image_size: int,
                     interpolation: str) -> None:
    """sgrvinod's a-PyTorch-Tutorial-to-Image-Captioning (Show, Attend and Tell) -> a captionlens checkpoint."""
    from captionlens.models.importers import convert_sgrvinod as run

    preprocessing = Preprocessing(image_size=image_size, interpolation=interpolation)
    _converted(run(checkpoint, word_map, out, preprocessing, grid_size))


@main.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("outputs/demo"), show_default=True)
@click.option("--architecture", "--model", "architecture", type=click.Choice(list(ARCHITECTURES)),
              default=train_default("architecture"), show_default=True)
@click.option("--quick", is_flag=True, help="A few images and one epoch: checks the pipeline, not the model.")
@click.option("--docs", is_flag=True, help="Also write a word grid and a method comparison PNG to docs/images/.")
def demo(out_dir: Path, architecture: str, quick: bool, docs: bool) -> None:
    """Generate shapes data, train the tiny model, evaluate it, caption three held-out images and write an
    HTML report explaining six of them with every method."""
    from captionlens.demo import run_demo

    result = run_demo(out_dir, architecture=architecture, quick=quick, echo=click.echo,
                      docs_dir=Path("docs/images") if docs else None)
    click.echo("\nheld-out images:")
    for row in result.captions:
        click.echo(f"  {Path(row['image']).name}: {row['caption']}   (a reference: {row['reference']})")
    metrics = result.test_metrics
    scores = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
    click.echo(f"\ntest split ({metrics['images']} images): {scores}")
    click.echo("\nfiles:")
    for name, path in result.files.items():
        click.echo(f"  {name:16s} {path}")
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    click.echo(f"\ntimings: {timings}; total {sum(result.timings.values()):.1f} s")


if __name__ == "__main__":
    main()
