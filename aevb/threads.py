"""How many CPU threads a training step (or an evaluation chunk) uses: a fixed count, or the count
that steps fastest now.

A step's parallel regions (matrix products, the native kernels' loops) end at barriers where every
thread waits for the last. On a machine where another process holds a core, the thread that is not
scheduled holds all the others up, and two threads step several times slower than one
(docs/performance.md, "A busy machine"). So by default the trainer (and the reference path of
importance sampling, chunk by chunk) measures steps at each candidate count, keeps the fastest,
and measures again as the load changes: when the steps slow down by more than :data:`SLOWDOWN`
from the chosen count's measured speed (another process took a core, or a lucky measurement chose
the wrong count; when measuring again keeps the count, its slower speed becomes the reference),
and at the latest every :data:`RECHECK_SECONDS` (doubled while the choice holds, up to
:data:`LONGEST_RECHECK_SECONDS`: a core that became free speeds up no single-thread step). Such a
periodic re-measurement of a count below the most is skipped while the machine had no idle core
to give since the last one (Linux's ``/proc/stat``: less than :data:`IDLE_CORES_TO_RECHECK` of a
core idle on average): more threads cannot step faster then, and measuring them costs slow steps
every time. A candidate that steps at less than :data:`ABANDON_BELOW` of the best so far is
dropped after two steps, so that a measurement on a busy machine costs little. A fixed count
(``threads``) is never changed.

The adaptive policy changes only the speed, never a result: it adapts only steps whose every
bit is the same on any number of threads (:attr:`aevb.engines.Engine.thread_count_invariant`:
the native engine, whose kernels split only independent rows or columns, with MKL's matrix
products in strict conditional numerical reproducibility mode, :func:`strict_matrix_products`).
torch's own elementwise operations are not such steps: their vectorised and scalar code round
exp, tanh and the like differently, and the threads' share of a tensor decides which elements
take which. A step that is not invariant runs at one fixed count (the most), so that a run
repeats, and resumes, bit for bit.

Work made of independent chunks (importance sampling's fast path) needs no barrier at all:
:class:`aevb.chunk_workers.ChunkWorkers` runs each chunk on one of several single-threaded workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import torch

from . import denormals
from .cpus import available_cpus
from .errors import AevbError

T = TypeVar("T")

PROBE_SECONDS = 0.05  # time measured at each candidate count ...
PROBE_STEPS = 8  # ... and steps, whichever is longer ...
ABANDON_BELOW = 0.5  # ... or two steps, when a candidate is this much slower than the best so far
WARMUP_STEPS = 1  # steps after a change not measured (the thread team is re-formed)
RECHECK_SECONDS = 10.0  # the first re-measurement after a choice
LONGEST_RECHECK_SECONDS = 60.0
WATCH_SECONDS = 1.0  # the window over which the chosen count's speed is watched
SLOWDOWN = 0.3  # a window this much slower than the chosen count's speed: measure again
SWITCH_MARGIN = 0.03  # another count must step this much faster to replace the current one
IDLE_CORES_TO_RECHECK = 0.5  # idle cores on average since the last measurement that make more threads worth one


def idle_cpu_seconds() -> float | None:
    """Seconds that the machine's CPUs have spent idle since boot, all CPUs together (Linux's
    ``/proc/stat``: idle and waiting for I/O); None where the system does not say."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
        return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


#: MKL's conditional numerical reproducibility settings (mkl_cbwr_set): the code path MKL picks
#: for the CPU, in its strict mode, where ?gemm gives the same bits on any number of threads.
_MKL_CBWR_AUTO, _MKL_CBWR_STRICT, _MKL_CBWR_SUCCESS = 2, 0x10000, 0


@functools.cache
def strict_matrix_products() -> bool:
    """Whether torch's CPU matrix products give the same bits on any number of threads.

    MKL splits a small product's inner dimension among threads (a weight gradient of 10 × 200
    over a minibatch of 100 differs in its last bits between one and two threads) unless its strict
    CNR mode is on, which must be set before MKL's first call: this module sets it when imported
    (aevb's models import it). False without MKL, or when MKL ran before (the adaptive thread
    policy then keeps one count, :meth:`StepThreads.keep_one_count`)."""
    if not torch.backends.mkl.is_available():
        return False
    library = Path(torch.__file__).parent / "lib" / ("torch_cpu.dll" if os.name == "nt" else "libtorch_cpu.so")
    try:
        cbwr_set = ctypes.CDLL(str(library)).mkl_serv_cbwr_set
    except (OSError, AttributeError):  # another build: MKL linked elsewhere, or under other names
        return False
    cbwr_set.argtypes, cbwr_set.restype = [ctypes.c_int], ctypes.c_int
    return cbwr_set(_MKL_CBWR_AUTO | _MKL_CBWR_STRICT) == _MKL_CBWR_SUCCESS


