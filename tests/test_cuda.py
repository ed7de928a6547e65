"""CUDA kernels (wsq._cuda, wired through wsq/kernels/cuda.py).

Two kinds of test:

* Without a GPU: the module imports and sees no device (where wsq._cuda is built), the error path
  when it is missing, import hygiene, and host emulations of the kernels' arithmetic (fixed-point
  histogram sums, group packing, the matmul's word decode), built from the same __host__ __device__
  functions the kernels run into the test-only module _cuda_host_emu (tests/_host_emulation.py),
  which needs no CUDA compiler and never ships in wsq.
* On every visible CUDA device (skipped with a reason otherwise): each kernel against
  wsq/reference.py and against the CPU kernel, exact for integers, odd and empty shapes, strided
  and misaligned inputs, repeated runs bitwise equal, matmul error within 2x torch's own.

No pymoo here: the GPU check machine runs this file without it.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
from fractions import Fraction

import pytest
import torch
from _host_emulation import emu, needs_emu

import wsq
from wsq import reference
from wsq.kernels import native as _native
from wsq.kernels import ops

CUDA_BUILT = _native.cuda_built()
CUDA_AVAILABLE = bool(wsq.info()["cuda_available"])
DEVICES = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if CUDA_AVAILABLE else []
SKIP_NO_GPU = "no CUDA device visible (wsq.info()['cuda_available'] is False)"

needs_build = pytest.mark.skipif(not CUDA_BUILT, reason="wsq._cuda was not built (no nvcc)")
ODD = [1, 3, 53, 113, 1023, 1025]
FLOATS = [torch.float32, torch.float16, torch.bfloat16]
# The directory holding the wsq package this process imported (source tree or site-packages).
WSQ_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(wsq.__file__)))


def _lib():
    return _native.cuda()


@pytest.fixture(params=DEVICES or [None], ids=lambda d: d or "no-gpu")
def dev(request):
    if request.param is None:
        pytest.skip(SKIP_NO_GPU)
    return torch.device(request.param)


def _py(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=WSQ_PARENT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=WSQ_PARENT
    )


# ============================================================================ without a GPU


def test_import_wsq_does_not_load_cuda_module():
    r = _py(
        "import sys, torch, wsq, wsq.kernels.ops, wsq.kernels.cuda\n"
        "assert 'wsq._cuda' not in sys.modules, 'wsq._cuda imported'\n"
        "assert not torch.cuda.is_initialized(), 'CUDA initialised'\n"
        "print('ok')"
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_missing_cuda_module_raises_clear_error_at_call():
    r = _py(
        "import sys\n"
        "sys.modules['wsq._cuda'] = None  # as if it was never built\n"
        "from wsq.kernels import native as _native\n"
        "try:\n"
        "    _native.cuda()\n"
        "except RuntimeError as e:\n"
        "    assert 'wsq._cuda' in str(e) and 'rebuild' in str(e), e\n"
        "    print('ok')\n"
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.parametrize(
    "op",
    ["minmax", "histogram", "relabel", "fake_quant", "pack", "unpack", "remap_packed",
     "dequant", "lut_matmul", "gather_rows"],
)  # fmt: skip
def test_cuda_kernels_registered(op):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"wsq::{op}", "CUDA")


@needs_build
def test_cuda_module_imports_and_counts_devices():
    from wsq import _cuda

    n = _cuda.device_count()
    assert isinstance(n, int) and n >= 0
    if not CUDA_AVAILABLE:
        assert n == 0
    assert _cuda.runtime_version() > 0


@needs_build
def test_bad_arguments_raise_value_error_before_any_launch():
    lib = _lib()
    with pytest.raises(ValueError, match="k must be in"):
        lib.histogram(0, 0, 0, 0, 0.0, 1.0, 8, 8, 0, 3, 8, 0)
    with pytest.raises(ValueError, match="bits must be in"):
        lib.pack(0, 0, 3, 17, 0, 0)
    with pytest.raises(ValueError, match="mode must be"):
        lib.lut_matmul(0, 1, 1, 1, 0, 1, 1, 8, 0, 0, 0, 1, 0, 16, 7, 0)
    with pytest.raises(ValueError, match="packed holds"):
        lib.unpack(0, 1, 9, 8, 0, 3, 0)


# ---------------------------------------------------------------- host emulations (CPU)


def test_host_emulation_is_test_only():
    # csrc/testing/ builds into the tests' _cuda_host_emu, never into the shipped modules
    import importlib.util

    assert importlib.util.find_spec("wsq._cuda_host_emu") is None
    if CUDA_BUILT:
        assert not [n for n in dir(_lib()) if n.startswith("host_")], "wsq._cuda holds test code"
    if CUDA_BUILT or os.environ.get("CI"):
        # every build that can make wsq._cuda makes the emulation too (.ci/dev_build.sh,
        # .ci/build_wheel.sh, bench/gpu_check.sh): its tests never skip there unnoticed
        assert emu is not None, "tests/_cuda_host_emu was not built beside wsq._cuda"


def _exact_sums(w: torch.Tensor, k: int, lo: float, scale: float) -> list[Fraction]:
    idx = reference.bin_indices(w, k, lo, scale)
    sums = [Fraction(0)] * k
    for v, b in zip(w.tolist(), idx.tolist(), strict=True):
        sums[b] += Fraction(v)
    return sums


def _host_hist(w: torch.Tensor, k: int, lo: float, scale: float, block: int, priv: bool):
    w = w.float().contiguous()
    counts = torch.empty(k, dtype=torch.int64)
    sums = torch.empty(k, dtype=torch.float64)
    emu.host_histogram(
        w.data_ptr(), w.numel(), k, lo, scale, block, priv, counts.data_ptr(), sums.data_ptr()
    )
    return counts, sums


@needs_emu
@pytest.mark.parametrize("k", [1, 2, 16, 17, 256, 1000])
@pytest.mark.parametrize("n", [1, 53, 1025, 70000])
def test_host_histogram_counts_exact_and_sums_correctly_rounded(k, n):
    g = torch.Generator().manual_seed(k * 7 + n)
    w = torch.randn(n, generator=g) * 0.05
    lo, hi = reference.minmax(w)
    lo32, scale = ops.bin_scale(lo, hi, k)
    ref_c, _ = reference.histogram(w, k, lo32, scale)
    exact = _exact_sums(w, k, lo32, scale) if n <= 1025 else None
    ref_s = reference.histogram(w, k, lo32, scale)[1]
    for block, priv in [(1000, False), ((1 << 24) - 1, False), (n, k <= 16)]:
        c, s = _host_hist(w, k, lo32, scale, block, priv)
        assert torch.equal(c, ref_c)
        if exact is not None:  # every member is above 2^-23 of the range here: exact sums
            assert s.tolist() == [float(e) for e in exact]
        else:
            torch.testing.assert_close(s, ref_s, rtol=1e-12, atol=1e-15)


@needs_emu
def test_host_histogram_outliers_nan_and_tiny_values():
    w = torch.tensor(
        [-5.0, 0.1, 0.2, 0.3, 7.0, 1e-30, -1e-38, float("inf"), 0.25], dtype=torch.float32
    )
    lo32, scale = ops.bin_scale(0.0, 0.5, 4)  # -5 and 7 and inf clamp into the end bins
    c, s = _host_hist(w, 4, lo32, scale, 1 << 20, False)
    ref_c, ref_s = reference.histogram(w, 4, lo32, scale)
    assert torch.equal(c, ref_c)
    assert math.isinf(s[3]) and s[3] > 0
    torch.testing.assert_close(s[:3], ref_s[:3], rtol=1e-15, atol=1e-45)


@needs_emu
def test_host_fixsum_to_double_is_correctly_rounded():
    g = torch.Generator().manual_seed(3)
    lib = emu
    vals = [
        0,
        1,
        -1,
        2**63,
        -(2**63),
        2**64 - 1,
        2**100 + 12345,
        -(2**90) - 1,
        2**127 - 1,
        -(2**127),
    ]
    vals += [int(x) << int(s) for x, s in zip(torch.randint(-(2**62), 2**62, (200,), generator=g),
                                             torch.randint(0, 64, (200,), generator=g), strict=True)]  # fmt: skip
    for v in vals:
        u = v % (1 << 128)
        for shift in (0, 47, 100, -20):
            got = lib.host_fixsum_to_double(u >> 64, u & ((1 << 64) - 1), shift)
            assert got == float(Fraction(v) / Fraction(2) ** shift), (v, shift)


@needs_emu
def test_host_fixsum_scale_covers_the_range():
    lib = emu
    for lo, hi, k in [(-1.0, 1.0, 256), (0.0, 1e-30, 4), (-3e38, 3e38, 65536), (5.0, 5.0, 2)]:
        lo32, scale = ops.bin_scale(lo, hi, k)
        shift = lib.host_fixsum_shift(lo32, scale, k)
        m = max(abs(lo32), abs(lo32 + (k / scale if scale else 0.0)))
        assert -126 <= shift <= 127
        assert m * 2.0**shift < 2.0**47 or shift == -126


def _host_packed(idx: torch.Tensor, bits: int) -> torch.Tensor:
    v = idx.to(torch.int64).contiguous()
    out = torch.zeros(ops.packed_bytes(v.numel(), bits), dtype=torch.uint8)
    emu.host_pack(v.data_ptr(), v.numel(), bits, out.data_ptr())
    return out


@needs_emu
@pytest.mark.parametrize("bits", range(1, 17))
def test_host_group_pack_unpack_remap(bits):
    g = torch.Generator().manual_seed(bits)
    lib = emu
    for n in [0, *ODD]:
        idx = torch.randint(0, 1 << bits, (n,), generator=g)
        p = _host_packed(idx, bits)
        assert torch.equal(p, reference.pack(idx, bits))
        out = torch.empty(n, dtype=torch.int64)
        lib.host_unpack(p.data_ptr(), p.numel(), n, bits, out.data_ptr())
        assert torch.equal(out, idx)
        bits_out = 17 - bits
        tn = max(1, (1 << bits) - 3)
        table = torch.randint(0, 1 << bits_out, (tn,), generator=g, dtype=torch.int32)
        r = torch.zeros(ops.packed_bytes(n, bits_out), dtype=torch.uint8)
        lib.host_remap(
            p.data_ptr(), p.numel(), n, bits, table.data_ptr(), tn, r.data_ptr(), bits_out
        )
        want = torch.where(idx < tn, table.to(torch.int64)[idx.clamp(max=tn - 1)], 0)
        assert torch.equal(r, reference.pack(want, bits_out))
    bad = torch.tensor([-1, 1 << bits, 5 % (1 << bits)])
    assert torch.equal(
        _host_packed(bad, bits), reference.pack(torch.tensor([0, 0, 5 % (1 << bits)]), bits)
    )


@needs_emu
@pytest.mark.parametrize("bits", range(1, 17))
def test_host_words_decode_matches_unpack(bits):
    idx = torch.randint(0, 1 << bits, (32,), generator=torch.Generator().manual_seed(bits))
    words = reference.pack(idx, bits).view(torch.int32).contiguous()  # 32 * bits / 8 bytes
    out = torch.empty(32, dtype=torch.int32)
    emu.host_words_decode(words.data_ptr(), bits, out.data_ptr())
    assert torch.equal(out.to(torch.int64), idx)


@needs_emu
def test_host_tc_fragment_k_map_is_a_bijection_of_contiguous_runs():
    lib = emu
    seen = set()
    for t in range(4):
        phys = [
            lib.host_tc_phys_k(s, lk)
            for s in range(2)
            for lk in (2 * t, 2 * t + 1, 2 * t + 8, 2 * t + 9)
        ]
        assert sorted(phys) == list(range(8 * t, 8 * t + 8))  # one lane: 8 contiguous k
        seen.update(phys)
    assert seen == set(range(32))


def _host_matmul(x, p, n, bits, table, bias, mode):
    x = x.contiguous()
    y = torch.full((x.shape[0], n), float("nan"))
    emu.host_lut_matmul(x.data_ptr(), x.shape[0], x.shape[1], x.shape[1], p.data_ptr(), n, bits,
                           table.data_ptr(), _ptr(bias), y.data_ptr(), n, mode)  # fmt: skip
    return y


def _ptr(t):
    return 0 if t is None else t.data_ptr()


@needs_emu
@pytest.mark.parametrize("bits", range(1, 17))
def test_host_lut_matmul_fast_path_within_twice_torch_fp32(bits):
    for m, k, n in [(1, 32, 1), (3, 1024, 70), (9, 2080, 33)]:  # 2080: three split-K slices
        x, p, table, w64 = _matmul_case(m, k, n, bits, seed=m + k + bits, dev=None)
        bias = torch.randn(n)
        ref = x.double() @ w64.T + bias.double()
        y = _host_matmul(x, p, n, bits, table, bias, 0)
        torch_err = _err(x @ w64.float().T + bias, ref)
        assert _err(y, ref) <= 2 * torch_err + 1e-7 * float(ref.abs().max()), (m, k, n)


def _at_every_width(own: int, m: int, k: int, n: int, seed: int):
    """(x, bias, [(b, packed, table)] for b = own..16): one tensor's values and indices held at its
    own width and at every wider one (table padded with NaN)."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(1 << own, generator=g)
    idx = torch.randint(0, 1 << own, (n * k,), generator=g)
    x, bias = torch.randn(m, k, generator=g), torch.randn(n, generator=g)
    held = [(b, ops.pack(idx, b), ops.lut_table(values, b)) for b in range(own, 17)]
    return x, bias, held


