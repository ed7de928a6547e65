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

import torch

# The shared contract, re-exported so callers of the oracle find the whole convention here.
from wsq._spec import F32_MAX, bin_scale, bits_for, index_dtype  # noqa: F401


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


def fake_quant_model(
    model: torch.nn.Module, k: int, *, include=None, exclude=None, min_dims: int = 2
) -> torch.nn.Module:
    """The whole-model oracle of wsq.compress: a deep copy of `model` whose pooled weights are
    replaced by their bin means, computed by :func:`uniform_bins` above over the whole pool.

    The pool, spelled out plainly (the rule wsq.core.pool.collect_pool implements with its
    checks): every distinct floating-point, non-empty parameter in ``named_parameters()`` order
    (tied parameters once), with >= `min_dims` dims, or, when `include` (fnmatch pattern or
    patterns) is given, exactly those whose name matches it; names matching `exclude` stay out.
    """
    import copy
    import fnmatch

    def matches(name, patterns):
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    ref = copy.deepcopy(model)
    pooled = [
        p
        for name, p in ref.named_parameters()
        if p.is_floating_point()
        and p.numel() > 0
        and (matches(name, include) if include is not None else p.dim() >= min_dims)
        and not (exclude is not None and matches(name, exclude))
    ]
    flat = torch.cat([p.detach().reshape(-1).float() for p in pooled])
    idx, cb, _ = uniform_bins(flat, k)
    deq = cb[idx.long()]
    offset = 0
    with torch.no_grad():
        for p in pooled:
            p.copy_(deq[offset : offset + p.numel()].view(p.shape).to(p.dtype))
            offset += p.numel()
    return ref
