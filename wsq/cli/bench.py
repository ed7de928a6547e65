"""Kernel microbenchmarks shared by ``wsq bench`` and bench/cpu_kernels.py (one copy of the logic).

Every kernel is first validated against wsq.reference at a small size, then timed (median of
repeats, same thread count on both sides). Rows are dicts; ratios > 1 mean wsq is faster or moves
bytes faster: "x copy" is the kernel's bandwidth over the machine's copy bandwidth measured in the
same run (torch clone of the same bytes), "vs torch fp32" is torch's dense F.linear time over
wsq's LUT matmul time ("vs bf16" and "vs int8 dyn" the same for torch's bf16 F.linear and dynamic
int8 Linear), "vs wsq" is a peer's time over wsq's.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "median_time",
    "gbps",
    "validate",
    "bench_binning",
    "bench_remap",
    "bench_matmul",
    "print_table",
    "run",
]


def median_time(
    fn: Callable[[], object], *, repeats: int = 7, warmup: int = 2, min_time: float = 0.0
) -> float:
    """Median wall time of fn() in seconds over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    t_start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - t_start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 10 * repeats:
            break
    return statistics.median(times)


def gbps(nbytes: float, t: float) -> float:
    """Gigabytes per second for nbytes moved in t seconds."""
    return nbytes / t / 1e9


def validate() -> None:
    """Assert that every timed kernel matches wsq.reference (exact for integers)."""
    from wsq import reference
    from wsq.kernels import ops

    g = torch.Generator().manual_seed(0)
    w = torch.randn(100_003, generator=g)
    lo, hi = float(w.min()), float(w.max())
    lo32, scale = reference.bin_scale(lo, hi, 256)
    c, s, idx = ops.histogram(w, 256, lo32, scale, indices=True)
    rc, rs = reference.histogram(w, 256, lo32, scale)
    assert torch.equal(c, rc), "histogram counts differ from wsq.reference"
    assert torch.equal(idx.long(), reference.bin_indices(w, 256, lo32, scale)), "bin indices differ"
    vals = torch.randn(256, generator=g)
    assert torch.equal(
        ops.fake_quant(w, 256, lo32, scale, vals), reference.fake_quant(w, 256, lo32, scale, vals)
    ), "fake_quant differs from wsq.reference"
    for bits in (3, 4, 8):
        q = torch.randint(0, 1 << bits, (10_001,), generator=g, dtype=torch.int64)
        p = ops.pack(q.to(torch.int32), bits)
        assert torch.equal(p, reference.pack(q, bits)), f"pack at {bits} bits differs"
        table = torch.randint(0, 1 << bits, (1 << bits,), generator=g, dtype=torch.int32)
        assert torch.equal(
            ops.remap_packed(p, q.numel(), bits, table),
            reference.remap_packed(p, q.numel(), bits, table, bits),
        ), f"remap_packed at {bits} bits differs"
        cb = torch.randn(1 << bits, generator=g)
        x = torch.randn(5, 53, generator=g)
        wp = ops.pack(
            torch.randint(0, 1 << bits, (113 * 53,), generator=g, dtype=torch.int32), bits
        )
        y = ops.lut_matmul(x, wp, 113, bits, ops.lut_table(cb, bits))
        yr = reference.lut_matmul(x, wp, 113, 53, bits, cb)
        assert torch.allclose(y, yr, rtol=1e-5, atol=1e-5), f"lut_matmul at {bits} bits differs"


