"""What :func:`wsq.search` returns: the Pareto front of (metric drop, coded bits per weight)."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Solution:
    """One evaluated candidate.

    Attributes:
        k: bins requested (decision variable).
        clip: range clip in [0, 1] (decision variable when searched; 0 = the pool's full range).
        lo, hi: the binning range used (float32 values); wsq.compress(model, wsq.Uniform(k, lo, hi))
            reproduces the candidate's bins exactly.
        n_bins: non-empty bins = codebook entries (n <= k).
        metric: evaluate(model with the candidate's weights); drop: baseline - metric (lower is
            better, negative when the compressed model scores higher).
        bits: entropy-coded bits per pooled weight: the coded index streams of the file (one per
            pooled tensor, wsq.entropy.size_bits with the search's coder, tables included) /
            pooled weights. Exact for Huffman streams; for ANS streams size_bits is a proven
            upper bound a few bytes per stream above the real size.
        cr: all-in compression ratio of the file this candidate would give: original bytes (every
            state_dict tensor at its dtype, tied once) / (coded index streams + float32 codebook +
            every uncompressed tensor + the file's header). The header size is measured once per
            search (it varies by a few bytes with k), so cr matches
            ``SearchResult.compress(i).stats()["cr"]`` to within about 0.1% on small models.
        generation: the generation (sweep: the batch) in which it was first evaluated.
        x: the integer decision vector (the cache key), in the search's variable order.
        method: "uniform" (k equal bins) or "grid" (wsq.core.grid: per-tensor steps on one shared
            grid; k is 0 and lo/hi NaN there, the candidate is set by scale and rd instead).
        scale, rd: "grid" only (NaN otherwise): the step scale c of ``step_t = c sqrt(n_t /
            s_t)`` (weight units) and the rate-aware rounding strength.
    """

    k: int
    clip: float
    lo: float
    hi: float
    n_bins: int
    metric: float
    drop: float
    bits: float
    cr: float
    generation: int
    x: tuple[int, ...]
    method: str = "uniform"
    scale: float = math.nan
    rd: float = math.nan

    def as_dict(self) -> dict:
        d = asdict(self)
        d["x"] = list(self.x)
        return d


def pareto_front(solutions: Iterable[Solution]) -> list[Solution]:
    """Non-dominated solutions (minimising drop and bits), sorted by bits ascending.

    Of several with identical (bits, drop) the one with the smallest decision vector is kept. A NaN
    metric counts as the worst drop.
    """

    def drop_key(s: Solution) -> float:
        return math.inf if math.isnan(s.drop) else s.drop

    front: list[Solution] = []
    best = math.inf
    for s in sorted(solutions, key=lambda s: (s.bits, drop_key(s), s.x)):
        d = drop_key(s)
        if d < best:
            front.append(s)
            best = d
    return front


def _fmt(v: float, width: int, prec: int) -> str:
    return f"{v:>{width}.{prec}f}" if math.isfinite(v) else f"{str(v):>{width}}"


def json_safe(v):
    """`v` with every non-finite float replaced by None (recursively): strict JSON has no NaN."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


class SearchResult:
    """The outcome of :func:`wsq.search`.

    Attributes:
        front: Pareto-optimal Solutions over every evaluated candidate, sorted by bits ascending.
        history: every distinct evaluated candidate, in evaluation order.
        baseline: evaluate(original model).
        n_evaluations: calls of evaluate on candidates (distinct decision vectors; the baseline
            excluded). n_requested: candidates the strategy asked for (cache hits included).
        generations: generations (sweep: batches) completed; converged: True when NSGA-II stopped
            early because no new offspring could be produced (the reachable space was exhausted).
        strategy, seed, variables, config: how the search ran. timings: seconds, see search().
        compress(i): the original model compressed as front solution i (the method's own).
        n_shipments: tasks that carried the model and evaluate to workers (Dask: broadcasts);
            n_loads: evaluators built by workers (at most one per worker and thread);
            n_retries: candidates resubmitted after a worker died. All 0 without an executor.
    """

    def __init__(
        self,
        *,
        front: list[Solution],
        history: list[Solution],
        baseline: float,
        n_requested: int,
        generations: int,
        converged: bool,
        strategy: str,
        seed: int,
        variables: tuple[str, ...],
        config: dict,
        timings: dict,
        n_shipments: int,
        n_loads: int,
        n_retries: int,
        compress: Callable[[tuple[int, ...]], object] | None = None,
    ) -> None:
        self.front = front
        self.history = history
        self.baseline = baseline
        self.n_evaluations = len(history)
        self.n_requested = n_requested
        self.generations = generations
        self.converged = converged
        self.strategy = strategy
        self.seed = seed
        self.variables = variables
        self.config = config
        self.timings = timings
        self.n_shipments = n_shipments
        self.n_loads = n_loads
        self.n_retries = n_retries
        self._compress = compress

    def __repr__(self) -> str:
        return (
            f"SearchResult({self.strategy}, front of {len(self.front)}, "
            f"{self.n_evaluations} evaluations, baseline {self.baseline:.6g})"
        )

    # ------------------------------------------------------------------ choosing

    def best(self, max_drop: float = 0.0) -> Solution:
        """The front solution with the fewest bits whose drop is <= max_drop (metric units).

        Raises ValueError when no front solution qualifies (the message gives the smallest drop).
        """
        if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)):
            raise TypeError(f"max_drop must be a number, got {type(max_drop).__name__}")
        ok = [s for s in self.front if s.drop <= max_drop]
        if not ok:
            smallest = min((s.drop for s in self.front), default=math.nan)
            raise ValueError(
                f"no front solution has drop <= max_drop={max_drop}; the smallest drop on the "
                f"front is {smallest:.6g}"
            )
        return min(ok, key=lambda s: (s.bits, s.drop))

    def _solution(self, i) -> Solution:
        if isinstance(i, Solution):
            return i
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"i must be a front index or a Solution, got {type(i).__name__}")
        if not -len(self.front) <= i < len(self.front):
            raise ValueError(f"i={i} is out of range for a front of {len(self.front)} solutions")
        return self.front[i]

    def compress(self, i: int | Solution = 0):
        """The ORIGINAL model compressed as front solution i -> wsq.Compressed.

        ``i``: index into ``front`` (or a Solution, e.g. from ``best()``). Uniform solutions:
        wsq.compress with the same pool, k, lo and hi; grid solutions: the same grid plan (scale,
        rd, probed sensitivities) the search evaluated. Either result goes to wsq.merge, wsq.save.
        """
        s = self._solution(i)
        if self._compress is None:
            raise ValueError("this SearchResult holds no model (it was not made by wsq.search)")
        return self._compress(s.x)

    # ------------------------------------------------------------------ comparing

    def hypervolume(self, ref: Sequence[float] | None = None) -> float:
        """Hypervolume of the front in (drop, bits) space (pymoo's HV), larger is better.

        ``ref``: the reference point (drop, bits); default (|baseline| or 1 if it is 0, 32): for a
        metric that cannot go below 0 (accuracy) the worst possible drop, and 32 bits per weight.
        Use the same ref to compare results (e.g. NSGA-II against a sweep with the same budget).
        """
        from pymoo.indicators.hv import HV

        if ref is None:
            ref = (abs(self.baseline) if self.baseline != 0 else 1.0, 32.0)
        ref = np.asarray(ref, dtype=np.float64).reshape(-1)
        if ref.shape != (2,) or not np.isfinite(ref).all():
            raise ValueError(f"ref must be two finite numbers (drop, bits), got {ref.tolist()}")
        f = np.asarray([[s.drop, s.bits] for s in self.front], dtype=np.float64).reshape(-1, 2)
        f = f[np.isfinite(f).all(1) & (f < ref).all(1)]
        if len(f) == 0:
            return 0.0
        return float(HV(ref_point=ref)(f))

    # ------------------------------------------------------------------ output

    def table(self, limit: int | None = None) -> str:
        """The front as a text table (one row per solution, bits ascending)."""
        show_clip = "clip" in self.variables
        is_grid = self.config.get("method") == "grid"
        head = f"{'#':>3} {'k':>5}" + (f" {'clip':>5}" if show_clip else "")
        if is_grid:
            head = f"{'#':>3} {'scale':>9} {'rd':>5}"
        head += f" {'n_bins':>6} {'metric':>10} {'drop':>10} {'bits/w':>7} {'CR':>7}"
        t = self.timings.get("total_s", 0.0)
        lines = [
            f"wsq search ({'grid ' if is_grid else ''}{self.strategy}, seed {self.seed}): baseline {self.baseline:.6g}, "
            f"{self.n_evaluations} evaluations ({self.n_requested} requested), "
            f"{self.generations} generations, {t:.1f} s",
            head,
        ]
        rows = self.front if limit is None else self.front[:limit]
        for j, s in enumerate(rows):
            r = f"{j:>3} {s.k:>5}" + (f" {s.clip:>5.2f}" if show_clip else "")
            if is_grid:
                r = f"{j:>3} {s.scale:>9.3g} {s.rd:>5.2f}"
            r += f" {s.n_bins:>6} {_fmt(s.metric, 10, 4)} {_fmt(s.drop, 10, 4)}"
            r += f" {_fmt(s.bits, 7, 3)} {_fmt(s.cr, 7, 2)}"
            lines.append(r)
        if limit is not None and len(self.front) > limit:
            lines.append(f"... {len(self.front) - limit} more")
        return "\n".join(lines)

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the front as CSV (header: the Solution fields; x as space-separated integers)."""
        fields = ["k", "clip", "lo", "hi", "n_bins", "metric", "drop", "bits", "cr", "generation"]
        if self.config.get("method") == "grid":
            fields += ["method", "scale", "rd"]
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(fields + ["x"])
            for s in self.front:
                w.writerow([repr(getattr(s, n)) for n in fields] + [" ".join(map(str, s.x))])

    def as_dict(self) -> dict:
        """Everything in plain JSON types (non-finite floats as None)."""
        return json_safe(
            {
                "format": "wsq-search-result",
                "strategy": self.strategy,
                "seed": self.seed,
                "variables": list(self.variables),
                "baseline": self.baseline,
                "n_evaluations": self.n_evaluations,
                "n_requested": self.n_requested,
                "generations": self.generations,
                "converged": self.converged,
                "hypervolume": self.hypervolume(),
                "config": self.config,
                "timings": self.timings,
                "n_shipments": self.n_shipments,
                "n_loads": self.n_loads,
                "n_retries": self.n_retries,
                "front": [s.as_dict() for s in self.front],
                "history": [s.as_dict() for s in self.history],
            }
        )

    def to_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`as_dict` as JSON (strict: non-finite values become null)."""
        with open(path, "w") as f:
            json.dump(self.as_dict(), f, indent=1, allow_nan=False)
            f.write("\n")

    def plot(self, path: str | os.PathLike, *, title: str | None = None) -> None:
        """Save the front (and every evaluated point, faint) as a PNG: bits/weight vs metric drop.

        Uses matplotlib's Agg canvas directly, leaving the global backend alone.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.4, 4.4), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        hx = [s.bits for s in self.history if math.isfinite(s.drop)]
        hy = [s.drop for s in self.history if math.isfinite(s.drop)]
        ax.scatter(hx, hy, s=8, c="0.75", label=f"evaluated ({len(self.history)})")
        fx = [s.bits for s in self.front if math.isfinite(s.drop)]
        fy = [s.drop for s in self.front if math.isfinite(s.drop)]
        ax.step(fx, fy, where="post", c="C0", lw=1.2)
        ax.scatter(fx, fy, s=18, c="C0", label=f"Pareto front ({len(self.front)})", zorder=3)
        ax.axhline(0.0, c="k", lw=0.6, ls=":")
        ax.set_xlabel("entropy-coded bits per pooled weight")
        ax.set_ylabel(f"metric drop (baseline {self.baseline:.4g})")
        ax.set_title(title or f"wsq search ({self.strategy}, {self.n_evaluations} evaluations)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        fig.savefig(os.fspath(path), format="png")
