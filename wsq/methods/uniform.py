"""``wsq.Uniform``: the paper's method, k equal bins over the pooled weights' range, O(N).

Its variables: k (the number of bins) and optionally the range (lo, hi). As a search space
(wsq.search): k in [k_min, k_max], and with ``clip=True`` the range shrunk around the pool's median
(see :class:`Space`). A candidate costs one histogram pass over the pooled weights (read tensor by
tensor from the model itself), a second pass that bins each tensor and packs it at the width of the
bins it uses into ONE compressed working copy rewritten in place (no dense copy of the model, which
is only read), and one call of the user's evaluate; it computes exactly what ``wsq.compress`` of
the candidate computes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from wsq import entropy
from wsq.checks import finite_baseline, number
from wsq.compressed import Compressed
from wsq.core.binning import bin_means, check_bound
from wsq.core.compress import uniform_compress
from wsq.core.grid import score, tune_scale
from wsq.core.pool import collect_pool
from wsq.core.streaming import ModelSource, local_map
from wsq.kernels import ops
from wsq.methods.base import Method, Pooling, Problem, Record, int_field
from wsq.methods.pool_stats import file_sizes, pool_fingerprint, pool_median

__all__ = ["Uniform", "Space", "CandidateEvaluator", "sweep_ks"]

K_LIMIT = 65536  # the largest codebook a wsq file holds


@dataclass(frozen=True)
class Uniform(Method):
    """The paper's uniform binning: one codebook of at most k shared values over every pooled
    weight, the range [lo, hi] (default: the pool's min and max) split into k equal bins, each
    weight replaced by its bin's mean.

    Args:
        k: bins for wsq.compress, 2..65536 (n <= k are non-empty); wsq.tune starts there.
        lo, hi: optional range; weights outside it go to the end bins.
        k_min, k_max: the range of k that wsq.search and wsq.tune explore (the paper: 2..1024).
        clip: wsq.search also searches the range: shrunk around the pool's median by
            ``clip_floor ** c``, c in [0, 1] in steps of 0.01 (a larger front, ~6x the
            evaluations on the digits CNN; the paper searches k only).
        clip_floor: the narrowest range (c = 1) as a fraction of the full one, in (0, 1).
    """

    k: int = 256
    lo: float | None = None
    hi: float | None = None
    k_min: int = 2
    k_max: int = 1024
    clip: bool = False
    clip_floor: float = 0.01

    name = "uniform"

    def __post_init__(self) -> None:
        int_field("Uniform", "k", self.k, 2, K_LIMIT)
        lo = check_bound("Uniform.lo", self.lo)
        hi = check_bound("Uniform.hi", self.hi)
        if lo is not None and hi is not None and not lo < hi:
            raise ValueError(f"Uniform.lo must be < Uniform.hi, got lo={lo}, hi={hi}")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        int_field("Uniform", "k_min", self.k_min, 2, K_LIMIT)
        int_field("Uniform", "k_max", self.k_max, self.k_min, K_LIMIT)
        if not isinstance(self.clip, bool):
            raise TypeError(f"Uniform.clip must be a bool, got {type(self.clip).__name__}")
        cf = number("Uniform.clip_floor", self.clip_floor, strict=True)
        if not cf < 1.0:
            raise ValueError(f"Uniform.clip_floor must be in (0, 1), got {cf}")
        object.__setattr__(self, "clip_floor", cf)

    @property
    def variables(self) -> tuple[str, ...]:
        """The search's decision variables."""
        return ("k", "clip") if self.clip else ("k",)

    def compress(self, model: torch.nn.Module, pooling: Pooling) -> Compressed:
        return uniform_compress(model, self.k, lo=self.lo, hi=self.hi, **pooling.options())

    def tune(self, model, evaluate, *, tolerance, margin, baseline, pooling) -> Compressed:
        """The smallest k in [k_min, k_max] within the tolerance: bracketing from ``k`` by
        factors of 2, then bisection on log k (about 10 evaluations on one working copy)."""
        base = finite_baseline(score(evaluate, model), "evaluate") if baseline is None else baseline
        threshold = base - tolerance + margin
        ev = CandidateEvaluator(model, evaluate, None, coder="auto", pooling=pooling)
        wmin, wmax = ev.range()
        lo = wmin if self.lo is None else self.lo
        hi = wmax if self.hi is None else self.hi
        ev.space = Space(("k",), self.k_min, self.k_max, lo, hi, 0.5 * (lo + hi), 0.5)
        seen: dict[int, float] = {}

        def make(s: float):  # s = 1/k: tune_scale finds the largest passing s, the smallest k
            k = min(self.k_max, max(self.k_min, int(round(1.0 / s))))
            if k not in seen:
                seen[k] = ev((k,)).metric
            return seen[k], k

        _, k, trace = tune_scale(make, threshold, 1.0 / self.k, iters=10)
        ev.work = None  # the working copy, released before the result is built
        if k is None:
            tried = sorted((kk, float(f"{m:.6g}")) for kk, m in seen.items())
            raise ValueError(
                f"evaluate never reached baseline - tolerance + margin = {threshold:.6g} with "
                f"k in [{self.k_min}, {self.k_max}] (tried (k, metric): {tried}); raise "
                "tolerance or Uniform.k_max"
            )
        out = Uniform(k=k, lo=self.lo, hi=self.hi).compress(model, pooling)
        out.tune_info = {"baseline": base, "tolerance": tolerance, "margin": margin,
                         "threshold": threshold, "k": k, "metric": seen[k],
                         "trace": [(int(min(self.k_max, max(self.k_min, round(1 / s)))), m)
                                   for s, m in trace],
                         "evaluations": len(seen) + (baseline is None)}  # fmt: skip
        return out

    def problem(self, model, evaluate, *, pooling: Pooling, coder: str) -> UniformProblem:
        return UniformProblem(self, model, evaluate, pooling, coder)


# ----------------------------------------------------------------------------- the search space


@dataclass(frozen=True)
class Space:
    """The decision space: integer vectors -> binning settings (k, lo, hi).

    ``k``: the number of equal-width bins, an integer in [k_min, k_max].
    ``clip``: stored as an integer step s in [0, clip_steps]; clip = s / clip_steps in [0, 1]. The
    binning range is shrunk around the pool's median m by the factor f = clip_floor ** clip:
    ``lo = m - f (m - min)``, ``hi = m + f (max - m)`` (clip = 0: the full [min, max], exactly;
    clip = 1: a range clip_floor times as wide). Weights outside [lo, hi] fall into the end bins.
    A geometric factor because useful ranges span orders of magnitude (outlier-heavy pools keep
    their bulk within a few percent of the full range).
    """

    variables: tuple[str, ...]
    k_min: int
    k_max: int
    wmin: float
    wmax: float
    center: float
    clip_floor: float
    clip_steps: int = 100

    @property
    def n_var(self) -> int:
        return len(self.variables)

    def bounds(self) -> tuple[list[int], list[int]]:
        """(lower, upper) integer bounds of each variable, in ``variables`` order."""
        lo = [self.k_min if v == "k" else 0 for v in self.variables]
        hi = [self.k_max if v == "k" else self.clip_steps for v in self.variables]
        return lo, hi

    def key(self, x) -> tuple[int, ...]:
        """The cache key of a (possibly float) decision vector: rounded and clamped integers."""
        xl, xu = self.bounds()
        return tuple(
            min(u, max(lo_, int(round(float(v))))) for v, lo_, u in zip(x, xl, xu, strict=True)
        )

    def neutral(self, k: int) -> tuple[int, ...]:
        """The vector with the given k and every other variable at its no-op value (clip 0)."""
        return tuple(k if v == "k" else 0 for v in self.variables)

    def decode(self, key: tuple[int, ...]) -> dict:
        """{"k": int, "clip": float, "lo": float, "hi": float} for a cache key.

        lo and hi are float32-representable, so wsq.compress(model, Uniform(k, lo, hi))
        reproduces the binning exactly.
        """
        d = dict(zip(self.variables, key, strict=True))
        k = int(d["k"])
        clip = d.get("clip", 0) / self.clip_steps
        if clip == 0:
            lo, hi = self.wmin, self.wmax
        else:
            f = self.clip_floor**clip
            lo = self.center - f * (self.center - self.wmin)
            hi = self.center + f * (self.wmax - self.center)
        lo32 = float(torch.tensor(lo, dtype=torch.float32))
        hi32 = float(torch.tensor(hi, dtype=torch.float32))
        return {"k": k, "clip": clip, "lo": lo32, "hi": hi32}


def sweep_ks(k_min: int, k_max: int, budget: int, spacing: str) -> list[int]:
    """`budget` distinct k in [k_min, k_max] (all of them if fewer), evenly spaced on a geometric
    or linear scale; rounding collisions on the geometric scale are made up by denser spacing."""
    span = k_max - k_min + 1
    if budget >= span:
        return list(range(k_min, k_max + 1))
    if spacing == "linear":
        return sorted({int(round(v)) for v in np.linspace(k_min, k_max, budget)})
    n = budget
    while True:
        ks = sorted({int(round(v)) for v in np.geomspace(k_min, k_max, n)})
        if len(ks) >= budget or n > 64 * span:
            break
        n += budget - len(ks)
    if len(ks) > budget:  # keep the ends, thin evenly in between
        pick = np.unique(np.round(np.linspace(0, len(ks) - 1, budget)).astype(int))
        ks = [ks[i] for i in pick]
    return ks


class CandidateEvaluator:
    """Evaluates decision vectors on ONE compressed working copy, rewritten in place.

    ``model`` is only read, so threads may share it; each evaluator owns its working copy.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        evaluate: Callable[[torch.nn.Module], float],
        space: Space | None,
        *,
        coder: str,
        pooling: Pooling,
    ) -> None:
        from wsq.core.streaming import working_copy

        self.model = model
        self.evaluate = evaluate
        self.space = space
        self.coder = coder
        self.pool = collect_pool(model, **pooling.options())
        self.source = ModelSource(self.pool)
        self.n_weights = int(self.pool.n_weights)
        # the one working copy: a wsq.Compressed that every candidate rewrites in place
        self.work = working_copy(model, self.pool)

    def range(self) -> tuple[float, float]:
        """(min, max) over the pooled weights, one tensor at a time (NaN/Inf: ValueError)."""
        from wsq.core.streaming import check_finite

        lo = hi = None
        for i in range(len(self.source)):
            a, b = check_finite(self.source, i, self.source.weights(i))
            lo, hi = (a, b) if lo is None else (min(lo, a), max(hi, b))
        return lo, hi

    def __call__(self, key: tuple[int, ...]) -> Record:
        from wsq.core.grid_quant import CHUNK
        from wsq.core.streaming import part_buffer, parts_changed, set_part, trim_heap

        d = self.space.decode(key)
        k = d["k"]
        lo32, scale = ops.bin_scale(d["lo"], d["hi"], k)
        t0 = time.perf_counter()
        # One pass over the pool, split per tensor: the per-stream histograms give the file's coded
        # size; their sum gives the bin means.
        hist = [ops.histogram(self.source.weights(i), k, lo32, scale)[:2] for i in
                range(len(self.source))]  # fmt: skip
        per_counts = torch.stack([c for c, _ in hist]).cpu()  # (n_streams, k) int64
        counts = per_counts.sum(0)
        sums = torch.stack([s for _, s in hist]).sum(0).cpu()
        del hist
        nonempty, codebook, to_global = bin_means(counts, sums)
        bits = entropy.coded_bits(per_counts[:, nonempty], self.coder) / self.n_weights
        t1 = time.perf_counter()
        for i, e in enumerate(self.pool.entries):
            present = per_counts[i] > 0
            local, m = local_map(present)
            out_bits = ops.bits_for(m)
            w = self.source.weights(i)
            dev = w.device
            local = local.to(dev)
            # chunk by chunk into the bytes the last candidate used: a whole tensor's raw indices
            # were the search's largest transient (1-4 bytes per weight of the largest tensor),
            # and fresh buffers per candidate left glibc's heap growing
            if dev.type == "cpu":
                packed = part_buffer(self.work, i, ops.packed_bytes(e.numel, out_bits))
                if packed is None:
                    packed = torch.empty(ops.packed_bytes(e.numel, out_bits), dtype=torch.uint8)
                odt = torch.uint8 if out_bits <= 8 else torch.uint16
                pos = 0
                for s in range(0, e.numel, CHUNK):  # CHUNK indices are whole bytes at any width
                    idx = ops.histogram(w[s : s + CHUNK], k, lo32, scale, indices=True)[2]
                    b = ops.pack(ops.relabel(idx, local, odt), out_bits)
                    packed[pos : pos + b.numel()] = b
                    pos += b.numel()
            else:  # on the GPU: whole tensors, in device memory
                kbits = ops.bits_for(k)
                raw = ops.pack(ops.histogram(w, k, lo32, scale, indices=True)[2], kbits)
                packed = ops.remap_packed(raw, e.numel, kbits, local, out_bits)
                del raw
            table = ops.lut_table(codebook[to_global[present]], out_bits).to(dev)
            set_part(self.work, i, packed, table)
        parts_changed(self.work)
        trim_heap()
        t2 = time.perf_counter()
        with torch.no_grad():
            metric = float(self.evaluate(self.work.model))
        t3 = time.perf_counter()
        return Record(metric, bits, int(nonempty.sum()), t1 - t0, t2 - t1, t3 - t2)


@dataclass
class UniformWorker:
    """What an executor worker needs to build its own evaluator (shipped once per worker)."""

    model: torch.nn.Module
    evaluate: Callable[[torch.nn.Module], float]
    space: Space
    coder: str
    pooling: Pooling

    def build(self) -> CandidateEvaluator:
        # the model is only read: each evaluator packs candidates into its own compressed copy
        return CandidateEvaluator(
            self.model, self.evaluate, self.space, coder=self.coder, pooling=self.pooling
        )


class UniformProblem(Problem):
    """Uniform's search space on one model: the pool is read once here (range, fingerprint,
    sizes), one tensor at a time, with no copy of the model and no concatenated pool."""

    distributable = True

    def __init__(self, method: Uniform, model, evaluate, pooling: Pooling, coder: str) -> None:
        self.method, self.model, self.pooling, self.coder = method, model, pooling, coder
        self.variables = method.variables
        self.local = CandidateEvaluator(model, evaluate, None, coder=coder, pooling=pooling)
        pool, source = self.local.pool, self.local.source
        wmin, wmax = self.local.range()
        if not wmax > wmin:
            raise ValueError(
                f"model: every pooled weight equals {wmin}; there is nothing to search"
            )
        if method.clip:
            center = pool_median(source, int(pool.n_weights), wmin, wmax)
        else:
            center = 0.5 * (wmin + wmax)
        self.space = Space(self.variables, method.k_min, method.k_max, wmin, wmax, center,
                           method.clip_floor)  # fmt: skip
        self.local.space = self.space
        self.n_weights = int(pool.n_weights)
        self.original_bytes, self.rest_bytes, self.overhead = file_sizes(
            model, pool, pooling.options(), coder
        )
        self.config = {
            "variables": list(self.variables), "k_min": method.k_min, "k_max": method.k_max,
            "clip_floor": method.clip_floor, "clip_steps": self.space.clip_steps,
            "n_weights": self.n_weights, "pool": pool_fingerprint(pool, source),
        }  # fmt: skip

    def bounds(self):
        return self.space.bounds()

    def key(self, x):
        return self.space.key(x)

    def sweep(self, budget: int, spacing: str) -> list[tuple[int, ...]]:
        if self.variables != ("k",):
            raise ValueError(
                f"strategy 'sweep' searches k only; got Uniform(clip=True) (variables "
                f"{self.variables!r})"
            )
        ks = sweep_ks(self.method.k_min, self.method.k_max, budget, spacing)
        return [self.space.neutral(k) for k in ks]

    def evaluator(self) -> CandidateEvaluator:
        return self.local

    def worker(self, evaluate) -> UniformWorker:
        self.local = None  # the workers build their own working copies
        return UniformWorker(self.model, evaluate, self.space, self.coder, self.pooling)

    def describe(self, key) -> dict:
        d = self.space.decode(key)
        return {"k": d["k"], "clip": d["clip"], "lo": d["lo"], "hi": d["hi"]}

    def compress(self, key) -> Compressed:
        d = self.space.decode(key)
        rng = {} if d["clip"] == 0 else {"lo": d["lo"], "hi": d["hi"]}
        return Uniform(k=d["k"], **rng).compress(self.model, self.pooling)

    def close(self) -> None:
        self.local = None  # the working copy: compress(key) builds from the model
