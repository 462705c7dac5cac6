"""examples/explainability.ipynb: stored without outputs, in step with its generator, and runs top to bottom."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOK = EXAMPLES / "explainability.ipynb"


def generator():
    spec = importlib.util.spec_from_file_location("build_notebook", EXAMPLES / "build_explainability_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure_python3_kernel() -> None:
    """A fresh environment may lack the kernelspec; install it into this interpreter's prefix."""
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix"], check=True,
                       capture_output=True)


def test_notebook_is_stored_without_outputs_and_matches_its_generator() -> None:
    stored = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in stored.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    built = generator().build()
    assert [(c.cell_type, c.source) for c in stored.cells] == [(c.cell_type, c.source) for c in built.cells]


def test_notebook_runs_top_to_bottom_in_quick_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_python3_kernel()
    monkeypatch.setenv("CAPTIONLENS_NOTEBOOK_QUICK", "1")
    monkeypatch.delenv("CAPTIONLENS_CHECKPOINT", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on any cell's error
    out = tmp_path / "outputs" / "notebook"
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"gradcam-words", "lime-words", "method-comparison"} <= figures
    assert any(name.startswith("triptych-") for name in figures)
    assert (out / "focus" / "focus.json").is_file()
    assert (out / "export" / "index.html").is_file() and (out / "export" / "summary.json").is_file()
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "caption:" in printed and "gradcam" in printed
    assert "| Grad-CAM |" in printed and "Sanity rule" in printed               # the evaluation ran
    assert (out / "evaluation" / "evaluation.json").is_file() and (out / "evaluation" / "index.html").is_file()
    for claim in ("Attention shifts as the caption progresses", "Can miss small objects",
                  "Attends to background when uncertain"):                   # the insights, computed
        assert claim in printed
    images = sum(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
                 for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 4
