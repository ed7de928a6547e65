"""Plain-PyTorch twins of every wsq kernel: the oracle the tests hold the C++/CUDA kernels to.

Written for clarity, not speed (they materialise everything). Conventions shared with csrc/common.h:

* Binning: ``t = (w - lo) * scale`` in float32 (two rounded operations, never fused), then
  ``idx = clamp(floor(t), 0, k - 1)``; ``scale = float32(k / (float64(hi) - float64(lo)))``, capped at
  the largest float32, and 0 when ``hi <= lo`` (every weight then falls in bin 0).
* Packing: LSB first; index i occupies bits [i*b, (i+1)*b) of the stream, stream bit j is bit j % 8
  of byte j // 8; ceil(n*b/8) bytes; pad bits zero.
* Index dtype: uint8 when the codebook has <= 256 entries, else uint16.
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


def minmax(w: torch.Tensor) -> tuple[float, float]:
    w = w.reshape(-1).float()
    return float(w.min()), float(w.max())


def bin_indices(w: torch.Tensor, k: int, lo: float, scale: float) -> torch.Tensor:
    """Raw bin index (int64, 0..k-1) of every element of w (flattened)."""
    w = w.reshape(-1).float()
    t = (w - torch.tensor(lo, dtype=torch.float32)) * torch.tensor(scale, dtype=torch.float32)
    t = torch.floor(t).clamp(0.0, float(k - 1))
    return t.to(torch.int64)


def histogram(
    w: torch.Tensor, k: int, lo: float, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin counts (int64, k) and float64 sums of the members (float64, k)."""
    idx = bin_indices(w, k, lo, scale)
    counts = torch.bincount(idx, minlength=k).to(torch.int64)
    sums = torch.zeros(k, dtype=torch.float64).index_add_(0, idx, w.reshape(-1).double())
    return counts, sums


def relabel_table(counts: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Old bin -> new label (int64, k; empty bins map to 0) and n, the number of non-empty bins."""
    nonempty = counts > 0
    new = torch.cumsum(nonempty.to(torch.int64), 0) - 1
    return torch.where(nonempty, new, torch.zeros_like(new)), int(nonempty.sum())


def uniform_bins(w: torch.Tensor, k: int, lo: float | None = None, hi: float | None = None):
    """(indices, codebook float32 ascending, counts int64) with empty bins dropped and relabelled."""
    wmin, wmax = minmax(w)
    lo = wmin if lo is None else lo
    hi = wmax if hi is None else hi
    lo32, scale = bin_scale(lo, hi, k)
    counts, sums = histogram(w, k, lo32, scale)
    table, n = relabel_table(counts)
    keep = counts > 0
    codebook = (sums[keep] / counts[keep].double()).to(torch.float32)
    idx = table[bin_indices(w, k, lo32, scale)].to(index_dtype(n))
    return idx, codebook, counts[keep]


def fake_quant(
    w: torch.Tensor, k: int, lo: float, scale: float, values: torch.Tensor
) -> torch.Tensor:
    """values[bin(w)] (values: float32 per raw bin, k entries), shaped like w, in values' dtype."""
    return values.float()[bin_indices(w, k, lo, scale)].reshape(w.shape)


def pack(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """Dense LSB-first packing of non-negative integers < 2**bits into uint8."""
    v = indices.reshape(-1).to(torch.int64)
    n = v.numel()
    shifts = torch.arange(bits, dtype=torch.int64)
    stream = ((v[:, None] >> shifts) & 1).reshape(-1)  # (n*bits,) bits, LSB of index first
    nbytes = (n * bits + 7) // 8
    pad = nbytes * 8 - stream.numel()
    stream = torch.cat([stream, torch.zeros(pad, dtype=torch.int64)])
    weights = 1 << torch.arange(8, dtype=torch.int64)
    return (stream.reshape(nbytes, 8) * weights).sum(1).to(torch.uint8)


def unpack(packed: torch.Tensor, n: int, bits: int) -> torch.Tensor:
    """Inverse of pack: the first n indices (int64)."""
    b = packed.reshape(-1).to(torch.int64)
    stream = ((b[:, None] >> torch.arange(8, dtype=torch.int64)) & 1).reshape(-1)[: n * bits]
    weights = 1 << torch.arange(bits, dtype=torch.int64)
    return (stream.reshape(n, bits) * weights).sum(1) if n else torch.zeros(0, dtype=torch.int64)


def remap_packed(
    packed: torch.Tensor, n: int, bits_in: int, table: torch.Tensor, bits_out: int
) -> torch.Tensor:
    """Apply table (old index -> new index) to n packed indices, repacking at bits_out."""
    return pack(table.to(torch.int64)[unpack(packed, n, bits_in)], bits_out)


def dequant(
    packed: torch.Tensor, n: int, bits: int, codebook: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """codebook[indices] as dtype (n,)."""
    return codebook.float()[unpack(packed, n, bits)].to(dtype)


def lut_matmul(
    x: torch.Tensor,
    packed: torch.Tensor,
    out_features: int,
    in_features: int,
    bits: int,
    codebook: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """x @ W.T (+ bias) with W = codebook[unpack(packed)] of shape (out_features, in_features)."""
    w = dequant(packed, out_features * in_features, bits, codebook, torch.float32)
    y = x.float() @ w.reshape(out_features, in_features).T
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def fake_quant_model(model: torch.nn.Module, k: int, **pool_kw) -> torch.nn.Module:
    """The whole-model oracle of wsq.compress: a deep copy of `model` whose pooled weights are
    replaced by their bin means, computed by :func:`uniform_bins` above over the whole pool.

    ``pool_kw`` goes to wsq.compress.collect_pool (include=, exclude=, min_dims=).
    """
    import copy

    from wsq.compress import collect_pool  # late: wsq.compress imports this module's helpers

    pool = collect_pool(model, **pool_kw)
    idx, cb, _ = uniform_bins(pool.flat(), k)
    deq = cb[idx.long()]
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for e, p in zip(pool.entries, pool.tensors(ref), strict=True):
            p.copy_(deq[e.offset : e.offset + e.numel].view(e.shape).to(p.dtype))
    return ref
