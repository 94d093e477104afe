"""Where runs stand while they train, read from their checkpoints: progress for logs.

A run of 10⁸ samples trains for hours, and a reproduction's runs train in worker processes, so
the process that waits for them learns nothing until a run ends. Every run writes a checkpoint
every few thousand steps, and its JSON says how many training samples the run has seen: reading
that is enough to move a progress bar and, where no bar can be shown (stderr is a log file, as
under ``nohup`` or a batch scheduler), to write a line every few minutes with each run's
progress, speed and time left (:func:`report_periodically`).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from ..progress import duration_text as _duration
from ..training.checkpoints import newest_checkpoint
from .layout import SUMMARY_FILE

#: Seconds between two progress lines in a log (a reproduction lasts minutes to days).
REPORT_EVERY_SECONDS = 600.0


class RunsProgress:
    """Training samples done by each run of ``totals`` (name → samples the run trains) in
    ``out/<name>``: a complete run counts whole, one in progress as far as its newest checkpoint.

    ``scored(name)`` says whether a complete run's final measurement is written (until then its
    line says it is being scored); ``clock`` gives seconds (for the speeds and times left).
    ``fresh`` names runs that start over: the checkpoints their directories hold now belong to
    something else (other settings) and count for nothing.
    """

    def __init__(
        self,
        totals: dict[str, int],
        out: Path,
        scored: Callable[[str], bool] = lambda name: True,
        clock: Callable[[], float] = time.monotonic,
        fresh: set[str] = frozenset(),
    ):
        self.totals, self.out, self.scored, self.clock = dict(totals), Path(out), scored, clock
        self._known = {name: 0 for name in self.totals}
        self._stale = {name: newest_checkpoint(self.out / name) for name in fresh}
        self._reported: tuple[float, dict[str, int]] | None = None

    def samples(self) -> dict[str, int]:
        """Samples done per run now (the last value read where a checkpoint is being replaced)."""
        for name, total in self.totals.items():
            if (self.out / name / SUMMARY_FILE).is_file():
                self._known[name] = total
                continue
            read = newest_checkpoint(self.out / name)
            if read is not None and read != self._stale.get(name):
                self._known[name] = min(read[1], total)
        return dict(self._known)

    def done(self) -> int:
        """Samples done over all runs."""
        return sum(self.samples().values())

    def report(self) -> str:
        """One line: each run under way with its samples done of its total and, from the second
        report on, its speed since the last report and the time it has left at that speed; runs
        trained and runs not started yet are counted (with many runs the line stays short)."""
        now, samples = self.clock(), self.samples()
        previous = self._reported
        self._reported = (now, samples)
        parts, trained, not_started = [], 0, 0
        for name, total in self.totals.items():
            done = samples[name]
            if done >= total:
                if self.scored(name):
                    trained += 1
                else:
                    parts.append(f"{name} trained, being scored")
                continue
            if done == 0:
                not_started += 1
                continue
            part = f"{name} {done:,} of {total:,} samples ({100 * done / total:.1f}%)"
            if previous is not None and now > previous[0]:
                speed = (done - previous[1][name]) / (now - previous[0])
                shown = f"{speed:,.0f}" if speed >= 10 else f"{speed:.2g}"
                part += (
                    f", {shown} samples/s, {_duration((total - done) / speed)} left"
                    if speed > 0
                    else ", no progress since the last report"
                )
            parts.append(part)
        counts = [
            f"{count} of {len(self.totals)} runs {what}"
            for count, what in ((trained, "trained"), (not_started, "not started"))
            if count
        ]
        return "progress: " + "; ".join(counts + parts)


@contextmanager
def report_periodically(runs: RunsProgress, log: Callable[[str], None], every: float | None):
    """While the block runs, ``log`` a :meth:`RunsProgress.report` line every ``every`` seconds
    from a background thread (nothing when ``every`` is None)."""
    if every is None:
        yield
        return
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(every):
            log(runs.report())

    reporter = threading.Thread(target=report, name="aevb-progress-report", daemon=True)
    reporter.start()
    try:
        yield
    finally:
        stop.set()
        reporter.join()
