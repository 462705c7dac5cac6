"""examples/custom_captioner.py: a captioner written from scratch, implementing only the `Captioner`
protocol, gets decoding, every explanation method, figures and the report."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import captionlens
from captionlens.models import decode

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
from custom_captioner import GRUCaptioner  # noqa: E402


def test_the_example_runs_end_to_end(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLES / "custom_captioner.py"), "--out", str(tmp_path),
                           "--steps", "20", "--images", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "report:" in done.stdout and "Grad-CAM route: replicated" in done.stdout
    page = (tmp_path / "report" / "index.html").read_text()
    for label in ("Grad-CAM", "Grad-CAM++", "attention", "LIME", "occlusion"):
        assert f'"{label}"' in page
    with Image.open(tmp_path / "grid-gradcam.png") as grid:
        assert grid.width > 100


def test_every_method_and_decoding_on_the_protocol_alone():
    torch.manual_seed(0)
    vocab = captionlens.Vocabulary([f"w{i}" for i in range(12)])
    model = GRUCaptioner(vocab, channels=8, hidden=16, image_size=32).eval()
    assert isinstance(model, captionlens.Captioner)
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    methods = ("gradcam", "gradcam++", "attention", "lime", "occlusion")
    expl = captionlens.explain(model, image, methods=methods, beam_size=2, max_length=5,
                               settings={"lime": {"num_samples": 20}})
    tensor = model.preprocessing.transform(Image.fromarray(image))[None]
    assert expl.token_ids == decode(model, tensor, vocab, max_length=5, beam_size=2)[0].token_ids
    for name in methods:
        assert expl[name].maps.shape == (len(expl.tokens), 40, 30) and np.isfinite(expl[name].maps).all()
    assert expl["gradcam"].raw.shape[1:] == (8, 8)              # block2's map: 32 px at stride 4
    np.testing.assert_allclose(expl["attention"].raw.sum((1, 2)), 1.0, atol=1e-5)   # over the 4x4 grid
