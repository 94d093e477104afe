"""Fixed, seeded random partitions for datasets that come without a standard split.

The partition depends only on the number of rows, the part sizes and a constant seed (numpy's
PCG64 ``default_rng(seed).permutation``), never on global random state, so the same file
always yields the same train/valid/test sets on every machine and numpy version >= 1.17.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..choices import USER_SPLIT_SEED  # (defined torch-free, for the command line's help)

__all__ = ["FREY_SPLIT_SEED", "USER_SPLIT_SEED", "permutation_split", "holdout_size"]

FREY_SPLIT_SEED = 20131220  # arXiv v1 date of the AEVB paper; any constant would do


def permutation_split(n: int, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Partition ``range(n)`` into parts of the given ``sizes`` (which must sum to ``n``).

    Returns one int64 index array per part: consecutive pieces of a seeded random permutation,
    each sorted ascending (so every part keeps the file's original order).
    """
    if sum(sizes) != n or any(s < 0 for s in sizes):
        raise ValueError(f"part sizes {tuple(sizes)} do not partition {n} rows")
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0, *sizes])
    return [np.sort(perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def holdout_size(n: int) -> int:
    """Rows held out for one of valid/test from ``n`` rows: 10 % rounded down."""
    return n // 10
