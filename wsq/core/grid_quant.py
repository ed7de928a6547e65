"""The grid method's quantizer, streamed one tensor (and one chunk) at a time.

See wsq.core.grid for the method. :class:`GridQuantizer` never holds the pool: each pass reads a
tensor from its source (the model's own parameter, or a checkpoint), assigns its weights to grid
points chunk by chunk (:data:`CHUNK` elements: the float64 temporaries of the rate-aware pass stay
a few MB however large the tensor) and accumulates per-point counts and float64 sums over
the grid's span. A plan costs ``1 + rd_iters`` such passes to build its codebook; the points are
never stored (``GridResult.points[i]`` recomputes them), and writing a plan into a compressed
working copy (:meth:`GridQuantizer.update`) is one more pass that packs each tensor at the width
of the values it uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from wsq.core.compressed import Compressed, _assemble
from wsq.core.pool import Pool, collect_pool
from wsq.core.streaming import ModelSource, check_finite, parts_changed, set_part
from wsq.kernels import ops

__all__ = ["GridPlan", "GridResult", "GridQuantizer", "CHUNK", "MAX_POINTS", "MAX_SPAN"]

MAX_POINTS = 65536  # a wsq codebook holds at most 2**16 entries
MAX_SPAN = 1 << 24  # grid points between the lowest and highest used one (histogram size)
CHUNK = 1 << 18  # weights per chunk of a pass: float64 temporaries of 2 MiB each


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
        m = int(self._res.plan.mult[i])
        return torch.cat([r * m for _, r in self._gq._chunks(i, self._res)])


@dataclass
class GridResult:
    """What one plan gives: codebook (float32 (n,), ascending), the relabelling from grid points
    (``relabel[point - lo_point]``: codebook index, -1 unused), per-stream histograms over the
    codebook, the coded bits per weight; ``points[i]`` recomputes entry i's int64 grid points."""

    codebook: Tensor
    lo_point: int
    relabel: Tensor  # int64 (span,)
    per_stream: np.ndarray  # int64 (n_streams, n)
    bits: float = math.nan  # coded bits per pooled weight (wsq.entropy.size_bits, auto coder)
    extra: dict = field(default_factory=dict)
    plan: GridPlan | None = None
    prev: GridResult | None = None  # the result the rate-aware assignment was made against
    rlo: list[int] = field(default_factory=list)  # per tensor: lowest possible step index
    points: _Points | None = None