@needs_emu
@pytest.mark.parametrize("m", [1, 2, 5, 9])
def test_host_lut_matmul_is_the_same_at_every_width_a_tensor_fits(m):
    # the exact path sums in one order at every width: holding a tensor at a narrower width
    # (wsq's per-tensor runtime widths) never changes a result. 2080: three split-K slices.
    for own in (1, 3, 4, 8, 9):
        x, bias, held = _at_every_width(own, m, 2080, 33, seed=own * 10 + m)
        outs = [_host_matmul(x, p, 33, b, t, bias, 0) for b, p, t in held]
        assert all(torch.equal(o, outs[0]) for o in outs[1:]), (own, m)


@needs_emu
@pytest.mark.parametrize("bits", [1, 2, 4, 5, 8])
def test_host_tensor_core_fragments_compute_x_w_t(bits):
    """The kernel's fragment assembly through an mma emulated from the PTX layout tables."""
    for m, k, n in [(9, 32, 16), (16, 96, 20), (12, 64, 3)]:
        x, p, table, w64 = _matmul_case(m, k, n, bits, seed=m * k + bits, dev=None)
        bias = torch.randn(n)
        y = _host_matmul(x, p, n, bits, table, bias, 1)
        xb = x.bfloat16().double()
        wb = w64.float().bfloat16().double()
        ref = (xb @ wb.T + bias.double()).float()
        torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)


