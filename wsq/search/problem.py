"""Candidate evaluation for :func:`wsq.search`: the decision space and the one-working-copy evaluator.

A candidate is a tuple of integers (the rounded decision vector). Evaluating it costs one histogram
pass over the pooled weights, read tensor by tensor from the model itself (counts and sums per raw
bin), a second one that bins each tensor and packs it, at the width of the bins it uses, into ONE
compressed working copy (a wsq.Compressed rewritten in place: no dense copy of the model, and the
model itself is only read), and one call of the user's ``evaluate`` on that copy, which computes
exactly what ``wsq.compress`` of the candidate computes.

The same :class:`CandidateEvaluator` runs in the main process (sequential search) and inside
executor workers, where it is built once per worker (per thread) from a :class:`WorkerSpec` and
cached under the search's token (see :func:`worker_evaluate`).
"""

from __future__ import annotations

import math
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from wsq import entropy
from wsq.kernels import ops

# Largest |drop| handed to pymoo: a non-finite metric becomes this (worst) drop, so that sorting and
# crowding distances stay finite; the result still reports the metric as given (NaN/inf).
DROP_CAP = 1e30

# Names of the decision variables wsq.search understands, in canonical order.
KNOWN_VARIABLES = ("k", "clip")


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
        lo, hi = [], []
        for v in self.variables:
            if v == "k":
                lo.append(self.k_min)
                hi.append(self.k_max)
            else:
                lo.append(0)
                hi.append(self.clip_steps)
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

        lo and hi are float32-representable, so wsq.compress(model, k, lo=lo, hi=hi) reproduces
        the binning exactly.
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


@dataclass(frozen=True)
class Record:
    """What one evaluation produced.

    metric: evaluate(working copy); bits: entropy-coded bits per pooled weight; n_bins: non-empty
    bins; t_hist: seconds in the histogram pass, bin means and coded size; t_write: binning and
    packing into the compressed working copy; t_eval: the user's evaluate.
    """

    metric: float
    bits: float
    n_bins: int
    t_hist: float = 0.0
    t_write: float = 0.0
    t_eval: float = 0.0


class CandidateEvaluator:
    """Evaluates decision vectors on ONE compressed working copy, rewritten in place.

    ``work`` is the model whose pooled weights are binned; it is only read (the name stays from
    when candidates were written into it), so threads may share it.
    """

    def __init__(
        self,
        work: torch.nn.Module,
        evaluate: Callable[[torch.nn.Module], float],
        space: Space,
        *,
        coder: str,
        pool_options: dict,
    ) -> None:
        from wsq.core.pool import collect_pool
        from wsq.core.streaming import ModelSource, working_copy

        self.model = work
        self.evaluate = evaluate
        self.space = space
        self.coder = coder
        self.pool_options = pool_options
        self.pool = collect_pool(work, **pool_options)
        self.source = ModelSource(self.pool)
        self.n_weights = int(self.pool.n_weights)
        # the one working copy: a wsq.Compressed that every candidate rewrites in place
        self.work = working_copy(work, self.pool)

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
        nonempty = counts > 0
        bits = entropy.coded_bits(per_counts[:, nonempty], self.coder) / self.n_weights
        codebook = (sums[nonempty] / counts[nonempty].double()).to(torch.float32)
        to_global = torch.cumsum(nonempty.to(torch.int64), 0) - 1
        t1 = time.perf_counter()
        for i, e in enumerate(self.pool.entries):
            present = per_counts[i] > 0
            local = (torch.cumsum(present.to(torch.int32), 0, dtype=torch.int32) - 1).clamp_(min=0)
            out_bits = ops.bits_for(int(present.sum()))
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


# ----------------------------------------------------------------------------- worker side


@dataclass
class WorkerSpec:
    """Everything a worker needs to evaluate candidates; shipped once per worker.

    threads: torch intra-op threads the worker sets when it builds its evaluator; None: 1 in
    process workers, unchanged in thread workers (the setting is process-wide).
    """

    token: str
    model: torch.nn.Module
    evaluate: Callable[[torch.nn.Module], float]
    space: Space
    coder: str
    pool_options: dict
    threads: int | None = None

    def build(self, *, private: bool) -> CandidateEvaluator:
        """The worker's evaluator; ``private=True`` when self.model belongs to this worker alone
        (a process worker that unpickled it), else it is deep-copied (threads share the spec)."""
        threads = self.threads
        if threads is None and private:
            # Process workers default to one thread each: the pool parallelises across processes,
            # and OpenMP's thread team does not survive fork (a forked child that enters a
            # parallel region of the parent's runtime deadlocks; with one thread it never does).
            threads = 1
        if threads is not None:
            torch.set_num_threads(threads)
        # the model is only read (each evaluator packs candidates into its own compressed copy)
        return CandidateEvaluator(
            self.model, self.evaluate, self.space, coder=self.coder, pool_options=self.pool_options
        )


def dumps_spec(spec: WorkerSpec) -> bytes:
    """Serialise a spec once for inter-process shipping (cloudpickle when installed, so closures
    and lambdas work as evaluate; this never touches a file)."""
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - cloudpickle comes with dask
        return pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
    return cloudpickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)


NEED_SPEC = "wsq-need-spec"
_LOCAL = threading.local()


def worker_evaluate(token: str, key: tuple[int, ...], payload=None):
    """Executor task: evaluate one candidate with this worker's cached evaluator.

    ``payload`` (a WorkerSpec, or its bytes) is sent only to workers that may lack the evaluator;
    without one and without a cached evaluator for `token`, returns NEED_SPEC and the driver resends
    with the payload. Returns (Record, loaded) with loaded=True when this call built the evaluator.
    One evaluator per thread: threads must not share a working copy. Only the latest token is kept,
    so a long-lived worker pool holds one model copy at most.
    """
    slot = getattr(_LOCAL, "slot", None)
    loaded = False
    if slot is None or slot[0] != token:
        if payload is None:
            return NEED_SPEC
        _LOCAL.slot = None  # drop the previous search's copy before building the next
        if isinstance(payload, bytes):
            spec = pickle.loads(payload)
            ev = spec.build(private=True)
        else:
            ev = payload.build(private=False)
        slot = (token, ev)
        _LOCAL.slot = slot
        loaded = True
    return slot[1](key), loaded


def finite_or_worst(metric: float, baseline: float) -> float:
    """The drop objective handed to pymoo: baseline - metric, capped; NaN metric -> worst."""
    if math.isnan(metric):
        return DROP_CAP
    return max(-DROP_CAP, min(DROP_CAP, baseline - metric))
