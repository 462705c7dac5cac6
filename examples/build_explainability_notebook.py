"""Write examples/explainability.ipynb (without outputs) from the cells below: edit here, then run

    .venv/bin/python examples/build_explainability_notebook.py
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOK = Path(__file__).with_name("explainability.ipynb")

CELLS: list[tuple[str, str]] = [
    ("md", """\
# What does the captioner look at? Explainability with captionlens

For every word a CNN-LSTM captioner writes, captionlens computes a map of the image regions that drove
that word: **Grad-CAM** / **Grad-CAM++** (gradients at the last convolutional layer), the decoder's own
**attention** (Show-Attend-Tell only), **LIME** (which superpixels, when hidden, change the word's
score) and **occlusion** (sliding grey patches).

The notebook runs on a CPU in a few minutes on the synthetic *shapes* data that ships with the code:
images of one to three coloured shapes whose captions are true by construction, and where we know the
exact box of the object each word names. That lets us *measure* whether a map points at the right
object instead of judging pictures by eye.

Set `CAPTIONLENS_NOTEBOOK_QUICK=1` for a smoke run (tiny model trained in seconds; its maps mean
little), and `CAPTIONLENS_CHECKPOINT=path/to/model.safetensors` to explain another model."""),
    ("md", "## 1. Setup"),
    ("code", """\
import dataclasses
import os
from pathlib import Path

import torch
from IPython.display import Image, display

import captionlens
from captionlens.data.shapes import generate_shapes, load_grounding, word_boxes
from captionlens.demo import DEMO_SIZES, demo_config
from captionlens.evaluate.explanation_metrics import pointing_game
from captionlens.export import export_explanations
from captionlens.focus import focus_figure, keyword_focus, save_focus
from captionlens.training import train
from captionlens.viz import attention_over_time, method_comparison, save_figure, triptych, word_grid

torch.set_num_threads(2)
QUICK = os.environ.get("CAPTIONLENS_NOTEBOOK_QUICK") == "1"
OUT = Path(os.environ.get("CAPTIONLENS_NOTEBOOK_OUT", "outputs/notebook"))
N_TEST = 4 if QUICK else 40                            # held-out images for the measurements
N_SHOW = 2 if QUICK else 4                             # images shown as triptychs and exported
DECODE = {"beam_size": 3, "max_length": 8 if QUICK else 20}  # quick: the barely trained model rambles
SETTINGS = {"lime": {"num_samples": 60 if QUICK else 500},  # method settings; cost grows with samples/patches
            "occlusion": {"window": 12 if QUICK else 24, "stride": 12}}  # patches in model-input pixels


def show(fig, name):
    \"\"\"Save a figure as outputs/notebook/figures/<name>.png and display it.\"\"\"
    display(Image(filename=str(save_figure(fig, OUT / "figures" / name)[0])))"""),
    ("md", """\
## 2. The model

We use the checkpoint `captionlens demo` (`make demo`) trains: a Show-Attend-Tell model with a tiny
CNN, on the shapes data. When it is missing, the same recipe is trained here with the Python API
(`captionlens.training.train`, a few minutes), or a much smaller one in quick mode."""),
    ("code", """\
checkpoint = os.environ.get("CAPTIONLENS_CHECKPOINT") or next(
    (p for p in (Path(root, "outputs/demo/train/best.safetensors") for root in (".", "..")) if p.is_file()), None)
n_train, n_val, _ = (0, 0, 0) if checkpoint else DEMO_SIZES["quick" if QUICK else "full"]
# The generator seeds every image by (split, index): these test scenes are the demo's held-out ones.
data = generate_shapes(OUT / "shapes", n_train=n_train, n_val=n_val, n_test=N_TEST, image_size=96)
if checkpoint is None:
    print("no demo checkpoint (run `make demo` first to skip this): training one here")
    config = demo_config(data, OUT / "model", quick=QUICK)
    if QUICK:  # seconds, not minutes: a model that only exercises the code
        config = dataclasses.replace(config, embed_size=16, hidden_size=32, attention_dim=16, image_size=48,
                                     val_limit=4, max_length=8, progress=False)
    checkpoint = train(config).best_checkpoint
ckpt = captionlens.load(checkpoint)
model, vocab = ckpt.model, ckpt.vocab
print(f"{checkpoint}: {type(model).__name__}, {len(vocab)} words, epoch {ckpt.epoch}, metrics {ckpt.metrics}")"""),
    ("md", """\
## 3. Caption a held-out image