# ============================================================================ on a GPU


def _cpu(t):
    return t.cpu() if isinstance(t, torch.Tensor) else t


def _rand(n, dtype, dev, seed=0, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=g) * scale).to(dtype).to(dev)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", [*ODD, 100003])
def test_minmax(dev, dtype, n):
    w = _rand(n, dtype, dev, seed=n)
    assert ops.minmax(w) == ops.minmax(w.cpu()) == reference.minmax(w.cpu())


def test_minmax_nonfinite_and_signed_zero(dev):
    w = torch.tensor([0.0, -0.0, 1.0, float("nan"), float("-inf")], device=dev)
    r = ops.minmax_op(w).cpu().tolist()
    assert r == ops.minmax_op(w.cpu()).tolist() and r[2] == 2
    with pytest.raises(ValueError, match="2 NaN or Inf"):
        ops.minmax(w)
    z = ops.minmax_op(torch.tensor([-0.0, 0.0], device=dev)).cpu()
    assert math.copysign(1, z[0]) < 0 and math.copysign(1, z[1]) > 0
    assert ops.minmax_op(torch.empty(0, device=dev)).cpu().tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("k", [1, 2, 7, 16, 17, 256, 257, 4096, 65536])
@pytest.mark.parametrize("dtype", FLOATS)
def test_histogram_matches_cpu_and_reference(dev, k, dtype):
    for n in [1, 1023, 200003]:
        w = _rand(n, dtype, dev, seed=k + n)
        lo, hi = ops.minmax(w)
        lo32, scale = ops.bin_scale(lo, hi, k)
        c, s, i = ops.histogram(w, k, lo32, scale, indices=True)
        cc, cs, ci = ops.histogram(w.cpu(), k, lo32, scale, indices=True)
        assert torch.equal(i.cpu(), ci) and i.dtype == ci.dtype
        assert torch.equal(i.cpu().to(torch.int64), reference.bin_indices(w.cpu(), k, lo32, scale))
        assert torch.equal(c.cpu(), cc)
        torch.testing.assert_close(s.cpu(), cs, rtol=1e-12, atol=1e-12)
        c2, s2, _ = ops.histogram(w, k, lo32, scale)
        assert torch.equal(c2, c) and torch.equal(
            s2, s
        )  # bitwise repeatable, with or without indices


