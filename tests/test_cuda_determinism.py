"""Repeatability of the CUDA histogram and the bounded split-K workspace of the CUDA LUT matmul.

* Host side (no GPU needed): the histogram's arithmetic, emulated on the host from the kernel's own
  __host__ __device__ functions (the test-only module of tests/_host_emulation.py), gives
  bitwise-identical sums whatever the order and grouping of the elements, clamped outliers and
  NaN/Inf included (a float64 accumulation of the outliers, as the kernel once did, fails this);
  the matmul's workspace size does not grow with the batch (where wsq._cuda is built).
* On a CUDA device (skipped otherwise): the same two properties on the device, and the device's
  sums equal the host emulation's bit for bit.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from _host_emulation import emu, needs_emu

import wsq
from wsq import reference
from wsq.kernels import native as _native
from wsq.kernels import ops

needs_build = pytest.mark.skipif(
    not _native.cuda_built(), reason="wsq._cuda was not built (no nvcc)"
)
CUDA = bool(wsq.info()["cuda_available"])
needs_gpu = pytest.mark.skipif(not CUDA, reason="no CUDA device visible to wsq")
MIB = 1 << 20


def _host_hist(w: torch.Tensor, k: int, lo: float, scale: float, block: int, priv: bool):
    w = w.float().contiguous()
    counts = torch.empty(k, dtype=torch.int64)
    sums = torch.empty(k, dtype=torch.float64)
    emu.host_histogram(
        w.data_ptr(), w.numel(), k, lo, scale, block, priv, counts.data_ptr(), sums.data_ptr()
    )
    return counts, sums


def _clamped_case(n: int, seed: int) -> torch.Tensor:
    """Weights whose tails are far outside a narrow [lo, hi], with magnitudes over 30 decades, so
    that a float64 sum of the clamped values depends on the order they are added in."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g) * 0.05
    tail = torch.rand(n, generator=g) < 0.2
    mag = torch.pow(10.0, torch.randint(-8, 22, (n,), generator=g).float())
    return torch.where(tail, torch.sign(torch.randn(n, generator=g)) * mag, w)


def _exact(vals: list[float]) -> Fraction:
    return sum((Fraction(v) for v in vals), Fraction(0))


@needs_emu
@pytest.mark.parametrize("k", [1, 2, 16, 17, 300])
def test_host_histogram_sums_do_not_depend_on_order_with_clamped_outliers(k):
    w = _clamped_case(20011, seed=k)
    lo32, scale = ops.bin_scale(-0.03, 0.03, k)  # most tails clamp into the end bins, 20% outliers
    ref_c, _ = reference.histogram(w, k, lo32, scale)
    results = []
    for seed in range(4):
        perm = torch.randperm(w.numel(), generator=torch.Generator().manual_seed(seed))
        x = w[perm] if seed else w
        for block, priv in [(1000, False), (7, False), (x.numel(), k <= 16)]:
            c, s = _host_hist(x, k, lo32, scale, block, priv)
            assert torch.equal(c, ref_c)
            results.append(s)
    for s in results[1:]:  # bitwise, not close: the order must not matter at all
        assert torch.equal(s, results[0])
    idx = reference.bin_indices(w, k, lo32, scale)
    for b in {0, k - 1}:
        members = w[idx == b].tolist()
        exact = _exact(members)
        mags = _exact([abs(v) for v in members])
        assert abs(Fraction(results[0][b].item()) - exact) <= mags * Fraction(2) ** -40


