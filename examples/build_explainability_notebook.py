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
object instead of judging pictures by eye — and turn the seed notebook's hard-coded "key insights"
into numbers computed for the model at hand (last section).

It explains captionlens' shipped reference model (the demo recipe trained longer). Set
`CAPTIONLENS_CHECKPOINT=path/to/model.safetensors` to explain another model of the shapes data, and
`CAPTIONLENS_NOTEBOOK_QUICK=1` for a smoke run on a few images."""),
    ("md", "## 1. Setup"),
    ("code", """\
import os
from pathlib import Path

import torch
from IPython.display import Image, display

import captionlens
from captionlens.data.shapes import load_grounding
from captionlens.evaluate import EvaluationConfig, evaluate_explanations
from captionlens.explain.focus import keyword_focus
from captionlens.export import export_explanations
from captionlens.reference import REFERENCE_CHECKPOINT, reference_data
from captionlens.viz import attention_over_time, method_comparison, save_figure, triptych, word_grid
from captionlens.viz.evaluation import markdown, save_evaluation
from captionlens.viz.focus import focus_figure, save_focus

torch.set_num_threads(2)
QUICK = os.environ.get("CAPTIONLENS_NOTEBOOK_QUICK") == "1"
OUT = Path(os.environ.get("CAPTIONLENS_NOTEBOOK_OUT", "outputs/notebook"))
N_TEST = 4 if QUICK else 40                            # held-out images for the measurements
N_SHOW = 2 if QUICK else 4                             # images shown as triptychs and exported
DECODE = {"beam_size": 3, "max_length": 20}
SETTINGS = {"lime": {"num_samples": 60 if QUICK else 500},  # method settings; cost grows with samples/patches
            "occlusion": {"window": 12 if QUICK else 24, "stride": 12}}  # patches in model-input pixels


def show(fig, name):
    \"\"\"Save a figure as outputs/notebook/figures/<name>.png and display it.\"\"\"
    display(Image(filename=str(save_figure(fig, OUT / "figures" / name)[0])))"""),
    ("md", """\
## 2. The model

The reference model shipped with captionlens: a Show-Attend-Tell model with a tiny CNN, trained on
the shapes data by `python -m captionlens.reference` (the demo's recipe, longer). `make demo` trains
the same recipe for a shorter time; point `CAPTIONLENS_CHECKPOINT` at its `best.safetensors` (or at
any other model of the shapes data) to explain that one instead."""),
    ("code", """\
checkpoint = os.environ.get("CAPTIONLENS_CHECKPOINT") or REFERENCE_CHECKPOINT
# The scenes are seeded by (split, index): these are the reference model's held-out ones.
data = reference_data(OUT / "shapes")
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
## 8. Can these maps be trusted? The evaluation

`evaluate_explanations` (the `captionlens evaluate-explanations` command) explains the model's own
captions of held-out images and measures, per method: whether the map points at the object a word
names (pointing game, mass inside the object, rank accuracy, mask AUC, against a random and a
centre-bias map), whether hiding what it points at changes the word (deletion and insertion curves,
word disappearance, against random orders), whether it survives randomising the model's weights
(the sanity check), per word class, and which generated words no object supports. Every rate comes
with a 95% bootstrap interval over words."""),
    ("code", """\
config = EvaluationConfig(limit=4 if QUICK else 40, faithfulness_images=2 if QUICK else 16,
                          sanity_images=1 if QUICK else 4, settings=SETTINGS, **DECODE)
evaluation = evaluate_explanations(model, data, config=config)
files = save_evaluation(evaluation, OUT / "evaluation")
print(markdown(evaluation))
display(Image(filename=str(files["curves"])))
display(Image(filename=str(files["sanity"])))"""),
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
exported = export_explanations(model, test_images[:N_SHOW], OUT / "export", methods=("gradcam", "lime"),
                               settings=SETTINGS, progress=False, **DECODE)
print(f"{len(exported.done)} done, {len(exported.failed)} failed, {exported.seconds:.1f} s")
print("open", exported.index_html.resolve())"""),
    ("md", """\
## 11. The seed notebook's key insights, computed

The seed notebook ended with fixed sentences ("nouns: the model focuses on specific objects",
"attention shifts as the caption progresses", "can miss small objects", "attends to background when
uncertain", "strong spatial correspondence"). Here each claim is a sentence made from the numbers the
evaluation measured for *this* model, so it can come out false (`captionlens insights evaluation.json`
prints the same)."""),
    ("code", """\
for item in evaluation.insights:
    print(f"- {item.claim}:\\n  {item.finding}")"""),
]


def build() -> nbformat.NotebookNode:
    cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    return new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})


if __name__ == "__main__":
    nbformat.write(build(), NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
