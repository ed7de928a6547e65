"""CUDA backend: the kernels of the ops in wsq/kernels/schemas.py, on wsq._cuda (csrc/cuda/),
registered with ``register_kernel("cuda")`` beside the CPU backend (wsq/kernels/cpu.py).

Importing this module only registers Python functions: it neither imports ``wsq._cuda`` nor
initialises CUDA. The compiled module is fetched with ``wsq.kernels.native.cuda()`` inside each kernel, so
a machine without it gets a clear RuntimeError only when a CUDA tensor reaches an op.

Every kernel allocates its outputs on the input's device, makes that device current, and launches
on ``torch.cuda.current_stream(device)`` (so CUDA graphs and streams work). No kernel synchronises
the device. Where the CPU kernels count bad inputs and raise, the CUDA ones cannot without a
synchronisation, so they stay bounds-safe and document what they write instead:

* ``pack``: an index that is negative or >= 2**bits is packed as 0 (CPU: ValueError).
* ``relabel``: an index outside the table is written as 0; table values are cast to the output
  dtype without a range check (CPU: ValueError for both).
* ``remap_packed``: an index beyond the table is written as 0 (CPU: writes 0, then ValueError).
* ``gather_rows``: a row id outside [0, num_rows) gives a NaN row (CPU: NaN row, then IndexError).
* ``minmax`` returns its (lo, hi, nonfinite) float64 triple on the device; ``ops.minmax``
  reads it (that read is the synchronisation the caller needs anyway).
* ``histogram`` sums are exact fixed-point totals (csrc/cuda/fixsum_hd.h): bitwise repeatable whatever
  the order (clamped outliers and NaN/Inf too: integer sums per float32 exponent), equal to the
  CPU's float64 sums to float64 rounding. Counts and indices are identical to the CPU's.
* ``lut_matmul`` accumulates in float32 (exact products, fixed summation order, bitwise
  repeatable); its split-K workspace is capped (large batches run as several launches over
  whole batch tiles, which changes no bit of the result). When ``torch.get_float32_matmul_precision()`` is ``"medium"`` (the setting under
  which torch itself may run float32 matmuls in bfloat16), batches of more than 8 rows use a
  tensor-core path with bfloat16 inputs and float32 accumulation (b <= 8, in_features % 32 == 0);
  otherwise, and always for up to 8 rows, the float32 path.
"""

# No `from __future__ import annotations`: torch 2.4 (the supported floor) infers custom-op
# schemas from real annotation objects and rejects the strings that import would produce.

import torch

from wsq._spec import index_dtype
from wsq.kernels import native as _native
from wsq.kernels import schemas
from wsq.kernels.args import _CODES, packed_bytes


def _lib():
    return _native.cuda()


def _run(t: torch.Tensor, fn, *args) -> None:
    """Calls fn(*args, stream) with t's device current and its current stream."""
    with torch.cuda.device(t.device):
        fn(*args, torch.cuda.current_stream(t.device).cuda_stream)


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None or t.numel() == 0 else t.data_ptr()


def _workspace(nbytes: int, device: torch.device) -> torch.Tensor:
    # Freed when the kernel's caller returns; the caching allocator reuses it only in stream order.
    return torch.empty(nbytes, dtype=torch.uint8, device=device)


@schemas.minmax_op.register_kernel("cuda")
def _minmax_cuda(w: torch.Tensor) -> torch.Tensor:
    out = torch.empty(3, dtype=torch.float64, device=w.device)
    _run(w, _lib().minmax, _ptr(w), w.numel(), _CODES[w.dtype], out.data_ptr())
    return out


