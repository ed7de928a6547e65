"""The grid method's quantizer, streamed one tensor (and one chunk) at a time.

See wsq.core.grid for the method. :class:`GridQuantizer` never holds the pool: each pass reads a
tensor from its source (the model's own parameter, or a checkpoint), assigns its weights to grid
points chunk by chunk (:data:`CHUNK` weights: temporaries stay a few MB however large the tensor)
and accumulates per-point counts and float64 sums. Memory is bounded by the points a plan uses
(<= :data:`MAX_POINTS`), never by the grid's range: a tensor spanning at most :data:`DENSE_CELLS`
of its steps is counted in a dense array over that span (a few MB), a wider one (an outlier far
out) sparsely, by merging each chunk's distinct points; the shared codebook is the sorted list of
used points. A plan costs ``1 + rd_iters`` such passes to build its codebook; the points are never
stored (``GridResult.points[i]`` recomputes them), and writing a plan into a compressed working
copy (:meth:`GridQuantizer.update`) is one more pass that packs each tensor at the width of the
values it uses.

The rate-aware pass picks, for each weight, the cheaper of its two neighbouring tensor points by
``(w - v)^2 + lam * codelength(v)``. The difference of the two costs is linear in w, so the choice
is one threshold per cell between neighbours: computed once per tensor over its span (float64,
then the float32 comparand that gives the same decision), a weight's choice is one gather and one
comparison. Wide tensors compute the same thresholds per weight (same formula, same decisions).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from wsq import entropy
from wsq.compressed import Compressed
from wsq.core.pool import Pool, collect_pool
from wsq.core.streaming import (
    ModelSource,
    check_finite,
    compact_parts,
    part_buffer,
    parts_changed,
    set_part,
    trim_heap,
)
from wsq.kernels import ops

__all__ = [
    "GridPlan",
    "GridResult",
    "GridQuantizer",
    "CHUNK",
    "DENSE_CELLS",
    "MAX_POINTS",
    "MAX_SPAN",
]

MAX_POINTS = 65536  # a wsq codebook holds at most 2**16 entries
# A candidate's working copy (each tensor's packed indices at its width) may hold at most this
# fraction of the pooled tensors' dense bytes: a tune or grid search, which holds the dense model,
# then stays within 1.5x of it with room for a fine candidate's quantization (its per-tensor
# histograms over the codebook: tens of MB at 2**15 points). Finer candidates (about 10+ bits per
# weight in memory at float32) are refused as too fine, as grids beyond 2**16 points are.
WORK_FRACTION = 0.3
MAX_SPAN = 1 << 24  # grid points over the pool's range: indices stay exact in float32
CHUNK = 1 << 18  # weights per chunk of a pass: temporaries of 1-2 MiB each
DENSE_CELLS = 1 << 18  # a tensor spanning more of its steps is accumulated sparsely
_INF = float("inf")


@dataclass(frozen=True)
class GridPlan:
    """Steps of one shared grid: tensor t (pool entry order) uses step ``mult[t] * delta0``.

    rd: strength of the rate-aware assignment (0: plain rounding; 1: the high-rate
    rate-distortion slope); rd_iters: passes of it.
    """

    delta0: float
    mult: tuple[int, ...]
    rd: float = 0.0
    rd_iters: int = 2

    def steps(self) -> np.ndarray:
        return self.delta0 * np.asarray(self.mult, dtype=np.float64)


class _Points:
    """``points[i]``: int64 grid point of each weight of pool entry i (recomputed on access)."""

    def __init__(self, gq: GridQuantizer, res: GridResult) -> None:
        self._gq, self._res = gq, res

    def __len__(self) -> int:
        return len(self._gq.entries)

    def __getitem__(self, i: int) -> Tensor:
        m, rlo = int(self._res.plan.mult[i]), self._res.rlo[i]
        return torch.cat([(j.to(torch.int64) + rlo) * m for _, j in self._gq._chunks(i, self._res)])


@dataclass
class GridResult:
    """What one plan gives: codebook (float32 (n,), ascending); the grid points some weight uses
    (``at``, int64 ascending) and the codebook entry of each (``entry``); per-stream histograms
    over the codebook; the coded bits per weight; ``points[i]`` recomputes entry i's int64 grid
    points. Its size is bounded by the points used, not by the grid's range."""

    codebook: Tensor
    at: Tensor  # int64 (n_points,)
    entry: Tensor  # int64 (n_points,): codebook index of each used point (float32 ties share one)
    per_stream: np.ndarray  # int64 (n_streams, n)
    bits: float = math.nan  # coded bits per pooled weight (wsq.entropy.size_bits, auto coder)
    extra: dict = field(default_factory=dict)
    plan: GridPlan | None = None
    prev: GridResult | None = None  # the result the rate-aware assignment was made against
    rlo: list[int] = field(default_factory=list)  # per tensor: lowest possible step index
    quantizer: GridQuantizer | None = field(default=None, repr=False, compare=False)

    @property
    def points(self) -> _Points:
        # made on access, not stored: a stored _Points referring back to its result made every
        # result a reference cycle, freed only by the cyclic collector (MBs per candidate)
        return _Points(self.quantizer, self)

    def lookup(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """(hit bool, codebook entry int64; 0 where not hit) of int64 grid points."""
        if self.at.numel() == 0:
            return torch.zeros_like(points, dtype=torch.bool), torch.zeros_like(points)
        pos = torch.searchsorted(self.at, points).clamp_(max=self.at.numel() - 1)
        hit = self.at[pos] == points
        return hit, torch.where(hit, self.entry[pos], 0)


def _thresholds(v0: Tensor, v1: Tensor, l0: Tensor, l1: Tensor) -> tuple[Tensor, Tensor]:
    """Per cell between points of values v0, v1 and rate costs l0, l1 (float64): (f float32,
    rev bool) such that a float32 weight x goes to the upper point, i.e.
    ``(x - v1)^2 + l1 < (x - v0)^2 + l0`` (ties stay low), exactly when ``(x > f) != rev``.

    The cost difference is ``(v1 - v0) (v1 + v0 - 2x) + l1 - l0``: below zero for x above
    ``t = (v0 + v1) / 2 + (l1 - l0) / (2 (v1 - v0))`` when v1 > v0, below it when v1 < v0 (the
    upper point's value below the lower's: possible where a coarse tensor's mean sits near an
    unused point), and for every x or none when v1 == v0."""
    a = v1 - v0
    dl = l1 - l0
    t = 0.5 * (v0 + v1) + dl / (2.0 * torch.where(a == 0, 1.0, a))
    t = torch.where(a == 0, torch.where(dl < 0, -_INF, _INF), t)
    rev = a < 0
    f = t.float()
    # up iff x > t (x float32): x > f for f the largest float32 <= t; reversed, up iff x < t,
    # i.e. not (x > f) for f the largest float32 < t
    over = torch.where(rev, f.double() >= t, f.double() > t)
    f = torch.where(over, torch.nextafter(f, torch.tensor(-_INF)), f)
    return f, rev


class _Sparse:
    """Distinct int64 keys (ascending) with int64 counts and float64 sums, merged batch by batch;
    more than MAX_POINTS keys is a ValueError (no codebook could hold them)."""

    def __init__(self) -> None:
        self.keys = torch.zeros(0, dtype=torch.int64)
        self.counts = torch.zeros(0, dtype=torch.int64)
        self.sums = torch.zeros(0, dtype=torch.float64)

    def add(self, keys: Tensor, counts: Tensor, sums: Tensor) -> None:
        k = torch.cat([self.keys, keys])
        u, inv = torch.unique(k, sorted=True, return_inverse=True)
        if u.numel() > MAX_POINTS:
            raise ValueError(_too_many(u.numel()))
        self.counts = torch.zeros(u.numel(), dtype=torch.int64).index_add_(
            0, inv, torch.cat([self.counts, counts])
        )
        self.sums = torch.zeros(u.numel(), dtype=torch.float64).index_add_(
            0, inv, torch.cat([self.sums, sums])
        )
        self.keys = u

    def add_raw(self, j: Tensor, x: Tensor) -> None:
        u, inv, c = torch.unique(j, sorted=True, return_inverse=True, return_counts=True)
        s = torch.zeros(u.numel(), dtype=torch.float64).index_add_(0, inv, x.double())
        self.add(u.to(torch.int64), c, s)


class GridQuantizer:
    """The pool of a model (or a checkpoint source), quantized on a shared grid by plans.

    ``quantize(plan)`` -> GridResult; ``compress(res)`` -> wsq.Compressed; ``update(work, res)``
    rewrites a Compressed made by ``compress`` in place (a search's one working copy);
    ``write(res, model)`` writes dense quantized weights into a model's parameters. Holds per
    tensor only its min, max and std.
    """

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        *,
        pool_options: dict | None = None,
        source=None,
        pool: Pool | None = None,
    ) -> None:
        if source is None:
            if not isinstance(model, torch.nn.Module):
                raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
            if pool_options is not None and not isinstance(pool_options, dict):
                raise TypeError(f"pool_options must be a dict, got {type(pool_options).__name__}")
            pool = collect_pool(model, **(pool_options or {}))
            source = ModelSource(pool)
        self.model = model
        self.pool_options = dict(pool_options or {})
        self.pool: Pool = pool
        self.source = source
        self.entries = pool.entries
        self.numel = np.array([e.numel for e in self.entries], dtype=np.int64)
        self.wmin = np.zeros(len(self.entries))
        self.wmax = np.zeros(len(self.entries))
        std = []
        for i in range(len(self.entries)):  # one pass: finiteness, range, spread
            w = self._weights(i)
            self.wmin[i], self.wmax[i] = check_finite(source, i, w)
            std.append(float(w.std()) if w.numel() > 1 else 0.0)
        self.absmax = float(max(np.abs(self.wmin).max(), np.abs(self.wmax).max()))
        # the probe step is relative to each tensor's spread; a constant tensor has none, so it
        # is probed at the pool's scale instead (its step then only sets its own rounding)
        fallback = self.absmax if self.absmax > 0 else 1.0
        self.std = np.array([v if v > 0 else fallback for v in std])
        self._bufs: dict[tuple[str, torch.dtype], Tensor] = {}

    def _scratch(self, name: str, n: int, dtype: torch.dtype) -> Tensor:
        """A (n,) buffer (n <= CHUNK) kept for every tensor, pass and candidate: a pass that
        allocated its chunk buffers per tensor left freed megabytes interleaved with live ones,
        which glibc's heap kept resident. :meth:`release` frees them (a few MB)."""
        b = self._bufs.get((name, dtype))
        if b is None or b.numel() < n:
            b = torch.empty(max(n, min(CHUNK, int(self.numel.max()))), dtype=dtype)
            self._bufs[(name, dtype)] = b
        return b[:n]

    def release(self) -> None:
        """Free the scratch buffers and return the heap's free pages to the system."""
        self._bufs.clear()
        trim_heap()

    def weights(self, i: int) -> Tensor:
        """float32 CPU (numel,) weights of entry i (a view of the parameter when it is one)."""
        return self.source.weights(i).to("cpu", torch.float32)

    _weights = weights

    # ------------------------------------------------------------------ assignment

    def _bounds(self, i: int, plan: GridPlan) -> tuple[int, int]:
        """(lowest, highest) step index entry i's weights can take (padded for rounding)."""
        step = int(plan.mult[i]) * plan.delta0
        return math.floor(self.wmin[i] / step) - 2, math.ceil(self.wmax[i] / step) + 2

    def _dense(self, i: int, plan: GridPlan) -> bool:
        lo, hi = self._bounds(i, plan)
        return hi - lo + 1 <= DENSE_CELLS

    def _values_costs(self, i: int, res: GridResult, q: Tensor) -> tuple[Tensor, Tensor]:
        """float64 value and rate cost (lam * code length of entry i's stream) of grid points q
        under res.prev; a point no weight uses yet holds about its grid position, and costs a
        bit more than entry i's rarest code (it would need a table entry and a rare code)."""
        plan, prev = res.plan, res.prev
        step = int(plan.mult[i]) * plan.delta0
        lam = plan.rd * math.log(2) / 6.0 * step * step
        if "length" not in prev.extra:
            prev.extra["cb"] = prev.codebook.double()
            prev.extra["length"] = {}
        lengths = prev.extra["length"]
        if i not in lengths:
            hist = prev.per_stream[i].astype(np.float64)
            ln = torch.from_numpy(-np.log2(np.maximum(hist, 0.5) / hist.sum()))
            lengths = {i: (ln, float(ln.max()) + 1.0)}  # one tensor's at a time
            prev.extra["length"] = lengths
        length, unused = lengths[i]
        hit, e = prev.lookup(q)
        v = torch.where(hit, prev.extra["cb"][e], q.double() * plan.delta0)
        return v, torch.where(hit, length[e], unused) * lam

    def _chunks(self, i: int, res: GridResult) -> Iterator[tuple[Tensor, Tensor]]:
        """(weights, local step index j) per chunk of entry i under res's plan: the weight's
        grid point is ``(j + res.rlo[i]) * mult``; j is int32 for a dense tensor, else int64, and
        is a buffer reused by the next chunk (use it before asking for the next)."""
        plan, prev = res.plan, res.prev
        m = int(plan.mult[i])
        step = m * plan.delta0
        rlo, rhi = self._bounds(i, plan)
        dense = rhi - rlo + 1 <= DENSE_CELLS
        jt = torch.int32 if dense else torch.int64
        w_all = self._weights(i)
        if prev is not None and dense:  # one threshold per cell of the span
            q = torch.arange(rlo, rhi + 1, dtype=torch.int64) * m
            v, c = self._values_costs(i, res, q)
            f, rev = _thresholds(v[:-1], v[1:], c[:-1], c[1:])
            rev = rev if bool(rev.any()) else None
            del q, v, c
        # |index| < MAX_SPAN = 2**24: exact in float32, so floor/round/subtract stay exact. The
        # chunk buffers are allocated once per tensor: a fresh buffer per chunk costs more in
        # page faults than the arithmetic
        n = min(CHUNK, w_all.numel())
        qf = self._scratch("q", n, torch.float32)
        cell = self._scratch("cell", n, jt)
        if prev is not None:
            g = self._scratch("g", n, torch.float32)
            up = self._scratch("up", n, torch.bool)
        for s in range(0, w_all.numel(), CHUNK):
            x = w_all[s : s + CHUNK]
            k = x.numel()
            q, c = qf[:k], cell[:k]
            torch.div(x, step, out=q)
            if prev is None:
                c.copy_(q.round_().sub_(rlo))
                yield x, c
                continue
            c.copy_(q.floor_().sub_(rlo))
            if dense:
                torch.gt(x, torch.index_select(f, 0, c, out=g[:k]), out=up[:k])
                if rev is not None:
                    up[:k] ^= rev[c]
            else:  # the same thresholds, weight by weight
                q0 = (c + rlo) * m
                v0, c0 = self._values_costs(i, res, q0)
                v1, c1 = self._values_costs(i, res, q0 + m)
                fw, rw = _thresholds(v0, v1, c0, c1)
                torch.gt(x, fw, out=up[:k])
                up[:k] ^= rw
                del q0, v0, c0, v1, c1, fw, rw
            yield x, c.add_(up[:k])

    def work_budget(self) -> float:
        """Bytes a candidate's working copy may hold: WORK_FRACTION of the pooled dense bytes."""
        return WORK_FRACTION * sum(
            e.numel * torch.empty(0, dtype=e.dtype).element_size() for e in self.entries
        )

    def plan_bytes(self, plan: GridPlan) -> int:
        """An upper bound of :meth:`work_bytes` known before quantizing: each tensor at the width
        of every point its range spans."""
        total = 0
        for i, n in enumerate(self.numel):
            lo, hi = self._bounds(i, plan)
            total += ops.packed_bytes(int(n), ops.bits_for(min(hi - lo + 1, MAX_POINTS)))
        return total

    def work_bytes(self, res: GridResult) -> int:
        """Bytes the working copy's packed indices need for `res` (each tensor at its width)."""
        return sum(
            ops.packed_bytes(int(n), ops.bits_for(int(np.count_nonzero(c))))
            for n, c in zip(self.numel, res.per_stream, strict=True)
        )

    def quantize(self, plan: GridPlan) -> GridResult:
        """Assign every pooled weight to a grid point and build the shared codebook."""
        if len(plan.mult) != len(self.entries):
            raise ValueError(f"plan has {len(plan.mult)} steps for {len(self.entries)} tensors")
        if not (math.isfinite(plan.delta0) and plan.delta0 > 0):
            raise ValueError(f"plan.delta0 must be a finite number > 0, got {plan.delta0}")
        if min(plan.mult) < 1:
            raise ValueError("every step multiple must be >= 1")
        if 2 * self.absmax / plan.delta0 >= MAX_SPAN:
            raise ValueError(
                f"delta0={plan.delta0:g} is too fine: the grid would span more than "
                f"{MAX_SPAN} points over |w| <= {self.absmax:g}"
            )
        res = self._accumulate(plan, None)
        for _ in range(plan.rd_iters if plan.rd > 0 else 0):
            res = self._accumulate(plan, res)
            res.prev.prev = None  # only the last pass's reference is needed to recompute points
        # the final pass only
        res.bits = entropy.coded_bits(res.per_stream) / float(self.numel.sum())
        trim_heap()
        return res

    def _accumulate(self, plan: GridPlan, prev: GridResult | None) -> GridResult:
        """One pass: every tensor's points (plain rounding, or rate-aware against `prev`), their
        counts and float64 sums per used point, then the codebook of the used points."""
        empty = torch.zeros(0, dtype=torch.int64)
        res = GridResult(torch.zeros(0), empty, empty, np.zeros((0, 0)), plan=plan, prev=prev)
        res.rlo = [self._bounds(i, plan)[0] for i in range(len(self.entries))]
        total = _Sparse()
        per_tensor = []  # (points, counts) of each tensor: bounded by the points used
        for i in range(len(self.entries)):
            m, (rlo, rhi) = int(plan.mult[i]), self._bounds(i, plan)
            size = rhi - rlo + 1
            if size <= DENSE_CELLS:  # a dense histogram over the tensor's span: a few MB
                lc = torch.zeros(size, dtype=torch.int64)
                ls = torch.zeros(size, dtype=torch.float64)
                xd = self._scratch("x64", min(CHUNK, int(self.numel[i])), torch.float64)
                for x, j in self._chunks(i, res):
                    lc += torch.bincount(j, minlength=size)
                    xk = xd[: x.numel()]
                    ls += torch.bincount(j, weights=xk.copy_(x), minlength=size)
                nz = torch.nonzero(lc).reshape(-1)
                if nz.numel() > MAX_POINTS:
                    raise ValueError(_too_many(nz.numel()))
                keys, cnt, sums = nz, lc[nz], ls[nz]
                del lc, ls
            else:
                sp = _Sparse()
                for x, j in self._chunks(i, res):
                    sp.add_raw(j, x)
                keys, cnt, sums = sp.keys, sp.counts, sp.sums
            pts = (keys + rlo) * m
            total.add(pts, cnt, sums)
            per_tensor.append((pts, cnt))
        at, counts, sums = total.keys, total.counts, total.sums
        codebook = (sums / counts).to(torch.float32)
        # means of disjoint ascending cells are ascending; float32 rounding could tie, never
        # invert: tied cells are one value, so one codebook entry (what a compressed model holds)
        codebook = torch.cummax(codebook, 0).values
        codebook, entry = torch.unique_consecutive(codebook, return_inverse=True)
        n = codebook.numel()
        per_stream = np.zeros((len(per_tensor), n), dtype=np.int64)
        for i, (pts, cnt) in enumerate(per_tensor):
            e = entry[torch.searchsorted(at, pts)]
            per_stream[i] = torch.bincount(e, weights=cnt.double(), minlength=n).numpy()
        res.codebook, res.at, res.entry, res.per_stream = codebook, at, entry, per_stream
        res.quantizer = self
        return res

    # ------------------------------------------------------------------ outputs

    def part(self, res: GridResult, i: int, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(packed, table) of entry i: its indices at the width of the values it uses, packed
        chunk by chunk (a chunk of CHUNK indices is a whole number of bytes at any width).
        ``out(nbytes)``, when given, returns the uint8 buffer to pack into (or None: a new one)."""
        used = torch.from_numpy(np.nonzero(res.per_stream[i])[0])  # ascending codebook entries
        bits = ops.bits_for(used.numel())
        odt = torch.uint8 if bits <= 8 else torch.uint16
        rank = torch.zeros(res.codebook.numel(), dtype=torch.int32)
        rank[used] = torch.arange(used.numel(), dtype=torch.int32)
        m, rlo = int(res.plan.mult[i]), res.rlo[i]
        dense = self._dense(i, res.plan)
        if dense:  # local step index -> rank among the tensor's used values (int16 holds the
            # bit pattern of a uint16 rank; index_select has no uint16 kernel)
            rhi = self._bounds(i, res.plan)[1]
            hit, e = res.lookup(torch.arange(rlo, rhi + 1, dtype=torch.int64) * m)
            ldt = torch.uint8 if bits <= 8 else torch.int16
            local = torch.where(hit, rank[e], 0).to(ldt)
            buf = self._scratch("idx", min(CHUNK, int(self.numel[i])), ldt)
        nbytes = ops.packed_bytes(int(self.numel[i]), bits)
        packed = out(nbytes) if out is not None else None
        if packed is None:
            packed = torch.empty(nbytes, dtype=torch.uint8)
        pos = 0
        for _, j in self._chunks(i, res):
            if dense:
                idx = torch.index_select(local, 0, j, out=buf[: j.numel()]).view(odt)
            else:
                idx = rank[res.lookup((j + rlo) * m)[1]].to(odt)
            b = ops.pack(idx, bits)
            packed[pos : pos + b.numel()] = b
            pos += b.numel()
        return packed, ops.lut_table(res.codebook[used], bits)

    def parts(self, res: GridResult) -> tuple[Tensor, int, list[tuple[Tensor, Tensor]]]:
        """(codebook, bits of the shared codebook, per entry (packed, table))."""
        out = [self.part(res, i) for i in range(len(self.entries))]
        return res.codebook, ops.bits_for(int(res.codebook.numel())), out

    def compress(self, res: GridResult) -> Compressed:
        """The wsq.Compressed of `res` (one shared codebook, packed indices; saves as usual)."""
        if self.model is None:
            raise TypeError("this GridQuantizer reads a checkpoint: use parts(), not compress()")
        codebook, bits, parts = self.parts(res)
        by_name = {e.name: p for e, p in zip(self.entries, parts, strict=True)}
        parts.clear()
        return Compressed.assemble(
            self.model, codebook, bits, by_name, None, k=None, lo=None, hi=None,
            skipped=self.pool.skipped, narrowed=True,
        )  # fmt: skip

    def update(self, work: Compressed, res: GridResult, *, final: bool = False) -> None:
        """Rewrite `work` (a Compressed from :meth:`compress`) to hold `res`, in place, one tensor
        at a time: a search's one working copy, never a second model. Each tensor is packed into
        the storage it already has when large enough (no allocation churn per candidate; see
        wsq.core.streaming.part_buffer); ``final`` trims the storages to size afterwards."""
        for i in range(len(self.entries)):
            packed, table = self.part(res, i, out=lambda n, i=i: part_buffer(work, i, n))
            set_part(work, i, packed, table)
        if final:
            compact_parts(work)
        parts_changed(work)
        trim_heap()

    def write(self, res: GridResult, work: torch.nn.Module) -> None:
        """Write the dequantized weights of `res` into `work`'s pooled parameters, in place."""
        params = self.pool.tensors(work)
        with torch.no_grad():
            for i, p in enumerate(params):
                m, rlo = int(res.plan.mult[i]), res.rlo[i]
                v = torch.cat(
                    [res.codebook[res.lookup((j + rlo) * m)[1]] for _, j in self._chunks(i, res)]
                )
                p.data.copy_(v.reshape(p.shape).to(p.dtype))


def _too_many(n: int) -> str:
    return f"the plan uses {n} grid points; a codebook holds at most {MAX_POINTS}"
