"""How many CPU threads a training step uses: a fixed count, or the count that steps fastest now.

A step's parallel regions (matrix products, the native kernels' loops) end at barriers where
every thread waits for the last. On a machine where another process holds a core, the thread
that is not scheduled holds all the others up, and two threads step several times slower than
one (docs/performance.md, "a busy machine"). So by default the trainer measures steps at each
candidate count, keeps the fastest, and measures again as the load changes: when the steps'
speed moves by more than :data:`SPEED_CHANGE` from what it was just after the last choice, and
at the latest every ``recheck_seconds`` (doubled, up to :data:`LONGEST_RECHECK_SECONDS`, while
the choice holds). A fixed count (``threads``) is never changed.

Results depend on the count in last bits (reductions split differently), so a run with the
adaptive policy is reproducible only to rounding; fix the count for bit-for-bit repeats.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Iterator, TypeVar

import torch

from ..errors import AevbError

T = TypeVar("T")

PROBE_SECONDS = 0.05            # time measured at each candidate count ...
PROBE_STEPS = 8                 # ... and steps, whichever is longer
WARMUP_STEPS = 1                # steps after a change not measured (the thread team is re-formed)
RECHECK_SECONDS = 10.0          # the first re-measurement after a choice
LONGEST_RECHECK_SECONDS = 160.0
WATCH_SECONDS = 1.0             # the window over which the chosen count's speed is watched
SPEED_CHANGE = 0.25             # a window this much slower or faster than the first: measure again
SWITCH_MARGIN = 0.03            # another count must step this much faster to replace the current one


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset or a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def candidate_counts(most: int) -> tuple[int, ...]:
    """The thread counts tried, most first: ``most``, one fewer (one core taken by another
    process), and halvings down to one."""
    if most < 1:
        raise AevbError(f"`threads` must be a positive integer, got {most}")
    counts, count = {most, max(1, most - 1)}, most
    while count > 1:
        count //= 2
        counts.add(max(1, count))
    return tuple(sorted(counts, reverse=True))


def process_share(local_processes: int) -> int:
    """Threads for each of ``local_processes`` processes sharing this machine's CPUs (at least one)."""
    return max(1, available_cpus() // max(1, local_processes))


class StepThreads:
    """The thread count of the steps of one trainer.

    Args:
        counts: the candidate counts; one count fixes it.
        clock: seconds (tests give a fake one).
        set_threads: what sets the count (``torch.set_num_threads``; tests give a fake one).

    :meth:`run` runs a step at the current count and times it; between :meth:`start` and
    :meth:`stop` the process's torch thread count is the policy's, and afterwards what it was.
    ``steps_by_count`` says how many steps ran at each count.
    """

    def __init__(self, counts: tuple[int, ...], clock: Callable[[], float] = time.perf_counter,
                 set_threads: Callable[[int], None] = torch.set_num_threads,
                 get_threads: Callable[[], int] = torch.get_num_threads):
        if not counts or min(counts) < 1:
            raise AevbError(f"thread counts must be positive integers, got {counts}")
        self.counts = tuple(counts)
        self._clock, self._set, self._get = clock, set_threads, get_threads
        self.current = self.counts[0]
        self.steps_by_count: dict[int, int] = {}
        self.choices: list[tuple[int, dict[int, float]]] = []   # (count kept, samples/s of each count)
        self._outside: int | None = None
        self._queue: list[int] = []            # counts still to measure in this probe
        self._rates: dict[int, float] = {}
        self._kept = self.current               # the count before the probe: kept unless beaten
        self._warmup = 0
        self._seconds = self._samples = self._steps = 0.0
        self._recheck = RECHECK_SECONDS
        self._next_probe = -float("inf")        # the first step starts a probe
        self._baseline: float | None = None     # samples/s in the first window after a choice

    @classmethod
    def for_training(cls, threads: int | None, device: torch.device, local_processes: int = 1) -> "StepThreads":
        """The policy of a run: ``threads`` fixes the count; None adapts among the counts up to
        torch's current one on CPU (several processes on one machine: each keeps its share of the
        CPUs, fixed); on a GPU the count stays as it is."""
        if threads is not None:
            if int(threads) < 1:
                raise AevbError(f"`threads` must be a positive integer, got {threads}")
            return cls((int(threads),))
        if torch.device(device).type != "cpu":
            return cls((torch.get_num_threads(),))
        if local_processes > 1:
            return cls((process_share(local_processes),))
        return cls(candidate_counts(torch.get_num_threads()))

    @property
    def adaptive(self) -> bool:
        return len(self.counts) > 1

    @property
    def most(self) -> int:
        return max(self.counts)

    def start(self) -> None:
        """Take over the process's thread count (at the count in use)."""
        if self._outside is None:
            self._outside = self._get()
        self.steps_by_count = {}
        self._set(self.current)

    def stop(self) -> None:
        """Give the process its thread count back."""
        if self._outside is not None:
            self._set(self._outside)
            self._outside = None

    @contextlib.contextmanager
    def at_most(self) -> Iterator[None]:
        """The largest count for the duration (to size per-thread buffers, e.g. the native engine's)."""
        self._set(self.most)
        try:
            yield
        finally:
            self._set(self.current)

    def remeasure(self) -> None:
        """Measure the counts again at the next step (after a pause: evaluation, a rollback)."""
        self._next_probe = -float("inf")

    def run(self, step: Callable[[], T], samples: int) -> T:
        """``step()`` at the current count, timed (it must finish before returning: CPU tensors)."""
        if not self.adaptive:
            self.steps_by_count[self.current] = self.steps_by_count.get(self.current, 0) + 1
            return step()
        if not self._queue and self._clock() >= self._next_probe:
            self._begin_probe()
        began = self._clock()
        result = step()
        self._record(self._clock() - began, samples)
        return result

    # -- the measurement --------------------------------------------------------------------------

    def _switch(self, count: int) -> None:
        if count != self.current:
            self.current = count
            self._set(count)
            self._warmup = WARMUP_STEPS
        self._seconds = self._samples = self._steps = 0.0

    def _begin_probe(self) -> None:
        self._kept = self.current
        self._queue = [self.current] + [c for c in self.counts if c != self.current]
        self._rates = {}
        self._switch(self._queue[0])

    def _record(self, seconds: float, samples: int) -> None:
        self.steps_by_count[self.current] = self.steps_by_count.get(self.current, 0) + 1
        if self._warmup > 0:
            self._warmup -= 1
            return
        self._seconds += seconds
        self._samples += samples
        self._steps += 1
        if self._queue:
            if self._steps >= PROBE_STEPS and self._seconds >= PROBE_SECONDS:
                self._rates[self.current] = self._samples / self._seconds
                self._queue.pop(0)
                if self._queue:
                    self._switch(self._queue[0])
                else:
                    self._choose()
        elif self._seconds >= WATCH_SECONDS:
            rate = self._samples / self._seconds
            self._seconds = self._samples = self._steps = 0.0
            if self._baseline is None:
                self._baseline = rate
            elif abs(rate / self._baseline - 1.0) > SPEED_CHANGE:   # the load changed: measure again
                self._recheck = RECHECK_SECONDS
                self._next_probe = -float("inf")

    def _choose(self) -> None:
        best = max(self._rates, key=self._rates.get)
        if self._rates[best] < self._rates[self._kept] * (1.0 + SWITCH_MARGIN):
            best = self._kept
        changed = best != self._kept
        self.choices.append((best, dict(self._rates)))
        self._switch(best)
        self._baseline = None
        self._recheck = RECHECK_SECONDS if changed or len(self.choices) == 1 else \
            min(2.0 * self._recheck, LONGEST_RECHECK_SECONDS)
        self._next_probe = self._clock() + self._recheck
