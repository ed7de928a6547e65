"""wsq.search's own settings: argument checks that name the argument, the sweep strategy and the
executor settings as small frozen objects, and the translation of the keyword forms search() had
before methods were objects (each with a DeprecationWarning naming its replacement)."""

from __future__ import annotations

import concurrent.futures
import warnings
from dataclasses import dataclass

import numpy as np

from wsq.search.executors import _is_dask_client

__all__ = ["STRATEGIES", "CODERS", "int_arg", "choice", "Sweep", "Workers", "translate_legacy"]

STRATEGIES = ("nsga2", "sweep")
CODERS = ("auto", "ans", "huffman", "entropy")


def int_arg(name: str, v, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    v = int(v)
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}, got {v}")
    return v


def choice(name: str, v, options) -> str:
    if not isinstance(v, str) or v not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {v!r}")
    return v


@dataclass(frozen=True)
class Sweep:
    """strategy=wsq.Sweep(...): evaluate `budget` values of the method's size knob (Uniform's k),
    evenly spaced ("geometric" or "linear"), in batches of pop_size (one checkpoint each).
    budget None: pop_size * generations. To compare with NSGA-II at the same budget pass
    ``budget=nsga_result.n_evaluations``."""

    budget: int | None = None
    spacing: str = "geometric"

    def __post_init__(self) -> None:
        if self.budget is not None:
            int_arg("Sweep.budget", self.budget, 1)
        choice("Sweep.spacing", self.spacing, ("geometric", "linear"))


@dataclass(frozen=True)
class Workers:
    """executor=wsq.Workers(executor, ...): where candidates run and how failures are handled.

    executor: any concurrent.futures.Executor (process or thread pool...) or a dask.distributed
    Client. max_retries: worker failures one candidate may suffer before search raises.
    threads: torch threads each worker sets when it loads the model (None: 1 in process workers,
    one process per core, which also keeps OpenMP from deadlocking in fork-started workers;
    unchanged for thread pools and Dask workers).
    """

    executor: object
    max_retries: int = 3
    threads: int | None = None

    def __post_init__(self) -> None:
        if not (
            isinstance(self.executor, concurrent.futures.Executor) or _is_dask_client(self.executor)
        ):
            raise TypeError(
                "executor must be a concurrent.futures.Executor or a dask.distributed Client, "
                f"got {type(self.executor).__name__}"
            )
        int_arg("Workers.max_retries", self.max_retries, 0)
        if self.threads is not None:
            int_arg("Workers.threads", self.threads, 1)


def _warn(old: str, new: str) -> None:
    warnings.warn(f"wsq.search({old}) is deprecated: use {new}", DeprecationWarning, stacklevel=4)


def translate_legacy(method, strategy, executor, legacy: dict):
    """(method, strategy, executor, pooling keywords) from search()'s old keyword forms.

    Every old keyword still works (a DeprecationWarning names its replacement) except merge=, whose
    behaviour moved to the protocol function: it raises, naming the replacement."""
    from wsq.methods import Grid, Uniform

    for gone in ("merge", "merge_tolerance"):
        if gone in legacy:
            raise TypeError(
                f"wsq.search({gone}=...) is gone: merging the front is a step of the paper's "
                "protocol, wsq.paper_protocol(model, evaluate, tolerance=...), or call "
                "wsq.core.merge.merge_front(result, evaluate, tolerance=...) on the result"
            )
    uni = {k: legacy.pop(k) for k in ("k_min", "k_max", "clip_floor") if k in legacy}
    grid = {k: legacy.pop(k) for k in ("probe", "rd") if k in legacy}
    variables = legacy.pop("variables", None)
    if isinstance(method, str):
        choice("method", method, ("uniform", "grid"))
        _warn(f"method={method!r}", f"method=wsq.{method.capitalize()}(...)")
        name = method
        method = None
    else:
        name = "uniform"
    if (uni or grid or variables is not None) and method is not None:
        bad = ", ".join([*uni, *grid] + (["variables"] if variables is not None else []))
        raise ValueError(f"{bad}= are method settings: give them to the method object")
    if method is None and (uni or grid or variables is not None or name == "grid"):
        if uni and name == "grid" or grid and name == "uniform":
            which = "method='grid'" if grid else "method='uniform'"
            raise ValueError(f"{', '.join(uni or grid)} apply to {which} only")
        if name == "grid":
            fields = dict(grid)
            if variables is not None:
                v = (variables,) if isinstance(variables, str) else tuple(variables)
                if v not in (("scale",), ("scale", "rd"), ("rd", "scale")):
                    raise ValueError(f"variables for method='grid' must be ('scale',) or "
                                     f"('scale', 'rd'), got {v!r}")  # fmt: skip
                fields["fixed_rd"] = v == ("scale",)
            given = [*grid] + (["variables"] if variables is not None else [])
            if given:
                _warn(", ".join(f"{k}=" for k in given), "method=wsq.Grid(...)")
            method = Grid(**{k: v for k, v in fields.items() if v is not None})
        else:
            fields = dict(uni)
            if variables is not None:
                v = (variables,) if isinstance(variables, str) else tuple(variables)
                if "k" not in v or not set(v) <= {"k", "clip"} or len(set(v)) != len(v):
                    raise ValueError(f"variables must be distinct names from ('k', 'clip') "
                                     f"including 'k', got {v!r}")  # fmt: skip
                fields["clip"] = "clip" in v
            given = [*uni] + (["variables"] if variables is not None else [])
            _warn(", ".join(f"{k}=" for k in given), "method=wsq.Uniform(...)")
            method = Uniform(**fields)
    sweep = {k: legacy.pop(k) for k in ("budget", "spacing") if k in legacy}
    if sweep:
        if strategy != "sweep":
            raise ValueError(f"{', '.join(sweep)} apply to strategy='sweep' only")
        _warn(", ".join(f"{k}=" for k in sweep), "strategy=wsq.Sweep(...)")
        strategy = Sweep(**sweep)
    work = {k: legacy.pop(k) for k in ("max_retries", "worker_threads") if k in legacy}
    if work:
        _warn(", ".join(f"{k}=" for k in work), "executor=wsq.Workers(executor, ...)")
        if executor is not None and not isinstance(executor, Workers):
            executor = Workers(executor, max_retries=work.get("max_retries", 3),
                               threads=work.get("worker_threads"))  # fmt: skip
        elif work.get("max_retries") is not None:
            int_arg("max_retries", work["max_retries"], 0)
    pool = {k: legacy.pop(k) for k in ("include", "exclude", "min_dims") if k in legacy}
    if legacy:
        raise TypeError(f"search() got unexpected keyword argument(s) {', '.join(legacy)}")
    return method, strategy, executor, pool
