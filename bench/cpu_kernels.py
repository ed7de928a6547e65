"""CPU kernel benchmark: wsq's kernels against the machine's copy bandwidth and the peers, one process.

Validates every kernel against wsq.reference at a small size first, then times (median of repeats,
same thread count on both sides). Ratios > 1 mean wsq is faster / moves bytes faster.

    python bench/cpu_kernels.py [--n 50000000] [--quick] [--json PATH] [--isa avx2,avx512]
                            [--only matmul] [--threads T]

--isa times the LUT matmul at each listed level (default: every SIMD level this CPU has, e.g.
the AVX2 path forced on an AVX-512 machine beside its own AVX-512 path), each against torch's
dense fp32 / bf16 F.linear and dynamic int8 Linear in the same interleaved rounds. Those peers
still run at the machine's best ISA; --cap avx2 caps them too (ATen, MKL, oneDNN, fbgemm; see
_timing.CAP_ENV), the nearest an AVX-512 machine comes to an AVX2-only one.
"""

from __future__ import annotations

import argparse

import torch
from _targets import kernel_targets
from _timing import add_cap_argument, cap_all, machine, print_table, write_json

from wsq import ops

# The benchmark logic lives in the package so that `wsq bench` runs the same code at quick sizes.
from wsq.cli.bench import COLUMNS, bench_binning, bench_matmul, bench_remap, validate


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
    ap.add_argument("--batches", default="1,8,64", help="comma-separated batch sizes (matmul)")
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
    bench_matmul(rows, args.quick, isas=tuple(isas), batches=batches, repeats=args.repeats)
    info = machine()
    info["matmul_clock"] = (
        "thread CPU time (1 thread)" if torch.get_num_threads() == 1 else "wall (perf_counter)"
    )
    print(f"\n{info}\n")
    print_table(rows, COLUMNS)
    targets = kernel_targets(rows, info)
    if targets and not args.quick:
        print("\nissue 10 targets, read off this run (see bench/_targets.py):")
        print_table(targets, list(targets[0]))
    write_json(args.json, {"machine": info, "rows": rows, "targets": targets})


if __name__ == "__main__":
    main()
