"""Building the native kernels and finding them in the cache: which compiler and flags, where the
library lives, and which libraries may be loaded.

The library is compiled from ``kernels.c`` with the machine's C compiler the first time it is
needed (once; docs/performance.md gives the time), with ``-march=native`` and OpenMP, into
``$XDG_CACHE_HOME/aevb/native/`` under a name that hashes the source, the flags, the compiler and
the CPU, so an upgrade or another machine sharing the home directory rebuilds.

Loading a library runs its code, so only one that nobody else can have written is loaded: its
directory — the configured ``AEVB_NATIVE_CACHE`` as much as the default cache — and the file itself
must be owned by this user and writable by neither group nor others. A directory that fails this is
neither read nor written (one warning says which and why); the kernels are then found or built in
the next trusted one, a private ``aevb-native-<uid>`` in the temporary directory, as for a cache
that cannot be created. A library file that fails it is not loaded; a fresh build replaces it. A
file under the kernels' name that is not a build of them (another library, a damaged file) is left
alone: the fused step uses torch operations, with one warning naming the file (delete it to rebuild).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from ..data.datasets import cache_root

SOURCE = Path(__file__).with_name("kernels.c")


def cache_dir() -> Path:
    """Where built libraries are kept: ``$AEVB_NATIVE_CACHE``, else ``$XDG_CACHE_HOME/aevb/native``."""
    override = os.environ.get("AEVB_NATIVE_CACHE")
    if override:
        return Path(override).expanduser()
    return cache_root() / "native"


def find_compiler() -> str:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    raise RuntimeError("no C compiler found (set CC)")


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's feature flags where the system says them."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def openmp_runtimes() -> set[str]:
    """The OpenMP runtimes mapped into this process (Linux; empty elsewhere)."""
    try:
        with open("/proc/self/maps") as maps:
            return {line.split()[-1] for line in maps if any(name in line for name in ("libgomp", "libiomp", "libomp"))}
    except OSError:
        return set()


def flag_sets() -> list[list[str]]:
    base = ["-O3", "-fPIC", "-shared", "-fno-math-errno"]
    # Threads only where our OpenMP can be torch's own (one thread pool, sized by torch.set_num_threads).
    openmp = sys.platform.startswith("linux") and "parallel backend: OpenMP" in torch.__config__.parallel_info()
    return ([base + ["-march=native", "-fopenmp"]] if openmp else []) + [
        base + ["-march=native", "-fopenmp-simd"],
        base,
    ]


def _directories() -> list[Path]:
    """Where built libraries may live: the cache, then (for a read-only home, or a cache that
    others can write) a private per-user temporary directory."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return [cache_dir(), Path(tempfile.gettempdir()) / f"aevb-native-{uid}"]


def _why_untrusted(path: Path) -> str | None:
    """Why a directory or library file may hold someone else's code, or None when only this user
    can have written it: owned by us and writable by neither group nor others (a shared /tmp, or
    a shared AEVB_NATIVE_CACHE, must not hand us another user's library). No owners on Windows."""
    try:
        info = path.stat()
    except OSError as error:
        return f"it cannot be inspected ({error.strerror})"
    if not hasattr(os, "getuid"):
        return None
    if info.st_uid != os.getuid():
        return f"it is owned by uid {info.st_uid}, not by you (uid {os.getuid()})"
    if info.st_mode & 0o022:
        return f"its group or others can write it (mode {info.st_mode & 0o777:#o})"
    return None


def trusted(path: Path) -> bool:
    return _why_untrusted(path) is None


def _usable(path: Path, refused: set[Path]) -> bool:
    """Whether ``path`` is trusted; one warning for each that is not, however often it is asked."""
    reason = _why_untrusted(path)
    if reason is None:
        return True
    if path not in refused:
        refused.add(path)
        directory = path.is_dir()
        warnings.warn(
            f"aevb: native kernels: not {'using' if directory else 'loading'} {path}: {reason}, so it "
            "may hold another user's code; "
            + (
                "set AEVB_NATIVE_CACHE to a directory only you can write"
                if directory
                else "using another build instead"
            ),
            RuntimeWarning,
            stacklevel=2,
        )
    return False


def _writable_directory(refused: set[Path]) -> Path | None:
    for directory in _directories():
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            continue  # e.g. a read-only home: the next candidate
        if _usable(directory, refused) and os.access(directory, os.W_OK):
            return directory
    return None


def _library_name(compiler: str, flags: list[str]) -> str:
    """The file name of the kernels built by ``compiler`` with ``flags`` on this CPU."""
    source = SOURCE.read_bytes()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    digest = hashlib.sha256(
        b"\0".join([source, " ".join(flags).encode(), version.encode(), _cpu_signature().encode()])
    ).hexdigest()[:16]
    return f"kernels-{digest}.so"


def build(flags: list[str], refused: set[Path]) -> Path:
    compiler = find_compiler()
    name = _library_name(compiler, flags)
    for directory in _directories():
        library = directory / name
        if library.exists() and _usable(directory, refused) and _usable(library, refused):
            return library
    directory = _writable_directory(refused)
    if directory is None:
        raise RuntimeError(f"no writable directory for the built kernels ({cache_dir()}; set AEVB_NATIVE_CACHE)")
    target = directory / name
    # Build beside the target and rename: processes started together (torchrun) may all build.
    handle, scratch = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    try:
        result = subprocess.run(
            [compiler, *flags, "-o", scratch, str(SOURCE), "-lm"], capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines()
            raise RuntimeError(f"{compiler} {' '.join(flags)} failed: {lines[-1] if lines else 'no message'}")
        os.chmod(scratch, 0o700)  # whatever the linker and umask made of it: ours alone, as loading requires
        os.replace(scratch, target)
        return target
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
