"""``wsq.Grid``: sensitivity-aware steps on one shared grid (wsq.core.grid holds the building
blocks: GridQuantizer, probe_sensitivity, allocate, plan_for, tune_scale, tune).

Its variables after a one-off probe of per-tensor sensitivities s_t: the step scale c
(``step_t = c sqrt(n_t / s_t)``) and the rate-aware rounding strength rd. As a search space both
are integers so the search shares the uniform method's NSGA-II driver, cache and result:

* ``scale``: i in [-SCALE_HALF, SCALE_HALF], c = c0 * 2 ** (i / SCALE_PER_OCTAVE), where c0 is the
  scale whose predicted probe drop is 1% of |baseline| (or 0.01); +-6 octaves of c is +-12 of the
  predicted drop, which covers "nearly lossless" to "broken" on every model tried;
* ``rd``: j in [0, RD_STEPS], rd = j * RD_UNIT (0 = nearest point, 1 = the high-rate RD slope).

Each candidate is quantized on the shared grid, packed into ONE compressed working copy in place
(each tensor at the width of its values: no dense copy of the model) and scored; its bits are the
coded index streams from the per-stream histograms (no file is written). A candidate whose working
copy would exceed grid_quant.WORK_FRACTION (0.3) of the dense pooled bytes is reported as too fine
(NaN metric, like a grid beyond 2**16 points), so the search stays within 1.5x dense. Candidates
run in this process (no executor, no checkpoint: a grid search is tens to a few hundred
evaluations after the probe).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from wsq import entropy
from wsq.checks import finite_baseline, number
from wsq.compressed import Compressed
from wsq.core import grid as wgrid
from wsq.methods.base import Method, Pooling, Problem, Record, callable_or_none, int_field
from wsq.methods.pool_stats import file_sizes

__all__ = ["Grid"]

SCALE_PER_OCTAVE = 8
SCALE_HALF = 6 * SCALE_PER_OCTAVE
RD_UNIT = 0.25
RD_STEPS = 8


@dataclass(frozen=True)
class Grid(Method):
    """Per-tensor steps on one shared grid: tensor t is rounded to multiples of its own step
    ``scale * sqrt(n_t / s_t)`` on the grid every tensor shares (one codebook, each weight a small
    index), s_t its measured sensitivity (one evaluation per tensor, see
    wsq.core.grid.probe_sensitivity).

    Args:
        scale: the step scale c (weight units). wsq.compress needs it (with sensitivities);
            wsq.tune starts its bracketing there (default: the scale whose predicted probe drop
            is start_drop).
        rd: rate-aware rounding strength (0: nearest point; 1: the high-rate rate-distortion
            slope, default; larger trades more error for fewer bits).
        sensitivities: s_t, one per pooled tensor (e.g. ``tune_info["sensitivities"]``);
            needed by wsq.compress, skips the probe in wsq.tune.
        probe: the callable that probes sensitivities (default: evaluate); a smooth proxy such
            as wsq.metrics.kl helps when evaluate is a coarse accuracy.
        iters: evaluations wsq.tune spends on the scale (>= 1).
        probe_step: the probe rounds tensor t to step probe_step * std(t) (> 0).
        start_drop: wsq.tune's first scale is the one predicted to drop the probe's metric by this
            much (> 0).
        fixed_rd: wsq.search keeps rd at ``rd`` and searches the scale only (default: both).
    """

    scale: float | None = None
    rd: float = 1.0
    sensitivities: tuple[float, ...] | None = None
    probe: object = None
    iters: int = 10
    probe_step: float = 0.5
    start_drop: float = 0.01
    fixed_rd: bool = False

    name = "grid"

    def __post_init__(self) -> None:
        if self.scale is not None:
            object.__setattr__(self, "scale", number("Grid.scale", self.scale, strict=True))
        object.__setattr__(self, "rd", number("Grid.rd", self.rd))
        if self.sensitivities is not None:
            try:
                s = np.asarray(self.sensitivities, dtype=np.float64)
            except (TypeError, ValueError):
                raise TypeError("Grid.sensitivities must be a sequence of numbers") from None
            if s.ndim != 1 or s.size == 0 or not (np.isfinite(s).all() and (s > 0).all()):
                raise ValueError(
                    "Grid.sensitivities must be a non-empty 1-d sequence of finite numbers > 0 "
                    "(one per pooled tensor, see wsq.core.grid.probe_sensitivity)"
                )
            object.__setattr__(self, "sensitivities", tuple(float(v) for v in s))
        callable_or_none("Grid", "probe", self.probe)
        int_field("Grid", "iters", self.iters, 1)
        object.__setattr__(
            self, "probe_step", number("Grid.probe_step", self.probe_step, strict=True)
        )
        object.__setattr__(
            self, "start_drop", number("Grid.start_drop", self.start_drop, strict=True)
        )
        if not isinstance(self.fixed_rd, bool):
            raise TypeError(f"Grid.fixed_rd must be a bool, got {type(self.fixed_rd).__name__}")

    @property
    def variables(self) -> tuple[str, ...]:
        return ("scale",) if self.fixed_rd else ("scale", "rd")

    def compress(self, model: torch.nn.Module, pooling: Pooling) -> Compressed:
        if self.scale is None or self.sensitivities is None:
            missing = "Grid.scale" if self.scale is None else "Grid.sensitivities"
            raise ValueError(
                f"{missing} is needed to compress without an evaluate: take both from a tune "
                "(Grid(scale=c.tune_info['scale'], sensitivities=c.tune_info['sensitivities'])) "
                "or use wsq.tune(model, evaluate, wsq.Grid(), tolerance=...)"
            )
        gq = wgrid.GridQuantizer(model, pool_options=pooling.options())
        if len(self.sensitivities) != len(gq.entries):
            raise ValueError(
                f"Grid.sensitivities has {len(self.sensitivities)} values, the pool "
                f"{len(gq.entries)} tensors"
            )
        plan = wgrid.plan_for(wgrid.allocate(gq.numel, self.sensitivities, self.scale), rd=self.rd)
        return gq.compress(gq.quantize(plan))

    def tune(self, model, evaluate, *, tolerance, margin, baseline, pooling) -> Compressed:
        """wsq.core.grid.tune with this method's settings (see there)."""
        sens = None if self.sensitivities is None else np.asarray(self.sensitivities)
        return wgrid.tune(
            model, evaluate, tolerance=tolerance, margin=margin, rd=self.rd, probe=self.probe,
            iters=self.iters, baseline=baseline, sensitivities=sens, probe_step=self.probe_step,
            start_drop=self.start_drop, start_scale=self.scale, **pooling.options(),
        )  # fmt: skip

    def problem(self, model, evaluate, *, pooling: Pooling, coder: str) -> GridProblem:
        return GridProblem(self, model, evaluate, pooling, coder)


