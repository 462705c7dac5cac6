"""What reading COCO costs: a generated COCO-format split of N images (COCO val2014's density: 640x480
images, about 7.2 instances each as polygons of 10-30 vertices, 1% crowd regions as RLE, five captions
each, Karpathy's file) is loaded by `load_dataset(..., "coco")` in a fresh process, timed, with the
process's peak RSS against that of a process that only imports captionlens; then CHAIR of one caption
per image, and the union mask of a category for every image at 224x224.

    python benchmarks/coco_bench.py --images 5000 [--data DIR] [--repeats 3]
    python benchmarks/coco_bench.py --images 200 --data DIR --example   # the README's example CHAIR table

Each measurement is its own process, so its peak RSS is its own. `--example` instead writes three
captions files into DIR (captions naming objects the images have; the same with an absent object added
to every fourth; absent objects only) and prints the table of `captionlens chair --captions FILE --data
DIR` on each. The README's "COCO" section quotes both.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

MEASURE = r"""
import json, resource, sys, time
start = time.perf_counter()
from captionlens.data.datasets import load_dataset
from captionlens.evaluate.chair import chair, coco_ground_truth
imported = time.perf_counter()
result = {"import_s": imported - start}
if sys.argv[2] != "import-only":
    import warnings
    warnings.simplefilter("ignore")
    dataset = load_dataset(sys.argv[1], "coco")
    loaded = time.perf_counter()
    annotations = dataset.annotations
    captions = {r.image_id: r.captions[0] for r in dataset}
    truth = coco_ground_truth(annotations.images.values())
    scored = chair(captions, truth)
    chaired = time.perf_counter()
    cells = 0
    for image in annotations.images.values():
        first = image.instances[0].category.name
        cells += int(image.category_mask(first, size=(224, 224)).sum())
    masked = time.perf_counter()
    result.update(load_s=loaded - imported, images=len(dataset), instances=sum(len(i.instances) for i in
                  annotations.images.values()), chair_s=chaired - loaded, mentions=scored.mentions,
                  masks_s=masked - chaired)
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


def measure(data: Path, what: str) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(data), what], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"measuring {what} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def example(data: Path) -> None:
    """Three captions files of the generated set and the CHAIR table of each (what `captionlens chair` prints)."""
    import numpy as np

    from captionlens.data.coco import load_coco_annotations
    from captionlens.evaluate.chair import chair_on_coco, load_captions
    from coco_layout import CATEGORIES

    annotations = load_coco_annotations(data)
    rng = np.random.default_rng(1)
    names = [c["name"] for c in CATEGORIES]
    present, mixed, absent = {}, {}, {}
    for k, image in enumerate(annotations.images.values()):
        have = sorted(image.categories)
        lack = [n for n in names if n not in image.categories]
        first, second = rng.choice(have), rng.choice(have)
        present[image.file_name] = f"a {first} next to a {second}"
        mixed[image.file_name] = present[image.file_name] + (f" and a {rng.choice(lack)}" if k % 4 == 0 else "")
        absent[image.file_name] = f"a {rng.choice(lack)} next to a {rng.choice(lack)}"
    print("| captions (generated set) | CHAIR_i | CHAIR_s | mentions | hallucinated | captions hallucinating |")
    print("|---|---|---|---|---|---|")
    for label, name, captions in [("name objects the images have", "present", present),
                                  ("the same, an absent object added to every 4th", "mixed", mixed),
                                  ("name absent objects only", "absent", absent)]:
        path = data / f"captions-{name}.json"
        path.write_text(json.dumps(captions))
        result = chair_on_coco(load_captions(path), annotations)
        print(f"| {label} (`{path.name}`) | {result.chair_i:.3f} | {result.chair_s:.3f} | {result.mentions} | "
              f"{result.mentions_hallucinated} | {result.captions_hallucinating} of {result.captions} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--data", type=Path, default=None, help="Write the generated set here (default: a temp dir).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--example", action="store_true", help="Write three captions files and print their CHAIR.")
    args = parser.parse_args()
    from coco_layout import generated_coco

    if args.example:
        if args.data is None:
            parser.error("--example needs --data DIR (the captions files are written there)")
        example(generated_coco(args.data, args.images))
        return

    with tempfile.TemporaryDirectory() as temp:
        data = args.data or Path(temp) / "coco"
        generated_coco(data, args.images)
        sizes = {p.name: p.stat().st_size / 2 ** 20 for p in (data / "annotations").iterdir()}
        baseline = measure(data, "import-only")
        runs = [measure(data, "load") for _ in range(args.repeats)]
    best = min(runs, key=lambda r: r["load_s"])
    print(json.dumps({"files_mb": sizes, "import_only": baseline, "runs": runs}, indent=1))
    print(f"{best['images']} images, {best['instances']} instances "
          f"({', '.join(f'{n} {s:.1f} MB' for n, s in sizes.items())}): "
          f"load {best['load_s']:.2f} s (best of {args.repeats}), peak RSS {best['peak_rss_mb']:.0f} MB "
          f"(importing captionlens alone: {baseline['peak_rss_mb']:.0f} MB); CHAIR of {best['images']} captions "
          f"{best['chair_s']:.2f} s; a category's union mask at 224x224 for every image {best['masks_s']:.2f} s")


if __name__ == "__main__":
    main()
