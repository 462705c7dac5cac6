#!/usr/bin/env bash
# One command for a GPU machine: trains ~300 AMP steps of a ResNet-50 Show-Attend-Tell on synthetic
# shapes, times batched beam search, and checks eval-mode backward through both decoders on CUDA.
# Uses the machine's own python3 (with torch), not the project's venv; extra arguments go to gpu_check.py
# (the smoke run on a CPU: see the usage at the top of gpu_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