def bench_binning(n: int, rows: list[dict], quick: bool, *, kmeans: bool = True) -> None:
    """Copy bandwidth, minmax, the fused histogram pass, uniform_bins, fake_quant; peers:
    torch.bucketize, numpy arithmetic binning and (kmeans=True) scikit-learn's KMeans."""
    import numpy as np

    import wsq
    from wsq import reference
    from wsq.kernels import native as _native
    from wsq.kernels import ops

    g = torch.Generator().manual_seed(1)
    w = torch.randn(n, generator=g) * 0.05
    k = 256
    lo, hi = ops.minmax(w)
    lo32, scale = reference.bin_scale(lo, hi, k)
    t_copy = median_time(lambda: w.clone())
    copy_bw = gbps(2 * w.nbytes, t_copy)
    rows.append({"kernel": "torch clone (copy bandwidth)", "n": n, "ms": t_copy * 1e3,
                 "GB/s": copy_bw, "x copy": 1.0})  # fmt: skip
    # clone pays page faults for a fresh buffer (slow on VMs); copy_ into a warm buffer is the
    # machine's streaming bandwidth. Both are reported so no ratio flatters the kernels.
    dst = torch.empty_like(w)
    idx_out = torch.empty(n, dtype=torch.uint8)
    counts = torch.empty(k, dtype=torch.int64)
    sums = torch.empty(k, dtype=torch.float64)
    c_mod = _native.cpu()  # the raw kernel, to time the pass without the op's allocations

    # The pass and the warm copy_ it is held to are timed in the same interleaved rounds, so the
    # ratio between them survives the load drifting on a shared machine.
    def bin_pass():
        c_mod.histogram(w.data_ptr(), n, 0, k, lo32, scale, counts.data_ptr(), sums.data_ptr(),
                        idx_out.data_ptr(), 3)  # fmt: skip

    t = interleaved_medians(
        {"copy_": lambda: dst.copy_(w), "bin": bin_pass},
        repeats=5 if quick else 15,
    )
    t_copy_, t_hw = t["copy_"], t["bin"]
    rows.append({"kernel": "torch copy_ into warm buffer", "n": n, "ms": t_copy_ * 1e3,
                 "GB/s": gbps(2 * w.nbytes, t_copy_), "x copy": gbps(2 * w.nbytes, t_copy_) / copy_bw})  # fmt: skip
    rows.append({"kernel": f"bin pass into warm index buffer k={k}", "n": n, "ms": t_hw * 1e3,
                 "GB/s": gbps(w.nbytes + n, t_hw), "x copy": gbps(w.nbytes + n, t_hw) / copy_bw,
                 "x copy_": gbps(w.nbytes + n, t_hw) / gbps(2 * w.nbytes, t_copy_)})  # fmt: skip
    t_mm = median_time(lambda: ops.minmax(w))
    rows.append({"kernel": "minmax pass", "n": n, "ms": t_mm * 1e3, "GB/s": gbps(w.nbytes, t_mm),
                 "x copy": gbps(w.nbytes, t_mm) / copy_bw})  # fmt: skip
    t_h = median_time(lambda: ops.histogram(w, k, lo32, scale, indices=True))
    hb = w.nbytes + n  # read fp32, write uint8 index
    rows.append({"kernel": f"bin+count+sum+index pass k={k}", "n": n, "ms": t_h * 1e3,
                 "GB/s": gbps(hb, t_h), "x copy": gbps(hb, t_h) / copy_bw})  # fmt: skip
    t_ub = median_time(lambda: wsq.uniform_bins(w, k), repeats=5)
    rows.append({"kernel": f"uniform_bins k={k} (all passes)", "n": n, "ms": t_ub * 1e3,
                 "GB/s": gbps(hb, t_ub), "x copy": gbps(hb, t_ub) / copy_bw})  # fmt: skip
    edges = torch.linspace(lo, hi, k + 1)[1:-1].contiguous()
    t_bk = median_time(lambda: torch.bucketize(w, edges), repeats=3, warmup=1)
    rows.append({"kernel": "torch.bucketize (peer)", "n": n, "ms": t_bk * 1e3,
                 "vs wsq": t_bk / t_h})  # fmt: skip
    wn = w.numpy()

    def np_bin():
        t = (wn - np.float32(lo32)) * np.float32(scale)
        np.floor(t, out=t)
        np.clip(t, 0, k - 1, out=t)
        return t.astype(np.uint8)

    t_np = median_time(np_bin, repeats=3, warmup=1)
    rows.append({"kernel": "numpy arithmetic binning (peer)", "n": n, "ms": t_np * 1e3,
                 "vs wsq": t_np / t_h})  # fmt: skip
    if kmeans:
        try:
            from sklearn.cluster import KMeans

            m = 200_000 if quick else 1_000_000
            sub = w[:m].numpy().reshape(-1, 1)
            t_km = median_time(
                lambda: KMeans(256, n_init=1, random_state=0).fit(sub), repeats=1, warmup=0
            )
            t_ub1 = median_time(lambda: wsq.uniform_bins(w[:m], 256))
            rows.append({"kernel": f"sklearn KMeans(256, n_init=1) on {m}", "n": m,
                         "ms": t_km * 1e3, "vs wsq": t_km / t_ub1})  # fmt: skip
        except ImportError:
            print("scikit-learn not installed: KMeans comparison skipped", file=sys.stderr)
    vals = torch.randn(k, generator=g)
    out = torch.empty_like(w)
    t_fq = median_time(lambda: ops.fake_quant(w, k, lo32, scale, vals, out=out))
    rows.append({"kernel": "fake_quant (read fp32, write fp32)", "n": n, "ms": t_fq * 1e3,
                 "GB/s": gbps(2 * w.nbytes, t_fq),
                 "x copy": gbps(2 * w.nbytes, t_fq) / copy_bw})  # fmt: skip


