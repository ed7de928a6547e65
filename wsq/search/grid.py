"""``wsq.search(model, evaluate, method="grid")``: NSGA-II over the grid method's variables.

The grid method (wsq.core.grid) has two knobs after its one-off probe of per-tensor sensitivities: the
step scale c (``step_t = c sqrt(n_t / s_t)``) and the rate-aware rounding strength rd. Both are
encoded as integers so the search shares the uniform method's NSGA-II driver, cache and result:

* ``scale``: i in [-SCALE_HALF, SCALE_HALF], c = c0 * 2 ** (i / SCALE_PER_OCTAVE), where c0 is the
  scale whose predicted probe drop is 1% of |baseline| (or 0.01); +-6 octaves of c is +-12 of the
  predicted drop, which covers "nearly lossless" to "broken" on every model tried;
* ``rd``: j in [0, RD_STEPS], rd = j * RD_UNIT (0 = nearest point, 1 = the high-rate RD slope).

Each candidate is quantized on the shared grid, packed into ONE compressed working copy in place
(each tensor at the width of its values: no dense copy of the model) and scored;
its bits are the coded index streams from the per-stream histograms (no file is written). A
candidate whose working copy would exceed grid_quant.WORK_FRACTION (0.3) of the dense pooled
bytes is reported as too fine (NaN metric, like a grid beyond 2**16 points), so the search stays
within 1.5x dense. The
search runs in this process (no executor, no checkpoint: a grid search is tens to a few hundred
evaluations after the probe).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from wsq import entropy
from wsq.checks import finite_baseline
from wsq.core import grid as wgrid
from wsq.search.driver import _Driver, nsga2_loop
from wsq.search.problem import Record
from wsq.search.result import SearchResult, Solution, pareto_front

GRID_VARIABLES = ("scale", "rd")
SCALE_PER_OCTAVE = 8
SCALE_HALF = 6 * SCALE_PER_OCTAVE
RD_UNIT = 0.25
RD_STEPS = 8


@dataclass(frozen=True)
class GridSpace:
    """Integer decision vectors -> (scale, rd). Variables not searched sit at fixed values."""

    variables: tuple[str, ...]
    scale0: float
    rd_fixed: float

    @property
    def n_var(self) -> int:
        return len(self.variables)

    def bounds(self) -> tuple[list[int], list[int]]:
        lo = [-SCALE_HALF if v == "scale" else 0 for v in self.variables]
        hi = [SCALE_HALF if v == "scale" else RD_STEPS for v in self.variables]
        return lo, hi

    def key(self, x) -> tuple[int, ...]:
        xl, xu = self.bounds()
        return tuple(
            min(u, max(a, int(round(float(v))))) for v, a, u in zip(x, xl, xu, strict=True)
        )

    def decode(self, key: tuple[int, ...]) -> dict:
        d = dict(zip(self.variables, key, strict=True))
        rd = d["rd"] * RD_UNIT if "rd" in d else self.rd_fixed
        return {"scale": self.scale0 * 2.0 ** (d["scale"] / SCALE_PER_OCTAVE), "rd": rd}


class GridCandidates:
    """Evaluates grid candidates on one working copy (the runner interface of wsq.search)."""

    n_shipments = n_loads = n_retries = 0

    def __init__(self, gq, sens, space: GridSpace, evaluate, coder: str) -> None:
        self.gq, self.sens, self.space, self.evaluate, self.coder = gq, sens, space, evaluate, coder
        self.work = None  # the one working copy: a wsq.Compressed rewritten in place
        self.work_budget = gq.work_budget()  # finer candidates are reported as too fine

    def plan(self, key: tuple[int, ...]) -> wgrid.GridPlan:
        d = self.space.decode(key)
        return wgrid.plan_for(wgrid.allocate(self.gq.numel, self.sens, d["scale"]), rd=d["rd"])

    def __call__(self, key: tuple[int, ...]) -> Record:
        t0 = time.perf_counter()
        plan = self.plan(key)
        try:
            if self.gq.plan_bytes(plan) > self.work_budget:  # too fine to hold within memory
                raise ValueError
            res = self.gq.quantize(plan)
            if self.gq.work_bytes(res) > self.work_budget:
                raise ValueError
        except ValueError:  # a grid too fine to store (span or 2**16 codebook limit, or memory)
            return Record(math.nan, 32.0, 0, time.perf_counter() - t0)
        bits = res.bits if self.coder == "auto" else entropy.coded_bits(res.per_stream, self.coder)
        t1 = time.perf_counter()
        if self.work is None:
            self.work = self.gq.compress(res)
        else:
            self.gq.update(self.work, res)
        t2 = time.perf_counter()
        metric = wgrid.score(self.evaluate, self.work.model)
        t3 = time.perf_counter()
        return Record(metric, bits, int(res.codebook.numel()), t1 - t0, t2 - t1, t3 - t2)

    def run(self, keys, on_result) -> None:
        for i, key in enumerate(keys):
            on_result(i, self(key))

    def close(self) -> None:
        pass


def search_grid(model, evaluate, *, variables, pop_size, generations, seed, coder, pool_options,
                probe, rd, progress, sizes, t_start) -> SearchResult:  # fmt: skip
    """The grid method's search; ``sizes`` = (original_bytes, rest_bytes, overhead)."""
    from tqdm.auto import tqdm

    gq = wgrid.GridQuantizer(model, pool_options=pool_options)
    t0 = time.perf_counter()
    baseline = finite_baseline(wgrid.score(evaluate, model), "evaluate")
    baseline_s = time.perf_counter() - t0
    pr = probe or evaluate
    pbase = (
        baseline if pr is evaluate else finite_baseline(wgrid.score(pr, model, "probe"), "probe")
    )
    t0 = time.perf_counter()
    sens = wgrid.probe_sensitivity(gq, pr, pbase, rel_step=0.5)
    probe_s = time.perf_counter() - t0
    n_weights = float(gq.numel.sum())
    drop0 = 0.01 * (abs(pbase) if pbase != 0 else 1.0)
    space = GridSpace(variables, math.sqrt(drop0 / max(1.0, n_weights)), rd)
    runner = GridCandidates(gq, sens, space, evaluate, coder)
    driver = _Driver(runner, None, baseline)
    # disable=None: a bar on a terminal only, never carriage-return updates in a log
    bar = tqdm(total=generations, desc="wsq grid", unit="gen", dynamic_ncols=True,
               disable=None if progress else True)  # fmt: skip
    try:
        g, converged, _, _ = nsga2_loop(
            space, driver, pop_size=pop_size, total=generations, seed=seed, start=0,
            pop_x=np.zeros((0, space.n_var), dtype=np.int64), pop_f=np.zeros((0, 2)),
            save=lambda *a: None, bar=bar,
        )  # fmt: skip
    finally:
        bar.close()
        gq.release()  # the quantizer's scratch: the result keeps gq for compress(i)
    original_bytes, rest_bytes, overhead = sizes

    def solution(key, rec: Record) -> Solution:
        d = space.decode(key)
        coded = rec.bits * n_weights / 8 + 4 * rec.n_bins + rest_bytes + overhead
        return Solution(
            k=0, clip=0.0, lo=math.nan, hi=math.nan, n_bins=rec.n_bins, metric=rec.metric,
            drop=baseline - rec.metric, bits=rec.bits, cr=original_bytes / coded,
            generation=driver.gen_of[key], x=key, method="grid", scale=d["scale"], rd=d["rd"],
        )  # fmt: skip

    history = [solution(k, r) for k, r in driver.cache.items()]
    recs = list(driver.cache.values())
    n = max(1, len(recs))
    timings = {
        "total_s": time.perf_counter() - t_start, "baseline_s": baseline_s, "probe_s": probe_s,
        "hist_ms": 1e3 * sum(r.t_hist for r in recs) / n,
        "write_ms": 1e3 * sum(r.t_write for r in recs) / n,
        "eval_ms": 1e3 * sum(r.t_eval for r in recs) / n,
    }  # fmt: skip
    config = {
        "method": "grid", "strategy": "nsga2", "variables": list(variables), "pop_size": pop_size,
        "generations": generations, "seed": seed, "coder": coder, "scale0": space.scale0,
        "scale_per_octave": SCALE_PER_OCTAVE, "scale_half": SCALE_HALF, "rd_unit": RD_UNIT,
        "rd_steps": RD_STEPS, "rd_fixed": rd, "original_bytes": original_bytes,
        "file_overhead": overhead,
        "sensitivities": [float(v) for v in sens],
    }  # fmt: skip
    result = SearchResult(
        front=pareto_front(history), history=history, baseline=baseline,
        n_requested=driver.n_requested, generations=g, converged=converged, strategy="nsga2",
        seed=seed, variables=tuple(variables), config=config, timings=timings, n_shipments=0,
        n_loads=0, n_retries=0, model=model, pool_options=pool_options,
    )  # fmt: skip
    result._grid = runner
    return result