def test_histogram_strided_empty_and_clamped(dev):
    base = _rand(4001, torch.float32, dev, seed=9)
    w = base[1::2]  # strided and misaligned
    lo32, scale = ops.bin_scale(-0.02, 0.02, 64)  # most values clamp into the end bins
    for x in (w, base[1:]):
        c, s, i = ops.histogram(x, 64, lo32, scale, indices=True)
        cc, cs, ci = ops.histogram(x.cpu(), 64, lo32, scale, indices=True)
        assert torch.equal(c.cpu(), cc) and torch.equal(i.cpu(), ci)
        torch.testing.assert_close(s.cpu(), cs, rtol=1e-12, atol=1e-12)
    c, s, i = ops.histogram(torch.empty(0, device=dev), 5, 0.0, 1.0, indices=True)
    assert c.cpu().tolist() == [0] * 5 and s.cpu().tolist() == [0.0] * 5 and i.numel() == 0


def test_uniform_bins_on_gpu_matches_cpu(dev):
    w = _rand(300007, torch.float32, dev, seed=5).reshape(-1, 7)
    for k in (3, 200, 1024):
        b, bc = wsq.uniform_bins(w, k), wsq.uniform_bins(w.cpu(), k)
        assert torch.equal(b.indices.cpu(), bc.indices) and torch.equal(b.counts.cpu(), bc.counts)
        torch.testing.assert_close(b.codebook.cpu(), bc.codebook, rtol=1e-6, atol=0)


