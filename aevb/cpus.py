"""The CPUs this process may run on; a module without torch, so that the command line can check
``--threads`` while it parses (:mod:`aevb.threads` decides how many of them a step uses)."""

from __future__ import annotations

import os


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset or a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
