"""Progress bars with the time left, for every long command: on stderr, and shown only when
stderr is a terminal (log files and CI stay clean) and the caller has not turned them off."""

from __future__ import annotations


class _NoBar:
    """What a caller holds when no bar is shown: every call does nothing."""

    n = 0
    disable = True   # as tqdm says of a bar it does not show

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


def progress_bar(total: float, *, unit: str, desc: str, enabled: bool = True, initial: float = 0,
                 rate: bool = True, leave: bool = True, position: int | None = None):
    """A tqdm bar of ``total`` ``unit``s with the elapsed and remaining time; ``rate`` False leaves
    tqdm's own throughput out (for a caller that reports a truer one in the postfix). A no-op
    object when ``enabled`` is false; tqdm hides it when stderr is not a terminal."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    throughput = ", {rate_fmt}" if rate else ""
    return tqdm(total=total, initial=initial, unit=unit, unit_scale=True, dynamic_ncols=True, desc=desc,
                disable=None, leave=leave, position=position, smoothing=0.1,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}"
                           + throughput + "{postfix}]")