@pytest.mark.parametrize("din", [torch.uint8, torch.uint16, torch.int32, torch.int64])
@pytest.mark.parametrize("dout", [torch.uint8, torch.uint16, torch.int32, torch.int64])
def test_relabel(dev, din, dout):
    idx = torch.randint(0, 200, (1025,)).to(din)
    table = torch.randint(0, 250, (200,), dtype=torch.int32)
    got = ops.relabel(idx.to(dev), table.to(dev), dout)
    assert torch.equal(got.cpu(), ops.relabel(idx, table, dout))
    bad = ops.relabel_op(torch.tensor([5, 300], dtype=torch.int64, device=dev), table.to(dev), dout)
    assert bad.cpu().tolist() == [int(table[5]), 0]  # out of table: 0, no error on CUDA


@pytest.mark.parametrize("din", FLOATS)
@pytest.mark.parametrize("dout", FLOATS)
def test_fake_quant_bitwise_and_in_place(dev, din, dout):
    k = 300
    for n in [*ODD, 65539]:
        w = _rand(n, din, dev, seed=n)
        lo, hi = ops.minmax(w)
        lo32, scale = ops.bin_scale(lo, hi, k)
        values = torch.linspace(-1, 1, k).to(dev)
        out = torch.empty(n, dtype=dout, device=dev)
        ops.fake_quant(w, k, lo32, scale, values, out)
        ref = ops.fake_quant(w.cpu(), k, lo32, scale, values.cpu(), torch.empty(n, dtype=dout))
        assert torch.equal(out.cpu().view(torch.int16 if dout != torch.float32 else torch.int32),
                           ref.view(torch.int16 if dout != torch.float32 else torch.int32))  # fmt: skip
        if din == dout:
            w2 = w.clone()
            ops.fake_quant(w2, k, lo32, scale, values, w2)
            assert torch.equal(w2, out)
    big = torch.linspace(-1, 1, 20000).to(dev)  # k beyond the shared-memory table
    lo32, scale = ops.bin_scale(-1, 1, 20000)
    vals = torch.randn(20000).to(dev)
    torch.testing.assert_close(ops.fake_quant(big, 20000, lo32, scale, vals).cpu(),
                               ops.fake_quant(big.cpu(), 20000, lo32, scale, vals.cpu()), rtol=0, atol=0)  # fmt: skip


