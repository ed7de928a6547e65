"""The loop machinery of :func:`wsq.search`: the evaluation cache and journal, pymoo glue, sweeps.

Kept apart from wsq.search so that module holds the public entry point and its argument handling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from wsq.methods.base import Problem
from wsq.search.checkpoint import Checkpoint
from wsq.search.problem import Record, finite_or_worst


def _generation_seed(seed: int, generation: int) -> int:
    return int(np.random.SeedSequence([seed, generation]).generate_state(1, dtype=np.uint32)[0])


class _Driver:
    """The evaluation cache, its journal, the runner and the progress bar of one search."""

    def __init__(self, runner, ckpt: Checkpoint | None, baseline: float) -> None:
        self.runner = runner
        self.ckpt = ckpt
        self.baseline = baseline
        self.cache: dict[tuple[int, ...], Record] = {}
        self.gen_of: dict[tuple[int, ...], int] = {}
        self.pending: dict[tuple[int, ...], tuple[Record, int]] = {}  # journal, not yet re-asked
        self.n_requested = 0

    def evaluate(self, keys: Sequence[tuple[int, ...]], generation: int) -> None:
        """Make sure every key is in the cache; new keys enter it in request order."""
        self.n_requested += len(keys)
        new: list[tuple[int, ...]] = []
        seen = set()
        for key in keys:
            if key not in self.cache and key not in seen:
                seen.add(key)
                new.append(key)
        todo = [key for key in new if key not in self.pending]
        done: dict[int, Record] = {}

        def on_result(i: int, rec: Record) -> None:
            done[i] = rec
            if self.ckpt is not None:
                self.ckpt.append(todo[i], rec, generation)

        if todo:
            self.runner.run(todo, on_result)
        fresh = {key: done[i] for i, key in enumerate(todo)}
        for key in new:
            if key in fresh:
                self.cache[key], self.gen_of[key] = fresh[key], generation
            else:
                self.cache[key], self.gen_of[key] = self.pending.pop(key)

    def objectives(self, key: tuple[int, ...]) -> tuple[float, float]:
        rec = self.cache[key]
        return finite_or_worst(rec.metric, self.baseline), rec.bits


def _make_problem(space: Problem, driver: _Driver):
    from pymoo.core.problem import Problem

    class _LookupProblem(Problem):
        """Objectives come from the driver's cache, filled before pymoo asks."""

        def __init__(self) -> None:
            xl, xu = space.bounds()
            super().__init__(
                n_var=space.n_var, n_obj=2, xl=np.array(xl), xu=np.array(xu), vtype=int
            )

        def _evaluate(self, X, out, *args, **kwargs):
            out["F"] = np.array([driver.objectives(space.key(x)) for x in X], dtype=np.float64)

    return _LookupProblem()


def _nsga2(pop_size: int, sampling):
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair

    # The paper's operators; integers by rounding after real-valued SBX/PM.
    return NSGA2(
        pop_size=pop_size,
        sampling=sampling,
        crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
        mutation=PM(prob=0.9, eta=20, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )


def _progress_text(driver: _Driver) -> dict:
    """Postfix of the progress bar: front size and the best trade-off so far."""
    pts = sorted(
        (r.bits, finite_or_worst(r.metric, driver.baseline)) for r in driver.cache.values()
    )
    n_front, best_drop = 0, math.inf
    for _, d in pts:
        if d < best_drop:
            n_front, best_drop = n_front + 1, d
    lossless = [b for b, d in pts if d <= 0]
    if lossless:
        best = f"{lossless[0]:.3f} bits, drop<=0"
    elif pts:
        b, d = min(pts, key=lambda p: (p[1], p[0]))
        best = f"{b:.3f} bits, drop {d:.4g}"
    else:
        best = "-"
    return {"front": n_front, "evals": len(driver.cache), "best": best}


def nsga2_loop(space, driver: _Driver, *, pop_size: int, total: int, seed: int, start: int,
               pop_x: np.ndarray, pop_f: np.ndarray, save, bar) -> tuple[int, bool, np.ndarray,
                                                                          np.ndarray]:  # fmt: skip
    """Run NSGA-II generations start..total-1 through the driver's cache (ask/tell, rebuilt every
    generation from the survivors with a generation-derived seed, so resuming is exact).

    ``space``: bounds(), n_var, key(x). ``save(g, converged, pop_x, pop_f)`` checkpoints after
    every generation. Returns (generations done, converged, pop_x, pop_f).
    """
    from pymoo.core.evaluator import Evaluator
    from pymoo.core.population import Population
    from pymoo.operators.sampling.rnd import IntegerRandomSampling

    problem = _make_problem(space, driver)
    g, converged = start, False
    while g < total:
        s = _generation_seed(seed, g)
        if g == 0:
            alg = _nsga2(pop_size, IntegerRandomSampling())
            alg.setup(problem, termination=("n_gen", 1 << 30), seed=s, verbose=False)
        else:
            # Rebuild from the survivors: the same path whether or not we resumed.
            alg = _nsga2(pop_size, Population.new(X=pop_x))
            alg.setup(problem, termination=("n_gen", 1 << 30), seed=s, verbose=False)
            parents = alg.ask()
            Evaluator().eval(problem, parents)
            alg.tell(infills=parents)
        off = alg.ask()
        if off is None or len(off) == 0:
            converged = True  # no new offspring: the reachable space is exhausted
            save(g, converged, pop_x, pop_f)
            break
        driver.evaluate([space.key(x) for x in off.get("X")], g)
        Evaluator().eval(problem, off)
        alg.tell(infills=off)
        pop_x = np.asarray([space.key(x) for x in alg.pop.get("X")], dtype=np.int64)
        pop_f = np.asarray(alg.pop.get("F"), dtype=np.float64)
        g += 1
        save(g, converged, pop_x, pop_f)
        bar.set_postfix(_progress_text(driver), refresh=False)
        bar.update(1)
    return g, converged, pop_x, pop_f
