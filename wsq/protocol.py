"""The paper's protocol as one function (arXiv 2501.03095, Table I): a random uniform binning at
the largest k for reference, NSGA-II over k, a merge of the front solutions within the tolerance,
then entropy coding (the merged models' wsq files). ``wsq compress`` and bench/results.py both
run it through :func:`paper_protocol`, so the protocol is written once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from wsq.checks import finite_baseline, number, tolerance_margin
from wsq.compressed import Compressed
from wsq.core.grid import score
from wsq.core.merge import merge
from wsq.methods import Pooling, Uniform
from wsq.search import SearchResult, Solution, search
from wsq.search.arguments import int_arg

__all__ = ["paper_protocol", "Protocol"]


@dataclass
class Protocol:
    """What :func:`paper_protocol` produced.

    baseline: evaluate(model). random_ub: the model binned at k = method.k_max with no search
    (the paper's "Random UB" row; None when not asked for). search: the NSGA-II SearchResult. chosen: the front solutions
    that were merged (within tolerance - margin, fewest bits first). merged: their merged models
    (each with ``merge_info``), in the same order. timings: seconds (random_ub_s, search_s,
    merge_s).
    """

    baseline: float
    random_ub: Compressed | None
    search: SearchResult
    chosen: list[Solution]
    merged: list[Compressed]
    timings: dict = field(default_factory=dict)


def paper_protocol(
    model: torch.nn.Module,
    evaluate: Callable[[torch.nn.Module], float],
    *,
    tolerance: float,
    margin: float = 0.0,
    method: Uniform | None = None,
    pop_size: int = 100,
    generations: int = 100,
    seed: int = 0,
    coder: str = "auto",
    pooling: Pooling | None = None,
    merge_top: int = 3,
    merge_evals: int | None = None,
    baseline: float | None = None,
    random_ub: bool = True,
    before_merge: Callable[[Solution, Compressed], None] | None = None,
    progress: bool = False,
) -> Protocol:
    """Random UB at k_max -> NSGA-II over k -> merge the best front solutions -> (code).

    Args:
        tolerance: allowed drop below the baseline, in the metric's units (>= 0); margin
            (0 <= margin <= tolerance) keeps every decision that much inside it: the front
            solutions merged have drop <= tolerance - margin, and each merge keeps
            evaluate >= baseline - tolerance + margin.
        method: the search space (default wsq.Uniform(), the paper's k in [2, 1024]); its k_max
            is also the Random UB's k.
        pop_size, generations, seed, coder, pooling: the search's settings (see wsq.search).
        merge_top: how many front solutions within the bar are merged, fewest bits first (>= 1).
        merge_evals: at most this many evaluations per merge (None: no limit).
        baseline: evaluate(model) when already known.
        random_ub: build the Random UB reference (False when the caller has it already: wsq
            compress shows that row for every method, so it makes it before any method runs).
        before_merge: called with (solution, its compressed model) before that model is merged,
            so a caller can measure it without the protocol holding every pre-merge model.

    Returns:
        Protocol. ``chosen`` is empty when no front solution is within the bar (nothing merged).
    """
    method = Uniform() if method is None else method
    if not isinstance(method, Uniform):
        raise TypeError(f"method must be a wsq.Uniform (the paper's protocol bins uniformly), "
                        f"got {type(method).__name__}")  # fmt: skip
    tolerance, margin = tolerance_margin(tolerance, margin)
    merge_top = int_arg("merge_top", merge_top, 1)
    if merge_evals is not None:
        merge_evals = int_arg("merge_evals", merge_evals, 1)
    if before_merge is not None and not callable(before_merge):
        raise TypeError(f"before_merge must be callable or None, got {type(before_merge).__name__}")
    pooling = pooling or Pooling()
    timings: dict = {}
    if baseline is None:
        baseline = finite_baseline(score(evaluate, model), "evaluate")
    baseline = number("baseline", baseline, lo=-math.inf)

    if not isinstance(random_ub, bool):
        raise TypeError(f"random_ub must be a bool, got {type(random_ub).__name__}")
    ub = None
    if random_ub:
        t0 = time.perf_counter()
        ub = Uniform(k=method.k_max).compress(model, pooling)
        timings["random_ub_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = search(model, evaluate, method=method, pop_size=pop_size, generations=generations,
                 seed=seed, coder=coder, pooling=pooling, progress=progress)  # fmt: skip
    timings["search_s"] = time.perf_counter() - t0
    bar = tolerance - margin
    ok = [s for s in res.front if s.drop <= bar]
    chosen = sorted(ok, key=lambda s: (s.bits, s.drop))[:merge_top]
    merged = []
    t0 = time.perf_counter()
    for s in chosen:
        c = res.compress(s)
        if before_merge is not None:
            before_merge(s, c)
        merged.append(merge(c, evaluate, tolerance=bar, baseline=res.baseline,
                            max_evals=merge_evals, progress=progress))  # fmt: skip
        del c
    timings["merge_s"] = time.perf_counter() - t0
    return Protocol(baseline=baseline, random_ub=ub, search=res, chosen=chosen,
                    merged=merged, timings=timings)  # fmt: skip
