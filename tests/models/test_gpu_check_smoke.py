"""benchmarks/gpu_check.py in its CPU smoke mode: every check runs and none fails."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["--device", "cpu", "--steps", "2", "--backbone", "tiny", "--image-size", "32", "--hidden-size", "16",
         "--batch-size", "2", "--beam-batch", "2", "--train-images", "4", "--workers", "0"]


def test_gpu_check_smoke_run_prints_every_row_and_no_failure():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), *SMOKE], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0] == "| check | result | number |"
    names = [row.split(" | ")[0].lstrip("| ") for row in rows[1:]]
    assert {"train Show-Attend-Tell", "batched beam search", "eval backward, Show-and-Tell",
            "eval backward, Show-Attend-Tell", "plain nn.LSTM eval backward (cuDNN)",
            "Grad-CAM on the device == on the CPU", "explanation throughput, Show-and-Tell (Grad-CAM, all words)",
            "explanation throughput, Show-Attend-Tell (Grad-CAM, all words)"} <= set(names)
    assert not any(row.split(" | ")[1].startswith("FAIL") for row in rows[1:]), done.stdout