def bench_remap(n: int, rows: list[dict]) -> None:
    """remap_packed (the merge kernel) at several bit widths against a copy of the packed bytes."""
    from wsq.kernels import ops

    g = torch.Generator().manual_seed(2)
    for bits_in, bits_out in ((8, 8), (8, 6), (4, 4), (10, 7)):
        q = torch.randint(0, 1 << bits_in, (n,), generator=g, dtype=torch.int32)
        p = ops.pack(q, bits_in)
        table = torch.randint(0, 1 << bits_out, (1 << bits_in,), generator=g, dtype=torch.int32)
        t_copy = median_time(lambda p=p: p.clone())
        copy_bw = gbps(2 * p.numel(), t_copy)
        t = median_time(
            lambda p=p, t=table, bi=bits_in, bo=bits_out: ops.remap_packed(p, n, bi, t, bo)
        )
        nb = p.numel() + ops.packed_bytes(n, bits_out)
        rows.append({"kernel": f"remap_packed {bits_in}->{bits_out} bits", "n": n, "ms": t * 1e3,
                     "GB/s": gbps(nb, t), "x copy": gbps(nb, t) / copy_bw})  # fmt: skip


def interleaved_medians(
    fns: dict[str, Callable[[], object]],
    *,
    repeats: int = 15,
    clock: Callable[[], float] | None = None,
) -> dict:
    """Median seconds per named fn, timed in interleaved rounds (one call of each per round).

    On a shared machine the load drifts during a run; interleaving puts every contender under the
    same drift, so the ratios between them hold even when the absolute times wander. `clock`
    defaults to bench_clock()."""
    clock = bench_clock() if clock is None else clock
    for f in fns.values():
        f()
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = clock()
            f()
            times[k].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_clock() -> Callable[[], float]:
    """The calling thread's CPU time when torch (and so wsq's OpenMP) runs on one thread: every
    contender then computes on the calling thread, and time the scheduler gives to other processes
    of an oversubscribed machine is not counted. Wall time (perf_counter) otherwise."""
    return time.thread_time if torch.get_num_threads() == 1 else time.perf_counter