@pytest.mark.parametrize("bits", range(1, 17))
def test_pack_unpack_remap(dev, bits):
    g = torch.Generator().manual_seed(bits)
    for n in [0, *ODD, 100001]:
        idx = torch.randint(0, 1 << bits, (n,), generator=g)
        for dt in (torch.int64, torch.int32, torch.uint16, torch.uint8):
            if bits > 8 and dt == torch.uint8:
                continue
            p = ops.pack(idx.to(dt).to(dev), bits)
            assert torch.equal(p.cpu(), reference.pack(idx, bits))
        p_cpu = reference.pack(idx, bits)
        for dt in (torch.int64, torch.int32, torch.uint16) + ((torch.uint8,) if bits <= 8 else ()):
            assert torch.equal(ops.unpack(p, n, bits, dt).cpu().to(torch.int64), idx)
        bits_out = max(1, bits - 1)
        table = torch.randint(0, 1 << bits_out, (1 << bits,), generator=g, dtype=torch.int32)
        r = ops.remap_packed(p, n, bits, table.to(dev), bits_out)
        assert torch.equal(r.cpu(), ops.remap_packed(p_cpu, n, bits, table, bits_out))
        assert torch.equal(r.cpu(), reference.remap_packed(p_cpu, n, bits, table, bits_out))


def test_pack_family_misaligned_strided_and_invalid(dev):
    bits, n = 5, 1001
    idx = torch.randint(0, 32, (n,))
    buf = torch.zeros(ops.packed_bytes(n, bits) + 3, dtype=torch.uint8, device=dev)
    p = buf[3:]  # the stream at an odd address: byte-wise group access
    p.copy_(reference.pack(idx, bits).to(dev))
    assert torch.equal(ops.unpack(p, n, bits, torch.int64).cpu(), idx)
    strided = torch.stack([idx, idx]).T.to(dev)[:, 0]  # non-contiguous indices
    assert torch.equal(ops.pack(strided, bits).cpu(), reference.pack(idx, bits))
    bad = ops.pack_op(torch.tensor([3, -1, 40, 7], device=dev), bits)
    assert torch.equal(bad.cpu(), reference.pack(torch.tensor([3, 0, 0, 7]), bits))
    short = torch.tensor([1, 2], dtype=torch.int32, device=dev)
    r = ops.remap_packed_op(p, n, bits, short, 2)
    assert torch.equal(
        r.cpu(), reference.pack(torch.where(idx < 2, short.cpu()[idx.clamp(max=1)], 0), 2)
    )


