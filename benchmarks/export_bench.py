"""`captionlens explain` over many images against the engine alone, side by side in one run; and its memory.

    python benchmarks/export_bench.py [--quick] [--repeats 3] [--memory] [--json OUT]

Throughput: for each model, the same images explained (Grad-CAM, beam 3, batches of 8) by
  - the engine: `explain_batch` on images already in memory (no files, no figures, no report);
  - the export (`captionlens explain`'s function) with figures none, grid (the default) and all: reading
    the files, explaining, writing explanation files and figures, and the report at the end;
and the export's share of the engine's throughput. Each setting runs `--repeats` times, round-robin;
a rate is the best run's, a share the median over rounds of the export's rate over the engine's in the
same round (a shared machine's slow spells hit both alike). KB/image counts every file the export
wrote (the report's included). Models: the demo model (the shipped reference model, the demo recipe
trained longer) on its 96 px test scenes, and a random-weight ResNet-50 Show-Attend-Tell (224 px input)
on 500x375 synthetic photos, captions up to 12 words.

Memory (--memory): peak resident memory of a fresh process that exports 100 and 1000 demo images with
the default figures; flat memory means the two peaks are about equal.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import captionlens  # noqa: E402,F401  (sets the thread policy before torch's pools start)
from captionlens.data.images import load_image  # noqa: E402
from captionlens.explain.api import explain_batch  # noqa: E402
from captionlens.export import FIGURES, export_explanations  # noqa: E402
from captionlens.models.protocol import Captioner  # noqa: E402
from captionlens.reference import reference_data, reference_model  # noqa: E402
from captionlens.runtime import configure_threads  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gradcam_bench import RESNET50, build_model  # noqa: E402
from tables import markdown  # noqa: E402

BATCH, BEAM = 8, 3
PHOTO_HW = (375, 500)


def demo_images(folder: Path, n: int) -> tuple[Captioner, list[Path], int]:
    """The reference model and `n` of its held-out scenes (repeated under new names past the 400 there are)."""
    data = reference_data(folder / "shapes")
    scenes = sorted((data / "Images").glob("*.png"))
    paths = []
    for i in range(n):
        path = folder / "demo" / f"scene_{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(scenes[i % len(scenes)], path)
        paths.append(path)
    return reference_model().model, paths, 20


def photo_images(folder: Path, n: int) -> tuple[Captioner, list[Path], int]:
    """A random-weight ResNet-50 Show-Attend-Tell and `n` smooth random 500x375 JPEG photos."""
    torch.manual_seed(0)
    model = build_model(RESNET50[1], torch.device("cpu"))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        coarse = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        noise = rng.integers(-20, 20, size=(*PHOTO_HW, 3))
        base = np.asarray(Image.fromarray(coarse).resize(PHOTO_HW[::-1], Image.Resampling.BICUBIC), int)
        path = folder / "photos" / f"photo_{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return model, paths, 12


def throughput_rows(folder: Path, quick: bool, repeats: int) -> list[dict]:
    rows = []
    setups = [("demo model (96 px scenes)", demo_images, 16 if quick else 64)]
    if not quick:
        setups.append(("ResNet-50 Show-Attend-Tell (500x375 photos)", photo_images, 16))
    for label, make, n in setups:
        model, paths, max_length = make(folder, n)
        images = [load_image(p) for p in paths]
        explain_batch(model, images[:2], ("gradcam",), beam_size=BEAM, max_length=max_length)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in ("engine", *FIGURES)}
        sizes: dict[str, float] = {}
        for repeat in range(repeats):  # round-robin, so a slow spell of a shared machine hits every row alike
            tick = time.perf_counter()
            for start in range(0, n, BATCH):
                explain_batch(model, images[start:start + BATCH], ("gradcam",), beam_size=BEAM,
                              max_length=max_length)
            times["engine"].append(time.perf_counter() - tick)
            for figures in FIGURES:
                out = folder / f"out-{make.__name__}-{figures}-{repeat}"
                summary = export_explanations(model, paths, out, ("gradcam",), beam_size=BEAM, batch_size=BATCH,
                                              figures=figures, progress=False, max_length=max_length)
                assert summary.ok and len(summary.done) == n
                times[figures].append(summary.seconds)
                sizes[figures] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / n / 1024
                shutil.rmtree(out)
        row: dict = {"model": label, "images": n, "engine img/s": round(n / min(times["engine"]), 2)}
        for figures in FIGURES:
            share = float(np.median(np.divide(times["engine"], times[figures])))  # within each round
            row[f"explain --figures {figures} img/s"] = f"{n / min(times[figures]):.2f} ({share:.0%})"
            row[f"{figures}: KB/image"] = round(sizes[figures], 1)
        rows.append(row)
    return rows


def memory_child(n: int) -> None:
    """Export `n` demo images in this (fresh) process and print its peak RSS in MiB."""
    configure_threads()
    with tempfile.TemporaryDirectory() as tmp:
        model, paths, max_length = demo_images(Path(tmp), n)
        summary = export_explanations(model, paths, Path(tmp) / "out", ("gradcam",), beam_size=BEAM,
                                      batch_size=BATCH, progress=False, max_length=max_length)
        assert summary.ok and len(summary.done) == n
        print(json.dumps({"images": n, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          "seconds": round(summary.seconds, 1)}))


def memory_rows() -> list[dict]:
    rows = []
    for n in (100, 1000):
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(n)], capture_output=True, text=True,
                             check=True)
        data = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"images": n, "peak RSS (MiB)": round(data["peak_rss_mib"]), "seconds": data["seconds"]})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 demo images only (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3, help="round-robin runs of each row; the best is kept")
    parser.add_argument("--memory", action="store_true", help="also the peak RSS at 100 and 1000 images")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return
    threads = configure_threads()
    print(f"torch {torch.__version__}, {threads} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"{args.repeats} round-robin runs, load average {os.getloadavg()[0]:.1f}\n")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["throughput"] = throughput_rows(Path(tmp), args.quick, args.repeats)
    print(f"## captionlens explain against the engine (Grad-CAM)\n\n{markdown(results['throughput'])}\n", flush=True)
    if args.memory:
        results["memory"] = memory_rows()
        print(f"## Peak memory of one export process (default figures)\n\n{markdown(results['memory'])}\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