`captionlens.explain` captions the image (beam search) and explains every word of that caption with
the methods asked for, in one call. The result keeps the caption, each word's log-probability and,
per method, one map per word at the image's own resolution."""),
    ("code", """\
grounding = load_grounding(data)
test_images = sorted((data / "Images").glob("test_*.png"))[:N_TEST]
image_path = test_images[0]
expl = captionlens.explain(model, image_path, methods=("gradcam",), **DECODE)
print("caption:      ", expl.caption)
print("true captions:", [" ".join(c["tokens"]) for c in grounding["images"][image_path.name]["captions"][:2]])
print("log p(word):  ", [(word, round(float(lp), 2)) for word, lp in zip(expl.tokens, expl.log_probs)])"""),
    ("md", """\
## 4. Per-word Grad-CAM

One panel per word. What to look for: a word that names something visible (a colour, a shape) should
light up *that* object; words with no object (*a*, *and*, *of*) have nothing to point at, so their
maps say more about the model's habits than about the image. The log-probability in each title says
how sure the model was of the word."""),
    ("code", "show(word_grid(expl, \"gradcam\"), \"gradcam-words\")"),
    ("md", """\
## 5. Several images at once: triptychs

`explain_batch` encodes the images once and decodes their captions in one batch. For each image:
the photo, the heatmap of its first shape word alone (with its colour scale), and the overlay."""),
    ("code", """\
SHAPE_WORDS = {"circle", "square", "triangle"}
batch = captionlens.explain_batch(model, test_images[:N_SHOW], methods=("gradcam",), **DECODE)
for path, e in zip(test_images, batch):
    word = next((t for t, w in enumerate(e.tokens) if w in SHAPE_WORDS), 0)
    if e.tokens:
        show(triptych(e, "gradcam", word), f"triptych-{path.stem}")"""),
    ("md", """\
## 6. Attention and LIME

Attention is what the Show-Attend-Tell decoder itself weighted when it wrote each word: no gradients,
no extra passes, but only as fine as the encoder's grid. LIME is model-agnostic: it hides random sets
of superpixels and fits, per word, how much each superpixel raised (red) or lowered (blue) the
word's score; the green outlines mark each word's strongest superpixels."""),
    ("code", """\
all_methods = [m for m in ("gradcam", "gradcam++", "attention", "lime", "occlusion")
               if m != "attention" or model.has_attention]
expl = captionlens.explain(model, image_path, methods=all_methods, settings=SETTINGS, **DECODE)
if model.has_attention:
    show(attention_over_time(expl), "attention-over-time")
show(word_grid(expl, "lime"), "lime-words")
print({name: f"{m.seconds:.2f} s" for name, m in expl.methods.items()})"""),
    ("md", """\
## 7. The methods side by side

Rows are words, columns methods. Where the methods agree, the evidence is strong; where one method
disagrees (say Grad-CAM on the object, LIME on the background), look closer before trusting either."""),
    ("code", "show(method_comparison(expl), \"method-comparison\")"),
    ("md", """\
## 8. Do the maps point at the right object? The pointing game

For every word that names an object in the image (the shapes data knows which object, and its exact
box), a map *hits* when its peak lies inside that object's box. A random point hits with probability
box area / image area: that is the baseline a method must beat. The numbers below are computed from
the held-out images, so they change with the model."""),
    ("code", """\
methods = [m for m in all_methods if m != "lime"]  # LIME over every image would take minutes
explanations = captionlens.explain_batch(model, test_images, methods=methods, settings=SETTINGS, **DECODE)
boxes = [word_boxes(grounding, p.name, e.tokens) for p, e in zip(test_images, explanations)]
scores = pointing_game(explanations, boxes)
grounded = max((s.total for s in scores.values()), default=0)
if grounded == 0:
    print(f"none of the {len(test_images)} captions names an object unambiguously: nothing to score")
else:
    print(f"{'method':<10} {'hits':>9} {'rate':>6} {'random':>7}")
    for name, s in scores.items():
        print(f"{name:<10} {s.hits:>4}/{s.total:<4} {s.rate:>6.0%} {s.baseline_rate:>7.0%}")
    best = max(scores, key=lambda name: scores[name].rate)
    s = scores[best]
    print(f"\\n{grounded} words in {len(test_images)} captions name an object. {best} points at it most often: "
          f"{s.rate:.0%} of the time, {s.rate / s.baseline_rate:.1f}x a random point ({s.baseline_rate:.0%}).")
    below = [name for name, r in scores.items() if r.rate <= r.baseline_rate]
    print("no better than a random point:", ", ".join(below) if below else "none")"""),
    ("md", """\
## 9. Keyword focus: one word across many images

The images are captioned once; for each keyword we take the images whose caption contains it (as a
word), explain those captions, and average that word's normalised map over the images. On these
scenes objects sit anywhere, so a sharp mean map would mean the model looks at a fixed place, not
at the object; the individual overlays show whether each map follows its object."""),
    ("code", """\
focus = keyword_focus(model, test_images, ["circle", "square", "triangle", "red", "blue"], method="gradcam",
                      max_length=DECODE["max_length"])
for word, kf in focus.keywords.items():
    if kf.count:
        show(focus_figure(kf, focus.method), f"focus-{word}")
save_focus(focus, OUT / "focus")"""),
    ("md", """\
## 10. Export: figures, explanations and an HTML report for many images

`export_explanations` (the `captionlens explain` command) writes one folder per image (per-word grids,
a method comparison, the explanation as `.npz` + `.json`), an interactive `index.html` and a
`summary.json`. Rerun with `resume=True` to skip what is done; unreadable files are listed, not fatal."""),
    ("code", """\
summary = export_explanations(model, test_images[:N_SHOW], OUT / "export", methods=("gradcam", "lime"),
                              settings=SETTINGS, progress=False, **DECODE)
print(f"{len(summary.done)} done, {len(summary.failed)} failed, {summary.seconds:.1f} s")
print("open", summary.index_html.resolve())"""),
]


def build() -> nbformat.NotebookNode:
    cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    return new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})


if __name__ == "__main__":
    nbformat.write(build(), NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