@pytest.mark.parametrize("bits", [1, 3, 4, 8, 11, 13, 14, 16])
@pytest.mark.parametrize("dtype", FLOATS)
def test_dequant_and_gather_rows(dev, bits, dtype):
    g = torch.Generator().manual_seed(bits)
    n_code = min(1 << bits, 1000)
    table = ops.lut_table(torch.randn(n_code, generator=g), bits)
    rows, cols = 37, 53
    idx = torch.randint(0, n_code, (rows * cols,), generator=g)
    p = reference.pack(idx, bits)
    got = ops.dequant(p.to(dev), rows * cols, bits, table.to(dev), dtype)
    assert torch.equal(got.cpu(), ops.dequant(p, rows * cols, bits, table, dtype))
    assert torch.equal(got.cpu(), reference.dequant(p, rows * cols, bits, table, dtype))
    ids = torch.tensor([[0, 36], [5, 5], [20, 1]])
    gr = ops.gather_rows(p.to(dev), ids.to(dev), rows, cols, bits, table.to(dev), dtype)
    assert torch.equal(gr.cpu(), ops.gather_rows(p, ids, rows, cols, bits, table, dtype))
    bad = ops.gather_rows_op(p.to(dev), torch.tensor([1, -1, rows], device=dev), rows, cols, bits,
                              table.to(dev), dtype).cpu()  # fmt: skip
    assert torch.equal(bad[0], got.cpu()[cols : 2 * cols]) and bad[1:].float().isnan().all()


@functools.lru_cache(maxsize=64)
def _matrix(k: int, n: int, bits: int):
    """(packed W, NaN-padded table, W as float64) for an (n, k) matrix, built once per shape."""
    g = torch.Generator().manual_seed(k * 17 + n + bits)
    n_code = min(1 << bits, 300)
    codebook = torch.randn(n_code, generator=g) * 0.05
    idx = torch.randint(0, n_code, (n * k,), generator=g)
    return (
        reference.pack(idx, bits),
        ops.lut_table(codebook, bits),
        codebook.double()[idx].reshape(n, k),
    )


def _matmul_case(m, k, n, bits, seed, dev):
    p, table, w64 = _matrix(k, n, bits)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed))
    return x, p, table, w64


def _err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.double().cpu() - ref).abs().max())


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 9, 16, 64])
@pytest.mark.parametrize("k", [32, 53, 1023, 1024, 1025, 4096])
@pytest.mark.parametrize("bits", [1, 3, 4, 8, 13, 16])
def test_lut_matmul_error_within_twice_torch_fp32(dev, m, k, bits):
    n = 113
    x, p, table, w64 = _matmul_case(m, k, n, bits, seed=m * 31 + k + bits, dev=dev)
    bias = torch.randn(n)
    ref = x.double() @ w64.T + bias.double()
    y = ops.lut_matmul(x.to(dev), p.to(dev), n, bits, table.to(dev), bias.to(dev))
    torch_err = _err(x.to(dev) @ w64.float().to(dev).T + bias.to(dev), ref)
    assert _err(y, ref) <= 2 * torch_err + 1e-7 * float(ref.abs().max())
    assert torch.equal(
        y, ops.lut_matmul(x.to(dev), p.to(dev), n, bits, table.to(dev), bias.to(dev))
    )
    if m == 1:  # a strided x: every other element of a wider row
        xs = torch.stack([x, -x], dim=-1).reshape(m, 2 * k)[:, ::2].to(dev)
        assert torch.equal(ops.lut_matmul(xs, p.to(dev), n, bits, table.to(dev), bias.to(dev)), y)


@needs_emu
@pytest.mark.parametrize("m", [1, 2, 4, 8, 9])
@pytest.mark.parametrize("bits", [1, 3, 4, 8, 13, 16])
def test_lut_matmul_bitwise_equal_to_host_emulation(dev, m, bits):
    for k, n in [(1024, 70), (2080, 129)]:
        x, p, table, w64 = _matmul_case(m, k, n, bits, seed=m + k, dev=dev)
        bias = torch.randn(n)
        y = ops.lut_matmul(x.to(dev), p.to(dev), n, bits, table.to(dev), bias.to(dev))
        assert torch.equal(y.cpu(), _host_matmul(x, p, n, bits, table, bias, 0)), (k, n)


@pytest.mark.parametrize("m", [1, 2, 9, 64])
def test_lut_matmul_is_the_same_at_every_width_a_tensor_fits(dev, m):
    # on the device, exact mode (the default): K not a multiple of 32 takes the generic path
    for own, k in [(1, 2080), (4, 1024), (8, 1000), (9, 2080)]:
        x, bias, held = _at_every_width(own, m, k, 33, seed=own + m)
        outs = [
            ops.lut_matmul(x.to(dev), p.to(dev), 33, b, t.to(dev), bias.to(dev)) for b, p, t in held
        ]
        assert all(torch.equal(o, outs[0]) for o in outs[1:]), (own, k, m)


