"""GPU kernel benchmark: wsq's CUDA kernels against the device's copy bandwidth and torch fp16 F.linear.

Validates every kernel against the CPU kernels / wsq.reference at small sizes first (exit 1 on any
mismatch), then times with CUDA events (median of repeats):

* binning (the fused bin + count + sum + index pass, and minmax) of N fp32 / fp16 weights vs a
  device-to-device copy of the same tensor (ratio of bytes per second);
* fake-quant (in place) vs copy; merge-remap on packed indices vs copy of the packed bytes;
* LUT GEMV/GEMM vs torch F.linear in fp16 at 4096^2 and 8192^2, batch 1/8/16/64, b = 4 and 8.
* a batch sweep 1, 2, 4, ..., 4096 at an MLP shape (11008 x 4096 weights, b = 4), kernel vs torch
  fp16 with the kernel's workspace in bytes: split-K partials are capped per launch
  (csrc/cuda/lut_matmul.cu), so the workspace must stay flat while the batch grows.
  Both sides run inside CUDA graphs (no Python launch overhead) and cycle through enough copies of
  the weights to defeat the L2 cache. "op" is wsq.kernels.ops.lut_matmul on fp16 x (it upcasts x, runs
  the kernel, downcasts y); "kernel" is the raw kernel on fp32 x. Batches > 8 are also timed with
  torch.set_float32_matmul_precision("medium"), which enables the bf16 tensor-core path.

    python bench/gpu_kernels.py [--n 1e9] [--quick] [--json PATH] [--device cuda:0]
        [--sizes 4096,8192] [--batches 1,8,16,64] [--sweep 1..4096 | --sweep none]

Targets (issue 5, on an H200): binning >= 0.7x copy; b=4 GEMV batch 1 >= 2.5x torch fp16,
batch 16 >= 1.5x, batch 64 >= 0.9x. Exit status 0 means validated and timed (targets missed are
reported, not failed).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout
import wsq  # noqa: E402
from wsq import reference
from wsq.kernels import native as _native
from wsq.kernels import ops  # noqa: E402

ROWS: list[dict] = []


# ----------------------------------------------------------------------------------- timing


def time_events(fn: Callable[[], object], repeats: int = 7, warmup: int = 2) -> float:
    """Median seconds of fn() on the current stream, measured with CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


