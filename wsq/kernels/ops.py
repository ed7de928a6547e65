"""wsq's kernels for torch tensors: the public kernels module (``from wsq.kernels import ops``).

Every function below checks its arguments (TypeError / ValueError naming the argument) and calls
its ``torch.library`` op (wsq/kernels/schemas.py: schema and fake, so ``torch.compile`` traces
through it), which runs the kernel of the tensors' device: wsq/kernels/cpu.py (wsq._C) or
wsq/kernels/cuda.py (wsq._cuda), each loaded at its first call. ``dequant``, ``lut_matmul`` and
``gather_rows``, which layers call once per forward, call the CPU kernel directly when nothing
needs the dispatcher (``args._direct``; the dispatcher costs 25-40 us a call). The raw ops are
here too, as ``*_op`` (``histogram_op``, ...): no checks, arguments in kernel form.

Shared conventions (wsq/_spec.py, csrc/common.h; spelled out in wsq/reference.py): the binning
formula, LSB-first dense bit packing, float32 codebooks. Kernels that look indices up in a codebook take a *table* padded to
2**bits entries with NaN, so an index beyond the codebook can never read out of bounds and shows up
as NaN instead of a plausible value.
"""

import math

import torch

from wsq._spec import bin_scale, bits_for, index_dtype
from wsq.kernels import cpu as _cpu
from wsq.kernels import cuda as _cuda  # noqa: F401 - registers the CUDA kernels on the ops
from wsq.kernels.args import (
    _FLOATS,
    _INDEX_DTYPES,
    _PLAIN,
    _bits,
    _count,
    _direct,
    _flat,
    _k,
    _packed,
    _same_device,
    _tensor,
    packed_bytes,
)
from wsq.kernels.isa import get_isa, isa_levels, set_isa, use_isa
from wsq.kernels.schemas import (
    dequant_op,
    fake_quant_op,
    gather_rows_op,
    histogram_op,
    lut_matmul_op,
    minmax_op,
    pack_op,
    relabel_op,
    remap_packed_op,
    unpack_op,
)

__all__ = [
    "bin_scale",
    "bits_for",
    "index_dtype",
    "minmax",
    "histogram",
    "relabel",
    "fake_quant",
    "pack",
    "unpack",
    "remap_packed",
    "dequant",
    "lut_table",
    "lut_matmul",
    "gather_rows",
    "packed_bytes",
    "get_isa",
    "set_isa",
    "use_isa",
    "isa_levels",
    # the raw ops (wsq/kernels/schemas.py): no checks, arguments in kernel form
    "minmax_op",
    "histogram_op",
    "relabel_op",
    "fake_quant_op",
    "pack_op",
    "unpack_op",
    "remap_packed_op",
    "dequant_op",
    "lut_matmul_op",
    "gather_rows_op",
]

# ----------------------------------------------------------------------------- binning family


def minmax(w: torch.Tensor, *, name: str = "w") -> tuple[float, float]:
    """(min, max) of a float tensor in one pass; ValueError naming `name` if any value is NaN/Inf."""
    _tensor(name, w, _FLOATS)
    if w.numel() == 0:
        raise ValueError(f"{name} is empty")
    r = minmax_op(_flat(name, w)).tolist()
    if r[2] > 0:
        raise ValueError(f"{name} contains {int(r[2])} NaN or Inf values")
    return r[0], r[1]


