"""Codebook lookup kernels (issue 2, kernel 5): dequant, fused LUT matmul, row gather.

Every test runs on each instruction-set level (scalar, AVX2, AVX-512) through the `isa` fixture of
conftest.py (a level the CPU lacks is a reported skip), and holds the kernel to plain PyTorch:
dequant and gather exactly, the matmul to float64 with an error at most 2x that of torch's own float32 matmul on the same inputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wsq import reference as ref
from wsq.kernels import ops

MATMUL_BITS = tuple(range(1, 17))  # every width the kernels take, at every ISA level


def _pack(idx: torch.Tensor, bits: int) -> torch.Tensor:
    """Dense LSB-first packing (same layout as reference.pack, fast enough for 1M indices).

    Each index, shifted to its bit offset within its first byte, spans at most 3 bytes; indices
    never share bits, so adding the byte contributions equals OR-ing them.
    """
    v = idx.reshape(-1).to(torch.int64)
    n = v.numel()
    nbytes = (n * bits + 7) // 8
    bit = torch.arange(n, dtype=torch.int64) * bits
    shifted = v << (bit & 7)
    out = torch.zeros(nbytes + 3, dtype=torch.int64)
    for j in range(3):
        out.index_add_(0, (bit >> 3) + j, (shifted >> (8 * j)) & 255)
    return out[:nbytes].to(torch.uint8)


def _case(n: int, bits: int, ncode: int | None = None, gen: torch.Generator | None = None):
    """(indices int64, codebook float32, table, packed) with indices < ncode (default 2**bits)."""
    ncode = min(1 << bits, ncode or (1 << bits))
    idx = torch.randint(0, ncode, (n,), generator=gen)
    codebook = torch.randn(ncode, generator=gen)
    return idx, codebook, ops.lut_table(codebook, bits), _pack(idx, bits)


def test_pack_helper_matches_reference():
    for bits in range(1, 17):
        idx = torch.randint(0, 1 << bits, (77,))
        assert torch.equal(_pack(idx, bits), ref.pack(idx, bits))


# ----------------------------------------------------------------------------- dequant


@pytest.mark.parametrize("bits", range(1, 17))
def test_dequant_exact(isa, bits):
    for n in (0, 1, 7, 8, 9, 63, 64, 65, 200, 1031):
        # full codebook, and a short one so the NaN padding is exercised
        for ncode in (1 << bits, max(1, (1 << bits) - 3)):
            idx, cb, table, packed = _case(n, bits, ncode)
            got = ops.dequant(packed, n, bits, table)
            assert torch.equal(got, cb[idx])
            assert torch.equal(got, ref.dequant(packed, n, bits, cb, torch.float32))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bits", [1, 3, 4, 5, 8, 11, 16])
def test_dequant_half_matches_torch_rounding(isa, bits, dtype):
    # values spread over magnitudes that overflow, round and go subnormal in fp16/bf16
    n = 333
    idx, _, _, packed = _case(n, bits)
    cb = torch.randn(1 << bits) * torch.pow(10.0, torch.empty(1 << bits).uniform_(-9, 6))
    table = ops.lut_table(cb, bits)
    got = ops.dequant(packed, n, bits, table, dtype)
    assert got.dtype == dtype
    torch.testing.assert_close(got, cb[idx].to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dequant_nan_padding_and_large(isa, dtype):
    # indices past the codebook read the NaN padding; 300k values run several threads and chunks
    n, bits = 300_001, 3
    idx = torch.randint(0, 8, (n,))
    cb = torch.randn(5)
    got = ops.dequant(_pack(idx, bits), n, bits, ops.lut_table(cb, bits), dtype)
    bad = idx >= 5
    assert torch.isnan(got[bad]).all() and bad.any()
    assert torch.equal(got[~bad], cb[idx[~bad]].to(dtype))


@pytest.mark.parametrize("bits", [1, 5, 12])
def test_dequant_into_a_shape_on_both_paths(isa, bits):
    # the eager fast path allocates the output in its shape; the checked path (a strided packed
    # buffer, or grad mode with a table that needs grad) views it: both give the same tensor
    n = 3 * 5 * 7
    idx, cb, table, packed = _case(n, bits)
    want = cb[idx].view(3, 5, 7)
    got = ops.dequant(packed, n, bits, table, shape=(3, 5, 7))
    assert got.shape == (3, 5, 7) and torch.equal(got, want)
    strided = torch.stack([packed, packed], 1)[:, 0]  # same bytes, not contiguous
    assert torch.equal(ops.dequant(strided, n, bits, table, shape=torch.Size([3, 5, 7])), want)
    with pytest.raises(ValueError, match=r"shape \(3, 5, 6\) holds 90 elements, not n = 105"):
        ops.dequant(packed, n, bits, table, shape=(3, 5, 6))


def test_dequant_argument_errors():
    table = ops.lut_table(torch.randn(4), 2)
    with pytest.raises(ValueError, match="packed"):
        ops.dequant(torch.zeros(3, dtype=torch.uint8), 5, 2, table)
    with pytest.raises(ValueError, match="table"):
        ops.dequant(torch.zeros(2, dtype=torch.uint8), 5, 3, table)
    with pytest.raises(TypeError, match="dtype"):
        ops.dequant(torch.zeros(2, dtype=torch.uint8), 5, 2, table, torch.int32)
    with pytest.raises(ValueError, match="codebook"):
        ops.lut_table(torch.randn(5), 2)


# ----------------------------------------------------------------------------- gather_rows


@pytest.mark.parametrize("bits", range(1, 17))
def test_gather_rows(isa, bits):
    num_rows = 37
    for row_len in (1, 3, 53, 130):
        idx, cb, table, packed = _case(num_rows * row_len, bits, 50)
        dense = cb[idx].reshape(num_rows, row_len)
        rows = torch.tensor([[0, 36, 5, 5, 17], [36, 1, 2, 3, 0]])
        for dtype in (torch.float32, torch.bfloat16):
            got = ops.gather_rows(packed, rows, num_rows, row_len, bits, table, dtype)
            assert got.shape == (2, 5, row_len) and got.dtype == dtype
            assert torch.equal(got, dense[rows].to(dtype))
        got = ops.gather_rows(packed, rows.to(torch.int32)[0], num_rows, row_len, bits, table)
        assert torch.equal(got, dense[rows[0]])
        assert ops.gather_rows(packed, rows[:, :0], num_rows, row_len, bits, table).shape == (
            2,
            0,
            row_len,
        )
        assert torch.equal(
            ops.gather_rows(packed, torch.tensor(7), num_rows, row_len, bits, table), dense[7]
        )


def test_gather_rows_bad_ids(isa):
    idx, cb, table, packed = _case(10 * 4, 4)
    for bad in ([0, 10], [-1], [3, 2**40]):
        with pytest.raises(IndexError, match="rows"):
            ops.gather_rows(packed, torch.tensor(bad), 10, 4, 4, table)


def test_gather_rows_past_2_31_elements(isa):
    # 2**31 + 2**20 one-bit indices (268 MB): offsets of the last rows overflow int32
    row_len = 1 << 20
    num_rows = (1 << 11) + 1
    packed = torch.zeros(num_rows * row_len // 8, dtype=torch.uint8)
    last = packed[(num_rows - 1) * row_len // 8 :]
    last[:16] = torch.arange(16, dtype=torch.uint8) * 17
    table = ops.lut_table(torch.tensor([-1.0, 2.0]), 1)
    got = ops.gather_rows(packed, torch.tensor([num_rows - 1, 0]), num_rows, row_len, 1, table)
    expect_bits = ref.unpack(last[:16].clone(), 128, 1)
    assert torch.equal(got[0, :128], table[expect_bits])
    assert (got[0, 128:] == -1.0).all() and (got[1] == -1.0).all()


# ----------------------------------------------------------------------------- lut_matmul

# (M, K, N): every M in {0,1,3,8,64,65} and every K, N in {1,3,53,113,1023,1025} appear
SHAPES = [
    (0, 53, 3),
    (1, 1, 1),
    (1, 1025, 113),
    (1, 3, 1023),
    (3, 53, 53),
    (5, 1025, 53),  # fused rows kernel walks K in two chunks
    (8, 1023, 3),
    (8, 113, 1025),
    (8, 1, 53),
    (64, 113, 113),
    (64, 1025, 3),
    (65, 53, 1023),
    (65, 1023, 1),
    (65, 3, 53),
    (1, 4096, 33),  # one x row: whole 128-element steps only
    (1, 96, 7),  # ... a row shorter than one step: every vector from the buffer, the last masked
    (1, 1000, 37),  # ... steps, then a partial step of 1000 % 128 elements
    (1, 2048, 70),
    (1, 1100, 21),
]


def _rel_err(y: torch.Tensor, y64: torch.Tensor) -> float:
    return float((y.double() - y64).norm() / y64.norm().clamp_min(1e-300))


@pytest.mark.parametrize("bits", MATMUL_BITS)
def test_lut_matmul_error_vs_float64(isa, bits):
    g = torch.Generator().manual_seed(bits)
    for m, k, n in SHAPES:
        idx, cb, table, packed = _case(n * k, bits, 200, g)
        w = cb[idx].reshape(n, k)
        x = torch.randn(m, k, generator=g)
        for bias in (None, torch.randn(n, generator=g)):
            y = ops.lut_matmul(x, packed, n, bits, table, bias)
            assert y.shape == (m, n) and y.dtype == torch.float32
            if m == 0:
                continue
            y64 = x.double() @ w.double().T + (0 if bias is None else bias.double())
            ours, theirs = _rel_err(y, y64), _rel_err(F.linear(x, w, bias), y64)
            assert ours <= 2 * theirs + 1e-7, (m, k, n, bias is None, ours, theirs)


@pytest.mark.parametrize("bits", MATMUL_BITS)
def test_lut_matmul_eye_gives_weight_exactly(isa, bits):
    # FLUTE's check: x = I makes y^T the dequantized weight, bit for bit (fused and tiled paths)
    for k, n in ((1, 5), (3, 4), (8, 7), (53, 9), (113, 3)):
        idx, cb, table, packed = _case(n * k, bits, 100)
        y = ops.lut_matmul(torch.eye(k), packed, n, bits, table)
        assert torch.equal(y.T, cb[idx].reshape(n, k))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8, 12])
def test_lut_gemv_one_hot_x_reads_each_column_exactly(isa, bits):
    # x = e_j gives column j of W bit for bit: catches any slot of a decoded group summed against
    # the wrong x element (the AVX2 and AVX-512 4-bit GEMVs reorder x to their decoders' lane order)
    g = torch.Generator().manual_seed(bits)
    for k in (32, 96, 128, 384, 4096, 100):
        n = 37
        idx, cb, table, packed = _case(n * k, bits, None, g)
        w = cb[idx].reshape(n, k)
        bias = torch.randn(n, generator=g)
        for j in sorted({0, 1, 2, 15, 16, 17, 30, 31, k // 2 + 5, k - 1}):
            x = torch.zeros(1, k)
            x[0, j] = 1.0
            assert torch.equal(ops.lut_matmul(x, packed, n, bits, table)[0], w[:, j]), (k, j)
            assert torch.equal(ops.lut_matmul(x, packed, n, bits, table, bias)[0], w[:, j] + bias)


def test_lut_matmul_strided_x(isa):
    bits, k, n = 5, 113, 53
    idx, cb, table, packed = _case(n * k, bits)
    bias = torch.randn(n)
    for rows in (1, 3, 8, 65):  # fused and tiled paths
        x = torch.randn(rows, k)
        y = ops.lut_matmul(x, packed, n, bits, table, bias)
        wide = torch.randn(rows, k + 19)
        wide[:, 7 : 7 + k] = x
        view = wide[:, 7 : 7 + k]  # row stride k + 19, unit column stride: passed as is
        assert view.stride() == (k + 19, 1)
        assert torch.equal(ops.lut_matmul(view, packed, n, bits, table, bias), y)
        xt = torch.empty(k, rows).copy_(x.T).T  # column-major: copied by ops
        assert torch.equal(ops.lut_matmul(xt, packed, n, bits, table, bias), y)
        x3 = x.reshape(1, rows, k).expand(2, rows, k)  # leading dims: a batch of 2 * rows
        y3 = ops.lut_matmul(x3.reshape(2 * rows, k).contiguous(), packed, n, bits, table, bias)
        assert torch.equal(ops.lut_matmul(x3, packed, n, bits, table, bias), y3.reshape(2, rows, n))


@pytest.mark.parametrize("m", [1, 5, 64])
def test_lut_matmul_repeat_bitwise(isa, m):
    bits, k, n = 8, 1025, 301
    _, _, table, packed = _case(n * k, bits)
    x = torch.randn(m, k)
    y = ops.lut_matmul(x, packed, n, bits, table)
    for _ in range(3):
        assert torch.equal(ops.lut_matmul(x, packed, n, bits, table), y)


@pytest.mark.parametrize("m", [1, 4, 40])
def test_lut_matmul_nan_padding(isa, m):
    # an index past the codebook reads NaN: exactly the output columns of rows that use one
    bits, k, n = 3, 37, 11
    idx = torch.randint(0, 5, (n, k))
    idx[2, 30] = 7
    idx[9, 0] = 5
    table = ops.lut_table(torch.randn(5), bits)
    y = ops.lut_matmul(torch.randn(m, k), _pack(idx, bits), n, bits, table)
    nan_cols = torch.isnan(y).all(0)
    assert nan_cols.tolist() == [i in (2, 9) for i in range(n)]
    assert torch.isfinite(y[:, ~nan_cols]).all()


def test_lut_matmul_empty_and_zero_k(isa):
    table = ops.lut_table(torch.randn(4), 2)
    empty = torch.zeros(0, dtype=torch.uint8)
    bias = torch.randn(6)
    assert torch.equal(
        ops.lut_matmul(torch.randn(3, 0), empty, 6, 2, table, bias), bias.expand(3, 6)
    )
    assert torch.equal(ops.lut_matmul(torch.randn(3, 0), empty, 6, 2, table), torch.zeros(3, 6))
    assert ops.lut_matmul(torch.randn(3, 5), empty, 0, 2, table).shape == (3, 0)
    assert ops.lut_matmul(torch.randn(2, 0, 5), _pack(torch.zeros(10), 2), 2, 2, table).shape == (
        2,
        0,
        2,
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lut_matmul_half_x(isa, dtype):
    bits, k, n = 4, 113, 53
    idx, cb, table, packed = _case(n * k, bits)
    w = cb[idx].reshape(n, k)
    bias = torch.randn(n, dtype=dtype)
    for m in (1, 3, 65):
        x = torch.randn(m, k).to(dtype)
        y = ops.lut_matmul(x, packed, n, bits, table, bias)
        assert y.dtype == dtype
        torch.testing.assert_close(y, (x.float() @ w.T + bias.float()).to(dtype))


def test_lut_matmul_argument_errors():
    table = ops.lut_table(torch.randn(4), 2)
    packed = _pack(torch.zeros(15, dtype=torch.int64), 2)
    x = torch.randn(2, 5)
    with pytest.raises(ValueError, match="packed"):
        ops.lut_matmul(x, packed, 4, 2, table)
    with pytest.raises(ValueError, match="table"):
        ops.lut_matmul(x, packed, 3, 2, ops.lut_table(torch.randn(4), 3))
    with pytest.raises(ValueError, match="bias"):
        ops.lut_matmul(x, packed, 3, 2, table, torch.randn(4))
    with pytest.raises(TypeError, match="x"):
        ops.lut_matmul(x.to(torch.int32), packed, 3, 2, table)


def test_lut_matmul_torch_compile_matches_eager():
    bits, k, n = 4, 53, 7
    idx, cb, table, packed = _case(n * k, bits)
    bias = torch.randn(n)

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(ops.lut_matmul(x, packed, n, bits, table, bias)) * 2.0

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for m in (1, 9):
        x = torch.randn(m, k)
        assert torch.equal(compiled(x), f(x))


# --------------------------------------------------------------- eager calls skip the dispatcher


def _inference_calls():
    """(public call, name of its torch.library op in wsq.kernels.ops) for the three layer kernels."""
    bits, k, n = 4, 37, 11
    idx, cb, table, packed = _case(n * k, bits)
    rows = torch.tensor([3, 0, 10])
    x = torch.randn(2, k)
    return [
        (lambda x=x: ops.lut_matmul(x, packed, n, bits, table), "lut_matmul_op", x),
        (lambda: ops.dequant(packed, n * k, bits, table), "dequant_op", None),
        (lambda: ops.gather_rows(packed, rows, n, k, bits, table), "gather_rows_op", None),
    ]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_eager_cpu_call_skips_the_dispatcher_with_the_same_result(which, monkeypatch):
    from wsq.kernels import ops as kops

    call, op_name, _ = _inference_calls()[which]
    expect = call()

    def refuse(*a, **kw):
        raise AssertionError("the eager CPU call went through the torch.library op")

    monkeypatch.setattr(kops, op_name, refuse)
    assert torch.equal(call(), expect)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_dispatch_modes_still_see_the_wsq_op(which):
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    call, op_name, _ = _inference_calls()[which]
    expect = call()
    with Record():
        got = call()
    assert torch.equal(got, expect)
    assert any(s.startswith("wsq.") for s in seen), seen


def test_lut_matmul_input_needing_grad_takes_the_op_and_says_it_has_no_backward():
    call, _, x = _inference_calls()[0]
    xg = x.clone().requires_grad_(True)
    y = call(xg)
    assert y.grad_fn is not None  # the op's autograd node, not a silently detached tensor
    with pytest.raises(RuntimeError, match="no autograd formula"):
        y.sum().backward()
    with torch.no_grad():
        assert torch.equal(call(xg), call(x))
