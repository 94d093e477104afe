"""One process at a time in a run directory.

Two trainings writing into the same run (two ``aevb train --resume RUN`` at once, or a new run
with ``--overwrite`` over one still training) would interleave their metrics and overwrite each
other's checkpoints. A run is therefore locked while it trains: an advisory ``flock`` on
``RUN_DIR/.lock``, which the kernel releases when the process ends, however it ends, so a killed
run never leaves a stale lock behind. The file holds the owner's process id, for the message.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..checkpoint import open_no_follow
from ..errors import AevbError

LOCK_FILE = ".lock"

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None


class RunLock:
    """Hold the lock of ``run_dir`` (created if needed) from ``__enter__`` to ``__exit__``; a
    one-line error when another process holds it."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self._stream = None

    def __enter__(self) -> "RunLock":
        if fcntl is None:
            return self
        stream = open_no_follow(self.path, "a+")  # never a link's target: it is truncated below
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stream.seek(0)
            owner = stream.read().strip()
            stream.close()
            raise AevbError(
                f"{self.path.parent} is in use by another aevb process"
                f"{f' (pid {owner})' if owner.isdigit() else ''}; wait for it to finish or stop it"
            ) from None
        except OSError:
            stream.close()
            raise
        stream.seek(0)
        stream.truncate()
        stream.write(f"{os.getpid()}\n")
        stream.flush()
        self._stream = stream
        return self

    def __exit__(self, *exc) -> None:
        if self._stream is not None:
            self._stream.close()  # closing the descriptor releases the lock
            self._stream = None