strict_matrix_products()


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
    """The thread count of the steps of one trainer (or of importance sampling's chunks).

    Args:
        counts: the candidate counts; one count fixes it.
        clock: seconds (tests give a fake one).
        set_threads: what sets the count (``torch.set_num_threads``; tests give a fake one).
        idle_seconds: the machine's idle CPU seconds so far, or None where unknown
            (:func:`idle_cpu_seconds`; tests give a fake one).

    :meth:`run` runs a step at the current count and times it; between :meth:`start` and
    :meth:`stop` the process's torch thread count is the policy's, and subnormal floats are
    flushed to zero on every thread it may use (:mod:`aevb.denormals`); afterwards both are what
    they were.
    ``steps_by_count`` says how many steps ran at each count.
    """

    def __init__(
        self,
        counts: tuple[int, ...],
        clock: Callable[[], float] = time.perf_counter,
        set_threads: Callable[[int], None] = torch.set_num_threads,
        get_threads: Callable[[], int] = torch.get_num_threads,
        idle_seconds: Callable[[], float | None] = idle_cpu_seconds,
    ):
        if not counts or min(counts) < 1:
            raise AevbError(f"thread counts must be positive integers, got {counts}")
        self.counts = tuple(counts)
        self._clock, self._set, self._get, self._idle = clock, set_threads, get_threads, idle_seconds
        self.skipped_rechecks = 0  # periodic re-measurements skipped: no idle core since the last
        self._idle_mark: tuple[float, float | None] | None = None  # (clock, idle seconds) at the last choice
        self.current = self.counts[0]
        self.steps_by_count: dict[int, int] = {}
        self.choices: list[tuple[int, dict[int, float]]] = []  # (count kept, samples/s of each count)
        self._outside: int | None = None
        self._flushed_outside = False
        self._queue: list[int] = []  # counts still to measure in this probe
        self._rates: dict[int, float] = {}
        self._kept = self.current  # the count before the probe: kept unless beaten
        self._warmup = 0
        self._seconds = self._samples = self._steps = 0.0
        self._recheck = RECHECK_SECONDS
        self._next_probe = -float("inf")  # the first step starts a probe
        self._baseline = 0.0  # samples/s the chosen count is expected to keep
        self._trigger: float | None = None  # the watched speed that started this probe

    @classmethod
    def for_device(cls, threads: int | None, device: torch.device, local_processes: int = 1) -> "StepThreads":
        """The policy of work on ``device``: ``threads`` fixes the count; None adapts among the
        counts up to torch's current one on CPU (several processes on one machine: each keeps its
        share of the CPUs, fixed); on a GPU the count stays as it is."""
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
            self._flushed_outside = denormals.set_flushed(True, self.most)
        self.steps_by_count = {}
        self._set(self.current)
        if self._idle_mark is not None:  # the core this process left idle between its steps is not free
            self._idle_mark = (self._clock(), self._idle())

    def stop(self) -> None:
        """Give the process its thread count back."""
        if self._outside is not None:
            self._set(self._outside)
            self._outside = None
            if not self._flushed_outside:
                denormals.set_flushed(False, self.most)

    def adapt_only_if(self, step_invariant: bool) -> None:
        """Keep adapting only when the steps give the same bits on any count: ``step_invariant``
        (their own work, e.g. :attr:`aevb.engines.Engine.thread_count_invariant`) and their matrix
        products (:func:`strict_matrix_products`); otherwise :meth:`keep_one_count`."""
        if not (step_invariant and strict_matrix_products()):
            self.keep_one_count()

    def keep_one_count(self) -> None:
        """Stop adapting: the steps give other bits on other counts, and a run must repeat and
        resume bit for bit whatever the machine's load. The most candidates' count stays."""
        if self.adaptive:
            self.counts, self._queue, self.current = (self.most,), [], self.most
            if self._outside is not None:  # started: the count takes effect now
                self._set(self.current)

    @contextlib.contextmanager
    def for_evaluation(self) -> Iterator[None]:
        """The count of evaluations between steps (their torch operations are not invariant, see
        the module's docstring): one thread while adapting, so that a bound does not depend on
        the count chosen, else the fixed count."""
        self._set(1 if self.adaptive else self.current)
        try:
            yield
        finally:
            self._set(self.current)

    @contextlib.contextmanager
    def at_most(self) -> Iterator[None]:
        """The largest count for the duration (to size per-thread buffers, e.g. the native engine's)."""
        self._set(self.most)
        try:
            yield
        finally:
            self._set(self.current)

    def run(self, step: Callable[[], T], samples: int) -> T:
        """``step()`` at the current count, timed (it must finish before returning: CPU tensors)."""
        if not self.adaptive:
            self.steps_by_count[self.current] = self.steps_by_count.get(self.current, 0) + 1
            return step()
        if not self._queue and self._clock() >= self._next_probe and self._recheck_pays():
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

    def _recheck_pays(self) -> bool:
        """Whether a due measurement may find a faster count: always for the first one, one after
        a slowdown and one at the most threads (fewer may win when another process took a core);
        for a count below the most, only when an idle core was there to take while the steps ran
        since the last choice (or nobody says). Otherwise the next is due a re-check later."""
        if self._idle_mark is None or self._next_probe == -float("inf") or self.current >= self.most:
            return True
        then, idle_then = self._idle_mark
        now, idle_now = self._clock(), self._idle()
        if idle_then is None or idle_now is None:
            return True
        if now - then < WATCH_SECONDS:  # the steps just resumed: too short a time to tell
            self._next_probe = then + WATCH_SECONDS
            return False
        self._idle_mark = (now, idle_now)
        if (idle_now - idle_then) / (now - then) >= IDLE_CORES_TO_RECHECK:
            return True
        self.skipped_rechecks += 1
        self._next_probe = now + self._recheck
        return False

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
            rate = self._samples / self._seconds if self._seconds > 0 else float("inf")
            hopeless = self._steps >= 2 and self._rates and rate < ABANDON_BELOW * max(self._rates.values())
            if hopeless or (self._steps >= PROBE_STEPS and self._seconds >= PROBE_SECONDS):
                self._rates[self.current] = rate
                self._queue.pop(0)
                if self._queue:
                    self._switch(self._queue[0])
                else:
                    self._choose()
        elif self._seconds >= WATCH_SECONDS:
            rate = self._samples / self._seconds
            self._seconds = self._samples = self._steps = 0.0
            if rate < (1.0 - SLOWDOWN) * self._baseline:  # another process took a core: measure again
                self._trigger = rate
                self._recheck = RECHECK_SECONDS
                self._next_probe = -float("inf")

    def _choose(self) -> None:
        best = max(self._rates, key=self._rates.get)
        if self._rates[best] < self._rates[self._kept] * (1.0 + SWITCH_MARGIN):
            best = self._kept
        changed = best != self._kept
        self.choices.append((best, dict(self._rates)))
        self._switch(best)
        # Kept after its steps slowed down: the slower speed is what to expect from now on.
        self._baseline = self._trigger if self._trigger is not None and not changed else self._rates[best]
        self._trigger = None
        self._recheck = (
            RECHECK_SECONDS if changed or len(self.choices) == 1 else min(2.0 * self._recheck, LONGEST_RECHECK_SECONDS)
        )
        self._next_probe = self._clock() + self._recheck
        self._idle_mark = (self._clock(), self._idle())


_EVALUATION: dict[tuple, StepThreads] = {}


def evaluation_threads(threads: int | None, device: torch.device) -> StepThreads:
    """The policy of evaluation chunks on ``device``, one per process and setting, so that one
    measurement serves every evaluation until the load changes (a short evaluation would otherwise
    spend most of its time measuring)."""
    key = (threads, torch.device(device).type, torch.get_num_threads() if threads is None else None)
    if key not in _EVALUATION:
        _EVALUATION[key] = StepThreads.for_device(threads, device)
    return _EVALUATION[key]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch's intra-op threads set to one inside the block, and given back after."""
    outside = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(outside)
