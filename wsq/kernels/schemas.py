"""The wsq torch.library ops: every op's schema and fake (meta) implementation, in one place.

Each op is a ``torch.library.custom_op`` in the ``wsq`` namespace whose schema comes from the
annotated signature below; its fake lets ``torch.compile``/``torch.export`` trace through it. No op
has a kernel here: the backends beside each other register them, ``wsq/kernels/cpu.py`` (wsq._C)
and ``wsq/kernels/cuda.py`` (wsq._cuda), and ``wsq/kernels/ops.py`` holds the public functions that
check their arguments and call these ops. The ops take arguments already checked and in kernel form
(flat, contiguous, the dtypes the kernels take); called directly they skip those checks, which is
what a caller that checked once and calls many times (bench/gpu_kernels.py) wants.

Defining an op here registers Python functions only: no compiled module is loaded.
"""

# No `from __future__ import annotations`: torch 2.4 (the supported floor) infers custom-op
# schemas from real annotation objects and rejects the strings that import would produce.

import torch

from wsq._spec import index_dtype
from wsq.kernels.args import packed_bytes


def _op(name: str, mutates_args=()):
    """Declares wsq::name with the decorated function's signature as its schema and no kernel
    (``device_types=()``); the function's body never runs."""
    return torch.library.custom_op(f"wsq::{name}", mutates_args=mutates_args, device_types=())


def _declared(*args, **kwargs):
    raise NotImplementedError("a wsq op's kernels are registered by wsq/kernels/cpu.py and cuda.py")


# ----------------------------------------------------------------------------- binning family


@_op("minmax")
def minmax_op(w: torch.Tensor) -> torch.Tensor:
    """(lo, hi, number of NaN/Inf) of a flat float tensor as float64 (3,), on w's device."""
    return _declared()


@minmax_op.register_fake
def _(w):
    return w.new_empty(3, dtype=torch.float64)


@_op("histogram")
def histogram_op(
    w: torch.Tensor, k: int, lo: float, scale: float, want_indices: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(counts int64 (k,), sums float64 (k,), raw bin indices (numel) or (0,)) of flat w."""
    return _declared()


@histogram_op.register_fake
def _(w, k, lo, scale, want_indices):
    idt = index_dtype(k)
    return (
        w.new_empty(k, dtype=torch.int64),
        w.new_empty(k, dtype=torch.float64),
        w.new_empty(w.numel() if want_indices else 0, dtype=idt),
    )


@_op("relabel")
def relabel_op(idx: torch.Tensor, table: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """table[idx] as a new flat tensor of out_dtype."""
    return _declared()


@relabel_op.register_fake
def _(idx, table, out_dtype):
    return idx.new_empty(idx.numel(), dtype=out_dtype)


@_op("fake_quant", mutates_args=("out",))
def fake_quant_op(
    w: torch.Tensor, k: int, lo: float, scale: float, values: torch.Tensor, out: torch.Tensor
) -> None:
    """out[i] = values[bin(w[i])] (out flat, contiguous; may be w)."""
    return _declared()


@fake_quant_op.register_fake
def _(w, k, lo, scale, values, out):
    return None


# ----------------------------------------------------------------------------- pack family


@_op("pack")
def pack_op(idx: torch.Tensor, bits: int) -> torch.Tensor:
    """Flat indices packed LSB-first at bits: uint8 (ceil(numel * bits / 8),)."""
    return _declared()


@pack_op.register_fake
def _(idx, bits):
    return idx.new_empty(packed_bytes(idx.numel(), bits), dtype=torch.uint8)


@_op("unpack")
def unpack_op(packed: torch.Tensor, n: int, bits: int, out_dtype: torch.dtype) -> torch.Tensor:
    """The n indices of packed as out_dtype (n,)."""
    return _declared()


@unpack_op.register_fake
def _(packed, n, bits, out_dtype):
    return packed.new_empty(n, dtype=out_dtype)


@_op("remap_packed")
def remap_packed_op(
    packed: torch.Tensor, n: int, bits_in: int, table: torch.Tensor, bits_out: int
) -> torch.Tensor:
    """table[index] of the n packed indices, repacked at bits_out."""
    return _declared()


@remap_packed_op.register_fake
def _(packed, n, bits_in, table, bits_out):
    return packed.new_empty(packed_bytes(n, bits_out), dtype=torch.uint8)


# ----------------------------------------------------------------------------- lut family


@_op("dequant")
def dequant_op(
    packed: torch.Tensor, n: int, bits: int, table: torch.Tensor, out_dtype: torch.dtype
) -> torch.Tensor:
    """table[index] of the n packed indices as out_dtype (n,)."""
    return _declared()


@dequant_op.register_fake
def _(packed, n, bits, table, out_dtype):
    return packed.new_empty(n, dtype=out_dtype)


@_op("lut_matmul")
def lut_matmul_op(
    x: torch.Tensor,
    packed: torch.Tensor,
    out_features: int,
    bits: int,
    table: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """x (m, k) float32 @ table[indices].T (+ bias): float32 (m, out_features)."""
    return _declared()


@lut_matmul_op.register_fake
def _(x, packed, out_features, bits, table, bias):
    return x.new_empty(x.shape[0], out_features, dtype=torch.float32)


@_op("gather_rows")
def gather_rows_op(
    packed: torch.Tensor, rows: torch.Tensor, num_rows: int, row_len: int, bits: int,
    table: torch.Tensor, out_dtype: torch.dtype,
) -> torch.Tensor:  # fmt: skip
    """Rows `rows` (int64, flat) of the packed (num_rows, row_len) matrix: (len(rows), row_len)."""
    return _declared()


@gather_rows_op.register_fake
def _(packed, rows, num_rows, row_len, bits, table, out_dtype):
    return packed.new_empty(rows.numel(), row_len, dtype=out_dtype)
