"""Runs across processes and machines on torch.distributed, as `torchrun` starts them.

`torchrun --nproc_per_node N -m captionlens train|explain ...` sets RANK, WORLD_SIZE, LOCAL_RANK and
the rendezvous address in each process's environment; `join` reads them and joins the process group
(NCCL when the processes train on GPUs, gloo otherwise). A plain `captionlens ...` run is a world of
one: every helper here is then a no-op, so the single-process path is the same code.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from captionlens.runtime import pick_device

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes what there is one of (checkpoints, logs, the merged summary and report)."""
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """The device this process uses for `name` ("auto", "cpu", "cuda", "cuda:N"): under torchrun
        "auto" and "cuda" mean this process's own GPU, cuda:LOCAL_RANK."""
        if self.size > 1 and name in ("auto", "cuda") and torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return pick_device(name)

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def gather(self, value: T) -> list[T]:
        """Every rank's `value` (picklable, small: lists of names and numbers), in rank order, on every rank."""
        if self.size == 1:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over the ranks (a new tensor; the input is left as it is)."""
        if self.size == 1:
            return tensor
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the ranks."""
        if self.size == 1:
            return list(values)
        return [sum(column) for column in zip(*self.gather(values))]


SINGLE = World()  # a plain run: one process


def launched() -> bool:
    """Whether torchrun (or another launcher with the same environment) started more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(backend: str | None = None, timeout: timedelta | None = None) -> World:
    """Join the run's process group (once) and return this process's `World`; a world of one when not
    launched by torchrun. `backend` None: NCCL when CUDA is available, else gloo. `timeout`: how long a
    collective (a barrier, a gather) waits for the other ranks (None: torch's default)."""
    if not launched():
        return SINGLE
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timeout)
    return current()


def current() -> World:
    """The world of the process group this process has joined, or a world of one."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def leave() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
