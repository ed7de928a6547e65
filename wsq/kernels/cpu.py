"""CPU backend: the kernels of the ops in wsq/kernels/schemas.py, on wsq._C (csrc/cpu/).

Each function takes the op's arguments (already checked and in kernel form by wsq/kernels/ops.py),
allocates its outputs and passes pointers, sizes and dtype codes to the compiled module, which is
imported at the first call (``wsq.kernels.native.cpu()``), never at import. Where a kernel counts
bad inputs (pack, remap_packed, gather_rows) the function raises after the call.

``dequant``, ``lut_matmul`` and ``gather_rows`` stay plain functions after registration: the
public functions of wsq/kernels/ops.py call them directly when nothing needs the dispatcher (see
``args._direct``). ``entropy_coders()`` is the entropy-coding family's entry (csrc/cpu/entropy*.cpp), which
works on numpy buffers rather than tensors and so has no torch op.
"""

from types import ModuleType

import torch

from wsq._spec import index_dtype
from wsq.kernels import native as _native
from wsq.kernels import schemas
from wsq.kernels.args import _CODES, packed_bytes


def _lib() -> ModuleType:
    return _native.cpu()


def entropy_coders() -> ModuleType:
    """The CPU entropy coders (wsq._C's ``entropy_*`` functions: Huffman and rANS streams, sizes
    and tables from histograms; pointers and sizes of numpy buffers, no torch). wsq/io/entropy.py
    is their one caller; loads wsq._C at the first call."""
    return _native.cpu()


# ----------------------------------------------------------------------------- binning family


@schemas.minmax_op.register_kernel("cpu")
def minmax(w: torch.Tensor) -> torch.Tensor:
    lo, hi, bad = _lib().minmax(w.data_ptr(), w.numel(), _CODES[w.dtype])
    return torch.tensor([lo, hi, float(bad)], dtype=torch.float64)


@schemas.histogram_op.register_kernel("cpu")
def histogram(
    w: torch.Tensor, k: int, lo: float, scale: float, want_indices: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    counts = torch.empty(k, dtype=torch.int64)
    sums = torch.empty(k, dtype=torch.float64)
    idt = index_dtype(k)
    idx = torch.empty(w.numel() if want_indices else 0, dtype=idt)
    _lib().histogram(
        w.data_ptr(), w.numel(), _CODES[w.dtype], k, lo, scale,
        counts.data_ptr(), sums.data_ptr(), idx.data_ptr() if want_indices else 0, _CODES[idt],
    )  # fmt: skip
    return counts, sums, idx


@schemas.relabel_op.register_kernel("cpu")
def relabel(idx: torch.Tensor, table: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    out = torch.empty(idx.numel(), dtype=out_dtype)
    _lib().relabel(
        idx.data_ptr(), idx.numel(), _CODES[idx.dtype], table.data_ptr(), table.numel(),
        out.data_ptr(), _CODES[out_dtype],
    )  # fmt: skip
    return out


@schemas.fake_quant_op.register_kernel("cpu")
def fake_quant(
    w: torch.Tensor, k: int, lo: float, scale: float, values: torch.Tensor, out: torch.Tensor
) -> None:
    _lib().fake_quant(
        w.data_ptr(), w.numel(), _CODES[w.dtype], k, lo, scale, values.data_ptr(),
        out.data_ptr(), _CODES[out.dtype],
    )  # fmt: skip


# ----------------------------------------------------------------------------- pack family


@schemas.pack_op.register_kernel("cpu")
def pack(idx: torch.Tensor, bits: int) -> torch.Tensor:
    out = torch.empty(packed_bytes(idx.numel(), bits), dtype=torch.uint8)
    bad = _lib().pack(idx.data_ptr(), idx.numel(), _CODES[idx.dtype], bits, out.data_ptr())
    if bad:
        raise ValueError(f"indices: {bad} values are negative or >= 2**bits = {1 << bits}")
    return out


@schemas.unpack_op.register_kernel("cpu")
def unpack(packed: torch.Tensor, n: int, bits: int, out_dtype: torch.dtype) -> torch.Tensor:
    out = torch.empty(n, dtype=out_dtype)
    _lib().unpack(packed.data_ptr(), packed.numel(), n, bits, out.data_ptr(), _CODES[out_dtype])
    return out


@schemas.remap_packed_op.register_kernel("cpu")
def remap_packed(
    packed: torch.Tensor, n: int, bits_in: int, table: torch.Tensor, bits_out: int
) -> torch.Tensor:
    out = torch.empty(packed_bytes(n, bits_out), dtype=torch.uint8)
    bad = _lib().remap_packed(
        packed.data_ptr(), packed.numel(), n, bits_in, table.data_ptr(), table.numel(),
        out.data_ptr(), bits_out,
    )  # fmt: skip
    if bad:
        raise ValueError(f"packed: {bad} indices are beyond the table's {table.numel()} entries")
    return out


# ----------------------------------------------------------------------------- lut family


def dequant_into(
    out: torch.Tensor, packed: torch.Tensor, n: int, bits: int, table: torch.Tensor,
    out_dtype: torch.dtype,
) -> torch.Tensor:  # fmt: skip
    """The dequant kernel writing into `out` (contiguous, n elements of out_dtype, any shape)."""
    _lib().dequant(
        packed.data_ptr(), packed.numel(), n, bits, table.data_ptr(), out.data_ptr(),
        _CODES[out_dtype],
    )  # fmt: skip
    return out


@schemas.dequant_op.register_kernel("cpu")
def dequant(
    packed: torch.Tensor, n: int, bits: int, table: torch.Tensor, out_dtype: torch.dtype
) -> torch.Tensor:
    return dequant_into(torch.empty(n, dtype=out_dtype), packed, n, bits, table, out_dtype)


@schemas.lut_matmul_op.register_kernel("cpu")
def lut_matmul(
    x: torch.Tensor,
    packed: torch.Tensor,
    out_features: int,
    bits: int,
    table: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    m, k = x.shape
    y = torch.empty(m, out_features, dtype=torch.float32)
    _lib().lut_matmul(
        x.data_ptr(), m, k, x.stride(0), packed.data_ptr(), packed.numel(), out_features, bits,
        table.data_ptr(), bias.data_ptr() if bias is not None else 0, y.data_ptr(), out_features,
    )  # fmt: skip
    return y


@schemas.gather_rows_op.register_kernel("cpu")
def gather_rows(
    packed: torch.Tensor, rows: torch.Tensor, num_rows: int, row_len: int, bits: int,
    table: torch.Tensor, out_dtype: torch.dtype,
) -> torch.Tensor:  # fmt: skip
    out = torch.empty(rows.numel(), row_len, dtype=out_dtype)
    bad = _lib().gather_rows(
        packed.data_ptr(), packed.numel(), num_rows, row_len, bits, table.data_ptr(),
        rows.data_ptr(), rows.numel(), out.data_ptr(), _CODES[out_dtype],
    )  # fmt: skip
    if bad:
        raise IndexError(f"rows: {bad} row ids are outside 0..{num_rows - 1}")
    return out
