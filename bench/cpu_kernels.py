"""CPU kernel benchmark: wsq's kernels against the machine's copy bandwidth and the peers, one process.

Validates every kernel against wsq.reference at a small size first, then times (median of repeats,
same thread count on both sides). Ratios > 1 mean wsq is faster / moves bytes faster.

    python bench/cpu_kernels.py [--n 50000000] [--quick] [--json PATH] [--isa avx2,avx512]
                            [--only matmul] [--threads T] [--shapes 4096x4096,...]
                            [--bits 1,2,...] [--batches 1,32,64]

The LUT matmul is timed at every width 1..16 (--bits), on the issue-19 shapes (--shapes, out x in:
LLaMA-7B 4096x4096 and 11008x4096, MiniLM/BERT 384..1536) and batches, at each listed ISA level
(--isa; default every SIMD level this CPU has, e.g. the AVX2 path forced on an AVX-512 machine
beside its own AVX-512 path). Its peers run in the same interleaved rounds on the same x: torch's
dense fp32 and bf16 F.linear, dynamic int8 Linear (quantize_dynamic), int4 weight-only
(aten._weight_int4pack_mm_for_cpu, group 128, bf16 activations) and int8 weight-only
(aten._weight_int8pack_mm). Ratios > 1: wsq is faster; "vs b=4" is the same level's 4-bit time
over this row's. The peers run at the machine's best ISA; --cap avx2 caps them too (ATen, MKL,
oneDNN, fbgemm; see _timing.CAP_ENV), the nearest an AVX-512 machine comes to an AVX2-only one.
The verdict of every issue-19 target (bench/_targets.py) is printed after the table.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _targets import kernel_targets
from _timing import (
    add_cap_argument,
    cap_all,
    int4_weight_only,
    int8_weight_only,
    machine,
    print_table,
    write_json,
)

import wsq

# The binning and remap benchmarks live in the package so that `wsq bench` runs the same code.
from wsq.cli.bench import (
    COLUMNS,
    _dynamic_int8,
    bench_binning,
    bench_remap,
    interleaved_medians,
    validate,
)
from wsq.kernels import ops

SHAPES = "4096x4096,11008x4096,384x1536,1536x384,384x384,1536x1536"
PEERS = {  # column: peer name in the rounds
    "vs torch fp32": "fp32",
    "vs bf16": "bf16",
    "vs int8 dyn": "int8 dyn",
    "vs int4 wo": "int4 wo",
    "vs int8 wo": "int8 wo",
}
MATMUL_COLUMNS = ["kernel", "isa", "ms", "vs b=4", *PEERS, "W GB/s"]


def bench_widths(rows, shapes, bits_list, batches, isas, repeats) -> None:
    """lut_matmul at every width, shape, batch and level, its peers in the same rounds."""
    g = torch.Generator().manual_seed(3)
    for n_out, k_in in shapes:
        w = torch.randn(n_out, k_in, generator=g) * 0.02
        wbf = w.to(torch.bfloat16)
        # (fn, takes bf16 x): bf16 activations are made before the rounds, as a bf16 model has them
        peers = {
            "fp32": (lambda x, w=w: F.linear(x, w), False),
            "bf16": (lambda x, w=wbf: F.linear(x, w), True),
            "int8 dyn": (_dynamic_int8(w), False),
        }
        if k_in % 128 == 0:
            peers["int4 wo"] = (int4_weight_only(w), True)
        peers["int8 wo"] = (int8_weight_only(w), False)
        packs = {}
        for bits in bits_list:
            b = wsq.uniform_bins(w, 1 << bits)
            packs[bits] = (ops.pack(b.indices, bits), ops.lut_table(b.codebook, bits))
        for m in batches:
            x = torch.randn(m, k_in, generator=g)
            xs = {False: x, True: x.to(torch.bfloat16)}
            fns = {name: (lambda f=f, x=xs[bf]: f(x)) for name, (f, bf) in peers.items()}
            for level in isas:
                for bits, (p, t) in packs.items():

                    def run(level=level, x=x, p=p, t=t, b=bits, n=n_out):
                        with ops.use_isa(level):
                            return ops.lut_matmul(x, p, n, b, t)

                    fns[(level, bits)] = run
            with torch.no_grad():
                t = interleaved_medians(fns, repeats=repeats)
            for level in isas:
                for bits, (p, _) in packs.items():
                    tw = t[(level, bits)]
                    row = {"kernel": f"lut_matmul {n_out}x{k_in} b={bits} batch={m}",
                           "isa": level, "ms": tw * 1e3, "W GB/s": p.numel() / tw / 1e9}  # fmt: skip
                    if (level, 4) in t:
                        row["vs b=4"] = t[(level, 4)] / tw
                    for col, name in PEERS.items():
                        if name in t:
                            row[col] = t[name] / tw
                    rows.append(row)
            print(f"timed {n_out}x{k_in} batch {m}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--n", type=int, default=50_000_000, help="weights for the binning/fake-quant/remap rows"
    )
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not figures)")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    ap.add_argument("--isa", help="comma-separated levels for the matmul rows (default: all SIMD)")
    ap.add_argument("--only", choices=["matmul"], help="time only the LUT matmul rows")
    ap.add_argument("--threads", type=int, help="torch and OpenMP threads (default: torch's)")
    ap.add_argument("--batches", default="1,32,64", help="comma-separated batch sizes (matmul)")
    ap.add_argument("--shapes", default=SHAPES, help="comma-separated OUTxIN matmul shapes")
    ap.add_argument("--bits", default=",".join(map(str, range(1, 17))), help="matmul widths")
    ap.add_argument("--repeats", type=int, default=15, help="interleaved rounds per matmul row")
    add_cap_argument(ap)
    args = ap.parse_args(argv)
    cap_all(args.cap)
    if args.threads is not None:
        if args.threads < 1:
            ap.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)  # wsq's OpenMP kernels follow torch's setting
    levels = ops.isa_levels()
    isas = [lv for lv in levels if lv != "scalar"] or ["scalar"]
    if args.isa:
        isas = [v.strip() for v in args.isa.split(",") if v.strip()]
        bad = [v for v in isas if v not in levels]
        if bad:
            ap.error(f"--isa {','.join(bad)}: not available on this CPU (has {', '.join(levels)})")
    if args.cap:
        above = [v for v in isas if levels.index(v) > levels.index(args.cap)]
        if args.isa and above:
            ap.error(f"--isa {','.join(above)} is above --cap {args.cap}")
        isas = [v for v in isas if v not in above]
    n = 2_000_000 if args.quick else args.n
    validate()
    print("validation: all kernels match wsq.reference")
    rows: list[dict] = []
    if args.only != "matmul":
        bench_binning(n, rows, args.quick)
        bench_remap(n, rows)
    batches = tuple(int(b) for b in args.batches.split(","))
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s]
    if args.quick:
        shapes, batches = shapes[:1], batches[:1]
    bits_list = [int(b) for b in args.bits.split(",") if b]
    bench_widths(rows, shapes, bits_list, batches, isas, args.repeats)
    info = machine()
    info["matmul_clock"] = (
        "thread CPU time (1 thread)" if torch.get_num_threads() == 1 else "wall (perf_counter)"
    )
    print(f"\n{info}\n")
    for part, cols in ((False, COLUMNS), (True, MATMUL_COLUMNS)):
        sel = [r for r in rows if r["kernel"].startswith("lut_matmul") == part]
        if sel:
            print_table(sel, cols)
            print()
    targets = kernel_targets(rows, info)
    if targets and not args.quick:
        print("\nissue 10/19 targets, read off this run (see bench/_targets.py):")
        print_table(targets, list(targets[0]))
    write_json(args.json, {"machine": info, "rows": rows, "targets": targets})


if __name__ == "__main__":
    main()
