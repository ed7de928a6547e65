"""The numeric contract every kernel, the product and the oracle (wsq.reference) share.

These few definitions fix what the binning, packing and index-width conventions ARE (csrc/common.h
mirrors them in C++). They live in this one small module so that neither side imports the other:
the oracle stays independent of the product code it checks, and product code does not lean on the
oracle. A wrong value here would be shared by both sides, so tests/test_binning.py checks them
against hand-computed numbers rather than against each other.
"""

from __future__ import annotations

import math

import torch

F32_MAX = 3.4028234663852886e38


def bin_scale(lo: float, hi: float, k: int) -> tuple[float, float]:
    """(lo, scale) as float32-representable Python floats, per the fixed binning formula."""
    lo32 = float(torch.tensor(lo, dtype=torch.float32))
    hi32 = float(torch.tensor(hi, dtype=torch.float32))
    if not hi32 > lo32:
        return lo32, 0.0
    s = k / (hi32 - lo32)
    s = min(s, F32_MAX)
    return lo32, float(torch.tensor(s, dtype=torch.float32))


def index_dtype(n: int) -> torch.dtype:
    """Smallest unsigned dtype holding n - 1 (n = codebook size, 1..65536)."""
    return torch.uint8 if n <= 256 else torch.uint16


def bits_for(n: int) -> int:
    """Fixed-width bits per index for a codebook of n entries (at least 1)."""
    return max(1, math.ceil(math.log2(n))) if n > 1 else 1
