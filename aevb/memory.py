"""How much memory there is, and refusing up front what cannot fit in it.

A size the user chooses (hidden units, latent dimension, samples per datapoint, number of samples
or classes) can ask for more memory than the machine has. Left alone, the allocator either
raises deep inside torch with a C++ traceback or, with Linux's overcommit, the process grows
until the kernel kills it (or the machine swaps to a halt). Everything that can be streamed is
(see :mod:`aevb.evaluation`); for the rest, the caller estimates the bytes it needs — a lower
bound, so that nothing that would fit is refused — and :func:`require_memory` turns "too much"
into one :class:`~aevb.errors.AevbError` line that says what needs how much.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import torch

from .errors import AevbError
from .image_shape import image_channels, image_size

#: Bytes of a float32, the dtype of every model and dataset here.
FLOAT_BYTES = 4

#: Decimal (SI) units, as disks and ``free -h --si`` count them.
_UNITS = ("bytes", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")

#: cgroup files that cap a container's memory (v2, then v1); "max" or a huge number means no cap.
_CGROUP_LIMITS = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def format_bytes(size: int | float) -> str:
    """``size`` bytes for people: three significant digits in decimal units ("62.7 TB", "120 GB");
    beyond yottabytes (a latent dimension of 10³⁰ gets there) in powers of ten ("4.02e+33 bytes").
    Takes Python ints of any size, which floats could not hold."""
    value = Decimal(int(size))
    if value < 1000:
        return f"{int(value)} bytes"
    for unit in _UNITS[1:]:
        value /= 1000
        if value < Decimal("999.5"):  # 999.5 and above would print as "1e+3"
            return f"{value:.3g} {unit}"
    return f"{Decimal(int(size)):.3g} bytes".replace("E", "e")


def format_count(count: int, *, separators: bool = False) -> str:
    """An integer of any size for an error message: its digits (with thousands separators when
    ``separators``) up to 10¹⁵, beyond that three significant digits ("1.00e+30"), so that a
    size like 10⁴⁰⁰ read from a file does not fill the screen."""
    count = int(count)
    if abs(count) < 10**15:
        return f"{count:,}" if separators else str(count)
    return f"{Decimal(count):.3g}".replace("E", "e")


def _meminfo_available() -> int | None:
    """Linux's estimate of the memory that can be allocated without swapping (MemAvailable), bytes."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file counts kibibytes
    except (OSError, ValueError, IndexError):
        pass
    return None


def _sysconf_available() -> int | None:
    """Free (else total) physical memory from sysconf, bytes: for systems without /proc/meminfo."""
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            return os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            continue
    return None


def _cgroup_headroom() -> int | None:
    """Bytes left under this container's cgroup memory limit, or None without a limit: inside a
    container MemAvailable describes the host, and the limit is what the kernel enforces."""
    for limit_file, usage_file in _CGROUP_LIMITS:
        try:
            limit_text = Path(limit_file).read_text().strip()
            if limit_text == "max":
                return None
            limit, usage = int(limit_text), int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit >= 2**60:  # cgroup v1 writes "no limit" as a number near 2⁶³
            return None
        return max(0, limit - usage)
    return None


def available_memory(device: torch.device | str | None = None) -> int | None:
    """Bytes that can still be allocated on ``device`` (default: the host), or None if unknown.

    Host: Linux's MemAvailable, capped by a cgroup limit; elsewhere sysconf's free physical pages.
    CUDA: the device's free memory plus what torch's caching allocator holds but does not use.
    Other devices (e.g. MPS) share the host's memory and are answered for the host.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached_unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return free + cached_unused
    available = _meminfo_available()
    if available is None:
        available = _sysconf_available()
    headroom = _cgroup_headroom()
    if headroom is not None:
        available = headroom if available is None else min(available, headroom)
    return available


def require_memory(
    needed: int,
    what: str,
    *,
    device: torch.device | str | None = None,
    at_least: bool = True,
    advice: str | None = None,
) -> None:
    """Refuse, with one :class:`AevbError` line, to allocate ``needed`` bytes that ``device`` (default:
    the host) does not have: "{what} needs [at least ]{size}, more than the {size} of memory
    available[; {advice}]".

    ``needed`` is an int of any size (estimates are made in Python ints, before anything is
    allocated); ``at_least`` says the estimate is a lower bound, which every estimate here is.
    When the available memory cannot be found out, nothing is refused.
    """
    available = available_memory(device)
    if available is None or needed <= available:
        return
    where = "" if device is None or torch.device(device).type == "cpu" else f" on {device}"
    message = (
        f"{what} needs {'at least ' if at_least else ''}{format_bytes(needed)}, more than the "
        f"{format_bytes(available)} of memory available{where}"
    )
    raise AevbError(message + (f"; {advice}" if advice else ""))


def require_sampling_memory(
    config, num_samples: int, *, class_grid: bool, png: bool, device: torch.device | str = "cpu"
) -> None:
    """Refuse, in one line, to draw ``num_samples`` images E[x|z] that cannot fit in memory.

    ``class_grid``: a conditional model's grid of C rows of ⌈num_samples / C⌉ images each (every
    class drawn with each z). Each image needs its z (J floats) and its D pixels where it is
    decoded (``device``), and its pixels again on the host when decoded elsewhere; a ``png``
    grid tiles them into a float canvas (with one pixel of padding), clips a copy of it and
    renders it at least pixel for pixel into an RGBA buffer, 4 bytes per canvas pixel and
    8 more per image channel (12 for grey images).
    """
    classes = int(config.num_classes or 0)
    columns = -(-int(num_samples) // classes) if class_grid else min(10, int(num_samples))
    images = classes * columns if class_grid else int(num_samples)
    data_dim, latent_dim = int(config.data_dim), int(config.latent_dim)
    decoded = FLOAT_BYTES * images * (latent_dim + data_dim)
    on_host = decoded
    if torch.device(device).type != "cpu":
        require_memory(
            decoded, f"decoding {format_count(images)} samples of {data_dim} pixels", device=device, advice="draw fewer"
        )
        on_host = FLOAT_BYTES * images * data_dim
    if png and config.image_shape is not None:
        height, width = image_size(config.image_shape)
        rows = -(-images // columns)
        canvas_pixels = (rows * (height + 1) - 1) * (columns * (width + 1) - 1)
        # C floats per canvas pixel, a clipped copy of them, and 4 bytes of RGBA to render them
        on_host += (2 * image_channels(config.image_shape) * FLOAT_BYTES + 4) * canvas_pixels
    what = f"drawing {format_count(images)} samples of {data_dim} pixels" + (" and their PNG grid" if png else "")
    require_memory(on_host, what, advice="draw fewer")
