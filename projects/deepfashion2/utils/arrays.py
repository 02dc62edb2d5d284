"""Small array and number conventions shared by the data and evaluation modules."""

from __future__ import annotations

import numpy as np


def offsets(counts) -> np.ndarray:
    """(n+1,) int64 start offsets of consecutive runs of ``counts`` (run i is [o[i], o[i+1]))."""
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def plain_number(v) -> int | float:
    """Integral values as ints, like the annotation and official files write them (5, not 5.0)."""
    v = float(v)
    return int(v) if v.is_integer() else v