@pytest.mark.parametrize("k", [53, 113, 256])
@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_lut_matmul_identity_gives_w_exactly(dev, k, bits):
    n = 3 if k == 53 else 41
    _, p, table, w64 = _matmul_case(1, k, n, bits, seed=k + bits, dev=dev)
    y = ops.lut_matmul(torch.eye(k, device=dev), p.to(dev), n, bits, table.to(dev))
    assert torch.equal(y.cpu(), w64.float().T)


def test_lut_matmul_empty_and_batched_shapes(dev):
    _, p, table, w64 = _matmul_case(1, 64, 5, 4, seed=1, dev=dev)
    p, table = p.to(dev), table.to(dev)
    assert ops.lut_matmul(torch.empty(0, 64, device=dev), p, 5, 4, table).shape == (0, 5)
    x = torch.randn(2, 3, 64, device=dev)
    y = ops.lut_matmul(x, p, 5, 4, table)
    torch.testing.assert_close(y.cpu(), (x.cpu().double() @ w64.T).float(), rtol=1e-5, atol=1e-5)
    bias = torch.randn(5, device=dev)
    y0 = ops.lut_matmul(torch.empty(4, 0, device=dev), torch.empty(0, dtype=torch.uint8, device=dev),
                        5, 4, table, bias)  # fmt: skip
    assert torch.equal(y0.cpu(), bias.cpu().expand(4, 5))


@pytest.mark.parametrize("m", [9, 16, 40, 64, 130])
@pytest.mark.parametrize("bits", [1, 4, 6, 8])
def test_lut_matmul_tensor_core_path_within_twice_torch_bf16(dev, m, bits):
    k, n = 1024, 300
    x, p, table, w64 = _matmul_case(m, k, n, bits, seed=m + bits, dev=dev)
    ref = x.double() @ w64.T
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        y = ops.lut_matmul(x.to(dev), p.to(dev), n, bits, table.to(dev))
        y2 = ops.lut_matmul(x.to(dev), p.to(dev), n, bits, table.to(dev))
    finally:
        torch.set_float32_matmul_precision(prev)
    xb, wb = x.to(dev).bfloat16(), w64.to(dev).bfloat16()
    torch_err = _err(torch.mm(xb.float(), wb.float().T), ref)  # bf16 inputs, float32 accumulation
    assert _err(y, ref) <= 2 * torch_err + 1e-7 * float(ref.abs().max())
    assert torch.equal(y, y2)


def test_index_arithmetic_past_2_31(dev):
    free, _ = torch.cuda.mem_get_info(dev)
    n = (1 << 31) + 77
    if free < 6 * n:
        pytest.skip(f"needs ~{6 * n >> 30} GiB free on {dev}")
    pattern = torch.tensor([1, 0, 1, 1, 0, 0, 0, 1] * 8, dtype=torch.int64)
    packed = (
        reference.pack(pattern, 1)
        .to(dev)
        .repeat(ops.packed_bytes(n, 1) // 8 + 1)[: ops.packed_bytes(n, 1)]
    )
    out = ops.unpack(packed, n, 1, torch.uint8)
    tail = out[-77:].cpu().to(torch.int64)
    assert torch.equal(tail, pattern[torch.arange(n - 77, n) % 64])  # element i is pattern[i % 64]
    want = (n // 64) * int(pattern.sum()) + int(pattern[: n % 64].sum())
    assert int(out.sum(dtype=torch.int64)) == want
    del out
    h = torch.full((n,), 0.5, dtype=torch.float16, device=dev)
    h[-1] = 1.0
    c, s, _ = ops.histogram(h, 4, *ops.bin_scale(0.0, 1.0, 4))
    assert c.cpu().tolist() == [0, 0, n - 1, 1] and s.cpu().tolist() == [
        0.0,
        0.0,
        0.5 * (n - 1),
        1.0,
    ]
