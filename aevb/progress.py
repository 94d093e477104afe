"""Progress bars with the time left, for every long command: on stderr, and shown only when
stderr is a terminal (log files and CI stay clean) and the caller has not turned them off."""

from __future__ import annotations

import sys
import time
from typing import Callable

#: Seconds between two progress lines where no bar can be shown (stderr is a log file).
LOG_EVERY_SECONDS = 600.0


class _NoBar:
    """What a caller holds when no bar is shown: every call does nothing."""

    n = 0
    disable = True  # as tqdm says of a bar it does not show

    def update(self, count: int = 1) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def set_description_str(self, text: str) -> None:
        pass

    def reset(self, total: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class _ProgressLines(_NoBar):
    """Where no bar can be shown: a line on stderr every :data:`LOG_EVERY_SECONDS` with the share
    done and the time left at the speed so far."""

    def __init__(
        self, total: float, unit: str, desc: str, initial: float = 0, clock: Callable[[], float] = time.monotonic
    ):
        self.total, self.unit, self.desc, self.n, self.initial, self.clock = total, unit, desc, initial, initial, clock
        self.started = self.reported = clock()

    def update(self, count: int = 1) -> None:
        self.n += count
        now = self.clock()
        if now - self.reported < LOG_EVERY_SECONDS or now <= self.started:
            return
        self.reported = now
        speed = (self.n - self.initial) / (now - self.started)
        left = f", {duration_text((self.total - self.n) / speed)} left" if speed > 0 else ""
        print(
            f"{self.desc}: {self.n:,.0f} of {self.total:,.0f} {self.unit}s ({100 * self.n / self.total:.1f}%){left}",
            file=sys.stderr,
            flush=True,
        )


def duration_text(seconds: float) -> str:
    """A duration as people read it: seconds, minutes or hours."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def progress_bar(
    total: float,
    *,
    unit: str,
    desc: str,
    enabled: bool = True,
    initial: float = 0,
    rate: bool = True,
    leave: bool = True,
    position: int | None = None,
    logged: bool = False,
):
    """A tqdm bar of ``total`` ``unit``s with the elapsed and remaining time; ``rate`` False leaves
    tqdm's own throughput out (for a caller that reports a truer one in the postfix). A no-op
    object when ``enabled`` is false; tqdm hides it when stderr is not a terminal, where with
    ``logged`` a line every :data:`LOG_EVERY_SECONDS` says how far it is instead."""
    if not enabled:
        return _NoBar()
    if logged and not sys.stderr.isatty():
        return _ProgressLines(total, unit, desc, initial)
    from tqdm.auto import tqdm

    throughput = ", {rate_fmt}" if rate else ""
    return tqdm(
        total=total,
        initial=initial,
        unit=unit,
        unit_scale=True,
        dynamic_ncols=True,
        desc=desc,
        disable=None,
        leave=leave,
        position=position,
        smoothing=0.1,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}"
        + throughput
        + "{postfix}]",
    )
