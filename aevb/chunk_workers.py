"""Independent chunks of work (importance sampling's fast path) on several single-threaded workers.

Such chunks need no barrier between them: a worker on a busy core simply takes fewer chunks, and
since each chunk runs on one intra-op thread, the results do not depend on the count of workers.
"""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import torch

from . import denormals
from .errors import AevbError
from .threads import one_thread

T = TypeVar("T")
M = TypeVar("M")


def _one_thread_flushing() -> None:
    """A chunk worker's set-up: one intra-op thread, subnormals flushed (the worker ends with the pool)."""
    torch.set_num_threads(1)
    denormals.set_flushed(True, 1)


class ChunkWorkers:
    """Independent evaluation chunks on ``count`` threads of one intra-op thread each, with their
    results in submission order.

    Why not one chunk at a time on ``count`` intra-op threads: the matrix products then end at a
    barrier per call, which costs a share of their speed even on a quiet machine (measured in
    docs/performance.md, "Importance sampling against the GEMM-only bound"), and on a busy machine
    every chunk waits for the thread that is not scheduled, while here a worker that gets less CPU
    simply takes fewer chunks. Each chunk runs single-threaded whatever ``count`` is, so results do
    not depend on it, bit for bit, provided each chunk's random numbers are fixed where the tasks
    are made (e.g. a seed per chunk, drawn in order). torch operations release the GIL, so the
    workers run in parallel.
    """

    def __init__(self, count: int):
        if int(count) < 1:
            raise AevbError(f"`threads` must be a positive integer, got {count}")
        self.count = int(count)

    def map(self, tasks: Iterable[tuple[M, Callable[[], T]]]) -> Iterator[tuple[M, T]]:
        """(meta, task()) for each (meta, task) of ``tasks``, in order; at most twice ``count``
        tasks are made ahead of the results consumed (``tasks`` is iterated in this thread)."""
        # this thread makes the tasks (and runs them when count is 1); the workers flush on their own threads
        with one_thread(), denormals.flushed(1):
            yield from self._map(tasks)

    def _map(self, tasks: Iterable[tuple[M, Callable[[], T]]]) -> Iterator[tuple[M, T]]:
        if self.count == 1:
            for meta, task in tasks:
                yield meta, task()
            return
        with ThreadPoolExecutor(self.count, thread_name_prefix="aevb-chunk", initializer=_one_thread_flushing) as pool:
            pending: collections.deque = collections.deque()
            try:
                for meta, task in tasks:
                    pending.append((meta, pool.submit(task)))
                    if len(pending) >= 2 * self.count:
                        meta, future = pending.popleft()
                        yield meta, future.result()
                while pending:
                    meta, future = pending.popleft()
                    yield meta, future.result()
            finally:
                for _, future in pending:
                    future.cancel()
