"""`Worker`: the one thread that touches the model, the results it keeps, and the requests it shares.

Every computation a request asks for (a caption, an explanation) is a `Job` run by a single worker thread,
so the model is never used by two threads at once. A job is known by its key: asking again for a key that
is queued, running or done returns the same job (a second identical request waits for the first instead
of computing twice, and a finished one answers from the cache of the last `cache_size` results). A job
that fails or is cancelled is forgotten, so asking again computes again.

Long jobs (LIME, occlusion) report progress between their batches of forward passes (`Job.report`). That
is also where they stop when cancelled (`Job.cancel`: `Cancelled` is raised from `report`) and where the
worker runs the jobs queued meanwhile, on the same thread, before going on: a caption asked for while
LIME runs is answered between two of its batches, not after it.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any


class Cancelled(Exception):
    """Raised inside a job that was cancelled, at its next progress report."""


@dataclass(frozen=True)
class Progress:
    """How far a long job is: `done` of `total` forward passes of `method`."""

    method: str
    done: int
    total: int

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "done": self.done, "total": self.total}


class Job:
    """One computation: its key, its result to come (`future`), its progress and whether it is cancelled."""

    _ids = itertools.count(1)

    def __init__(self, key: Hashable, compute: Callable[[Job], Any], worker: Worker) -> None:
        self.id = f"j{next(self._ids)}"
        self.key = key
        self.future: Future[Any] = Future()
        self.progress: Progress | None = None
        self.started: float | None = None
        self._compute = compute
        self._worker = worker
        self._cancelled = threading.Event()

    def report(self, method: str, done: int, total: int) -> None:
        """Called by a long computation between batches: records progress, stops a cancelled job (raises
        `Cancelled`) and lets the worker answer the jobs queued meanwhile."""
        if self._cancelled.is_set():
            raise Cancelled(f"{method} cancelled after {done} of {total}")
        self.progress = Progress(method, done, total)
        self._worker.run_queued()
        if self._cancelled.is_set():
            raise Cancelled(f"{method} cancelled after {done} of {total}")

    def cancel(self) -> None:
        """Stop the job: a queued one never starts, a running one stops at its next progress report."""
        self._cancelled.set()
        self._worker.forget(self)
        self.future.cancel()              # only a job not yet started can be cancelled this way

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        self.started = time.perf_counter()
        try:
            if self.cancelled:
                raise Cancelled("cancelled before it started")
            result = self._compute(self)
        except BaseException as exc:      # the waiters get the exception; the worker goes on
            self._worker.forget(self)
            if isinstance(exc, Cancelled):
                exc = CancelledError(str(exc))
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class Worker:
    """The single thread that runs every job, in order of arrival (see the module docstring)."""

    def __init__(self, cache_size: int = 256) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.cache_size = cache_size
        self._lock = threading.Condition()
        self._queue: deque[Job] = deque()
        self._by_key: OrderedDict[Hashable, Job] = OrderedDict()   # the jobs a new request for a key gets
        self._by_id: OrderedDict[str, Job] = OrderedDict()         # every recent job, failed ones included
        self._nested = threading.local()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="captionlens-model", daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, compute: Callable[[Job], Any]) -> Job:
        """The job for `key`: the one queued, running or done, else a new one running `compute(job)`."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker is shut down")
            job = self._by_key.get(key)
            if job is not None:
                self._by_key.move_to_end(key)
                return job
            job = Job(key, compute, self)
            self._by_key[key] = job
            self._by_id[job.id] = job
            self._queue.append(job)
            self._trim()
            self._lock.notify()
            return job

    def job(self, job_id: str) -> Job | None:
        with self._lock:
            return self._by_id.get(job_id)

    def forget(self, job: Job) -> None:
        """Drop `job` from the cache and the queue: a failed or cancelled job is computed afresh when its key
        is asked again (its id still answers, with its failure, until it is among the oldest)."""
        with self._lock:
            if self._by_key.get(job.key) is job:
                del self._by_key[job.key]
            if job in self._queue:
                self._queue.remove(job)

    def run_queued(self) -> None:
        """Run every job queued now, on this (the worker's) thread; called by a long job between batches.
        A job run this way does not itself run others (no nesting deeper than one)."""
        if threading.current_thread() is not self._thread or getattr(self._nested, "active", False):
            return
        self._nested.active = True
        try:
            while (job := self._take(block=False)) is not None:
                job.run()
        finally:
            self._nested.active = False

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            for job in self._queue:
                job.future.cancel()
            self._queue.clear()
            self._lock.notify_all()
        self._thread.join(timeout=5)

    def _take(self, block: bool) -> Job | None:
        with self._lock:
            while not self._queue:
                if not block or self._closed:
                    return None
                self._lock.wait()
            return self._queue.popleft()

    def _loop(self) -> None:
        while (job := self._take(block=True)) is not None:
            job.run()

    def _trim(self) -> None:
        """Forget the oldest finished jobs beyond `cache_size` (queued and running jobs are kept)."""
        finished = [job for job in self._by_key.values() if job.future.done()]
        for job in finished[:max(0, len(finished) - self.cache_size)]:
            del self._by_key[job.key]
        done = [job for job in self._by_id.values() if job.future.done() and self._by_key.get(job.key) is not job]
        for job in done[:max(0, len(done) - self.cache_size)]:
            del self._by_id[job.id]


async def wait_for(job: Job, timeout: float | None) -> bool:
    """Wait (without blocking the event loop) until `job` is done or `timeout` seconds passed; True when
    done. A waiter that goes away (its request cancelled) leaves the job running for the others."""
    if job.future.done():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not waiter.done():
            waiter.set_result(None)

    def wake(_: Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):      # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle)

    job.future.add_done_callback(wake)
    try:
        await asyncio.wait_for(asyncio.shield(waiter), timeout)
    except asyncio.TimeoutError:
        return False
    return True
