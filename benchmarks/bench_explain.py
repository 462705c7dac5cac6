"""Explanation benchmark: prints one Markdown table per section (and optionally writes JSON).

    python benchmarks/bench_explain.py [--quick] [--device cpu|cuda] [--repeats N] [--json OUT]

Each section is a function `(args) -> rows` (rows: dicts with the same keys) listed in SECTIONS;
to add one, append a `(title, function)` pair.
`explanation_throughput` is the images/s figure benchmarks/gpu_check.py reports.

OpenMP threads sleep rather than spin while they wait (OMP_WAIT_POLICY=PASSIVE unless set), read
when torch loads: on a machine shared with other jobs, spinning threads burn the time slices their
partner thread needs, and a 2-thread ResNet-50 forward measured 3-5x slower, by an amount that
varied with the load, for every method alike.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported (by the reference libraries)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cams import batch_cams  # noqa: E402
from gradcam_bench import RESNET50, TINY, build_model, gradcam_rows, method_rows, synchronize  # noqa: E402
from lime_bench import lime_section  # noqa: E402
from tables import markdown  # noqa: E402

Rows = list[dict]


def gradcam_section(args: argparse.Namespace) -> Rows:
    specs = TINY if args.quick else (*RESNET50, *TINY)
    return gradcam_rows(specs, torch.device(args.device), args.repeats)


def method_section(args: argparse.Namespace) -> Rows:
    specs = TINY if args.quick else (*RESNET50, *TINY)
    return method_rows(specs, torch.device(args.device), args.repeats)


SECTIONS: list[tuple[str, Callable[[argparse.Namespace], Rows]]] = [
    ("Whole-caption Grad-CAM (12 words, one image)", gradcam_section),
    ("Every engine method, all 12 words, against Grad-CAM", method_section),
    ("LIME for every word (same N and superpixels)", lime_section),
]


def explanation_throughput(device: str | torch.device, batch: int = 32, n_words: int = 12,
                           repeats: int = 3) -> float:
    """Images/s of Grad-CAM for every word of a 12-word caption, `batch` images per engine call (`batch_cams`),
    on a random-weight ResNet-50 Show-and-Tell at 224 px (encoder lower pass included)."""
    device = torch.device(device)
    model = build_model(RESNET50[0], device)
    torch.manual_seed(0)
    images = torch.randn(batch, 3, 224, 224, device=device)
    captions = torch.randint(4, len(model.vocab), (batch, n_words)).tolist()
    seconds = []
    for rep in range(1 + repeats):
        synchronize(device)
        start = time.perf_counter()
        batch_cams(model, images, captions)
        synchronize(device)
        if rep:
            seconds.append(time.perf_counter() - start)
    return batch / statistics.median(seconds)


def load_average() -> str:
    """The 1-minute load average: on a shared machine, timings mean little without it."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models only (a smoke run)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method, each after an untimed one")
    parser.add_argument("--json", type=Path, help="also write every section's rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, {args.repeats} timed runs, each after an untimed one, "
          f"load average at start {load_average()}\n")
    results = {}
    for title, section in SECTIONS:
        rows = section(args)
        results[title] = rows
        print(f"## {title}\n\n{markdown(rows)}\n", flush=True)
    print(f"load average at end {load_average()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
