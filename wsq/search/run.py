"""Multi-objective search of the binning (k, and optionally the range) for one model.

:func:`search` minimises two objectives over candidates: the metric drop against the uncompressed
model (``baseline - evaluate(candidate)``) and the entropy-coded bits per pooled weight. NSGA-II
(pymoo, the paper's settings by default) or a sweep over k proposes candidates; each distinct one is
evaluated once (a cache keyed by the rounded decision vector) on ONE working copy of the model that
a fused fake-quant kernel rewrites in place. Candidates can be spread over a concurrent.futures
executor or a Dask cluster, and a run can be checkpointed and resumed exactly.

Reproducibility: pymoo is driven with ask/tell and rebuilt every generation from the surviving
population with a generation-derived seed (SeedSequence([seed, generation])); an uninterrupted run
does exactly the same, so a resumed run ends with the same front, and the result depends only on
seed and settings (given a deterministic evaluate), not on executors or interruptions.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import time
import uuid
from collections.abc import Callable, Sequence

import numpy as np
import torch

from wsq.search.arguments import CODERS, STRATEGIES, check_variables, choice, int_arg
from wsq.search.checkpoint import Checkpoint
from wsq.search.driver import (
    _Driver,
    _progress_text,
    _sweep_ks,
    nsga2_loop,
)
from wsq.search.executors import SequentialRunner, _is_dask_client, make_runner
from wsq.search.pool_stats import file_overhead, pool_fingerprint, pool_median, state_bytes
from wsq.search.problem import CandidateEvaluator, Record, Space, WorkerSpec
from wsq.search.result import SearchResult, Solution, pareto_front

__all__ = ["search", "SearchResult", "Solution"]


def _merge_front_into(result, evaluate, tolerance: float, progress: bool, t_start: float) -> None:
    """search(..., merge=True): merge the front solutions within tolerance (timed)."""
    from wsq.core.merge import merge_front

    t0 = time.perf_counter()
    result.merged = merge_front(result, evaluate, tolerance=tolerance, progress=progress)
    result.timings["merge_s"] = time.perf_counter() - t0
    result.timings["total_s"] = time.perf_counter() - t_start


def _grid_search(model, evaluate, t_start, *, variables, strategy, pop_size, generations, seed,
                 coder, include, exclude, min_dims, executor, checkpoint, merge, merge_tolerance,
                 probe, rd, progress) -> SearchResult:  # fmt: skip
    """Argument checks of method="grid", then wsq.search.grid.search_grid."""
    from wsq.checks import number
    from wsq.search import grid as _search_grid

    if strategy != "nsga2":
        raise ValueError(f"method='grid' searches with strategy='nsga2', got strategy={strategy!r}")
    for name, v in (("executor", executor), ("checkpoint", checkpoint)):
        if v is not None:
            raise ValueError(f"{name} is for method='uniform'; method='grid' runs in this process")
    if variables is None:
        variables = _search_grid.GRID_VARIABLES
    variables = (variables,) if isinstance(variables, str) else tuple(variables)
    if (
        "scale" not in variables
        or not set(variables) <= set(_search_grid.GRID_VARIABLES)
        or len(set(variables)) != len(variables)
    ):
        raise ValueError(
            f"variables for method='grid' must be ('scale',) or ('scale', 'rd'), got {variables!r}"
        )
    variables = tuple(v for v in _search_grid.GRID_VARIABLES if v in variables)
    if probe is not None and not callable(probe):
        raise TypeError(f"probe must be callable or None, got {type(probe).__name__}")
    rd = 1.0 if rd is None else number("rd", rd)
    pop_size = int_arg("pop_size", pop_size, 2)
    generations = int_arg("generations", generations, 1)
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
    seed = int_arg("seed", seed, 0)
    coder = choice("coder", coder, CODERS)
    for name, v in (("merge", merge), ("progress", progress)):
        if not isinstance(v, bool):
            raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
    merge_tolerance = number("merge_tolerance", merge_tolerance)
    pool_options = {"include": include, "exclude": exclude, "min_dims": min_dims}
    from wsq.core.pool import collect_pool

    pool = collect_pool(model, **pool_options)
    pooled_names = {n for e in pool.entries for n in e.names}
    pooled_bytes = sum(e.numel * torch.empty(0, dtype=e.dtype).element_size() for e in pool.entries)
    rest_bytes = state_bytes(model, pooled_names)
    # 1-bit indices: the header hardly depends on k, and their streams cost a fraction of memory
    overhead = file_overhead(model, 2, pool_options, coder, rest_bytes)
    result = _search_grid.search_grid(
        model, evaluate, variables=variables, pop_size=pop_size, generations=generations,
        seed=seed, coder=coder, pool_options=pool_options, probe=probe, rd=rd, progress=progress,
        sizes=(pooled_bytes + rest_bytes, rest_bytes, overhead), t_start=t_start,
    )  # fmt: skip
    if merge:
        _merge_front_into(result, evaluate, merge_tolerance, progress, t_start)
    return result


def search(
    model: torch.nn.Module,
    evaluate: Callable[[torch.nn.Module], float],
    *,
    method: str = "uniform",
    strategy: str = "nsga2",
    variables: Sequence[str] | None = None,
    k_min: int = 2,
    k_max: int = 1024,
    pop_size: int = 100,
    generations: int = 100,
    budget: int | None = None,
    spacing: str = "geometric",
    seed: int | None = 0,
    coder: str = "auto",
    clip_floor: float = 0.01,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    min_dims: int = 2,
    executor=None,
    max_retries: int = 3,
    worker_threads: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = True,
    merge: bool = False,
    merge_tolerance: float = 0.0,
    probe: Callable[[torch.nn.Module], float] | None = None,
    rd: float | None = None,
    progress: bool = True,
) -> SearchResult:
    """Search the Pareto front of (metric drop, entropy-coded bits per weight) for `model`.

    Each candidate bins the pooled weights (see wsq.compress) into k equal bins over a range,
    writes every weight's bin mean into one working copy of the model (in place, one fused pass),
    and scores it with ``evaluate``. ``model`` itself is never modified.

    With ``method="grid"`` the candidates are wsq.core.grid's per-tensor steps on one shared grid
    instead (see wsq.tune and wsq.search.grid): the pooled tensors are probed once, then NSGA-II
    searches the step scale and the rate-aware strength rd (variables ("scale", "rd"), the
    default there, or ("scale",) with ``rd`` fixed). It runs in this process: executor,
    checkpoint and strategy="sweep" are for method="uniform".

    Args:
        model: any nn.Module (its pooled weights must be finite and not all equal).
        method: "uniform" (the paper's equal bins over k, default) or "grid".
        evaluate: ``evaluate(model) -> float``, higher is better (accuracy, -loss, fidelity...); it is
            called once on `model` for the baseline, then once per distinct candidate, under
            torch.no_grad. With an executor it runs in the workers and must be picklable
            (cloudpickle is used when installed, so closures work).
        strategy: "nsga2" (pymoo NSGA-II: SBX p=0.9 eta=15, PM p=0.9 eta=20, duplicates
            eliminated, integers by rounding: the paper's settings) or "sweep" (k only, evenly
            spaced, `budget` values).
        variables: decision variables (default ("k",) for uniform, ("scale", "rd") for grid):
            ("k",) is the paper's mode; ("k", "clip") also searches
            the binning range (see Solution.clip: the range is shrunk around the pool's median by
            clip_floor ** clip, clip in [0, 1] in steps of 0.01). Measured on the digits CNN of
            bench/search.py (100 x 100): ("k", "clip") gives a larger front and hypervolume, also
            re-scored on held-out data, but needs ~6x the evaluations (3,099 vs 509) and is
            slightly worse at the k-only budget; hence the default stays ("k",).
        k_min, k_max: bounds of k (2..65536; the paper: 2..1024).
        pop_size, generations: NSGA-II population and generations (the initial population counts
            as generation 1: at most pop_size * generations candidates are requested; the cache
            evaluates each distinct one once). For "sweep", pop_size is the batch size between
            checkpoints.
        budget: "sweep" only: how many k values (default pop_size * generations, capped by the
            number of integers in [k_min, k_max]). To compare with NSGA-II at the same budget pass
            ``budget=nsga_result.n_evaluations``.
        spacing: "sweep" only: "geometric" (default) or "linear" spacing of k.
        seed: NSGA-II seed (>= 0); None draws one (recorded in the result).
        coder: entropy coder whose size the bits objective reports: "auto" (per stream the
            smaller of ANS and Huffman, as wsq.save does), "ans", "huffman", or "entropy" (the
            empirical entropy bound, not a real coder).
        clip_floor: the narrowest range (clip = 1) as a fraction of the full one, in (0, 1).
        include, exclude, min_dims: which parameters are pooled (see wsq.compress.collect_pool).
        executor: None (evaluate here), any concurrent.futures.Executor (process or thread
            pool...), or a dask.distributed Client. The model and evaluate reach each worker once;
            tasks carry decision vectors only. A worker that dies has its candidates retried
            (a broken ProcessPoolExecutor is replaced by an equivalent one wsq owns and shuts
            down; the executor passed in stays broken).
        max_retries: how many worker failures one candidate may suffer before search raises.
        worker_threads: torch threads each worker sets when it loads the model. None: 1 in
            process workers (one process per core; it also keeps OpenMP from deadlocking in
            fork-started workers), unchanged for thread pools and Dask workers.
        checkpoint: a directory, or a file prefix, for checkpoint files (see wsq.search.checkpoint):
            after every generation the population, the generation counter and the whole
            evaluation cache are saved (JSON + .npz, atomically); each finished evaluation is also
            journalled at once. A killed run started again with the same arguments resumes with
            no finished evaluation lost or recomputed and ends with the same front.
        resume: with an existing checkpoint, continue it (True) or start over, deleting it
            (False). Resuming with other settings raises ValueError (``generations`` may grow).
        merge: after the search, merge neighbouring bins of every front solution whose drop is
            <= merge_tolerance (wsq.merge.merge_front: evaluate must stay >= baseline -
            merge_tolerance); the merged models are in ``SearchResult.merged``. Runs here, not on
            the executor.
        merge_tolerance: the allowed drop for merging, in the metric's units (>= 0).
        probe: "grid" only: the callable that probes sensitivities (default evaluate; a smooth
            proxy such as wsq.metrics.kl helps when evaluate is a coarse accuracy).
        rd: "grid" only: the rate-aware strength when "rd" is not a searched variable (>= 0;
            default 1.0).
        progress: show a tqdm progress bar (generation, front size, best trade-off, evaluations)
            when stderr is a terminal (none in logs and pipes).

    Returns:
        SearchResult: ``front`` (Pareto-optimal Solutions sorted by bits), ``history``,
        ``best(max_drop)``, ``compress(i)``, ``table()``, ``to_csv``, ``to_json``, ``plot``,
        ``hypervolume(ref)``, ``timings`` (seconds: total_s, baseline_s, and per evaluation the
        mean hist_ms (histogram + means + coded size), write_ms (fake-quant into the working copy),
        eval_ms (evaluate)).

    Raises:
        TypeError / ValueError naming the argument; ValueError for non-finite or all-equal pooled
        weights, a non-finite baseline, or a checkpoint written with other settings.
    """
    t_start = time.perf_counter()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(evaluate):
        raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}")
    method = choice("method", method, ("uniform", "grid"))
    strategy = choice("strategy", strategy, STRATEGIES)
    if method == "grid":
        return _grid_search(
            model, evaluate, t_start, variables=variables, strategy=strategy, pop_size=pop_size,
            generations=generations, seed=seed, coder=coder, include=include, exclude=exclude,
            min_dims=min_dims, executor=executor, checkpoint=checkpoint, merge=merge,
            merge_tolerance=merge_tolerance, probe=probe, rd=rd, progress=progress,
        )  # fmt: skip
    if probe is not None or rd is not None:
        raise ValueError("probe and rd apply to method='grid' only")
    variables = check_variables(("k",) if variables is None else variables)
    if strategy == "sweep" and variables != ("k",):
        raise ValueError(f"strategy='sweep' searches k only; got variables={variables!r}")
    k_min = int_arg("k_min", k_min, 2, 65536)
    k_max = int_arg("k_max", k_max, k_min, 65536)
    pop_size = int_arg("pop_size", pop_size, 2)
    generations = int_arg("generations", generations, 1)
    if budget is not None:
        budget = int_arg("budget", budget, 1)
    spacing = choice("spacing", spacing, ("geometric", "linear"))
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
    seed = int_arg("seed", seed, 0)
    coder = choice("coder", coder, CODERS)
    if isinstance(clip_floor, bool) or not isinstance(clip_floor, (int, float)):
        raise TypeError(f"clip_floor must be a float, got {type(clip_floor).__name__}")
    if not 0.0 < float(clip_floor) < 1.0:
        raise ValueError(f"clip_floor must be in (0, 1), got {clip_floor}")
    max_retries = int_arg("max_retries", max_retries, 0)
    if worker_threads is not None:
        worker_threads = int_arg("worker_threads", worker_threads, 1)
    for name, v in (("resume", resume), ("merge", merge), ("progress", progress)):
        if not isinstance(v, bool):
            raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
    if isinstance(merge_tolerance, bool) or not isinstance(merge_tolerance, (int, float)):
        raise TypeError(f"merge_tolerance must be a number, got {type(merge_tolerance).__name__}")
    if not (math.isfinite(merge_tolerance) and merge_tolerance >= 0):
        raise ValueError(f"merge_tolerance must be finite and >= 0, got {merge_tolerance}")
    if executor is not None and not (
        isinstance(executor, concurrent.futures.Executor) or _is_dask_client(executor)
    ):
        raise TypeError(
            "executor must be a concurrent.futures.Executor or a dask.distributed Client, "
            f"got {type(executor).__name__}"
        )
    pool_options = {"include": include, "exclude": exclude, "min_dims": min_dims}

    # The pool (and, evaluating here, the one working copy): range, fingerprint, sizes. The model
    # is only read, one tensor at a time: no copy of it and no concatenated pool.
    evaluator = CandidateEvaluator(model, evaluate, None, coder=coder, pool_options=pool_options)
    pool, source = evaluator.pool, evaluator.source
    wmin, wmax = evaluator.range()
    if not wmax > wmin:
        raise ValueError(f"model: every pooled weight equals {wmin}; there is nothing to search")
    if "clip" in variables:
        center = pool_median(source, int(pool.n_weights), wmin, wmax)
    else:
        center = 0.5 * (wmin + wmax)
    space = Space(variables, k_min, k_max, wmin, wmax, center, float(clip_floor))
    fingerprint = pool_fingerprint(pool, source)
    n_weights = int(pool.n_weights)
    pooled_names = {n for e in pool.entries for n in e.names}
    pooled_bytes = sum(e.numel * torch.empty(0, dtype=e.dtype).element_size() for e in pool.entries)
    rest_bytes = state_bytes(model, pooled_names)
    original_bytes = pooled_bytes + rest_bytes
    # measured at k = 2 (1-bit streams), as the grid search does: the overhead is the header,
    # and compressing at k = 64 only for it held the model's 6-bit copy (0.2x dense)
    overhead = file_overhead(model, 2, pool_options, coder, rest_bytes)
    if executor is None:
        evaluator.space = space
    else:
        evaluator = None  # the workers build their own

    config = {
        "strategy": strategy,
        "variables": list(variables),
        "k_min": k_min,
        "k_max": k_max,
        "pop_size": pop_size,
        "seed": seed,
        "coder": coder,
        "clip_floor": float(clip_floor),
        "clip_steps": space.clip_steps,
        "n_weights": n_weights,
        "pool": fingerprint,
    }
    if strategy == "sweep":
        config.update(budget=budget or pop_size * generations, spacing=spacing)

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

    token = uuid.uuid4().hex
    if executor is None:
        runner = SequentialRunner(evaluator)
    else:
        runner = make_runner(
            executor,
            lambda: WorkerSpec(token, model, evaluate, space, coder, pool_options, worker_threads),
            max_retries=max_retries,
        )
    driver = _Driver(runner, ckpt, baseline)
    start, converged = 0, False
    pop_x = np.zeros((0, space.n_var), dtype=np.int64)
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

    if strategy == "sweep":
        ks = _sweep_ks(k_min, k_max, config["budget"], spacing)
        keys = [space.neutral(k) for k in ks]
        batches = [keys[i : i + pop_size] for i in range(0, len(keys), pop_size)]
        total = len(batches)
    else:
        total = generations
    bar = tqdm(
        total=total, initial=min(start, total), desc=f"wsq {strategy}", unit="gen",
        disable=None if progress else True, dynamic_ncols=True,  # None: on a terminal only
    )  # fmt: skip
    try:
        g = start
        if strategy == "sweep":
            for g in range(start, total):
                driver.evaluate(batches[g], g)
                save(g + 1)
                bar.set_postfix(_progress_text(driver), refresh=False)
                bar.update(1)
            g = max(start, total)
        else:
            if not converged:
                g, converged, pop_x, pop_f = nsga2_loop(
                    space, driver, pop_size=pop_size, total=total, seed=seed, start=start,
                    pop_x=pop_x, pop_f=pop_f, save=save_state, bar=bar,
                )  # fmt: skip
    finally:
        bar.close()
        runner.close()
        if ckpt is not None:
            ckpt.close()

    def solution(key: tuple[int, ...], rec: Record) -> Solution:
        d = space.decode(key)
        coded = rec.bits * n_weights / 8 + 4 * rec.n_bins + rest_bytes + overhead
        return Solution(
            k=d["k"], clip=d["clip"], lo=d["lo"], hi=d["hi"], n_bins=rec.n_bins,
            metric=rec.metric, drop=baseline - rec.metric, bits=rec.bits,
            cr=original_bytes / coded, generation=driver.gen_of[key], x=key,
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
    config_out = dict(
        config, generations=generations, original_bytes=original_bytes, file_overhead=overhead
    )
    result = SearchResult(
        front=pareto_front(history), history=history, baseline=baseline,
        n_requested=driver.n_requested, generations=g, converged=converged, strategy=strategy,
        seed=seed, variables=variables, config=config_out, timings=timings,
        n_shipments=runner.n_shipments, n_loads=runner.n_loads, n_retries=runner.n_retries,
        model=model,
        pool_options=pool_options,
    )  # fmt: skip
    if merge:
        _merge_front_into(result, evaluate, merge_tolerance, progress, t_start)
    return result
