"""The thread policy is in place before torch is imported, by `import captionlens` alone, and leaves a
user's own choice alone; the command sizes torch's pool to the CPUs the process may use; device names."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from captionlens.runtime import pick_device

SEEN_AT_TORCH_IMPORT = """
import importlib.abc, os, sys
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("at torch import:", os.environ.get("OMP_WAIT_POLICY"))
        return None
sys.meta_path.insert(0, Spy())
import captionlens
"""


def _run(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_sets_passive_waiting_before_torch_starts():
    assert "at torch import: PASSIVE" in _run(SEEN_AT_TORCH_IMPORT)


def test_a_users_own_policy_is_kept():
    assert "at torch import: ACTIVE" in _run(SEEN_AT_TORCH_IMPORT, OMP_WAIT_POLICY="ACTIVE")


def test_the_command_uses_the_cpus_it_may_run_on_or_the_users_count():
    code = "from captionlens.runtime import configure_threads, usable_cpus; print(configure_threads(), usable_cpus())"
    threads, cpus = map(int, _run(code).split())
    assert threads == cpus == len(os.sched_getaffinity(0))
    assert int(_run(code, OMP_NUM_THREADS="1").split()[0]) == 1


def test_auto_picks_cuda_when_there_is_one_and_a_device_is_spelled_as_torch_spells_it():
    assert pick_device("auto") == pick_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["tpu", "gpu:0", ""])
def test_a_bad_device_name_is_one_value_error_naming_the_choices(name):
    with pytest.raises(ValueError, match=f"unknown device {name!r}; use auto, cpu, cuda or cuda:N"):
        pick_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_value_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda:0")