def _coded_bits(per_stream: np.ndarray) -> float:
    from wsq.io import entropy

    return float(sum(entropy.size_bits(c, "auto") for c in per_stream))


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

    def weights(self, i: int) -> Tensor:
        """float32 CPU (numel,) weights of entry i (a view of the parameter when it is one)."""
        return self.source.weights(i).to("cpu", torch.float32)

    _weights = weights

    # ------------------------------------------------------------------ assignment

    def _bounds(self, i: int, plan: GridPlan) -> tuple[int, int]:
        """(lowest, highest) step index entry i's weights can take (padded for rounding)."""
        step = int(plan.mult[i]) * plan.delta0
        return math.floor(self.wmin[i] / step) - 2, math.ceil(self.wmax[i] / step) + 2

    def _chunks(self, i: int, res: GridResult) -> Iterator[tuple[Tensor, Tensor]]:
        """(weights, step index) per chunk of entry i under res's plan (point = index * mult)."""
        plan, prev = res.plan, res.prev
        m = int(plan.mult[i])
        w_all = self._weights(i)
        if prev is None:
            for s in range(0, w_all.numel(), CHUNK):
                w = w_all[s : s + CHUNK]
                yield w, torch.round(w / (m * plan.delta0)).to(torch.int64)
            return
        # entropy-constrained choice between each weight's two nearest tensor points; a point's
        # value and code length are looked up among prev's used points (<= 65536, sorted), so
        # nothing is sized by the grid's range
        step = m * plan.delta0
        at, ent, length, unused_len = self._rd_lookup(i, prev)
        cb = prev.codebook.double()
        lam = plan.rd * math.log(2) / 6.0 * step * step
        for s in range(0, w_all.numel(), CHUNK):
            w = w_all[s : s + CHUNK].double()
            lower = torch.floor(w / step).to(torch.int64)
            costs = []
            for q in (lower * m, (lower + 1) * m):
                pos = torch.searchsorted(at, q).clamp_(max=at.numel() - 1)
                hit = at[pos] == q
                j = ent[pos]
                # a point no weight uses yet would hold about its grid position
                v = torch.where(hit, cb[j], q.double() * plan.delta0)
                ln = torch.where(hit, length[j], unused_len)
                costs.append((w - v) ** 2 + lam * ln)
            yield w, torch.where(costs[0] <= costs[1], lower, lower + 1)

    def _rd_lookup(self, i: int, prev: GridResult):
        """prev's used grid points (ascending), their codebook entries, and entry i's stream code
        length (bits) per codebook entry and for an entry its stream does not use."""
        if prev.extra.get("at") is None:
            used = torch.nonzero(prev.relabel >= 0).reshape(-1)
            prev.extra["at"] = used + prev.lo_point
            prev.extra["ent"] = prev.relabel[used]
        hist = prev.per_stream[i].astype(np.float64)
        # an entry unused by the stream gets the length of half a count (it would need a table
        # entry and a rare code)
        length = torch.from_numpy(-np.log2(np.maximum(hist, 0.5) / hist.sum()))
        return prev.extra["at"], prev.extra["ent"], length, float(length.max()) + 1.0

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
        return res

    def _accumulate(self, plan: GridPlan, prev: GridResult | None) -> GridResult:
        """One pass: every tensor's points (plain rounding, or rate-aware against `prev`), their
        counts and float64 sums per grid point, then the codebook of the used points."""
        bounds = [self._bounds(i, plan) for i in range(len(self.entries))]
        res = GridResult(torch.empty(0), 0, torch.empty(0), np.zeros((0, 0)), plan=plan, prev=prev)
        res.rlo = [b[0] for b in bounds]
        g_lo = min(b[0] * int(m) for b, m in zip(bounds, plan.mult, strict=True))
        g_hi = max(b[1] * int(m) for b, m in zip(bounds, plan.mult, strict=True))
        counts = torch.zeros(g_hi - g_lo + 1, dtype=torch.int64)
        sums = torch.zeros(g_hi - g_lo + 1, dtype=torch.float64)
        local = []
        for i, (rlo, rhi) in enumerate(bounds):
            m, size = int(plan.mult[i]), rhi - rlo + 1
            lc = torch.zeros(size, dtype=torch.int64)
            ls = torch.zeros(size, dtype=torch.float64)
            for w, r in self._chunks(i, res):
                j = r - rlo
                lc += torch.bincount(j, minlength=size)
                ls += torch.bincount(j, weights=w.double(), minlength=size)
            start = rlo * m - g_lo
            counts[start : start + (size - 1) * m + 1 : m] += lc
            sums[start : start + (size - 1) * m + 1 : m] += ls
            local.append(lc)
        used = counts > 0
        first = int(used.to(torch.uint8).argmax())
        last = len(used) - 1 - int(used.flip(0).to(torch.uint8).argmax())
        counts, sums, used = (
            counts[first : last + 1],
            sums[first : last + 1],
            used[first : last + 1],
        )
        n = int(used.sum())
        if n > MAX_POINTS:
            raise ValueError(
                f"the plan uses {n} grid points; a codebook holds at most {MAX_POINTS}"
            )
        lo = g_lo + first
        codebook = (sums[used] / counts[used]).to(torch.float32)
        # means of disjoint ascending cells are ascending; float32 rounding could tie, never
        # invert: tied cells are one value, so one codebook entry (what a compressed model holds)
        codebook = torch.cummax(codebook, 0).values
        codebook, entry = torch.unique_consecutive(codebook, return_inverse=True)
        relabel = torch.full((len(used),), -1, dtype=torch.int64)
        relabel[used] = entry
        per_stream = np.zeros((len(local), codebook.numel()), dtype=np.int64)
        for i, lc in enumerate(local):
            nz = torch.nonzero(lc).reshape(-1)
            pts = (res.rlo[i] + nz) * int(plan.mult[i]) - lo
            per_stream[i] = torch.bincount(
                relabel[pts], weights=lc[nz].double(), minlength=codebook.numel()
            ).numpy()
        res.codebook, res.lo_point, res.relabel, res.per_stream = codebook, lo, relabel, per_stream
        res.bits = _coded_bits(per_stream) / float(self.numel.sum())
        res.points = _Points(self, res)
        return res

    # ------------------------------------------------------------------ outputs

    def part(self, res: GridResult, i: int) -> tuple[Tensor, Tensor]:
        """(packed, table) of entry i: its indices at the width of the values it uses."""
        used = torch.from_numpy(np.nonzero(res.per_stream[i])[0])  # ascending codebook entries
        bits = ops.bits_for(used.numel())
        rank = torch.zeros(res.codebook.numel(), dtype=torch.int64)
        rank[used] = torch.arange(used.numel())
        m = int(res.plan.mult[i])
        rlo, rhi = res.rlo[i], self._bounds(i, res.plan)[1]
        pts = torch.arange(rlo, rhi + 1, dtype=torch.int64) * m - res.lo_point
        span = len(res.relabel)
        e = res.relabel[pts.clamp(0, span - 1)]
        local = torch.where((pts >= 0) & (pts < span) & (e >= 0), rank[e.clamp_min(0)], 0)
        idx = torch.empty(int(self.numel[i]), dtype=torch.uint8 if bits <= 8 else torch.uint16)
        pos = 0
        for _, r in self._chunks(i, res):
            idx[pos : pos + r.numel()] = local[r - rlo]
            pos += r.numel()
        return ops.pack(idx, bits), ops.lut_table(res.codebook[used], bits)

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
        return _assemble(
            self.model, codebook, bits, by_name, None, k=None, lo=None, hi=None,
            skipped=self.pool.skipped, narrowed=True,
        )  # fmt: skip

    def update(self, work: Compressed, res: GridResult) -> None:
        """Rewrite `work` (a Compressed from :meth:`compress`) to hold `res`, in place, one tensor
        at a time: a search's one working copy, never a second model."""
        for i in range(len(self.entries)):
            set_part(work, i, *self.part(res, i))
        parts_changed(work)

    def write(self, res: GridResult, work: torch.nn.Module) -> None:
        """Write the dequantized weights of `res` into `work`'s pooled parameters, in place."""
        params = self.pool.tensors(work)
        with torch.no_grad():
            for i, p in enumerate(params):
                m = int(res.plan.mult[i])
                v = torch.cat(
                    [
                        res.codebook[res.relabel[r * m - res.lo_point]]
                        for _, r in self._chunks(i, res)
                    ]
                )
                p.data.copy_(v.reshape(p.shape).to(p.dtype))
