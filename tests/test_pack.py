"""Bit packing (pack, unpack) and the merge kernel (remap_packed) against wsq.reference.

Every kernel test runs once per instruction-set level this CPU has (scalar, avx2, avx512), forced with
wsq._C.set_isa, so each code path is held to the reference bit for bit. Sizes straddle the vector
blocks (8-index groups, 32-index steps, the scalar edge of each range) and, from ~300K indices on,
the per-thread chunks. Offsets past 2**31 indices are checked in one slow test.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wsq import reference
from wsq.kernels import native as _native
from wsq.kernels import ops

_C = _native.cpu()
_LEVELS = ["scalar", "avx2", "avx512"]
ISAS = _LEVELS[: _LEVELS.index(_C.detected_isa()) + 1]
SIZES = [0, 1, 3, 7, 8, 9, 53, 113, 1023, 1025, 100_003]
BITS = list(range(1, 17))
DTYPES = [torch.uint8, torch.uint16, torch.int32, torch.int64]


@contextlib.contextmanager
def _level(name: str):
    """set_isa for hypothesis tests (function-scoped fixtures do not reset between examples)."""
    _C.set_isa(name)
    try:
        yield
    finally:
        _C.set_isa("auto")


def _indices(n: int, bits: int, g: torch.Generator, kind: str = "random") -> torch.Tensor:
    top = (1 << bits) - 1
    if kind == "max":
        return torch.full((n,), top, dtype=torch.int64)
    if kind == "zero":
        return torch.zeros(n, dtype=torch.int64)
    if kind == "alternating":
        return (torch.arange(n) % 2) * top
    return torch.randint(0, top + 1, (n,), generator=g)


def _dtypes(bits: int) -> list[torch.dtype]:
    return [d for d in DTYPES if not (d == torch.uint8 and bits > 8)]


# ----------------------------------------------------------------------------- pack / unpack


@pytest.mark.parametrize("bits", BITS)
def test_pack_unpack_matches_reference(isa, bits):
    g = torch.Generator().manual_seed(bits)
    for n in SIZES:
        x = _indices(n, bits, g)
        want = reference.pack(x, bits)
        assert want.numel() == ops.packed_bytes(n, bits)
        for dt in _dtypes(bits):
            p = ops.pack(x.to(dt), bits)
            assert p.dtype == torch.uint8 and torch.equal(p, want), (n, dt)
            u = ops.unpack(p, n, bits, dt)
            assert u.dtype == dt and torch.equal(u, x.to(dt)), (n, dt)
        u = ops.unpack(want, n, bits)  # default dtype: the smallest that holds 2**bits - 1
        assert u.dtype == (torch.uint8 if bits <= 8 else torch.uint16)
        assert torch.equal(u.long(), x)
        assert torch.equal(reference.unpack(want, n, bits), x)


@pytest.mark.parametrize("kind", ["max", "zero", "alternating"])
def test_pack_patterns(isa, kind):
    g = torch.Generator().manual_seed(1)
    for bits in BITS:
        x = _indices(1025, bits, g, kind)
        p = ops.pack(x, bits)
        assert torch.equal(p, reference.pack(x, bits))
        assert torch.equal(ops.unpack(p, 1025, bits, torch.int64), x)


@pytest.mark.parametrize("bits", [1, 3, 8, 13, 16])
def test_pack_unpack_across_threads(isa, bits):
    """Large enough to be split over threads: chunk edges must not drop or share bytes."""
    n = 270_001  # > 2 chunks of 16384 groups
    x = torch.randint(0, 1 << bits, (n,), generator=torch.Generator().manual_seed(bits))
    p = ops.pack(x.to(torch.int32), bits)
    assert torch.equal(p, reference.pack(x, bits))
    assert torch.equal(ops.unpack(p, n, bits, torch.int64), x)


def test_pack_noncontiguous(isa):
    g = torch.Generator().manual_seed(2)
    base = torch.randint(0, 1 << 11, (70, 60), generator=g)
    for view in (base.t(), base[::3, 1::2], base.reshape(-1)[::7]):
        for bits, dt in [
            (11, torch.int64),
            (11, torch.int32),
            (11, torch.uint16),
            (8, torch.uint8),
        ]:
            v = (view % (1 << bits)).to(dt) if dt == torch.uint8 else view.to(dt)
            v = v.t().contiguous().t() if v.dim() == 2 else v  # same values, strided again
            flat = v.reshape(-1).contiguous()
            assert torch.equal(ops.pack(v, bits), reference.pack(flat.long(), bits))
        assert not view.is_contiguous()


@pytest.mark.parametrize("dtype", DTYPES)
def test_pack_out_of_range(isa, dtype):
    for bits in [1, 3, 4, 7, 8, 9, 15]:
        if dtype == torch.uint8 and bits >= 8:
            continue
        n = 1029  # bad values in the vector body, the scalar edge and the partial group
        x = torch.randint(0, 1 << bits, (n,))
        x[[0, 517, n - 1]] = 1 << bits
        with pytest.raises(
            ValueError, match=rf"indices: 3 values are negative or >= 2\*\*bits = {1 << bits}"
        ):
            ops.pack(x.to(dtype), bits)
        if dtype in (torch.int32, torch.int64):
            x = torch.zeros(n, dtype=dtype)
            x[[3, 64, 1000, 1028]] = -1
            with pytest.raises(ValueError, match="indices: 4 values are negative"):
                ops.pack(x, bits)
    if dtype in (torch.int32, torch.int64):  # 16 bits: 65536 is the first value that does not fit
        x = torch.tensor([0, 65535, 65536, 70000], dtype=dtype)
        with pytest.raises(ValueError, match="indices: 2 values"):
            ops.pack(x, 16)


def test_pack_bad_arguments():
    x = torch.zeros(10, dtype=torch.int64)
    with pytest.raises(TypeError, match="indices"):
        ops.pack(x.float(), 4)
    with pytest.raises(TypeError, match="indices"):
        ops.pack(x.to(torch.int16), 4)
    with pytest.raises(TypeError, match="indices"):
        ops.pack([1, 2, 3], 4)
    for bits in (0, 17, -1):
        with pytest.raises(ValueError, match="bits"):
            ops.pack(x, bits)
    with pytest.raises(TypeError, match="bits"):
        ops.pack(x, 4.0)


def test_unpack_bad_arguments():
    p = ops.pack(torch.arange(10) % 8, 3)  # 4 bytes
    for wrong in (p[:3], torch.cat([p, p[:1]])):
        with pytest.raises(ValueError, match="packed holds"):
            ops.unpack(wrong, 10, 3)
    with pytest.raises(ValueError, match="packed"):
        ops.unpack(p, 11, 3)
    with pytest.raises(TypeError, match="packed"):
        ops.unpack(p.to(torch.int32), 10, 3)
    with pytest.raises(ValueError, match="uint8 cannot hold 9-bit"):
        ops.unpack(ops.pack(torch.arange(10), 9), 10, 9, torch.uint8)
    with pytest.raises(TypeError, match="dtype"):
        ops.unpack(p, 10, 3, torch.float32)
    with pytest.raises(ValueError, match="n must be >= 0"):
        ops.unpack(p, -1, 3)
    # the C ABI checks sizes itself too
    out = torch.empty(10, dtype=torch.uint8)
    with pytest.raises(ValueError, match="packed holds 4 bytes; 10 indices at 4 bits need 5"):
        _C.unpack(p.data_ptr(), 4, 10, 4, out.data_ptr(), 3)
    with pytest.raises(ValueError, match="bits"):
        _C.pack(out.data_ptr(), 10, 3, 0, p.data_ptr())
    with pytest.raises(ValueError, match="dtype"):
        _C.pack(out.data_ptr(), 10, 0, 3, p.data_ptr())


# ----------------------------------------------------------------------------- remap_packed


def _remap_case(bi: int, bo: int, n: int, g: torch.Generator, tlen: int | None = None):
    tlen = (1 << bi) if tlen is None else tlen
    x = torch.randint(0, tlen, (n,), generator=g)
    table = torch.randint(0, 1 << bo, (tlen,), generator=g, dtype=torch.int32)
    return reference.pack(x, bi), table


@pytest.mark.parametrize("bi", BITS)
def test_remap_all_width_pairs(isa, bi):
    g = torch.Generator().manual_seed(100 + bi)
    for bo in BITS:
        for n in (1025, 37):
            p, table = _remap_case(bi, bo, n, g)
            got = ops.remap_packed(p, n, bi, table, bo)
            assert torch.equal(got, reference.remap_packed(p, n, bi, table, bo)), (bi, bo, n)
    for n in (0, 1, 7, 8, 9, 113):  # tiny sizes, output width both ways
        for bo in (1, bi, 16):
            p, table = _remap_case(bi, bo, n, g)
            assert torch.equal(
                ops.remap_packed(p, n, bi, table, bo), reference.remap_packed(p, n, bi, table, bo)
            )


@pytest.mark.parametrize("bi,bo", [(1, 1), (4, 4), (8, 7), (3, 5), (9, 8), (12, 9), (16, 16)])
def test_remap_across_threads(isa, bi, bo):
    n = 270_001  # > 2 chunks of 16384 groups
    g = torch.Generator().manual_seed(bi * 17 + bo)
    tlen = max(1, (1 << bi) - 3)  # a short table: exercises the bounds check on every path
    p, table = _remap_case(bi, bo, n, g, tlen)
    assert torch.equal(
        ops.remap_packed(p, n, bi, table, bo), reference.remap_packed(p, n, bi, table, bo)
    )


def test_remap_default_bits_out_and_identity(isa):
    g = torch.Generator().manual_seed(5)
    for bi in BITS:
        p, _ = _remap_case(bi, bi, 1025, g)
        ident = torch.arange(1 << bi, dtype=torch.int32)
        assert torch.equal(ops.remap_packed(p, 1025, bi, ident), p)


@pytest.mark.parametrize(
    "bi,bo",
    [
        (1, 1),
        (2, 2),
        (4, 4),
        (2, 3),
        (3, 3),
        (5, 2),
        (7, 7),
        (8, 8),
        (8, 5),
        (9, 9),
        (10, 4),
        (12, 12),
        (16, 3),
    ],
)
def test_remap_index_beyond_table(isa, bi, bo):
    tlen = max(1, (1 << bi) // 2 - 1)
    n = 2053
    g = torch.Generator().manual_seed(bi + 31 * bo)
    x = torch.randint(0, tlen, (n,), generator=g)
    where = [0, 9, 640, 2040, n - 1]  # vector body, scalar edge, partial last group
    x[where] = (1 << bi) - 1
    table = torch.randint(0, 1 << bo, (tlen,), generator=g, dtype=torch.int32)
    p = reference.pack(x, bi)
    with pytest.raises(
        ValueError, match=f"packed: {len(where)} indices are beyond the table's {tlen} entries"
    ):
        ops.remap_packed(p, n, bi, table, bo)
    # in range again: the same table works
    x[where] = 0
    p = reference.pack(x, bi)
    assert torch.equal(
        ops.remap_packed(p, n, bi, table, bo), reference.remap_packed(p, n, bi, table, bo)
    )


def test_remap_bad_arguments():
    p = ops.pack(torch.arange(16) % 8, 3)
    t8 = torch.arange(8, dtype=torch.int32)
    with pytest.raises(ValueError, match="packed holds"):
        ops.remap_packed(p[:-1], 16, 3, t8, 3)
    with pytest.raises(ValueError, match="table has 9 entries"):
        ops.remap_packed(p, 16, 3, torch.arange(9, dtype=torch.int32), 4)
    with pytest.raises(ValueError, match="table is empty"):
        ops.remap_packed(p, 16, 3, t8[:0], 3)
    with pytest.raises(ValueError, match="table values must be in 0..3"):
        ops.remap_packed(p, 16, 3, t8, 2)
    with pytest.raises(ValueError, match="table values"):
        ops.remap_packed(p, 16, 3, t8 - 1, 3)
    with pytest.raises(TypeError, match="table"):
        ops.remap_packed(p, 16, 3, t8.long(), 3)
    with pytest.raises(ValueError, match="bits"):
        ops.remap_packed(p, 16, 3, t8, 17)
    out = torch.empty(8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="table is empty"):
        _C.remap_packed(p.data_ptr(), 6, 16, 3, t8.data_ptr(), 0, out.data_ptr(), 3)


# ----------------------------------------------------------------------------- properties

_PROP = settings(max_examples=25, deadline=None)


@pytest.mark.parametrize("level", ISAS)
@_PROP
@given(
    bits=st.integers(1, 16),
    n=st.integers(0, 3000),
    seed=st.integers(0, 2**31 - 1),
    kind=st.sampled_from(["random", "max", "zero", "alternating"]),
    dti=st.integers(0, 3),
)
def test_property_pack_unpack(level, bits, n, seed, kind, dti):
    dt = _dtypes(bits)[dti % len(_dtypes(bits))]
    x = _indices(n, bits, torch.Generator().manual_seed(seed), kind)
    with _level(level):
        p = ops.pack(x.to(dt), bits)
        assert torch.equal(p, reference.pack(x, bits))
        assert torch.equal(ops.unpack(p, n, bits, dt), x.to(dt))


@pytest.mark.parametrize("level", ISAS)
@_PROP
@given(
    bi=st.integers(1, 16),
    bo=st.integers(1, 16),
    n=st.integers(0, 3000),
    seed=st.integers(0, 2**31 - 1),
    tfrac=st.floats(0.0, 1.0),
    nbad=st.integers(0, 3),
)
def test_property_remap(level, bi, bo, n, seed, tfrac, nbad):
    g = torch.Generator().manual_seed(seed)
    tlen = max(1, round(tfrac * (1 << bi)))
    x = torch.randint(0, tlen, (n,), generator=g)
    if tlen < (1 << bi) and n:
        pos = torch.randint(0, n, (nbad,), generator=g).unique()
        x[pos] = torch.randint(tlen, 1 << bi, (pos.numel(),), generator=g)
    table = torch.randint(0, 1 << bo, (tlen,), generator=g, dtype=torch.int32)
    p = reference.pack(x, bi)
    bad = int((x >= tlen).sum())
    with _level(level):
        if bad:
            with pytest.raises(ValueError, match=f"packed: {bad} indices are beyond"):
                ops.remap_packed(p, n, bi, table, bo)
        else:
            got = ops.remap_packed(p, n, bi, table, bo)
            assert torch.equal(got, reference.remap_packed(p, n, bi, table, bo))


# ----------------------------------------------------------------------------- torch.compile


def test_torch_compile_matches_eager():
    def f(idx: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        p = ops.pack(idx, 5)
        q = ops.remap_packed(p, idx.numel(), 5, table, 3)
        return ops.unpack(q, idx.numel(), 3, torch.int64)

    g = torch.Generator().manual_seed(9)
    idx = torch.randint(0, 32, (1001,), generator=g)
    table = torch.randint(0, 8, (32,), generator=g, dtype=torch.int32)
    torch._dynamo.reset()
    compiled = torch.compile(f, backend="aot_eager")
    want = f(idx, table)
    assert torch.equal(compiled(idx, table), want)
    assert torch.equal(want, table.long()[idx])


def test_fake_impls_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        idx = torch.empty(1001, dtype=torch.int64)
        p = ops.pack(idx, 5)
        assert p.shape == (ops.packed_bytes(1001, 5),) and p.dtype == torch.uint8
        u = ops.unpack(p, 1001, 5, torch.int32)
        assert u.shape == (1001,) and u.dtype == torch.int32


# ----------------------------------------------------------------------------- past 2**31 indices


@pytest.mark.slow
def test_offsets_past_2_31():
    """pack and remap at 1 bit on 2**31 + 77 indices (int32 index arithmetic would wrap).

    The index array is an untouched (zero-page) uint8 tensor: 2 GB of address space, two real pages.
    """
    n = 2**31 + 77
    try:
        idx = torch.empty(n, dtype=torch.uint8)
    except (RuntimeError, MemoryError):
        pytest.skip("cannot reserve 2 GB of address space")
    if bool(idx[:: 1 << 20].any()):
        pytest.skip("the allocator returned reused (non-zero) memory")
    ones = [2**31 + 5, n - 1]
    idx[ones] = 1
    p = ops.pack(idx, 1)
    assert p.numel() == ops.packed_bytes(n, 1)
    nz = p.nonzero().reshape(-1).tolist()
    assert nz == [i // 8 for i in ones] and [int(p[i // 8]) for i in ones] == [
        1 << (i % 8) for i in ones
    ]
    del idx
    s = (n - 5000) // 8 * 8  # check the last few thousand indices against the reference
    tail = n - s
    for bo, table in [(1, [1, 0]), (2, [3, 1])]:
        q = ops.remap_packed(p, n, 1, torch.tensor(table, dtype=torch.int32), bo)
        want = reference.remap_packed(
            p[s // 8 :], tail, 1, torch.tensor(table, dtype=torch.int32), bo
        )
        assert torch.equal(q[s * bo // 8 :], want)
        w = 2**31  # the 64 indices from 2**31 on, around the set bit
        near = reference.remap_packed(
            p[w // 8 : w // 8 + 8], 64, 1, torch.tensor(table, dtype=torch.int32), bo
        )
        assert torch.equal(q[w * bo // 8 : w * bo // 8 + 8 * bo], near)
        del q