@schemas.histogram_op.register_kernel("cuda")
def _histogram_cuda(
    w: torch.Tensor, k: int, lo: float, scale: float, want_indices: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dev = w.device
    lib = _lib()
    counts = torch.empty(k, dtype=torch.int64, device=dev)
    sums = torch.empty(k, dtype=torch.float64, device=dev)
    idt = index_dtype(k)
    idx = torch.empty(w.numel() if want_indices else 0, dtype=idt, device=dev)
    ws = _workspace(lib.histogram_workspace_bytes(k), dev)
    _run(
        w, lib.histogram, _ptr(w), w.numel(), _CODES[w.dtype], k, lo, scale,
        counts.data_ptr(), sums.data_ptr(), _ptr(idx) if want_indices else 0, _CODES[idt],
        ws.data_ptr(),
    )  # fmt: skip
    return counts, sums, idx


@schemas.relabel_op.register_kernel("cuda")
def _relabel_cuda(idx: torch.Tensor, table: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    out = torch.empty(idx.numel(), dtype=out_dtype, device=idx.device)
    _run(
        idx, _lib().relabel, _ptr(idx), idx.numel(), _CODES[idx.dtype], _ptr(table), table.numel(),
        _ptr(out), _CODES[out_dtype],
    )  # fmt: skip
    return out


@schemas.fake_quant_op.register_kernel("cuda")
def _fake_quant_cuda(
    w: torch.Tensor, k: int, lo: float, scale: float, values: torch.Tensor, out: torch.Tensor
) -> None:
    _run(
        w, _lib().fake_quant, _ptr(w), w.numel(), _CODES[w.dtype], k, lo, scale, _ptr(values),
        _ptr(out), _CODES[out.dtype],
    )  # fmt: skip


@schemas.pack_op.register_kernel("cuda")
def _pack_cuda(idx: torch.Tensor, bits: int) -> torch.Tensor:
    out = torch.empty(packed_bytes(idx.numel(), bits), dtype=torch.uint8, device=idx.device)
    _run(idx, _lib().pack, _ptr(idx), idx.numel(), _CODES[idx.dtype], bits, _ptr(out))
    return out


@schemas.unpack_op.register_kernel("cuda")
def _unpack_cuda(packed: torch.Tensor, n: int, bits: int, out_dtype: torch.dtype) -> torch.Tensor:
    out = torch.empty(n, dtype=out_dtype, device=packed.device)
    _run(packed, _lib().unpack, _ptr(packed), packed.numel(), n, bits, _ptr(out), _CODES[out_dtype])
    return out


@schemas.remap_packed_op.register_kernel("cuda")
def _remap_packed_cuda(
    packed: torch.Tensor, n: int, bits_in: int, table: torch.Tensor, bits_out: int
) -> torch.Tensor:
    out = torch.empty(packed_bytes(n, bits_out), dtype=torch.uint8, device=packed.device)
    _run(
        packed, _lib().remap_packed, _ptr(packed), packed.numel(), n, bits_in, _ptr(table),
        table.numel(), _ptr(out), bits_out,
    )  # fmt: skip
    return out


@schemas.dequant_op.register_kernel("cuda")
def _dequant_cuda(
    packed: torch.Tensor, n: int, bits: int, table: torch.Tensor, out_dtype: torch.dtype
) -> torch.Tensor:
    out = torch.empty(n, dtype=out_dtype, device=packed.device)
    _run(
        packed, _lib().dequant, _ptr(packed), packed.numel(), n, bits, _ptr(table), _ptr(out),
        _CODES[out_dtype],
    )  # fmt: skip
    return out


def matmul_mode() -> int:
    """0: float32 FMA (exact products); 1: bf16 tensor cores for batches > 8 (precision "medium")."""
    return 1 if torch.get_float32_matmul_precision() == "medium" else 0


@schemas.lut_matmul_op.register_kernel("cuda")
def _lut_matmul_cuda(
    x: torch.Tensor,
    packed: torch.Tensor,
    out_features: int,
    bits: int,
    table: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    m, k = x.shape
    if m > 1 and (x.stride(1) != 1 or x.stride(0) < k):
        # overlapping rows (expand) or a column stride: the kernel needs ldx >= k
        x = x.contiguous()
    ldx = x.stride(0) if m > 1 else k
    y = torch.empty(m, out_features, dtype=torch.float32, device=x.device)
    lib = _lib()
    mode = matmul_mode()
    ws = _workspace(lib.lut_matmul_workspace_bytes(m, k, out_features, bits, mode), x.device)
    _run(
        x, lib.lut_matmul, _ptr(x), m, k, ldx, _ptr(packed), packed.numel(), out_features, bits,
        _ptr(table), _ptr(bias), y.data_ptr() if y.numel() else 0, out_features, ws.data_ptr(),
        ws.numel(), mode,
    )  # fmt: skip
    return y


@schemas.gather_rows_op.register_kernel("cuda")
def _gather_rows_cuda(
    packed: torch.Tensor, rows: torch.Tensor, num_rows: int, row_len: int, bits: int,
    table: torch.Tensor, out_dtype: torch.dtype,
) -> torch.Tensor:  # fmt: skip
    out = torch.empty(rows.numel(), row_len, dtype=out_dtype, device=packed.device)
    _run(
        packed, _lib().gather_rows, _ptr(packed), packed.numel(), num_rows, row_len, bits,
        _ptr(table), _ptr(rows), rows.numel(), _ptr(out), _CODES[out_dtype],
    )  # fmt: skip
    return out
