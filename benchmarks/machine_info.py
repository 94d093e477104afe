"""What the benchmark reports say of the machine they ran on (imports no torch)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name as /proc/cpuinfo gives it, else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: Flags that say which vector and matrix units the CPU has (the products' and kernels' speed
#: follows them): AVX2/FMA, AVX-512 and its BF16/FP16/VNNI extensions, AMX tiles.
VECTOR_FLAG_PREFIXES = ("avx", "fma", "amx")


def cpu_flags() -> list[str]:
    """The CPU's vector and matrix flags from /proc/cpuinfo, sorted (empty where it is not found)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return sorted({flag for flag in line.split(":", 1)[1].split() if flag.startswith(VECTOR_FLAG_PREFIXES)})
    return []
