"""Uniform binning of a weight pool into one shared codebook (the method's O(N) core)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from wsq._spec import F32_MAX, bin_scale, index_dtype
from wsq.kernels import ops


@dataclass(frozen=True)
class Binning:
    """The result of :func:`uniform_bins`.

    Attributes:
        indices: integer tensor shaped like the input, values 0..n-1 (uint8 if n <= 256, else uint16).
        codebook: float32 (n,), ascending: the mean of each non-empty bin's members.
        counts: int64 (n,), members per codebook entry.
        k: bins requested; n = len(codebook) <= k bins were non-empty.
        lo, hi: the range that was split (float32 values); scale = k / (hi - lo) as used.
    """

    indices: torch.Tensor
    codebook: torch.Tensor
    counts: torch.Tensor
    k: int
    lo: float
    hi: float
    scale: float

    @property
    def n(self) -> int:
        """Number of codebook entries (non-empty bins)."""
        return int(self.codebook.numel())

    @property
    def bits(self) -> int:
        """Fixed-width bits per index, ceil(log2 n) (at least 1)."""
        return ops.bits_for(self.n)

    def entropy(self) -> float:
        """Empirical entropy of the indices in bits per weight (the entropy coder's bound)."""
        p = self.counts.double() / self.counts.sum()
        p = p[p > 0]
        return float(-(p * torch.log2(p)).sum()) if p.numel() > 1 else 0.0


def bin_means(counts: torch.Tensor, sums: torch.Tensor):
    """(nonempty, codebook, to_global) from the histogram of k raw bins: which bins hold weights,
    their means as float32 (the shared codebook, ascending) and raw bin -> codebook entry (int64,
    meaningful for non-empty bins). What uniform_bins, uniform_parts and wsq.Uniform's search
    candidates all compute, written once."""
    nonempty = counts > 0
    codebook = (sums[nonempty] / counts[nonempty].double()).to(torch.float32)
    return nonempty, codebook, torch.cumsum(nonempty.to(torch.int64), 0) - 1


def check_k(k) -> int:
    """k (the number of bins) as an int in 2..65536 (a wsq codebook holds at most 2**16 entries)."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 2 <= k <= 65536:
        raise ValueError(f"k must be in 2..65536, got {k}")
    return k


def check_bound(name: str, v) -> float | None:
    """A range bound (`lo` or `hi`) as a finite float, or None (the pool's own bound)."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a float or None, got {type(v).__name__}")
    # The range is used in float32: a bound beyond float32's range would become +-inf there.
    if not math.isfinite(v) or abs(v) > F32_MAX:
        raise ValueError(f"{name} must be finite and within float32 range, got {v}")
    return float(v)


def uniform_bins(
    w: torch.Tensor, k: int, *, lo: float | None = None, hi: float | None = None
) -> Binning:
    """Split [lo, hi] (default: the range of w) into k equal bins; each weight -> its bin's mean.

    ``index = min(k - 1, floor((w - lo) * scale))``, ``scale = k / (hi - lo)``, both float32 steps
    (see wsq.reference); values outside [lo, hi] go to the end bins. Empty bins are dropped and the
    rest relabelled 0..n-1 in ascending order. Two passes over w: min/max (also rejecting NaN/Inf),
    then one fused pass that bins, counts, sums in float64 and writes indices.

    Defined edge cases: ``hi <= lo`` or all weights equal gives one bin (n = 1, every index 0, the
    codebook holding the mean). Errors: non-tensor or integer w -> TypeError; empty w, NaN/Inf in w,
    k outside 2..65536, non-finite lo/hi -> ValueError naming the argument.
    """
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w must be a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"w must be a floating-point tensor, got {w.dtype}")
    k = check_k(k)
    lo_arg, hi_arg = check_bound("lo", lo), check_bound("hi", hi)
    if w.numel() == 0:
        raise ValueError("w is empty")
    if w.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        w = w.float()  # float64 pools are binned in float32, the codebook's precision
    wmin, wmax = ops.minmax(w, name="w")
    lo32, scale = bin_scale(
        wmin if lo_arg is None else lo_arg, wmax if hi_arg is None else hi_arg, k
    )
    hi32 = float(torch.tensor(wmax if hi_arg is None else hi_arg, dtype=torch.float32))
    counts, sums, raw = ops.histogram(w, k, lo32, scale, indices=True)
    nonempty, codebook, _ = bin_means(counts, sums)
    n = int(nonempty.sum())
    if n == k and raw.dtype == index_dtype(n):
        idx = raw  # nothing to relabel
    else:
        table = (torch.cumsum(nonempty.to(torch.int32), 0, dtype=torch.int32) - 1).clamp_(min=0)
        idx = ops.relabel(raw, table, index_dtype(n))
    return Binning(idx.reshape(w.shape), codebook, counts[nonempty], k, lo32, hi32, scale)
