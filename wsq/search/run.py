"""Multi-objective search of a method's settings for one model.

:func:`search` minimises two objectives over candidates: the metric drop against the uncompressed
model (``baseline - evaluate(candidate)``) and the entropy-coded bits per pooled weight. The method
object (wsq.Uniform, wsq.Grid) owns the search space and evaluates its candidates (wsq.methods);
this module drives it: NSGA-II (pymoo, the paper's settings by default) or a sweep proposes
candidates; each distinct one is evaluated once (a cache keyed by the rounded decision vector) on
ONE working copy of the model rewritten in place. Candidates can be spread over a
concurrent.futures executor or a Dask cluster, and a run can be checkpointed and resumed exactly.

Reproducibility: pymoo is driven with ask/tell and rebuilt every generation from the surviving
population with a generation-derived seed (SeedSequence([seed, generation])); an uninterrupted run
does exactly the same, so a resumed run ends with the same front, and the result depends only on
seed and settings (given a deterministic evaluate), not on executors or interruptions.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable

import numpy as np
import torch

from wsq.methods import Method, Pooling, Uniform
from wsq.methods.apply import as_method, pooling_of
from wsq.search.arguments import CODERS, Sweep, Workers, choice, int_arg, translate_legacy
from wsq.search.checkpoint import Checkpoint
from wsq.search.driver import _Driver, _progress_text, nsga2_loop
from wsq.search.executors import SequentialRunner, make_runner
from wsq.search.problem import Record, WorkerSpec
from wsq.search.result import SearchResult, Solution, pareto_front

__all__ = ["search", "SearchResult", "Solution"]


def search(
    model: torch.nn.Module,
    evaluate: Callable[[torch.nn.Module], float],
    *,
    method: Method | None = None,
    strategy: str | Sweep = "nsga2",
    pop_size: int = 100,
    generations: int = 100,
    seed: int | None = 0,
    coder: str = "auto",
    pooling: Pooling | None = None,
    executor=None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    **legacy,
) -> SearchResult:
    """Search the Pareto front of (metric drop, entropy-coded bits per weight) for `model`.

    Each candidate is one setting of ``method``, applied to ONE working copy of the model (packed
    indices rewritten in place) and scored with ``evaluate``. ``model`` itself is never modified.

    Args:
        model: any nn.Module (its pooled weights must be finite and not all equal).
        evaluate: ``evaluate(model) -> float``, higher is better (accuracy, -loss, fidelity...); it is
            called once on `model` for the baseline, then once per distinct candidate, under
            torch.no_grad. With an executor it runs in the workers and must be picklable
            (cloudpickle is used when installed, so closures work).
        method: the method whose settings are searched (default ``wsq.Uniform()``):
            ``wsq.Uniform(k_min=2, k_max=1024, clip=False, clip_floor=0.01)`` searches k (the
            paper's mode) and with clip=True the binning range too; ``wsq.Grid(...)`` probes each
            pooled tensor once, then searches the step scale and the rate-aware strength rd
            (fixed_rd=True: the scale only); its candidates run in this process (no executor, no
            checkpoint, no sweep).
        strategy: "nsga2" (pymoo NSGA-II: SBX p=0.9 eta=15, PM p=0.9 eta=20, duplicates
            eliminated, integers by rounding: the paper's settings), "sweep" or ``wsq.Sweep(budget,
            spacing)`` (Uniform's k only, evenly spaced).
        pop_size, generations: NSGA-II population and generations (the initial population counts
            as generation 1: at most pop_size * generations candidates are requested; the cache
            evaluates each distinct one once). For a sweep, pop_size is the batch size between
            checkpoints.
        seed: NSGA-II seed (>= 0); None draws one (recorded in the result).
        coder: entropy coder whose size the bits objective reports: "auto" (per stream the
            smaller of ANS and Huffman, as wsq.save does), "ans", "huffman", or "entropy" (the
            empirical entropy bound, not a real coder).
        pooling: which parameters are pooled (default wsq.Pooling()).
        executor: None (evaluate here), any concurrent.futures.Executor, a dask.distributed
            Client, or ``wsq.Workers(executor, max_retries=3, threads=None)``. The model and
            evaluate reach each worker once; tasks carry decision vectors only. A worker that dies
            has its candidates retried (a broken ProcessPoolExecutor is replaced by an equivalent
            one wsq owns and shuts down; the executor passed in stays broken).
        checkpoint: a directory, or a file prefix, for checkpoint files (see wsq.search.checkpoint):
            after every generation the population, the generation counter and the whole
            evaluation cache are saved (JSON + .npz, atomically); each finished evaluation is also
            journalled at once. A killed run started again with the same arguments resumes with
            no finished evaluation lost or recomputed and ends with the same front.
        resume: with an existing checkpoint, continue it (True) or start over, deleting it
            (False). Resuming with other settings raises ValueError (``generations`` may grow).
        progress: show a tqdm progress bar (generation, front size, best trade-off, evaluations)
            when stderr is a terminal (none in logs and pipes).

    The keyword forms search() had before methods were objects (method="grid", k_min=, k_max=,
    variables=, clip_floor=, probe=, rd=, include=, exclude=, min_dims=, budget=, spacing=,
    max_retries=, worker_threads=) still work with a DeprecationWarning naming the replacement;
    merge= raises (merging is a step of wsq.paper_protocol).

    Returns:
        SearchResult: ``front`` (Pareto-optimal Solutions sorted by bits), ``history``,
        ``best(max_drop)``, ``compress(i)``, ``table()``, ``to_csv``, ``to_json``, ``plot``,
        ``hypervolume(ref)``, ``timings`` (seconds: total_s, baseline_s, and per evaluation the
        mean hist_ms (statistics + codebook + coded size), write_ms (packing into the working
        copy), eval_ms (evaluate); the grid adds probe_s).

    Raises:
        TypeError / ValueError naming the argument; ValueError for non-finite or all-equal pooled
        weights, a non-finite baseline, or a checkpoint written with other settings.
    """
    t_start = time.perf_counter()
    method, strategy, executor, old_pool = translate_legacy(method, strategy, executor, legacy)
    pooling = pooling_of(pooling, old_pool, "wsq.search")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(evaluate):
        raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}")
    method = as_method(method, Uniform())
    if isinstance(strategy, str):
        strategy = Sweep() if choice("strategy", strategy, ("nsga2", "sweep")) == "sweep" else None
    elif not isinstance(strategy, Sweep):
        raise TypeError(f"strategy must be 'nsga2', 'sweep' or a wsq.Sweep, got "
                        f"{type(strategy).__name__}")  # fmt: skip
    pop_size = int_arg("pop_size", pop_size, 2)
    generations = int_arg("generations", generations, 1)
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
    seed = int_arg("seed", seed, 0)
    coder = choice("coder", coder, CODERS)
    for name, v in (("resume", resume), ("progress", progress)):
        if not isinstance(v, bool):
            raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
    if executor is not None and not isinstance(executor, Workers):
        executor = Workers(executor)

    # The method's space on this model: the pool is read once (range, fingerprint, sizes), one
    # tensor at a time; no copy of the model and no concatenated pool.
    problem = method.problem(model, evaluate, pooling=pooling, coder=coder)
    if not problem.distributable:
        for name, v in (("executor", executor), ("checkpoint", checkpoint)):
            if v is not None:
                raise ValueError(f"{name} must be None for {type(method).__name__}: its "
                                 "candidates run in this process")  # fmt: skip
    sweep_keys = None
    if strategy is not None:
        budget = strategy.budget or pop_size * generations
        sweep_keys = problem.sweep(budget, strategy.spacing)
    config = {
        "strategy": "sweep" if strategy is not None else "nsga2",
        "pop_size": pop_size,
        "seed": seed,
        "coder": coder,
        **problem.config,
    }
    if strategy is not None:
        config.update(budget=budget, spacing=strategy.spacing)
    variables = problem.variables
    n_weights = problem.n_weights

    ckpt = Checkpoint(checkpoint) if checkpoint is not None else None
    meta = arrays = None
    if ckpt is not None and ckpt.exists():
        if resume:
            meta, arrays, cache, gen_of = ckpt.load()
            diff = [
                f"{k}: {meta['config'].get(k)!r} in the checkpoint, {v!r} now"
                for k, v in config.items()
                if meta["config"].get(k) != v
            ]
            if diff:
                raise ValueError(
                    f"checkpoint {ckpt.json_path} was written by a search with other settings "
                    f"({'; '.join(diff)}); pass resume=False to start over"
                )
        else:
            ckpt.remove()

    t0 = time.perf_counter()
    if meta is not None:
        baseline = float(meta["baseline"])
    else:
        with torch.no_grad():
            value = evaluate(model)
        try:
            baseline = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"evaluate must return a float, got {type(value).__name__}") from None
        if not math.isfinite(baseline):
            raise ValueError(f"evaluate(model) returned {baseline}; the baseline must be finite")
    baseline_s = time.perf_counter() - t0
    problem.prepare(baseline)

    token = uuid.uuid4().hex
    if executor is None:
        runner = SequentialRunner(problem.evaluator())
    else:
        factory = problem.worker(evaluate)
        runner = make_runner(
            executor.executor,
            lambda: WorkerSpec(token, factory, executor.threads),
            max_retries=executor.max_retries,
        )
    driver = _Driver(runner, ckpt, baseline)
    start, converged = 0, False
    pop_x = np.zeros((0, problem.n_var), dtype=np.int64)
    pop_f = np.zeros((0, 2))
    if meta is not None:
        driver.cache, driver.gen_of = cache, gen_of
        driver.n_requested = int(meta["n_requested"])
        for key, rec, g in ckpt.journal():
            if key not in driver.cache:
                driver.pending[key] = (rec, g)
        start, converged = int(meta["generation"]), bool(meta.get("converged", False))
        pop_x, pop_f = arrays["pop_x"], arrays["pop_f"]

    def save_state(generation: int, conv: bool, px: np.ndarray, pf: np.ndarray) -> None:
        nonlocal converged, pop_x, pop_f
        converged, pop_x, pop_f = conv, px, pf
        save(generation)

    def save(generation: int) -> None:
        if ckpt is None:
            return
        m = {
            "config": config,
            "baseline": baseline,
            "generation": generation,
            "n_requested": driver.n_requested,
            "converged": converged,
        }
        ckpt.save(m, pop_x, pop_f, driver.cache, driver.gen_of)

    if meta is None:
        save(0)  # the baseline and config first, so a kill in generation 0 loses nothing either

    from tqdm.auto import tqdm

    if sweep_keys is not None:
        batches = [sweep_keys[i : i + pop_size] for i in range(0, len(sweep_keys), pop_size)]
        total = len(batches)
    else:
        total = generations
    bar = tqdm(
        total=total, initial=min(start, total), desc=f"wsq {method.name} {config['strategy']}", unit="gen",
        disable=None if progress else True, dynamic_ncols=True,  # None: on a terminal only
    )  # fmt: skip
    try:
        g = start
        if sweep_keys is not None:
            for g in range(start, total):
                driver.evaluate(batches[g], g)
                save(g + 1)
                bar.set_postfix(_progress_text(driver), refresh=False)
                bar.update(1)
            g = max(start, total)
        else:
            if not converged:
                g, converged, pop_x, pop_f = nsga2_loop(
                    problem, driver, pop_size=pop_size, total=total, seed=seed, start=start,
                    pop_x=pop_x, pop_f=pop_f, save=save_state, bar=bar,
                )  # fmt: skip
    finally:
        bar.close()
        runner.close()
        problem.close()
        if ckpt is not None:
            ckpt.close()

    def solution(key: tuple[int, ...], rec: Record) -> Solution:
        coded = rec.bits * n_weights / 8 + 4 * rec.n_bins + problem.rest_bytes + problem.overhead
        return Solution(
            **problem.describe(key), n_bins=rec.n_bins, metric=rec.metric,
            drop=baseline - rec.metric, bits=rec.bits, cr=problem.original_bytes / coded,
            generation=driver.gen_of[key], x=key,
        )  # fmt: skip

    history = [solution(key, rec) for key, rec in driver.cache.items()]
    recs = list(driver.cache.values())
    n = max(1, len(recs))
    timings = {
        "total_s": time.perf_counter() - t_start,
        "baseline_s": baseline_s,
        "hist_ms": 1e3 * sum(r.t_hist for r in recs) / n,
        "write_ms": 1e3 * sum(r.t_write for r in recs) / n,
        "eval_ms": 1e3 * sum(r.t_eval for r in recs) / n,
    }
    extra_config, extra_timings = problem.extra()
    timings.update(extra_timings)
    config_out = dict(config, generations=generations, original_bytes=problem.original_bytes,
                      file_overhead=problem.overhead, **extra_config)  # fmt: skip
    return SearchResult(
        front=pareto_front(history), history=history, baseline=baseline,
        n_requested=driver.n_requested, generations=g, converged=converged,
        strategy=config["strategy"], seed=seed, variables=variables, config=config_out,
        timings=timings, n_shipments=runner.n_shipments, n_loads=runner.n_loads,
        n_retries=runner.n_retries, compress=problem.compress,
    )  # fmt: skip
