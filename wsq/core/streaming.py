"""One tensor at a time: where pooled weights come from, and uniform binning streamed over them.

A *source* yields the pooled weights tensor by tensor (``source.weights(i)``: a 1-D floating tensor
of pool entry i, read-only), so that nothing ever concatenates the pool: compress, the grid method
and the search read each tensor where it lives (the model's own parameter, or a checkpoint's bytes
read for that tensor alone). :func:`uniform_parts` bins a source into k equal bins over the pool's
range in two passes (min/max, then one histogram pass that also packs each tensor's raw bin
indices) and returns, per tensor, its packed indices at the narrowest width for the values it uses
and its lookup table: exactly what a wsq.Compressed holds. The shared codebook is bit-identical
whichever source the weights came from (same kernels, same per-tensor order of the float64 sums).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from wsq._spec import bin_scale
from wsq.compressed import Compressed
from wsq.compressed.ties import name_list
from wsq.core.binning import bin_means
from wsq.core.pool import Pool, PoolEntry
from wsq.kernels import ops

__all__ = [
    "ModelSource",
    "UniformParts",
    "uniform_parts",
    "check_finite",
    "working_copy",
    "set_part",
    "part_buffer",
    "compact_parts",
    "parts_changed",
    "trim_heap",
]

_KERNEL_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


class ModelSource:
    """The pooled weights of a live model, one tensor at a time (no copy for contiguous
    float32/float16/bfloat16 parameters; float64 ones are read as float32, the codebook's type)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.entries: list[PoolEntry] = pool.entries
        self._params = pool.tensors()

    def __len__(self) -> int:
        return len(self.entries)

    def weights(self, i: int) -> Tensor:
        w = self._params[i].detach().reshape(-1)
        return w if w.dtype in _KERNEL_FLOATS else w.float()

    def device(self) -> torch.device:
        return self._params[0].device


def _nonfinite_error(names: Sequence[str]) -> ValueError:
    return ValueError(
        f"parameter {name_list(list(names))} contains NaN or Inf values (or values beyond the float32 "
        "range); wsq cannot bin them"
    )


def check_finite(source, i: int, w: Tensor) -> tuple[float, float]:
    """(min, max) of tensor i's weights `w`; NaN/Inf -> ValueError naming the parameter."""
    try:
        return ops.minmax(w, name="w")
    except ValueError:
        raise _nonfinite_error([source.entries[i].name]) from None


class UniformParts:
    """Uniform binning of a source: codebook (float32 CPU, ascending), per tensor (packed, table)
    at its own width, the range actually split (lo, hi float32 values), k, per-entry counts."""

    def __init__(self, codebook, parts, k, lo, hi, counts) -> None:
        self.codebook: Tensor = codebook
        self.parts: list[tuple[Tensor, Tensor]] = parts
        self.k, self.lo, self.hi = k, lo, hi
        self.counts: Tensor = counts  # int64 (n,)

    @property
    def bits(self) -> int:
        return ops.bits_for(int(self.codebook.numel()))


def local_map(present: Tensor) -> tuple[Tensor, int]:
    """int32 (k,): raw bin -> rank among this tensor's present bins; and how many are present."""
    rank = torch.cumsum(present.to(torch.int32), 0, dtype=torch.int32) - 1
    return rank.clamp_(min=0), int(present.sum())


def uniform_parts(
    source,
    k: int,
    *,
    lo: float | None = None,
    hi: float | None = None,
    on_tensor: Callable[[int], None] | None = None,
) -> UniformParts:
    """Bin every weight of `source` into k equal bins over [lo, hi] (default: the pool's range).

    Pass 1 reads each tensor for its min/max (rejecting NaN/Inf by parameter name); pass 2 runs the
    fused histogram kernel on each tensor (counts, float64 sums, raw bin indices packed at
    ceil(log2 k) bits). The bin means then form the codebook, and each tensor's raw indices are
    remapped once, on the packed bytes, to the narrowest width for the bins it uses. Beyond the
    source, memory holds the packed raw indices (ceil(log2 k) bits per weight) and one tensor's
    unpacked indices at a time.
    """
    wmin = wmax = None
    for i in range(len(source)):
        a, b = check_finite(source, i, source.weights(i))
        wmin = a if wmin is None else min(wmin, a)
        wmax = b if wmax is None else max(wmax, b)
    lo32, scale = bin_scale(wmin if lo is None else lo, wmax if hi is None else hi, k)
    hi32 = float(torch.tensor(wmax if hi is None else hi, dtype=torch.float32))
    kbits = ops.bits_for(k)
    counts = sums = None
    raw: list[Tensor] = []
    present: list[Tensor] = []
    for i in range(len(source)):
        c, s, idx = ops.histogram(source.weights(i), k, lo32, scale, indices=True)
        raw.append(ops.pack(idx, kbits))
        del idx
        c = c.cpu()
        present.append(c > 0)
        counts = c if counts is None else counts + c
        sums = s if sums is None else sums + s
        if on_tensor is not None:
            on_tensor(i)
    nonempty, codebook, to_global = bin_means(counts, sums.cpu())
    parts = []
    for i, e in enumerate(source.entries):
        local, m = local_map(present[i])
        out_bits = ops.bits_for(m)
        dev = raw[i].device
        packed = ops.remap_packed(raw[i], e.numel, kbits, local.to(dev), out_bits)
        raw[i] = None  # free the raw indices as soon as they are remapped
        table = ops.lut_table(codebook[to_global[present[i]]], out_bits).to(dev)
        parts.append((packed, table))
    return UniformParts(codebook, parts, k, lo32, hi32, counts[nonempty])


# ----------------------------------------------------------------------------- working copies


def working_copy(template: torch.nn.Module, pool: Pool) -> Compressed:
    """A compressed copy of `template` whose pooled tensors hold a placeholder (1-bit zeros, the
    value 0): the one working copy a search rewrites per candidate with :func:`set_part`. It
    costs the model's uncompressed tensors plus numel / 8 bytes per pooled tensor."""
    zero = torch.zeros(1)
    parts = {
        e.name: (
            torch.zeros(ops.packed_bytes(e.numel, 1), dtype=torch.uint8),
            ops.lut_table(zero, 1),
        )
        for e in pool.entries
    }
    return Compressed.assemble(template, zero, 1, parts, None, k=None, lo=None, hi=None,
                     skipped=pool.skipped, narrowed=True)  # fmt: skip


def set_part(c: Compressed, i: int, packed: Tensor, table: Tensor) -> None:
    """Hold tensor i (pool order) of `c` as `packed` at the width of `table`, in place: the tensor
    objects stay, so tied owners keep sharing them. Call :func:`parts_changed` once all are set."""
    g = c._groups[i]
    dev = g.packed().device
    with torch.no_grad():
        g.packed().set_((packed if packed.dim() == 1 else packed.reshape(-1)).to(dev))
        g.table().set_(table.to(dev))


def part_buffer(c: Compressed, i: int, nbytes: int) -> Tensor | None:
    """A uint8 (nbytes,) view of the storage tensor i (pool order) of `c` holds its packed
    indices in, when that storage is large enough, else a new buffer, tensor i's old storage
    released first (so a growing tensor never holds both: its contents are being rewritten); on
    other devices than the CPU, None.

    A working copy rewritten per candidate then packs each candidate into the bytes the last one
    used instead of allocating and freeing buffers of every size: with glibc's default
    allocator that churn left tens of MB per candidate in the heap (resident, never returned),
    so the process grew with the number of candidates. The storage keeps the largest size a
    candidate needed (never more than the peak already held); :func:`compact_parts` trims it."""
    cur = c._groups[i].packed()
    if cur.device.type != "cpu":
        return None
    store = cur.untyped_storage()
    if store.nbytes() < nbytes:
        del store
        with torch.no_grad():
            cur.set_(torch.empty(0, dtype=cur.dtype))
        return torch.empty(nbytes, dtype=torch.uint8)
    return torch.empty(0, dtype=torch.uint8).set_(store, 0, (nbytes,))


def compact_parts(c: Compressed) -> None:
    """Give each packed tensor of `c` a storage of exactly its size (after :func:`part_buffer`)."""
    with torch.no_grad():
        for g in c._groups:
            p = g.packed()
            if p.untyped_storage().nbytes() > p.numel() * p.element_size():
                p.set_(p.clone())


def parts_changed(c: Compressed) -> None:
    """Drop what `c` derived from its old parts (codebook, maps, sizes)."""
    c._state.version += 1


_TRIM = []  # [malloc_trim or None], looked up once


def trim_heap() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim(0)``; elsewhere a
    no-op). Called once per candidate by the paths that loop over candidates: glibc keeps freed
    blocks below its (self-raising) mmap threshold in the heap, and up to twice that threshold
    free at its top, so the previous candidate's and the evaluation's freed buffers (tens of MB
    at 50M weights) stayed resident through the next candidate. Milliseconds at most per call
    (tens of microseconds when there is little to return)."""
    if not _TRIM:
        fn = None
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
                fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
            except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
                fn = None
        _TRIM.append(fn)
    if _TRIM[0] is not None:
        _TRIM[0](0)