def histogram(
    w: torch.Tensor, k: int, lo: float, scale: float, *, indices: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-bin counts (int64, k) and float64 member sums (k) of w under (lo, scale), in one pass.

    With ``indices=True`` also returns the raw bin index of every element (uint8 if k <= 256, else
    uint16), written in the same pass. NaN/Inf are not checked here (minmax does that).
    """
    _tensor("w", w, _FLOATS)
    _k(k)
    c, s, i = histogram_op(_flat("w", w), k, float(lo), float(scale), bool(indices))
    return c, s, (i if indices else None)


def relabel(idx: torch.Tensor, table: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """table[idx] elementwise into a new 1-D tensor of `dtype` (uint8/uint16/int32/int64).

    ``table`` is int32 with one entry per possible input value (len >= max(idx) + 1); values of idx
    beyond the table raise ValueError.
    """
    _tensor("idx", idx, _INDEX_DTYPES)
    _tensor("table", table, (torch.int32,))
    if dtype not in _INDEX_DTYPES:
        raise TypeError(f"dtype must be one of uint8, uint16, int32, int64, got {dtype}")
    _same_device(idx=idx, table=table)
    return relabel_op(_flat("idx", idx), table.contiguous(), dtype)


def fake_quant(
    w: torch.Tensor,
    k: int,
    lo: float,
    scale: float,
    values: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """out[i] = values[bin(w[i])] in one pass, never materialising the indices.

    ``values``: float32, k entries (the center of each raw bin). ``out`` (default: new, like w) may
    be w itself (in place) and may have another float dtype (e.g. fp32 pool -> fp16 weights).
    """
    _tensor("w", w, _FLOATS)
    _k(k)
    _tensor("values", values, (torch.float32,))
    if values.numel() != k:
        raise ValueError(f"values must have k={k} entries, got {values.numel()}")
    if out is None:
        out = torch.empty_like(w, memory_format=torch.contiguous_format)
    _tensor("out", out, _FLOATS)
    if out.numel() != w.numel():
        raise ValueError(f"out has {out.numel()} elements, w has {w.numel()}")
    if not out.is_contiguous():
        raise ValueError("out must be contiguous")
    _same_device(w=w, values=values, out=out)
    fake_quant_op(_flat("w", w), k, float(lo), float(scale), values.contiguous(), out.view(-1))
    return out


# ----------------------------------------------------------------------------- pack family


def pack(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """Dense LSB-first packing of `indices` (uint8/uint16/int32/int64, any shape) at `bits` bits."""
    _tensor("indices", indices, _INDEX_DTYPES)
    return pack_op(_flat("indices", indices), _bits(bits))


def unpack(
    packed: torch.Tensor, n: int, bits: int, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The n indices held in `packed` (default dtype: the smallest that holds 2**bits - 1)."""
    _bits(bits)
    _count("n", n)
    packed = _packed("packed", packed, n, bits)
    if dtype is None:
        dtype = torch.uint8 if bits <= 8 else torch.uint16
    if dtype not in _INDEX_DTYPES:
        raise TypeError(f"dtype must be one of uint8, uint16, int32, int64, got {dtype}")
    if dtype == torch.uint8 and bits > 8:
        raise ValueError(f"dtype uint8 cannot hold {bits}-bit indices")
    return unpack_op(packed, n, bits, dtype)


def remap_packed(
    packed: torch.Tensor, n: int, bits_in: int, table: torch.Tensor, bits_out: int | None = None
) -> torch.Tensor:
    """Apply ``table`` (int32, old index -> new index) to n packed indices in one pass.

    Repacks at ``bits_out`` (default bits_in) without an unpacked intermediate array: the merge
    kernel. Every table value must fit in bits_out; an index beyond the table raises ValueError.
    """
    _bits(bits_in)
    _count("n", n)
    bits_out = bits_in if bits_out is None else _bits(bits_out)
    packed = _packed("packed", packed, n, bits_in)
    _tensor("table", table, (torch.int32,))
    if table.numel() == 0:
        raise ValueError("table is empty")
    if table.numel() > (1 << bits_in):
        raise ValueError(
            f"table has {table.numel()} entries; {bits_in}-bit indices need at most {1 << bits_in}"
        )
    tmin, tmax = int(table.min()), int(table.max())
    if tmin < 0 or tmax >= (1 << bits_out):
        raise ValueError(
            f"table values must be in 0..{(1 << bits_out) - 1} for bits_out={bits_out}, got {tmin}..{tmax}"
        )
    _same_device(packed=packed, table=table)
    return remap_packed_op(packed, n, bits_in, table.contiguous(), bits_out)


# ----------------------------------------------------------------------------- lut family


def lut_table(codebook: torch.Tensor, bits: int) -> torch.Tensor:
    """The codebook padded with NaN to 2**bits float32 entries: what the lookup kernels take."""
    _tensor("codebook", codebook, _FLOATS)
    _bits(bits)
    n = codebook.numel()
    if n == 0 or n > (1 << bits):
        raise ValueError(f"codebook has {n} entries; {bits}-bit indices address 1..{1 << bits}")
    table = torch.full((1 << bits,), float("nan"), dtype=torch.float32, device=codebook.device)
    table[:n] = codebook.reshape(-1).float()
    return table


def _table(table: torch.Tensor, bits: int) -> torch.Tensor:
    _tensor("table", table, (torch.float32,))
    if table.numel() != (1 << bits):
        raise ValueError(
            f"table must have 2**bits = {1 << bits} entries (see lut_table), got {table.numel()}"
        )
    return table if table.is_contiguous() else table.contiguous()


_F32 = torch.float32
_U8 = torch.uint8


def _kernel_form(packed, table, bits) -> bool:
    """True when packed indices, table and width are already what the CPU kernels take (plain
    contiguous uint8 / float32 CPU tensors, an int width matching the table) and no tracing or
    dispatch mode is active: the eager fast paths' shared conditions."""
    return not (
        torch.compiler.is_compiling()  # first: dynamo cannot trace the mode queries below
        or type(packed) not in _PLAIN
        or type(table) not in _PLAIN
        or type(bits) is not int
        or packed.dtype != _U8
        or table.dtype != _F32
        or not 1 <= bits <= 16
        or not (packed.is_cpu and table.is_cpu)
        or table.numel() != 1 << bits
        or not (packed.is_contiguous() and table.is_contiguous())
        or torch._C._len_torch_dispatch_stack()
        or torch._C._is_torch_function_mode_enabled()
    )


def _dequant_eager(packed, n, bits, table, dtype, shape):
    """The kernel called straight away when every argument is already in the form it takes (a
    compressed Conv/EmbeddingBag layer's own buffers, eager CPU): the checks of the general path
    cost ~2.5 us a call, as much as dequantizing an 18k-weight 3x3 conv (AMD EPYC Zen 5). None
    when any condition fails: the general path then checks, converts and raises."""
    if (
        not _kernel_form(packed, table, bits)
        or type(n) is not int
        or dtype not in _FLOATS
        or n < 0
        or packed.numel() != (n * bits + 7) // 8
        or (torch.is_grad_enabled() and table.requires_grad)
    ):
        return None
    # allocated in its final shape: a .view() afterwards costs ~1.8 us, as much as the checks
    out = torch.empty(n if shape is None else shape, dtype=dtype)
    if out.numel() != n:
        return None
    return _cpu.dequant_into(out, packed, n, bits, table, dtype)


def dequant(
    packed: torch.Tensor,
    n: int,
    bits: int,
    table: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    *,
    shape: tuple[int, ...] | torch.Size | None = None,
) -> torch.Tensor:
    """table[indices] for the n packed indices as a tensor of dtype (fp32/fp16/bf16): 1-D, or of
    `shape` (whose product must be n)."""
    out = _dequant_eager(packed, n, bits, table, dtype, shape)
    if out is not None:
        return out
    if shape is not None and math.prod(shape) != n:
        raise ValueError(f"shape {tuple(shape)} holds {math.prod(shape)} elements, not n = {n}")
    _bits(bits)
    _count("n", n)
    packed = _packed("packed", packed, n, bits)
    table = _table(table, bits)
    if dtype not in _FLOATS:
        raise TypeError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    _same_device(packed=packed, table=table)
    op = _cpu.dequant if _direct(packed, table) else dequant_op
    out = op(packed, n, bits, table, dtype)
    return out if shape is None else out.view(shape)


def _lut_matmul_eager(x, packed, out_features, bits, table, bias):
    """The kernel called straight away when every argument is already in the form it takes.

    A compressed model's layer calls lut_matmul with a float32 CPU input, its own contiguous
    buffers and an int width; the general path below spent 5-6 us a call on argument checks and
    conversions here (more than the whole 4-bit kernel of a 384 x 384 layer, 2 threads, AMD EPYC
    Zen 5), so this path tests the same conditions with a few attribute reads and returns None when
    any one fails, leaving the general path to check, convert and raise.
    """
    if (
        not _kernel_form(packed, table, bits)
        or type(x) not in _PLAIN
        or type(out_features) is not int
        or x.dtype != _F32
        or out_features < 0
        or not x.is_cpu
    ):
        return None
    nd = x.dim()
    if nd == 2:
        x2 = x
        if x2.stride(1) != 1:
            return None
    elif nd > 2 and x.is_contiguous():
        x2 = x.view(-1, x.shape[-1])
    else:
        return None
    k = x2.shape[1]
    if k == 0 or packed.numel() != (out_features * k * bits + 7) // 8:
        return None
    grad = torch.is_grad_enabled()
    if grad and (x.requires_grad or table.requires_grad):
        return None
    if bias is not None:
        if (
            type(bias) not in _PLAIN
            or bias.dtype != _F32
            or not bias.is_cpu
            or not bias.is_contiguous()
            or bias.numel() != out_features
            or (grad and bias.requires_grad)
        ):
            return None
    y = _cpu.lut_matmul(x2, packed, out_features, bits, table, bias)
    return y if nd == 2 else y.view(*x.shape[:-1], out_features)


def lut_matmul(
    x: torch.Tensor,
    packed: torch.Tensor,
    out_features: int,
    bits: int,
    table: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = x @ W.T (+ bias), W = table[indices] of shape (out_features, x.shape[-1]), row-major.

    Reads the packed indices directly. x: (..., in_features) float; y: (..., out_features) in x's
    dtype. Accumulates in float32.
    """
    y = _lut_matmul_eager(x, packed, out_features, bits, table, bias)
    if y is not None:
        return y
    _tensor("x", x, _FLOATS)
    _bits(bits)
    _count("out_features", out_features)
    if x.dim() < 1:
        raise ValueError("x must have at least 1 dimension (..., in_features)")
    in_features = x.shape[-1]
    packed = _packed("packed", packed, out_features * in_features, bits)
    table = _table(table, bits)
    if bias is not None:
        _tensor("bias", bias, _FLOATS)
        if bias.numel() != out_features:
            raise ValueError(
                f"bias has {bias.numel()} elements, expected out_features={out_features}"
            )
        bias = bias.reshape(-1).float().contiguous()
    _same_device(x=x, packed=packed, table=table, bias=bias)
    flat = x.dim() == 2
    # not reshape(-1, ...): ambiguous when in_features == 0
    x2 = x if flat else x.reshape(x.shape[:-1].numel(), in_features)
    if x2.dtype != torch.float32:
        x2 = x2.float()
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    op = _cpu.lut_matmul if _direct(x2, packed, table, bias) else lut_matmul_op
    y = op(x2, packed, out_features, bits, table, bias)
    if y.dtype != x.dtype:
        y = y.to(x.dtype)
    return y if flat else y.reshape(*x.shape[:-1], out_features)


def gather_rows(
    packed: torch.Tensor,
    rows: torch.Tensor,
    num_rows: int,
    row_len: int,
    bits: int,
    table: torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Dequantize only the selected rows of a packed (num_rows, row_len) matrix: Embedding lookup.

    rows: int64 of any shape; returns rows.shape + (row_len,) in dtype.
    """
    _bits(bits)
    _count("num_rows", num_rows)
    _count("row_len", row_len)
    packed = _packed("packed", packed, num_rows * row_len, bits)
    table = _table(table, bits)
    _tensor("rows", rows, (torch.int64, torch.int32))
    if dtype not in _FLOATS:
        raise TypeError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    _same_device(packed=packed, rows=rows, table=table)
    rows64 = _flat("rows", rows.to(torch.int64))
    op = _cpu.gather_rows if _direct(packed, rows64, table) else gather_rows_op
    out = op(packed, rows64, num_rows, row_len, bits, table, dtype)
    return out.reshape(*rows.shape, row_len)
