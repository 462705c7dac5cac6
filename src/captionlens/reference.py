"""The reference model: the demo's tiny Show-Attend-Tell recipe trained longer, shipped with the package so
that evaluation numbers (README tables, grounding and evaluation tests) do not depend on a training run.

Reproduce it (about ten minutes on two CPU cores) with

    python -m captionlens.reference --out outputs/reference

which generates `REFERENCE_DATA` scenes, trains `REFERENCE_EPOCHS` epochs with the demo's recipe and
copies the best checkpoint (by validation BLEU-4) over `REFERENCE_CHECKPOINT`. The scenes are seeded by
(split, index), so `reference_data(folder)` rebuilds its held-out test images without its training set.
"""
from __future__ import annotations

import argparse
import os
import shutil
from importlib import resources
from pathlib import Path

from captionlens.data.shapes import generate_shapes
from captionlens.models.checkpoints import Checkpoint, load_checkpoint
from captionlens.training import TrainConfig, TrainResult, train

REFERENCE_DATA = {"n_train": 3000, "n_val": 200, "n_test": 200, "image_size": 96, "seed": 0}
REFERENCE_EPOCHS = 10
BINDING_IMAGES, BINDING_SEED = 1000, 7
REFERENCE_CHECKPOINT = Path(str(resources.files("captionlens") / "assets" / "reference-shapes.safetensors"))


def reference_model(device: str = "cpu") -> Checkpoint:
    """The shipped reference checkpoint (model in eval mode, vocabulary attached)."""
    if not REFERENCE_CHECKPOINT.is_file():
        raise FileNotFoundError(f"reference checkpoint not found: {REFERENCE_CHECKPOINT} "
                                "(python -m captionlens.reference trains it)")
    return load_checkpoint(REFERENCE_CHECKPOINT, device)


def reference_data(out_dir: str | os.PathLike, held_out_only: bool = True) -> Path:
    """The reference model's scenes in `out_dir`: by default its val and test splits only (the same
    images as in its full dataset), else every split it was trained on."""
    data = REFERENCE_DATA
    return generate_shapes(out_dir, n_train=0 if held_out_only else data["n_train"], n_val=data["n_val"],
                           n_test=data["n_test"], image_size=data["image_size"], seed=data["seed"])


def binding_data(out_dir: str | os.PathLike, images: int = BINDING_IMAGES) -> Path:
    """Held-out scenes built to provoke binding errors (`data.shapes`, scenes="binding"), at the reference
    data's size and another seed: where the reference and demo models write unsupported words, for the
    hallucination tests. Their test split holds the `images` scenes."""
    return generate_shapes(out_dir, n_train=0, n_val=0, n_test=images, image_size=REFERENCE_DATA["image_size"],
                           seed=BINDING_SEED, scenes="binding")


def train_reference(out_dir: str | os.PathLike) -> TrainResult:
    """Generate the reference data under `out_dir` and train the reference recipe on it."""
    out = Path(out_dir)
    data = reference_data(out / "data", held_out_only=False)
    return train(TrainConfig(data=data, format="shapes", epochs=REFERENCE_EPOCHS, out_dir=out / "train"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the reference model and ship it with the package.")
    parser.add_argument("--out", type=Path, default=Path("outputs/reference"))
    parser.add_argument("--no-install", action="store_true", help="leave the shipped checkpoint as it is")
    args = parser.parse_args(argv)
    result = train_reference(args.out)
    print(f"best val BLEU-4 {result.best_bleu4:.3f} in {result.seconds:.0f} s: {result.best_checkpoint}")
    if not args.no_install:
        REFERENCE_CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.best_checkpoint, REFERENCE_CHECKPOINT)
        print(f"installed as {REFERENCE_CHECKPOINT}")


if __name__ == "__main__":
    main()