@needs_emu
def test_host_histogram_outlier_nan_and_infinities_in_end_bins():
    lo32, scale = ops.bin_scale(-1.0, 1.0, 4)
    inf, nan = float("inf"), float("nan")
    # (values, members of bin 0, members of bin 3); NaN lands in bin 0 on the device
    for vals, b0, b3 in [
        ([-1e30, 5e29, 0.9, 1e20], [0], [1, 2, 3]),
        ([-inf, -1e30, 2.0, inf], [0, 1], [2, 3]),
        ([nan, 0.9, inf, -inf], [0, 3], [1, 2]),
        ([0.0, 3e38, 3e38, -inf], [3], [1, 2]),  # float32 maxima add up finite in float64
    ]:
        w = torch.tensor(vals, dtype=torch.float32)
        for priv in (False, True):
            _, s = _host_hist(w, 4, lo32, scale, 3, priv)
            for got, members in ((s[0].item(), b0), (s[3].item(), b3)):
                want = (
                    math.fsum(w[members].double().tolist())
                    if all(math.isfinite(v) for v in w[members].tolist())
                    else sum(w[members].double().tolist())
                )
                if math.isnan(want):
                    assert math.isnan(got), (vals, got)
                else:
                    assert got == pytest.approx(want, rel=1e-12), (vals, got, want)


@needs_build
def test_lut_matmul_workspace_does_not_grow_with_the_batch():
    lib = _native.cuda()
    k, n = 4096, 11008  # an MLP projection: unchunked partials were ~721 MB at batch 4096
    fma = [lib.lut_matmul_workspace_bytes(m, k, n, 4, 0) for m in (1, 8, 64, 512, 4096, 65536)]
    assert max(fma) <= 64 * MIB + MIB, fma
    assert fma[-1] == fma[-2] == fma[-3]  # flat once the cap is reached
    # one batch tile's partials exceed the cap: one tile per launch, still independent of M
    wide = [lib.lut_matmul_workspace_bytes(m, 8192, 256000, 4, 0) for m in (64, 4096)]
    assert wide[0] == wide[1] <= 4 * 8 * 8 * 256000 + MIB
    for m in (64, 4096):  # tensor-core mode: a bf16 copy of x (2 * M * K bytes) plus bounded parts
        assert lib.lut_matmul_workspace_bytes(m, k, n, 4, 1) <= 2 * m * k + 65 * MIB
    assert lib.lut_matmul_workspace_bytes(0, k, n, 4, 0) == 16


# ------------------------------------------------------------------------------------ device


@needs_gpu
@needs_emu
@pytest.mark.parametrize("k", [2, 16, 17, 4096])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_histogram_with_range_inside_the_data_is_bitwise_repeatable(k, dtype):
    dev = torch.device("cuda")
    w = _clamped_case(1 << 20, seed=k).clamp(-6e4, 6e4).to(dtype)  # finite in float16 too
    lo32, scale = ops.bin_scale(-0.03, 0.03, k)
    x = w.to(dev)
    c1, s1, _ = ops.histogram(x, k, lo32, scale)
    c2, s2, _ = ops.histogram(x, k, lo32, scale, indices=True)
    perm = torch.randperm(w.numel(), generator=torch.Generator().manual_seed(1))
    c3, s3, _ = ops.histogram(w[perm].to(dev), k, lo32, scale)
    for c, s in ((c2, s2), (c3, s3)):
        assert torch.equal(c, c1) and torch.equal(s, s1)
    hc, hs = _host_hist(w.float(), k, lo32, scale, (1 << 24) - 1, False)
    assert torch.equal(c1.cpu(), hc) and torch.equal(s1.cpu(), hs)  # the emulation, bit for bit


@needs_gpu
def test_lut_matmul_chunked_launches_equal_single_tiles():
    dev = torch.device("cuda")
    k, n, bits, m = 4096, 11008, 4, 1001  # partials of 1001 rows exceed the cap: 3 launches
    g = torch.Generator().manual_seed(0)
    p = reference.pack(torch.randint(0, 16, (n * k,), generator=g), bits).to(dev)
    table = ops.lut_table(torch.randn(16, generator=g).to(dev), bits)
    x = torch.randn(m, k, generator=g).to(dev)
    y = ops.lut_matmul(x, p, n, bits, table)
    for r0, r1 in [(0, 9), (368, 377), (376, 385), (992, 1001)]:  # tile-aligned slices, MT = 8
        assert torch.equal(y[r0:r1], ops.lut_matmul(x[r0:r1], p, n, bits, table)), (r0, r1)
    assert torch.equal(y, ops.lut_matmul(x, p, n, bits, table))