def _dynamic_int8(wd: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch's dynamic int8 Linear (fbgemm / x86 engine): the peer a CPU user would pick."""
    import warnings

    lin = torch.nn.Linear(wd.shape[1], wd.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(wd)
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8
        )
    return q


def bench_matmul(
    rows: list[dict],
    quick: bool,
    *,
    batches=(1, 8, 64),
    shapes=None,
    isas: tuple[str, ...] | None = None,
    bits_list=(4, 8),
    repeats: int = 15,
) -> None:
    """lut_matmul at each ISA level against its peers on the same inputs and threads: torch's dense
    fp32 and bf16 F.linear on the dequantized weight, and torch's dynamic int8 Linear.

    shapes: (out_features, in_features) pairs (default 4096x4096, plus 11008x4096 unless quick).
    isas: levels to time wsq at (default: the active one). Every contender of one (shape, batch)
    is timed in the same interleaved rounds (interleaved_medians). "x copy" is the packed weight's
    read bandwidth over the machine's copy bandwidth (a warm copy_ of the dense weight, same run).
    """
    import wsq
    from wsq.kernels import native as _native
    from wsq.kernels import ops

    isas = (ops.get_isa(),) if isas is None else tuple(isas)
    g = torch.Generator().manual_seed(3)
    if shapes is None:
        shapes = [(4096, 4096)] if quick else [(4096, 4096), (11008, 4096)]
    for n_out, k_in in shapes:
        w = torch.randn(n_out, k_in, generator=g) * 0.02
        dst = torch.empty_like(w)
        t_copy = interleaved_medians({"copy": lambda w=w, d=dst: d.copy_(w)}, repeats=repeats)
        copy_bw = gbps(2 * w.nbytes, t_copy["copy"])
        for bits in bits_list:
            b = wsq.uniform_bins(w, 1 << bits)
            packed = ops.pack(b.indices, bits)
            table = ops.lut_table(b.codebook, bits)
            wd = b.codebook[b.indices.long()]
            wbf = wd.to(torch.bfloat16)
            q8 = _dynamic_int8(wd)
            # dequant into a warm buffer (the raw kernel: no allocation) against a warm copy of
            # the dense weight it rebuilds; ratio > 1: rebuilding beats copying the fp32 weight
            c_mod, out = _native.cpu(), torch.empty_like(wd)
            fns = {"copy": lambda wd=wd, o=out: o.copy_(wd)}
            for level in isas:

                def deq(level=level, p=packed, t=table, b=bits, o=out, c_mod=c_mod):
                    with ops.use_isa(level):
                        c_mod.dequant(p.data_ptr(), p.numel(), o.numel(), b, t.data_ptr(),
                                      o.data_ptr(), 0)  # fmt: skip

                fns[level] = deq
            t = interleaved_medians(fns, repeats=repeats)
            for level in isas:
                rows.append({"kernel": f"dequant {n_out}x{k_in} b={bits} -> fp32", "isa": level,
                             "ms": t[level] * 1e3, "GB/s": gbps(packed.numel() + wd.nbytes, t[level]),
                             "x copy_": t["copy"] / t[level]})  # fmt: skip
            for m in batches:
                x = torch.randn(m, k_in, generator=g)
                xbf = x.to(torch.bfloat16)
                fns = {
                    "fp32": lambda x=x, wd=wd: F.linear(x, wd),
                    "bf16": lambda x=xbf, wd=wbf: F.linear(x, wd),
                    "int8": lambda x=x, q=q8: q(x),
                }
                for level in isas:

                    def run_at(level=level, x=x, p=packed, t=table, o=n_out, b=bits):
                        with ops.use_isa(level):
                            return ops.lut_matmul(x, p, o, b, t)

                    fns[level] = run_at
                with torch.no_grad():
                    t = interleaved_medians(fns, repeats=repeats)
                for level in isas:
                    tw = t[level]
                    rows.append({"kernel": f"lut_matmul {n_out}x{k_in} b={bits} batch={m}",
                                 "isa": level, "ms": tw * 1e3, "torch ms": t["fp32"] * 1e3,
                                 "vs torch fp32": t["fp32"] / tw, "vs bf16": t["bf16"] / tw,
                                 "vs int8 dyn": t["int8"] / tw, "W GB/s": gbps(packed.numel(), tw),
                                 "x copy": gbps(packed.numel(), tw) / copy_bw,
                                 "copy GB/s": copy_bw, "bf16 ms": t["bf16"] * 1e3,
                                 "int8 dyn ms": t["int8"] * 1e3})  # fmt: skip


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def print_table(rows: list[dict], columns: list[str], file=None) -> None:
    """Rows as aligned text columns ('-' for a missing value)."""
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns), file=file)
    print("  ".join("-" * widths[c] for c in columns), file=file)
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns), file=file)


COLUMNS = [
    "kernel",
    "isa",
    "n",
    "ms",
    "GB/s",
    "x copy",
    "x copy_",
    "torch ms",
    "vs torch fp32",
    "vs bf16",
    "vs int8 dyn",
    "W GB/s",
    "vs wsq",
]


def run(
    *,
    quick: bool = True,
    n: int | None = None,
    shape: tuple[int, int] | None = None,
    say: Callable[[str], None] | None = print,
):
    """Validate, then time every kernel family; returns (rows, machine info).

    Quick: n = 2M weights for the binning and remap rows, one matmul shape (default 4096x4096,
    or `shape` = (out_features, in_features)) at batch 1 and 8, no KMeans: a few seconds. `say`
    prints progress and the table (None: silent)."""
    import platform

    import wsq

    n = (2_000_000 if quick else 50_000_000) if n is None else n
    validate()
    if say is not None:
        say("validation: all kernels match wsq.reference")
    rows: list[dict] = []
    bench_binning(n, rows, quick, kmeans=not quick)
    bench_remap(n, rows)
    bench_matmul(
        rows,
        quick,
        batches=(1, 8) if quick else (1, 8, 64),
        shapes=None if shape is None else [shape],
    )
    info = wsq.info()
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "isa": info.get("cpu_isa"),
        "torch": torch.__version__,
        "wsq": info.get("version"),
    }
    if say is not None:
        say(f"\n{machine}\n")
        print_table(rows, COLUMNS)
        say("ratios > 1: wsq faster / closer to copy bandwidth; timings on a busy machine vary")
    return rows, machine
