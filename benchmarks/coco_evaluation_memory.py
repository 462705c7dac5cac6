"""Peak memory of `evaluate_explanations` on COCO as the run grows: a generated COCO-format split
(`tests/coco_layout.generated_coco`, 640x480 photos, about 7.2 instances an image) explained and scored
by a tiny untrained model that writes object names (Grad-CAM and HiResCAM; deletion curves, word
randomisation and sanity on the first images, as by default), each size in a fresh process.

    python benchmarks/coco_evaluation_memory.py --images 200 2000

Per-word masks and drawn maps are dropped batch by batch and only the first `report_images` (200)
explanations are kept for the report, so the peak should not grow with the number of images.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RUN = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
import torch
from coco_layout import CATEGORIES
from zoo import tiny_captioner
from captionlens.evaluate import EvaluationConfig, evaluate_explanations
words = {c["name"] for c in CATEGORIES if " " not in c["name"]}
vocab = sorted(words | {"a", "picture", "of", "next", "to"})
model = tiny_captioner("show-attend-tell", vocab=vocab, image_size=96, hidden_size=64, seed=3)
with torch.no_grad():
    model.decoder.fc.bias[[model.vocab(w) for w in words]] += 3.0
    model.decoder.fc.bias[model.vocab.end_idx] -= 5.0
start = time.perf_counter()
config = EvaluationConfig(limit=int(sys.argv[2]), methods=("gradcam", "hirescam"), max_length=10)
evaluation = evaluate_explanations(model, sys.argv[1], "coco", config)
print(json.dumps({"images": evaluation.dataset.images, "words": evaluation.dataset.words_scored,
                  "grounded": evaluation.dataset.words_grounded, "seconds": time.perf_counter() - start,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[200, 2000])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from coco_layout import generated_coco

    with tempfile.TemporaryDirectory() as tmp:
        # Karpathy's file puts the first half in "test": generate twice the largest size asked for
        root = generated_coco(Path(tmp), images=2 * max(args.images), photo_size=(640, 480))
        print("| images explained | words | with a referent | seconds | peak RSS (MiB) |")
        print("|---|---|---|---|---|")
        for n in args.images:
            out = subprocess.run([sys.executable, "-c", RUN, str(root), str(n), str(ROOT / "tests")],
                                 capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {row['images']} | {row['words']} | {row['grounded']} | {row['seconds']:.0f} | "
                  f"{row['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
