"""Native (C) kernels for the fused CPU training step, built on first use and cached.

:mod:`aevb.engines.native` computes the SGVB gradient of an MLP VAE by hand; on a CPU its matrix products
run in torch (MKL/oneDNN) and everything between them — activations and their derivatives, the
Bernoulli log-likelihood and its gradient, the reparameterised latent layer forwards and
backwards, bias sums — runs here, one pass each (``kernels.c`` says why and how).

Here they are loaded once per cache directory (:func:`load`); their typed entry points are
:mod:`.bindings`; building, caching and which libraries may be loaded: :mod:`.build`. Without a C
compiler, or with ``AEVB_NATIVE=0``, :func:`load` returns None and the fused step uses torch
operations for the same work (same mathematics, slower).
"""

from __future__ import annotations

import os
import subprocess
import threading
import warnings
from pathlib import Path

from . import build
from .bindings import Kernels
from .build import cache_dir

_lock = threading.Lock()
_loaded: dict[str, "Kernels | None"] = {}


def enabled() -> bool:
    """False when the environment turns the kernels off (``AEVB_NATIVE=0``)."""
    return os.environ.get("AEVB_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def load() -> "Kernels | None":
    """The kernels, built if needed; None where they cannot be had (then a warning says why once)."""
    if not enabled():
        return None
    key = str(cache_dir())
    with _lock:
        if key not in _loaded:
            try:
                _loaded[key] = _open()
            except (OSError, RuntimeError, subprocess.SubprocessError) as error:
                warnings.warn(
                    f"aevb: native kernels unavailable ({error}); the fused step uses torch "
                    "operations instead (set AEVB_NATIVE=0 to silence this)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                _loaded[key] = None
        return _loaded[key]


def _open() -> "Kernels":
    """Build (or find in the cache) and load the first flag set that compiles and, with OpenMP,
    shares torch's runtime rather than starting a second thread pool."""
    errors = []
    refused: set[Path] = set()  # untrusted directories and files, each warned about once
    for flags in build.flag_sets():
        try:
            path = build.build(flags, refused)
        except RuntimeError as error:
            errors.append(str(error))
            continue
        before = build.openmp_runtimes()
        kernels = Kernels(path)
        if "-fopenmp" in flags and len(build.openmp_runtimes() - before) > 0 and before:
            continue  # a second OpenMP runtime was loaded: use a build without threads
        return kernels
    raise RuntimeError(errors[-1] if errors else "no usable build")
