"""Thread policy, set before torch starts its thread pools, so that nobody has to tune it; and device choice.

Importing captionlens sets `OMP_WAIT_POLICY=PASSIVE` unless the environment already says otherwise:
idle OpenMP threads then sleep instead of spinning, which on a busy two-core machine made torch several
times slower (the policy takes effect only if torch is not imported yet, so it is safe on import). The
`captionlens` command also uses exactly the CPUs the process may run on (its affinity mask, which
containers narrow), not the machine's count, for torch's intra-op threads, and one inter-op thread.

`pick_device` turns a device name as the commands take it ("auto", "cpu", "cuda", "cuda:N") into a
torch device. Nothing here imports torch at module level: `import captionlens` imports this module
before torch, to set the wait policy in time.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PASSIVE_WAIT = ("OMP_WAIT_POLICY", "PASSIVE")


def set_wait_policy() -> None:
    """Passive OpenMP waiting, unless the environment chose a policy."""
    os.environ.setdefault(*PASSIVE_WAIT)


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_threads() -> int:
    """torch's thread counts for a command-line run (the user's OMP_NUM_THREADS wins); the intra-op count."""
    import torch

    threads = int(os.environ.get("OMP_NUM_THREADS") or usable_cpus())
    torch.set_num_threads(max(1, threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already ran in this process
        pass
    return torch.get_num_threads()


def pick_device(name: str = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; anything else as torch spells it ("cpu", "cuda:1")."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device
