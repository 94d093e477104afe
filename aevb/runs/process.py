"""Process control while a run trains: stopping on SIGINT/SIGTERM after a checkpoint, agreed by
every process under torchrun."""

from __future__ import annotations

import signal
import threading
from typing import Callable

import torch

# Set in a worker of `aevb reproduce --jobs` (:func:`stop_with_parent`): the parent's request that
# every job stop after a checkpoint (it was interrupted, or another job failed).
_parent_stop = None


def stop_with_parent(event) -> None:
    """In a worker process: stop training, as on a signal, once ``event`` (a multiprocessing
    Event of the parent's) is set. A worker ignores Ctrl-C, which would kill an idle one and break
    the pool: the parent, which receives it too, sets the event."""
    global _parent_stop
    _parent_stop = event
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def parent_asked_to_stop() -> bool:
    return _parent_stop is not None and _parent_stop.is_set()


class StopOnSignal:
    """SIGINT and SIGTERM ask training to stop at the next step (after a checkpoint) instead of
    killing it; a second signal of the same kind is not caught (the user insists). In a worker of
    ``aevb reproduce --jobs``, the parent's request does the same (:func:`stop_with_parent`).

    A signal the process ignores stays ignored: a run started in the background by a script
    (``aevb train ... &``, where the shell ignores SIGINT so that Ctrl-C at the terminal stops the
    script, not its background jobs) trains on through Ctrl-C as it did while starting up, where
    Python installs no KeyboardInterrupt for an ignored SIGINT; ``kill -TERM`` still stops it.
    A worker of ``--jobs`` ignores SIGINT itself and stops on its parent's request instead."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                if signal.getsignal(number) is not signal.SIG_IGN:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame) -> None:
        self.received = number
        signal.signal(number, self._previous.get(number, signal.SIG_DFL))

    def __call__(self) -> bool:
        return self.received is not None or parent_asked_to_stop()

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


class AgreedStop:
    """A stop request under torchrun: every process must stop after the same step, so every
    ``every`` steps they agree (one all-reduce of a flag) whether any of them was signalled."""

    def __init__(self, local: Callable[[], bool], group, device: torch.device, every: int = 20):
        self.local, self.group, self.device, self.every, self.calls = local, group, device, every, 0

    def __call__(self) -> bool:
        self.calls += 1
        if self.calls % self.every:
            return False
        return not self.group.all_agree(not self.local(), self.device)
