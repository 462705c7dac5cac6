"""Thread policy, set before torch starts its thread pools, so that nobody has to tune it.

Importing captionlens sets `OMP_WAIT_POLICY=PASSIVE` unless the environment already says otherwise:
idle OpenMP threads then sleep instead of spinning, which on a busy two-core machine made torch several
times slower (the policy takes effect only if torch is not imported yet, so it is safe on import). The
`captionlens` command also uses exactly the CPUs the process may run on (its affinity mask, which
containers narrow), not the machine's count, for torch's intra-op threads, and one inter-op thread.
"""
from __future__ import annotations

import os

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