class GridProblem(Problem):
    """Grid's search space on one model: probed once (prepare), then (scale, rd) candidates on one
    working copy."""

    def __init__(self, method: Grid, model, evaluate, pooling: Pooling, coder: str) -> None:
        self.method, self.model, self.evaluate, self.coder = method, model, evaluate, coder
        self.variables = method.variables
        self.gq = wgrid.GridQuantizer(model, pool_options=pooling.options())
        self.n_weights = int(self.gq.numel.sum())
        self.original_bytes, self.rest_bytes, self.overhead = file_sizes(
            model, self.gq.pool, pooling.options(), coder
        )
        self.config = {"variables": list(self.variables), "rd_fixed": method.rd}
        self.sens = self.scale0 = None
        self.probe_s = 0.0
        self.work = None  # the one working copy: a wsq.Compressed rewritten in place
        self.work_budget = self.gq.work_budget()  # finer candidates are reported as too fine

    def prepare(self, baseline: float) -> None:
        m = self.method
        t0 = time.perf_counter()
        if m.sensitivities is not None:
            sens = np.asarray(m.sensitivities)
            if sens.shape != (len(self.gq.entries),):
                raise ValueError(f"Grid.sensitivities has {sens.size} values, the pool "
                                 f"{len(self.gq.entries)} tensors")  # fmt: skip
            pbase = baseline
        else:
            pr = m.probe or self.evaluate
            pbase = baseline
            if pr is not self.evaluate:
                pbase = finite_baseline(wgrid.score(pr, self.model, "probe"), "probe")
            sens = wgrid.probe_sensitivity(self.gq, pr, pbase, rel_step=m.probe_step)
        self.probe_s = time.perf_counter() - t0
        self.sens = sens
        drop0 = 0.01 * (abs(pbase) if pbase != 0 else 1.0)
        self.scale0 = math.sqrt(drop0 / max(1.0, float(self.n_weights)))

    def bounds(self):
        lo = [-SCALE_HALF if v == "scale" else 0 for v in self.variables]
        hi = [SCALE_HALF if v == "scale" else RD_STEPS for v in self.variables]
        return lo, hi

    def describe(self, key) -> dict:
        d = dict(zip(self.variables, key, strict=True))
        rd = d["rd"] * RD_UNIT if "rd" in d else self.method.rd
        return {"k": 0, "clip": 0.0, "lo": math.nan, "hi": math.nan, "method": "grid",
                "scale": self.scale0 * 2.0 ** (d["scale"] / SCALE_PER_OCTAVE), "rd": rd}  # fmt: skip

    def plan(self, key) -> wgrid.GridPlan:
        d = self.describe(key)
        return wgrid.plan_for(wgrid.allocate(self.gq.numel, self.sens, d["scale"]), rd=d["rd"])

    def evaluator(self):
        return self._evaluate

    def _evaluate(self, key) -> Record:
        t0 = time.perf_counter()
        plan, gq = self.plan(key), self.gq
        try:
            if gq.plan_bytes(plan) > self.work_budget:  # too fine to hold within memory
                raise ValueError
            res = gq.quantize(plan)
            if gq.work_bytes(res) > self.work_budget:
                raise ValueError
        except ValueError:  # a grid too fine to store (span or 2**16 codebook limit, or memory)
            return Record(math.nan, 32.0, 0, time.perf_counter() - t0)
        bits = res.bits if self.coder == "auto" else entropy.coded_bits(res.per_stream, self.coder)
        t1 = time.perf_counter()
        if self.work is None:
            self.work = gq.compress(res)
        else:
            gq.update(self.work, res)
        t2 = time.perf_counter()
        metric = wgrid.score(self.evaluate, self.work.model)
        t3 = time.perf_counter()
        return Record(metric, bits, int(res.codebook.numel()), t1 - t0, t2 - t1, t3 - t2)

    def compress(self, key) -> Compressed:
        return self.gq.compress(self.gq.quantize(self.plan(key)))

    def extra(self) -> tuple[dict, dict]:
        config = {
            "method": "grid", "scale0": self.scale0, "scale_per_octave": SCALE_PER_OCTAVE,
            "scale_half": SCALE_HALF, "rd_unit": RD_UNIT, "rd_steps": RD_STEPS,
            "sensitivities": [float(v) for v in self.sens],
        }  # fmt: skip
        return config, {"probe_s": self.probe_s}

    def close(self) -> None:
        self.work = None
        self.gq.release()  # the quantizer's scratch: compress(key) still works
