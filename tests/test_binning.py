"""Binning kernels (minmax, histogram, relabel, fake_quant) and wsq.uniform_bins against wsq.reference.

Every kernel test runs once per instruction-set level this CPU has (scalar, avx2, avx512), forced with
wsq._C.set_isa, so each code path is held to the reference. Indices and counts must be exact, float64
sums within float64 rounding, codebooks within float32 rounding of the float64 means.

Offsets and counts past 2**31 elements are checked on an untouched (zero-page) bf16 tensor, which
costs address space but almost no memory; index *outputs* that large (2 GB written) are not tested.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wsq
from wsq import reference
from wsq.kernels import native as _native
from wsq.kernels import ops

_C = _native.cpu()
_LEVELS = ["scalar", "avx2", "avx512"]
ISAS = _LEVELS[: _LEVELS.index(_C.detected_isa()) + 1]
EPS64 = 2.0**-53
SHAPES = [1, 3, 53, 113, 1023, 1025, 100_003]  # odd sizes around vector widths and blocks


def _data(kind: str, n: int, g: torch.Generator) -> torch.Tensor:
    if kind == "normal":
        return torch.randn(n, generator=g) * 0.05
    if kind == "student_t":  # heavy tails: few far outliers stretch the range
        t = torch.distributions.StudentT(torch.tensor(1.5)).sample((n,))
        return t.clamp(-1e6, 1e6)
    if kind == "cauchy":
        c = torch.empty(n).cauchy_(generator=g)
        return torch.where(torch.isfinite(c), c, torch.zeros_like(c)).clamp(-1e30, 1e30)
    if kind == "duplicates":  # a handful of distinct values, many exact zeros (pruned weights)
        v = torch.tensor([0.0, 0.0, 0.0, -0.125, 0.5, 1.0, 3.0])
        return v[torch.randint(0, v.numel(), (n,), generator=g)]
    if kind == "constant":
        return torch.full((n,), 0.3)
    raise ValueError(kind)


def _scale(w: torch.Tensor, k: int) -> tuple[float, float]:
    lo, hi = reference.minmax(w)
    return reference.bin_scale(lo, hi, k)


def _check_histogram(w: torch.Tensor, k: int, lo: float, scale: float) -> None:
    counts, sums, idx = ops.histogram(w, k, lo, scale, indices=True)
    ref_idx = reference.bin_indices(w, k, lo, scale)
    rc, rs = reference.histogram(w, k, lo, scale)
    assert idx.dtype == reference.index_dtype(k)
    assert idx.numel() == w.numel()
    assert torch.equal(idx.long(), ref_idx)
    assert torch.equal(counts, rc)
    # Both sides sum in float64 in some order: each is within count * eps * sum|w| of the exact sum.
    abs_sum = torch.zeros(k, dtype=torch.float64).index_add_(
        0, ref_idx, w.reshape(-1).double().abs()
    )
    tol = 2 * counts.double() * EPS64 * abs_sum + 1e-300
    assert bool(((sums - rs).abs() <= tol).all())
    c2, s2, none = ops.histogram(w, k, lo, scale)  # without indices: same counts and sums
    assert none is None and torch.equal(c2, counts) and torch.equal(s2, sums)


# ----------------------------------------------------------------------------- minmax


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_minmax(isa, dtype):
    for n in SHAPES:
        w = (torch.randn(n) * 3).to(dtype)
        assert ops.minmax(w) == reference.minmax(w)


def test_minmax_nonfinite_and_signed_zero(isa):
    w = torch.randn(1025)
    w[[3, 500, 1024]] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    lo, hi, bad = _C.minmax(w.data_ptr(), w.numel(), 0)
    finite = w[torch.isfinite(w)]
    assert (lo, hi, bad) == (float(finite.min()), float(finite.max()), 3)
    with pytest.raises(ValueError, match="w contains 3 NaN or Inf"):
        ops.minmax(w)
    z = torch.zeros(100)
    z[::3] = -0.0
    lo, hi = ops.minmax(z)
    assert math.copysign(1, lo) == -1 and math.copysign(1, hi) == 1  # -0.0 orders below +0.0
    allbad = torch.full((77,), float("nan"))
    assert _C.minmax(allbad.data_ptr(), 77, 0) == (0.0, 0.0, 77)
    assert _C.minmax(0, 0, 0) == (0.0, 0.0, 0)
    with pytest.raises(ValueError, match="is empty"):
        ops.minmax(torch.zeros(0))


def test_minmax_strided(isa):
    base = torch.randn(300, 70)
    w = base[:, ::3]  # non-contiguous
    assert ops.minmax(w) == reference.minmax(w)


# ----------------------------------------------------------------------------- histogram


@pytest.mark.parametrize("k", [2, 7, 256, 257, 65536])
def test_histogram_shapes(isa, k):
    for n in SHAPES:
        g = torch.Generator().manual_seed(n * 7 + k)
        w = _data("normal", n, g)
        _check_histogram(w, k, *_scale(w, k))


@pytest.mark.parametrize("kind", ["student_t", "cauchy", "duplicates", "constant"])
@pytest.mark.parametrize("k", [2, 256, 4096, 65536])
def test_histogram_distributions(isa, kind, k):
    g = torch.Generator().manual_seed(1)
    w = _data(kind, 200_003, g)
    _check_histogram(w, k, *_scale(w, k))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [3, 256, 1000])
def test_histogram_half_inputs(isa, dtype, k):
    g = torch.Generator().manual_seed(2)
    w = (torch.randn(100_037, generator=g) * 2).to(dtype)
    lo, scale = _scale(w, k)
    _check_histogram(w, k, lo, scale)
    # the half kernel bins exactly what the float32 kernel bins for the widened values
    assert torch.equal(ops.histogram(w, k, lo, scale, indices=True)[2],
                       ops.histogram(w.float(), k, lo, scale, indices=True)[2])  # fmt: skip


def test_histogram_strided(isa):
    base = torch.randn(1000, 300)
    w = base.t()[::2]  # transposed and sliced: non-contiguous
    assert not w.is_contiguous()
    _check_histogram(w, 300, *_scale(w, 300))
    c1, s1, i1 = ops.histogram(w, 300, *_scale(w, 300), indices=True)
    c2, s2, i2 = ops.histogram(w.contiguous(), 300, *_scale(w, 300), indices=True)
    assert torch.equal(c1, c2) and torch.equal(s1, s2) and torch.equal(i1, i2)


@pytest.mark.parametrize("k", [2, 10, 256, 1000, 65536])
def test_histogram_bin_edges(isa, k):
    lo, hi = -1.0, 3.0
    lo32, scale = reference.bin_scale(lo, hi, k)
    edges = lo + torch.arange(k + 1, dtype=torch.float64) * (hi - lo) / k
    e32 = edges.float()
    # every edge, its float32 neighbours, and the range ends: the elements most sensitive to rounding
    w = torch.cat(
        [
            e32,
            torch.nextafter(e32, torch.tensor(-math.inf)),
            torch.nextafter(e32, torch.tensor(math.inf)),
        ]
    )
    w = w[torch.randperm(w.numel())]
    _check_histogram(w, k, lo32, scale)


def test_histogram_values_outside_range(isa):
    w = torch.cat([torch.randn(5000), torch.tensor([-1e30, 1e30, -5.0, 5.0, -0.5, 0.5])])
    lo32, scale = reference.bin_scale(-0.5, 0.5, 64)
    _check_histogram(w, 64, lo32, scale)
    counts, _, idx = ops.histogram(w, 64, lo32, scale, indices=True)
    assert idx[-6:].tolist() == [0, 63, 0, 63, 0, 63]  # clamped to the end bins
    assert counts.sum() == w.numel()


def test_histogram_scale_zero_and_k1(isa):
    w = torch.randn(3000)
    counts, sums, idx = ops.histogram(w, 5, 0.0, 0.0, indices=True)  # hi <= lo: all in bin 0
    assert counts.tolist() == [3000, 0, 0, 0, 0] and bool((idx == 0).all())
    counts, sums, _ = ops.histogram(w, 1, float(w.min()), 1.0)
    assert counts.tolist() == [3000]
    assert abs(float(sums[0]) - float(w.double().sum())) < 1e-9


def test_histogram_nan_never_out_of_bounds(isa):
    # histogram does not check NaN (minmax does); a NaN must still land in a valid bin (bin 0).
    w = torch.randn(1000)
    w[::7] = float("nan")
    counts, _, idx = ops.histogram(w, 16, -4.0, 4.0, indices=True)
    assert int(counts.sum()) == 1000 and int(idx.max()) < 16
    assert bool((idx[::7] == 0).all())


def test_histogram_isa_paths_bit_identical():
    """Every level gives the very same counts, sums and indices (same thread count)."""
    g = torch.Generator().manual_seed(3)
    for kind, k in [("normal", 256), ("duplicates", 1000), ("cauchy", 65536), ("normal", 3)]:
        w = _data(kind, 100_001, g)
        lo, scale = _scale(w, k)
        outs = []
        for level in ISAS:
            _C.set_isa(level)
            try:
                outs.append(ops.histogram(w, k, lo, scale, indices=True))
            finally:
                _C.set_isa("auto")
        for c, s, i in outs[1:]:
            assert (
                torch.equal(c, outs[0][0])
                and torch.equal(s, outs[0][1])
                and torch.equal(i, outs[0][2])
            )


def test_histogram_c_abi_checks():
    w = torch.randn(10)
    c = torch.empty(300, dtype=torch.int64)
    s = torch.empty(300, dtype=torch.float64)
    i = torch.empty(10, dtype=torch.uint8)
    with pytest.raises(ValueError, match="idx_dtype"):  # u8 indices cannot hold k = 300
        _C.histogram(
            w.data_ptr(), 10, 0, 300, 0.0, 1.0, c.data_ptr(), s.data_ptr(), i.data_ptr(), 3
        )
    with pytest.raises(ValueError, match="k must be"):
        _C.histogram(w.data_ptr(), 10, 0, 0, 0.0, 1.0, c.data_ptr(), s.data_ptr(), 0, 3)
    with pytest.raises(ValueError, match="w_dtype"):
        _C.histogram(w.data_ptr(), 10, 5, 8, 0.0, 1.0, c.data_ptr(), s.data_ptr(), 0, 3)
    with pytest.raises(ValueError, match="finite"):
        _C.histogram(w.data_ptr(), 10, 0, 8, math.inf, 1.0, c.data_ptr(), s.data_ptr(), 0, 3)
    c.fill_(7)
    s.fill_(7.0)
    _C.histogram(
        0, 0, 0, 300, 0.0, 1.0, c.data_ptr(), s.data_ptr(), 0, 4
    )  # n = 0 zeroes the outputs
    assert int(c.abs().sum()) == 0 and float(s.abs().sum()) == 0.0


@pytest.mark.slow
def test_histogram_past_2_31_elements():
    """Element offsets and counts past 2**31 (where int32 arithmetic would wrap).

    A bf16 tensor of 2**31 + 37 elements is 4.3 GB of address space but, left untouched, reads as
    zeros from the kernel's shared zero page: only the two pages written below take real memory.
    """
    n = 2**31 + 37
    try:
        w = torch.empty(n, dtype=torch.bfloat16)
    except (RuntimeError, MemoryError):
        pytest.skip("cannot reserve 4.3 GB of address space")
    if bool(w[:: 1 << 20].any()):
        pytest.skip("the allocator returned reused (non-zero) memory")
    w[2**31] = 1.5  # bin 2, at the first offset past int32
    w[n - 1] = 2.5  # bin 3
    counts, sums, _ = ops.histogram(w, 4, -1.0, 1.0)
    assert counts.tolist() == [0, n - 2, 1, 1]
    assert sums.tolist() == [0.0, 0.0, 1.5, 2.5]


# ----------------------------------------------------------------------------- relabel

_IDX = [torch.uint8, torch.uint16, torch.int32, torch.int64]


@pytest.mark.parametrize("in_dtype", _IDX)
@pytest.mark.parametrize("out_dtype", _IDX)
def test_relabel(in_dtype, out_dtype):
    top = 255 if in_dtype == torch.uint8 else 1000
    for n, tlen in [(1, top + 1), (1025, top + 1), (100_003, top + 1), (77, 256)]:
        idx = torch.randint(0, min(tlen, top + 1), (n,)).to(in_dtype)
        hi = 255 if out_dtype == torch.uint8 else 60000
        table = torch.randint(0, hi + 1, (tlen,), dtype=torch.int32)
        out = ops.relabel(idx, table, out_dtype)
        assert out.dtype == out_dtype
        assert torch.equal(out.long(), table.long()[idx.long()])


@pytest.mark.parametrize("in_dtype", _IDX)
def test_relabel_out_of_range(in_dtype):
    idx = torch.tensor([0, 1, 2, 5, 1, 9], dtype=in_dtype)
    table = torch.arange(4, dtype=torch.int32)
    with pytest.raises(ValueError, match="2 values are negative or >= table_len 4"):
        ops.relabel(idx, table, torch.uint8)
    if in_dtype in (torch.int32, torch.int64):
        with pytest.raises(ValueError, match="1 values are negative"):
            ops.relabel(torch.tensor([0, -1, 3], dtype=in_dtype), table, torch.int64)
    big = torch.tensor([2**40], dtype=torch.int64)
    with pytest.raises(ValueError, match="negative or >="):
        ops.relabel(big, table, torch.int32)
    with pytest.raises(ValueError, match="table is empty"):
        ops.relabel(idx, torch.zeros(0, dtype=torch.int32), torch.uint8)
    with pytest.raises(ValueError, match="does not fit"):  # 300 does not fit uint8
        ops.relabel(
            torch.tensor([0], dtype=in_dtype), torch.tensor([300], dtype=torch.int32), torch.uint8
        )
    assert ops.relabel(torch.zeros(0, dtype=in_dtype), table, torch.uint8).numel() == 0


def test_relabel_strided():
    idx = torch.randint(0, 50, (100, 40), dtype=torch.int64)[:, ::3]
    table = torch.randperm(50).to(torch.int32)
    assert torch.equal(ops.relabel(idx, table, torch.int32).long(), table.long()[idx.reshape(-1)])


# ----------------------------------------------------------------------------- fake_quant


# k around the vector kernels' register-table limits (8, 16, 32) and the gather path
@pytest.mark.parametrize("k", [2, 8, 9, 16, 17, 32, 33, 256, 65536])
def test_fake_quant(isa, k):
    for n in SHAPES:
        g = torch.Generator().manual_seed(n + k)
        w = _data("normal", n, g)
        lo, scale = _scale(w, k)
        values = torch.randn(k, generator=g)
        ref = reference.fake_quant(w, k, lo, scale, values)
        assert torch.equal(ops.fake_quant(w, k, lo, scale, values), ref)
        w2 = w.clone()
        assert ops.fake_quant(w2, k, lo, scale, values, out=w2) is w2  # in place
        assert torch.equal(w2, ref)


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [5, 32, 300])
def test_fake_quant_half_outputs(isa, out_dtype, k):
    g = torch.Generator().manual_seed(4)
    w = torch.randn(10_007, generator=g)
    lo, scale = _scale(w, k)
    # values spanning fp16 subnormals, ties and overflow: the conversion must be torch's RNE
    values = torch.cat([torch.randn(k - 4, generator=g) * 10.0 ** torch.randint(-8, 6, (k - 4,), generator=g),
                        torch.tensor([6.1e-5 / 3, 65520.0, -1e6, 1.0 + 2.0**-11])])  # fmt: skip
    out = torch.empty(w.shape, dtype=out_dtype)
    ops.fake_quant(w, k, lo, scale, values, out=out)
    assert torch.equal(out, reference.fake_quant(w, k, lo, scale, values).to(out_dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fake_quant_half_inputs_in_place(isa, dtype):
    g = torch.Generator().manual_seed(5)
    w = (torch.randn(4099, generator=g)).to(dtype)
    k = 100
    lo, scale = _scale(w, k)
    values = torch.randn(k, generator=g)
    ref = reference.fake_quant(w, k, lo, scale, values).to(dtype)
    assert torch.equal(ops.fake_quant(w, k, lo, scale, values), ref)
    ops.fake_quant(w, k, lo, scale, values, out=w)
    assert torch.equal(w, ref)


def test_fake_quant_strided_and_shape(isa):
    w = torch.randn(64, 90)[:, ::2]
    lo, scale = _scale(w, 40)
    values = torch.randn(40)
    out = ops.fake_quant(w, 40, lo, scale, values)
    assert out.shape == w.shape
    assert torch.equal(out, reference.fake_quant(w, 40, lo, scale, values))


def test_fake_quant_isa_paths_bit_identical():
    g = torch.Generator().manual_seed(6)
    w = _data("cauchy", 50_001, g)
    for k, dt in [(7, torch.float32), (20, torch.float16), (1000, torch.bfloat16)]:
        lo, scale = _scale(w, k)
        values = torch.randn(k, generator=g)
        outs = []
        for level in ISAS:
            _C.set_isa(level)
            try:
                out = torch.empty(w.shape, dtype=dt)
                outs.append(ops.fake_quant(w, k, lo, scale, values, out=out))
            finally:
                _C.set_isa("auto")
        assert all(torch.equal(o, outs[0]) for o in outs[1:])


# ----------------------------------------------------------------------------- uniform_bins


def _check_uniform_bins(w: torch.Tensor, k: int, lo=None, hi=None) -> wsq.binning.Binning:
    b = wsq.uniform_bins(w, k, lo=lo, hi=hi)
    ridx, rcb, rcounts = reference.uniform_bins(w, k, lo, hi)
    n = b.codebook.numel()
    assert n <= k and b.codebook.dtype == torch.float32
    assert b.indices.shape == w.shape and b.indices.dtype == reference.index_dtype(n)
    assert torch.equal(b.indices.reshape(-1).long(), ridx.long())
    assert torch.equal(b.counts, rcounts) and int(b.counts.sum()) == w.numel()
    assert bool((b.codebook[1:] > b.codebook[:-1]).all())  # ascending
    # codebook = float32 rounding of the float64 member means
    w64 = w.reshape(-1).double()
    idx = b.indices.reshape(-1).long()
    means = torch.zeros(n, dtype=torch.float64).index_add_(0, idx, w64) / b.counts.double()
    ulp = torch.from_numpy(np.spacing(np.abs(b.codebook.numpy()))).double()
    assert bool(((b.codebook.double() - means).abs() <= 0.5 * ulp + 1e-12 * means.abs()).all())
    return b


@pytest.mark.parametrize("kind", ["normal", "student_t", "duplicates"])
@pytest.mark.parametrize("k", [2, 256, 257, 65536])
def test_uniform_bins(isa, kind, k):
    g = torch.Generator().manual_seed(7)
    _check_uniform_bins(_data(kind, 30_011, g).reshape(30_011, 1), k)


def test_uniform_bins_small():
    for n in SHAPES[:-1]:
        b = _check_uniform_bins(torch.randn(n), 256)
        assert b.n <= n


def test_uniform_bins_lo_hi_given():
    w = torch.randn(20_000) * 2
    b = _check_uniform_bins(w, 64, lo=-1.0, hi=1.0)
    assert b.lo == -1.0 and b.hi == 1.0 and b.n == 64


def test_uniform_bins_index_dtype():
    w = torch.linspace(-1, 1, 10_000)
    assert wsq.uniform_bins(w, 256).indices.dtype == torch.uint8
    b = wsq.uniform_bins(w, 300)
    assert b.n == 300 and b.indices.dtype == torch.uint16
    few = torch.tensor([0.0, 1.0, 2.0]).repeat(1000)
    b = wsq.uniform_bins(few, 65536)  # raw u16 indices relabelled to u8 (3 bins)
    assert b.n == 3 and b.indices.dtype == torch.uint8 and b.codebook.tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_uniform_bins_dtypes(dtype):
    w = (torch.randn(5000) * 0.1).to(dtype)
    b = wsq.uniform_bins(w, 128)
    wf = w.float()
    ridx, rcb, rcounts = reference.uniform_bins(wf, 128)
    assert torch.equal(b.indices.long(), ridx.long()) and torch.equal(b.counts, rcounts)


def test_uniform_bins_one_bin_cases():
    c = wsq.uniform_bins(torch.full((100,), 0.25), 16)  # all equal: one bin
    assert c.n == 1 and c.codebook.tolist() == [0.25] and c.counts.tolist() == [100]
    assert bool((c.indices == 0).all())
    w = torch.randn(100)
    b = wsq.uniform_bins(w, 16, lo=1.0, hi=1.0)  # hi <= lo: one bin holding the mean
    assert b.n == 1 and bool((b.indices == 0).all())
    assert abs(float(b.codebook[0]) - float(w.double().mean())) < 1e-6
    assert wsq.uniform_bins(w, 16, lo=2.0, hi=-2.0).n == 1


def test_uniform_bins_errors():
    w = torch.randn(10)
    bad = w.clone()
    bad[3] = float("nan")
    with pytest.raises(ValueError, match="w contains"):
        wsq.uniform_bins(bad, 4)
    bad[3] = float("inf")
    with pytest.raises(ValueError, match="w contains"):
        wsq.uniform_bins(bad, 4)
    for k in (1, 0, -3, 65537):
        with pytest.raises(ValueError, match="k must be"):
            wsq.uniform_bins(w, k)
    with pytest.raises(TypeError, match="k must be an int"):
        wsq.uniform_bins(w, 4.0)
    with pytest.raises(ValueError, match="w is empty"):
        wsq.uniform_bins(torch.zeros(0), 4)
    with pytest.raises(TypeError, match="w must be a floating-point"):
        wsq.uniform_bins(torch.arange(10), 4)
    with pytest.raises(TypeError, match="w must be a torch.Tensor"):
        wsq.uniform_bins([1.0, 2.0], 4)
    with pytest.raises(ValueError, match="lo must be finite"):
        wsq.uniform_bins(w, 4, lo=math.nan)
    with pytest.raises(ValueError, match="hi must be finite and within float32"):
        wsq.uniform_bins(w, 4, hi=1e39)  # would become inf in float32 (and scale 0)


# ----------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(
        st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=300
    ),
    k=st.one_of(st.integers(2, 300), st.sampled_from([256, 257, 65536])),
    bounds=st.one_of(
        st.none(), st.tuples(st.floats(-1e6, 1e6, width=32), st.floats(-1e6, 1e6, width=32))
    ),
    level=st.sampled_from(ISAS),
)
def test_property_indices_match_reference(values, k, bounds, level):
    w = torch.tensor(values, dtype=torch.float32)
    lo, hi = (None, None) if bounds is None else bounds
    _C.set_isa(level)
    try:
        b = wsq.uniform_bins(w, k, lo=lo, hi=hi)
        lo32, scale = reference.bin_scale(*(reference.minmax(w) if bounds is None else bounds), k)
        counts, _, raw = ops.histogram(w, k, lo32, scale, indices=True)
    finally:
        _C.set_isa("auto")
    ridx, _, rcounts = reference.uniform_bins(w, k, lo, hi)
    assert torch.equal(b.indices.long(), ridx.long()) and torch.equal(b.counts, rcounts)
    assert torch.equal(raw.long(), reference.bin_indices(w, k, lo32, scale))
    assert torch.equal(counts, reference.histogram(w, k, lo32, scale)[0])


# ----------------------------------------------------------------------------- torch.compile


def test_torch_compile_matches_eager():
    lo, scale = reference.bin_scale(-3.0, 3.0, 16)
    values = torch.linspace(-3, 3, 16)

    def f(w):
        counts, sums, _ = ops.histogram(w, 16, lo, scale)
        q = ops.fake_quant(w, 16, lo, scale, values)
        return counts, sums, q * 2

    w = torch.randn(1000)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    for a, b in zip(compiled(w), f(w), strict=True):
        assert torch.equal(a, b)


def test_shared_contract_against_hand_computed_values():
    # wsq._spec is what both the kernels and the oracle use, so it is checked against numbers worked
    # out by hand, not against either side. scale = float32(k / (hi32 - lo32)), capped at F32_MAX.
    from wsq import _spec

    assert _spec.F32_MAX == float(torch.finfo(torch.float32).max) == (2 - 2.0**-23) * 2.0**127
    assert _spec.bin_scale(0.0, 1.0, 4) == (0.0, 4.0)
    assert _spec.bin_scale(-1.0, 1.0, 256) == (-1.0, 128.0)
    assert _spec.bin_scale(-3.0, 5.0, 3) == (-3.0, 0.375)  # 3 / 8, exact in float32
    # lo, hi rounded to float32 first: 0.1 -> 0.100000001490116..., 0.2 -> 0.200000002980232...;
    # 10 / 0.100000001490116 = 99.9999985..., and the nearest float32 is 100.
    assert _spec.bin_scale(0.1, 0.2, 10) == (0.10000000149011612, 100.0)
    # 1/3 in float32 is 0.3333333432674408; 2 / 0.6666666567... = 3.0000000447..., float32 -> 3.0
    assert _spec.bin_scale(1 / 3, 1.0, 2) == (0.3333333432674408, 3.0)
    # hi <= lo: every weight in bin 0 (scale 0); lo still rounded to float32
    assert _spec.bin_scale(0.1, 0.1, 8) == (0.10000000149011612, 0.0)
    assert _spec.bin_scale(2.0, 1.0, 8) == (2.0, 0.0)
    # a range of one float32 denormal: 256 / 1.4e-45 overflows float32, so the cap applies
    assert _spec.bin_scale(0.0, 1e-45, 256) == (0.0, _spec.F32_MAX)
    assert [_spec.bits_for(n) for n in (1, 2, 3, 4, 5, 255, 256, 257, 65536)] == [
        1, 1, 2, 2, 3, 8, 8, 9, 16
    ]  # fmt: skip
    assert _spec.index_dtype(1) == _spec.index_dtype(256) == torch.uint8
    assert _spec.index_dtype(257) == _spec.index_dtype(65536) == torch.uint16
    # the oracle and the kernels' module expose this very contract, not a copy of it
    assert reference.bin_scale is ops.bin_scale is _spec.bin_scale