def time_graph(
    step: Callable[[int], object], copies: int, iters: int = 20, repeats: int = 7
) -> float:
    """Median seconds per step(i) call, the calls captured in one CUDA graph (i cycles copies)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(3):  # warm up allocator and kernels outside the capture
            step(i % copies)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(iters):
            step(i % copies)
    g.replay()
    torch.cuda.synchronize()
    return time_events(g.replay, repeats=repeats, warmup=1) / iters


def add(row: dict) -> None:
    ROWS.append(row)
    print(
        "  "
        + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
        flush=True,
    )


# ------------------------------------------------------------------------------- validation


def validate(dev: torch.device) -> list[str]:
    """Small-size checks of every kernel against the CPU kernels and wsq.reference."""
    bad: list[str] = []

    def check(name: str, ok: bool) -> None:
        if not ok:
            bad.append(name)
            print(f"  VALIDATION FAILED: {name}", flush=True)

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        w = (torch.randn(100_003, generator=g) * 0.05).to(dtype)
        check(f"minmax {dtype}", ops.minmax(w.to(dev)) == ops.minmax(w))
        for k in (2, 16, 256, 4096, 65536):
            lo, hi = ops.minmax(w)
            lo32, scale = ops.bin_scale(lo, hi, k)
            c, s, i = ops.histogram(w.to(dev), k, lo32, scale, indices=True)
            cc, cs, ci = ops.histogram(w, k, lo32, scale, indices=True)
            check(f"histogram k={k} {dtype} indices", torch.equal(i.cpu(), ci))
            check(f"histogram k={k} {dtype} counts", torch.equal(c.cpu(), cc))
            check(
                f"histogram k={k} {dtype} sums", torch.allclose(s.cpu(), cs, rtol=1e-12, atol=1e-12)
            )
            vals = torch.randn(k, generator=g)
            check(
                f"fake_quant k={k} {dtype}",
                torch.equal(ops.fake_quant(w.to(dev), k, lo32, scale, vals.to(dev)).cpu(),
                            ops.fake_quant(w, k, lo32, scale, vals)),
            )  # fmt: skip
    for bits in (1, 3, 4, 8, 12, 16):
        q = torch.randint(0, 1 << bits, (10_001,), generator=g)
        p = ops.pack(q.to(dev), bits)
        check(f"pack b={bits}", torch.equal(p.cpu(), reference.pack(q, bits)))
        check(f"unpack b={bits}", torch.equal(ops.unpack(p, q.numel(), bits, torch.int64).cpu(), q))
        table = torch.randint(0, 1 << bits, (1 << bits,), generator=g, dtype=torch.int32)
        check(
            f"remap b={bits}",
            torch.equal(ops.remap_packed(p, q.numel(), bits, table.to(dev)).cpu(),
                        reference.remap_packed(p.cpu(), q.numel(), bits, table, bits)),
        )  # fmt: skip
        cb = ops.lut_table(torch.randn(1 << bits, generator=g), bits)
        check(
            f"dequant b={bits}",
            torch.equal(ops.dequant(p, q.numel(), bits, cb.to(dev)).cpu(),
                        reference.dequant(p.cpu(), q.numel(), bits, cb, torch.float32)),
        )  # fmt: skip
    for bits in (4, 8):
        for m, k, n in [
            (1, 4096, 300),
            (8, 1024, 257),
            (16, 2048, 129),
            (64, 1024, 64),
            (5, 53, 7),
        ]:
            w_idx = torch.randint(0, 1 << bits, (n * k,), generator=g)
            cb = torch.randn(1 << bits, generator=g) * 0.05
            w64 = cb.double()[w_idx].reshape(n, k)
            p = reference.pack(w_idx, bits).to(dev)
            x = torch.randn(m, k, generator=g)
            ref = x.double() @ w64.T
            y = ops.lut_matmul(x.to(dev), p, n, bits, ops.lut_table(cb, bits).to(dev))
            err = float((y.cpu().double() - ref).abs().max())
            t_err = float(((x.to(dev) @ w64.float().to(dev).T).cpu().double() - ref).abs().max())
            check(f"lut_matmul fp32 b={bits} {m}x{k}x{n} err {err:.3g} vs torch {t_err:.3g}",
                  err <= 2 * t_err + 1e-7 * float(ref.abs().max()))  # fmt: skip
            if m > 8:
                torch.set_float32_matmul_precision("medium")
                try:
                    yb = ops.lut_matmul(x.to(dev), p, n, bits, ops.lut_table(cb, bits).to(dev))
                finally:
                    torch.set_float32_matmul_precision("highest")
                xb, wb = x.bfloat16().float(), w64.float().bfloat16().float()
                b_err = float(((xb.to(dev) @ wb.to(dev).T).cpu().double() - ref).abs().max())
                err = float((yb.cpu().double() - ref).abs().max())
                check(f"lut_matmul bf16-tc b={bits} {m}x{k}x{n} err {err:.3g} vs torch bf16 {b_err:.3g}",
                      err <= 2 * b_err + 1e-7 * float(ref.abs().max()))  # fmt: skip
    torch.cuda.synchronize()
    return bad


# --------------------------------------------------------------------------------- benches


def _bin_one(dev: torch.device, dtype: torch.dtype, n: int, repeats: int) -> None:
    w = torch.empty(n, dtype=dtype, device=dev)
    w.normal_(0.0, 0.05)
    dst = torch.empty_like(w)
    nbytes = w.numel() * w.element_size()
    t_copy = time_events(lambda: dst.copy_(w), repeats)
    copy_bw = 2 * nbytes / t_copy
    name = str(dtype).replace("torch.", "")
    add({"bench": "copy", "dtype": name, "n": n, "ms": t_copy * 1e3, "GBps": copy_bw / 1e9})
    t = time_events(lambda: ops.minmax_op(w), repeats)
    add({"bench": "minmax", "dtype": name, "n": n, "ms": t * 1e3, "GBps": nbytes / t / 1e9,
         "vs_copy": nbytes / t / copy_bw})  # fmt: skip
    lo, hi = ops.minmax(w)
    for k in (16, 256, 1024, 4096, 65536):
        lo32, scale = ops.bin_scale(lo, hi, k)
        moved = nbytes + n * (1 if k <= 256 else 2)  # read w, write the indices
        t = time_events(
            lambda k=k, lo32=lo32, scale=scale: ops.histogram_op(w, k, lo32, scale, True), repeats
        )
        c, _, _ = ops.histogram_op(w, k, lo32, scale, False)
        if int(c.sum()) != n:
            raise RuntimeError(f"histogram k={k} counted {int(c.sum())} of {n} elements")
        row = {"bench": "binning(hist+idx)", "dtype": name, "k": k, "n": n, "ms": t * 1e3,
               "GBps": moved / t / 1e9, "vs_copy": moved / t / copy_bw}  # fmt: skip
        if k == 256:
            row["target"] = 0.7
        add(row)
    lo32, scale = ops.bin_scale(lo, hi, 256)
    values = torch.randn(256, device=dev)
    t = time_events(lambda: ops.fake_quant_op(w, 256, lo32, scale, values, w), repeats)  # in place
    add({"bench": "fake_quant", "dtype": name, "k": 256, "n": n, "ms": t * 1e3,
         "GBps": 2 * nbytes / t / 1e9, "vs_copy": 2 * nbytes / t / copy_bw})  # fmt: skip
    w.normal_(0.0, 0.05)
    t = time_events(lambda: wsq.uniform_bins(w, 256), max(3, repeats // 2), warmup=1)
    add({"bench": "uniform_bins(total)", "dtype": name, "k": 256, "n": n, "ms": t * 1e3})


def bench_binning(dev: torch.device, n: int, repeats: int) -> None:
    for dtype in (torch.float32, torch.float16):
        _bin_one(dev, dtype, n, repeats)
        torch.cuda.empty_cache()


def _remap_one(dev: torch.device, n: int, bits: int, repeats: int) -> None:
    nb = ops.packed_bytes(n, bits)
    p = torch.randint(0, 256, (nb,), dtype=torch.uint8, device=dev)
    dst = torch.empty_like(p)
    table = torch.randint(0, 1 << (bits - 1), (1 << bits,), dtype=torch.int32, device=dev)
    t_copy = time_events(lambda: dst.copy_(p), repeats)
    t = time_events(lambda: ops.remap_packed_op(p, n, bits, table, bits), repeats)
    add({"bench": "merge-remap", "bits": bits, "n": n, "ms": t * 1e3, "GBps": 2 * nb / t / 1e9,
         "vs_copy": t_copy / t})  # fmt: skip


def bench_remap(dev: torch.device, n: int, repeats: int) -> None:
    for bits in (4, 8):
        _remap_one(dev, n, bits, repeats)
        torch.cuda.empty_cache()


def _lut_one(dev, size, bits, m, w16, packed, table, repeats) -> None:
    """One (size, bits, batch) point: torch fp16 F.linear vs the raw kernel and the op."""
    lib = _native.cuda()
    n = k = size
    nb = packed[0].numel()
    x16 = torch.randn(m, k, device=dev, dtype=torch.float16)
    x32 = x16.float()
    y32 = torch.empty(m, n, device=dev)
    t_torch = time_graph(lambda i: F.linear(x16, w16[i]), len(w16), repeats=repeats)
    targets = {(4, 1): 2.5, (4, 16): 1.5, (4, 64): 0.9}
    for prec in ["highest"] + (["medium"] if m > 8 else []):
        mode = 1 if prec == "medium" else 0
        ws = torch.empty(
            lib.lut_matmul_workspace_bytes(m, k, n, bits, mode), dtype=torch.uint8, device=dev
        )

        def kern(i, mode=mode, ws=ws):
            lib.lut_matmul(x32.data_ptr(), m, k, k, packed[i].data_ptr(), nb, n, bits, table.data_ptr(),
                           0, y32.data_ptr(), n, ws.data_ptr(), ws.numel(), mode,
                           torch.cuda.current_stream().cuda_stream)  # fmt: skip

        torch.set_float32_matmul_precision(prec)
        try:
            t_kernel = time_graph(kern, len(packed), repeats=repeats)
            t_op = time_graph(
                lambda i: ops.lut_matmul(x16, packed[i], n, bits, table),
                len(packed),
                repeats=repeats,
            )
        finally:
            torch.set_float32_matmul_precision("highest")
        row = {"bench": "lut_matmul", "size": size, "bits": bits, "batch": m, "precision": prec,
               "torch_fp16_us": t_torch * 1e6, "kernel_us": t_kernel * 1e6, "op_us": t_op * 1e6,
               "speedup_kernel": t_torch / t_kernel, "speedup_op": t_torch / t_op}  # fmt: skip
        if (bits, m) in targets:
            row["target"] = targets[(bits, m)]
        add(row)


def bench_lut(dev: torch.device, sizes: list[int], batches: list[int], repeats: int) -> None:
    # Enough copies of each weight matrix to exceed the L2 cache three times: every call reads cold.
    l2 = torch.cuda.get_device_properties(dev).L2_cache_size or (50 << 20)
    for size in sizes:
        copies16 = max(2, math.ceil(3 * l2 / (size * size * 2)))
        w16 = [
            torch.randn(size, size, device=dev, dtype=torch.float16) * 0.05 for _ in range(copies16)
        ]
        for bits in (4, 8):
            nb = ops.packed_bytes(size * size, bits)
            copies = max(2, math.ceil(3 * l2 / nb))
            packed = [
                torch.randint(0, 256, (nb,), dtype=torch.uint8, device=dev) for _ in range(copies)
            ]
            table = ops.lut_table(torch.randn(1 << bits, device=dev) * 0.05, bits)
            for m in batches:
                _lut_one(dev, size, bits, m, w16, packed, table, repeats)
        w16.clear()
        torch.cuda.empty_cache()


def bench_sweep(dev: torch.device, batches: list[int], repeats: int, n=11008, k=4096, bits=4):
    """Kernel vs torch fp16 over growing batches at one MLP shape, with the workspace size."""
    lib = _native.cuda()
    l2 = torch.cuda.get_device_properties(dev).L2_cache_size or (50 << 20)
    w16 = [torch.randn(n, k, device=dev, dtype=torch.float16) * 0.05
           for _ in range(max(2, math.ceil(3 * l2 / (n * k * 2))))]  # fmt: skip
    nb = ops.packed_bytes(n * k, bits)
    packed = [torch.randint(0, 256, (nb,), dtype=torch.uint8, device=dev)
              for _ in range(max(2, math.ceil(3 * l2 / nb)))]  # fmt: skip
    table = ops.lut_table(torch.randn(1 << bits, device=dev) * 0.05, bits)
    for m in batches:
        x16 = torch.randn(m, k, device=dev, dtype=torch.float16)
        x32, y32 = x16.float(), torch.empty(m, n, device=dev)
        t_torch = time_graph(lambda i, x16=x16: F.linear(x16, w16[i % len(w16)]), len(packed),
                             iters=4, repeats=repeats)  # fmt: skip
        for prec in ["highest"] + (["medium"] if m > 8 else []):
            mode = 1 if prec == "medium" else 0
            ws_bytes = lib.lut_matmul_workspace_bytes(m, k, n, bits, mode)
            ws = torch.empty(ws_bytes, dtype=torch.uint8, device=dev)

            def kern(i, m=m, mode=mode, ws=ws, x32=x32, y32=y32):
                lib.lut_matmul(x32.data_ptr(), m, k, k, packed[i].data_ptr(), nb, n, bits,
                               table.data_ptr(), 0, y32.data_ptr(), n, ws.data_ptr(), ws.numel(),
                               mode, torch.cuda.current_stream().cuda_stream)  # fmt: skip

            torch.set_float32_matmul_precision(prec)
            try:
                t_kernel = time_graph(kern, len(packed), iters=4, repeats=repeats)
            finally:
                torch.set_float32_matmul_precision("highest")
            add({"bench": "lut_sweep", "n": n, "k": k, "bits": bits, "batch": m,
                 "precision": prec, "workspace_mib": ws_bytes / 2**20,
                 "torch_fp16_us": t_torch * 1e6, "kernel_us": t_kernel * 1e6,
                 "speedup_kernel": t_torch / t_kernel})  # fmt: skip
            del ws
    w16.clear()
    packed.clear()
    torch.cuda.empty_cache()


def _int_list(text: str) -> list[int]:
    """'1,16,64' -> [1, 16, 64]; 'A..B' -> powers of two from A to B; 'none' -> []."""
    if text == "none":
        return []
    if ".." in text:
        a, b = (int(v) for v in text.split(".."))
        out = []
        while a <= b:
            out.append(a)
            a *= 2
        return out
    return [int(v) for v in text.split(",") if v]


def gpu_info(dev: torch.device) -> dict:
    p = torch.cuda.get_device_properties(dev)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {"gpu": p.name, "sms": p.multi_processor_count, "memory_gib": round(p.total_memory / 2**30, 1),
            "torch": torch.__version__, "cuda": torch.version.cuda, "wsq": wsq.__version__, "commit": commit}  # fmt: skip


def summary() -> None:
    print("\nsummary (ratios > 1: wsq faster / more bytes per second)")
    print(f"{'bench':<22}{'case':<34}{'wsq':>12}{'peer':>12}{'ratio':>8}{'target':>8}")
    for r in ROWS:
        if r["bench"] == "lut_matmul":
            case = f"{r['size']}^2 b={r['bits']} batch={r['batch']} {r['precision']}"
            print(f"{'lut_matmul(kernel)':<22}{case:<34}{r['kernel_us']:>10.1f}us{r['torch_fp16_us']:>10.1f}us"
                  f"{r['speedup_kernel']:>8.2f}{r.get('target', ''):>8}")  # fmt: skip
            print(f"{'lut_matmul(op)':<22}{case:<34}{r['op_us']:>10.1f}us{r['torch_fp16_us']:>10.1f}us"
                  f"{r['speedup_op']:>8.2f}{'':>8}")  # fmt: skip
        elif r["bench"] == "lut_sweep":
            case = f"{r['n']}x{r['k']} b={r['bits']} batch={r['batch']} {r['precision']}"
            print(f"{'lut_sweep(kernel)':<22}{case:<34}{r['kernel_us']:>10.1f}us{r['torch_fp16_us']:>10.1f}us"
                  f"{r['speedup_kernel']:>8.2f}  ws={r['workspace_mib']:.1f}MiB")  # fmt: skip
        elif "vs_copy" in r:
            case = " ".join(f"{k}={r[k]}" for k in ("dtype", "k", "bits", "n") if k in r)
            print(
                f"{r['bench']:<22}{case:<34}{r['ms']:>10.3f}ms{'copy':>12}{r['vs_copy']:>8.2f}{r.get('target', ''):>8}"
            )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--n", type=float, default=1e9, help="weights for binning / fake-quant / remap")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default=None, help="write the rows and the machine here")
    ap.add_argument("--skip-validate", action="store_true")
    ap.add_argument("--sizes", default=None, help="square LUT matmul sizes, e.g. 4096,8192")
    ap.add_argument("--batches", default=None, help="LUT matmul batches, e.g. 1,16,64")
    ap.add_argument("--sweep", default="1..4096", help="sweep batches ('A..B' powers of 2, 'none')")
    a = ap.parse_args()
    info = wsq.info()
    if not info["cuda_available"]:
        print(f"gpu_kernels: no CUDA device visible to wsq: {info['cuda_error']}", file=sys.stderr)
        return 2
    dev = torch.device(a.device)
    torch.cuda.set_device(dev)
    info = gpu_info(dev)
    print(
        f"gpu_kernels on {info['gpu']} ({info['sms']} SMs), torch {info['torch']}, commit {info['commit']}",
        flush=True,
    )
    t0 = time.time()
    if not a.skip_validate:
        print("validating ...", flush=True)
        bad = validate(dev)
        if bad:
            print(f"gpu_kernels: {len(bad)} validation failures; not timing", file=sys.stderr)
            if a.json:
                with open(a.json, "w") as f:
                    json.dump(
                        {"machine": info, "validation_failures": bad, "rows": []}, f, indent=1
                    )
            return 1
        print(f"validated in {time.time() - t0:.1f}s", flush=True)
    n = int(1e6) if a.quick else int(a.n)
    sizes = _int_list(a.sizes) if a.sizes else [1024] if a.quick else [4096, 8192]
    batches = _int_list(a.batches) if a.batches else [1, 16] if a.quick else [1, 8, 16, 64]
    sweep = _int_list(a.sweep) if not a.quick or a.sweep != "1..4096" else [1, 64]
    print("binning / fake-quant ...", flush=True)
    bench_binning(dev, n, a.repeats)
    print("merge-remap ...", flush=True)
    bench_remap(dev, n, a.repeats)
    print("lut matmul ...", flush=True)
    bench_lut(dev, sizes, batches, a.repeats)
    if sweep:
        print(f"lut matmul batch sweep {sweep} ...", flush=True)
        bench_sweep(dev, sweep, a.repeats)
    summary()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": info, "rows": ROWS, "seconds": time.time() - t0}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
