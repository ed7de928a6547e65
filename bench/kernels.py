"""CPU kernel benchmark: wsq's kernels against the machine's copy bandwidth and the peers, one process.

Validates every kernel against wsq.reference at a small size first, then times (median of repeats,
same thread count on both sides). Ratios > 1 mean wsq is faster / moves bytes faster.

    python bench/kernels.py [--n 50000000] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse

from _timing import machine, print_table, write_json

# The benchmark logic lives in the package so that `wsq bench` runs the same code at quick sizes.
from wsq._microbench import COLUMNS, bench_binning, bench_matmul, bench_remap, validate


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--n", type=int, default=50_000_000, help="weights for the binning/fake-quant/remap rows"
    )
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not figures)")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    n = 2_000_000 if args.quick else args.n
    validate()
    print("validation: all kernels match wsq.reference")
    rows: list[dict] = []
    bench_binning(n, rows, args.quick)
    bench_remap(n, rows)
    bench_matmul(rows, args.quick)
    info = machine()
    print(f"\n{info}\n")
    print_table(rows, COLUMNS)
    write_json(args.json, {"machine": info, "rows": rows})


if __name__ == "__main__":
    main()
