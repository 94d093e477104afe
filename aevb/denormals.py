"""Subnormal floats flushed to zero while aevb trains and evaluates.

Why. A float32 below 1.2e-38 (float64: 2.2e-308) is subnormal, and on Intel CPUs an arithmetic
instruction that reads or writes one takes a microcode assist, of the order of a hundred cycles
where a normal operand costs one (AMD's recent cores handle most of them at full speed). Training
makes them steadily: Adam's first moment of a first-layer weight decays by β₁ each step after its
pixel was last lit, through the whole subnormal range before it reaches zero, and a pixel that
digits light now and then starts the descent again; the paper's prior decays the weights of
pixels that no digit lights into the same range. On an Intel Xeon the optimiser's pass over such
values became most of a step (docs/performance.md, "Subnormal floats").

Flushing them (results below the normal range become zero, FTZ; such operands read as zero, DAZ)
changes only quantities that are already below every normal number, and a subnormal added to a
weight or a bound rounds away. Measured (``tests/test_denormals.py``): an Adam run whose first
moments pass through the subnormal range ends with the same parameters bit for bit, and with the
paper's prior, whose weight decay takes the first-layer weights of inputs that no data point
lights down into that range, those weights are zero instead and every parameter above 1e-30 in
magnitude is the same bit for bit. TensorFlow flushes them in its CPU threads for the same
reason.

The mode is a per-thread CPU register, so it is set on the calling thread and on the threads of
torch's OpenMP pool (through the native library, which shares that pool; without it, only on the
calling thread, :func:`torch.set_flush_denormal`), for the duration of aevb's work
(:func:`flushed`: the trainer's thread policy from the first step to the last, the evaluation's
chunk workers, :func:`aevb.runs.evaluate_run`), and put back afterwards.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from . import native

#: The smallest positive float32, subnormal: read as zero where subnormals are flushed.
_SMALLEST_SUBNORMAL = 1e-45


def thread_flushes() -> bool:
    """Whether the calling thread flushes subnormals now (a one-element product runs on it)."""
    return (torch.tensor([_SMALLEST_SUBNORMAL]) * torch.tensor([1.0])).item() == 0.0


def enabled() -> bool:
    """False when the environment asks for IEEE subnormals to be kept (``AEVB_FLUSH_SUBNORMALS=0``):
    then aevb leaves every thread's mode as it finds it."""
    return os.environ.get("AEVB_FLUSH_SUBNORMALS", "1").strip().lower() not in ("0", "false", "no", "off")


def set_flushed(on: bool, threads: int) -> bool:
    """Flush subnormals (``on``) or keep them, on this thread and on ``threads`` threads of torch's
    pool, or as many as torch uses now if more (a pool thread that the count reaches only later
    keeps its own mode); returns whether this thread flushed them before. Changes nothing where
    the environment turns flushing off (:func:`enabled`)."""
    before = thread_flushes()
    if not enabled():
        return before
    kernels = native.load()
    if kernels is not None:
        kernels.set_flush_denormals(on, max(1, threads, torch.get_num_threads()))
    else:
        torch.set_flush_denormal(on)
    return before


@contextlib.contextmanager
def flushed(threads: int) -> Iterator[None]:
    """Subnormals flushed to zero inside the block, on this thread and on ``threads`` threads of
    torch's pool (the most the block uses); the mode before is restored after."""
    before = set_flushed(True, threads)
    try:
        yield
    finally:
        if not before:
            set_flushed(False, threads)
