"""``wsq.compress`` and ``wsq.tune``: apply a method object (an int k is Uniform(k=k)).

The keyword forms these functions had before methods were objects (``compress(model, k, lo=...,
include=...)``, ``tune(model, evaluate, rd=..., iters=...)``) still work: they are translated into
the method and a Pooling with a DeprecationWarning naming the replacement, never silently.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from wsq.checks import number, tolerance_margin
from wsq.compressed import Compressed
from wsq.core.binning import check_k
from wsq.methods.base import Method, Pooling
from wsq.methods.grid import Grid
from wsq.methods.uniform import Uniform

__all__ = ["compress", "tune", "as_method", "pooling_of"]

_POOL_KEYS = ("include", "exclude", "min_dims")


def deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated: use {new}", DeprecationWarning, stacklevel=4)


def as_method(method, default: Method) -> Method:
    """A Method from what a caller passed: None (the default), a Method, or an int k (Uniform)."""
    if method is None:
        return default
    if isinstance(method, Method):
        return method
    if isinstance(method, int) and not isinstance(method, bool):
        return Uniform(k=check_k(method))  # the shorthand's errors name k, as the caller wrote it
    raise TypeError(
        "method must be a wsq method object (wsq.Uniform(...), wsq.Grid(...)) or an int k, got "
        f"{type(method).__name__}"
    )


def pooling_of(pooling, legacy: dict, where: str) -> Pooling:
    """The Pooling to use: `pooling`, or one built from the old include/exclude/min_dims keywords
    (popped from `legacy`, with a DeprecationWarning)."""
    if pooling is not None and not isinstance(pooling, Pooling):
        raise TypeError(f"pooling must be a wsq.Pooling or None, got {type(pooling).__name__}")
    old = {k: legacy.pop(k) for k in _POOL_KEYS if k in legacy}
    if old:
        if pooling is not None:
            raise ValueError(f"{where}: give pooling= or {', '.join(old)}, not both")
        deprecated(f"{where}({', '.join(f'{k}=' for k in old)})",
                   f"{where}(..., pooling=wsq.Pooling({', '.join(f'{k}=...' for k in old)}))")  # fmt: skip
        return Pooling(**old)
    return pooling or Pooling()


def _unknown(where: str, legacy: dict) -> None:
    if legacy:
        raise TypeError(f"{where}() got unexpected keyword argument(s) {', '.join(legacy)}")


def compress(
    model: torch.nn.Module,
    method: Method | int | None = None,
    *,
    pooling: Pooling | None = None,
    **legacy,
) -> Compressed:
    """Compress `model` with `method` -> wsq.Compressed (``model`` itself is not modified).

    ``method``: a method object -- ``wsq.Uniform(k=256)`` (the paper's k equal bins over the
    pooled weights, O(N)), ``wsq.Grid(scale=..., sensitivities=...)`` (per-tensor steps on one
    shared grid) -- or an int k (also as ``k=``), short for ``wsq.Uniform(k=k)``. ``pooling``: which parameters
    share the codebook (default wsq.Pooling(): every float parameter with >= 2 dims).

    The returned ``.model`` is a new module whose compressed parameters are held by wsq.nn layers
    on packed indices (each tensor at the width of the values it uses, one shared codebook), built
    one tensor at a time (no copy of the pool). ``wsq.compress(model, k, lo=, hi=, include=,
    exclude=, min_dims=)`` still works, with a DeprecationWarning.

    Raises:
        TypeError / ValueError naming the argument (or the method's field); ValueError for NaN/Inf
        weights (naming the parameter), meta-device parameters, no eligible parameter.
    """
    if "k" in legacy:  # compress(model, k=256): the shorthand, spelled as a keyword
        if method is not None:
            raise TypeError("give the method or k=, not both")
        method = legacy.pop("k")
    rng = {k: legacy.pop(k) for k in ("lo", "hi") if k in legacy}
    pool = pooling_of(pooling, legacy, "wsq.compress")
    _unknown("compress", legacy)
    if rng:
        if not (isinstance(method, int) and not isinstance(method, bool)):
            raise TypeError(f"{', '.join(rng)}= go with an int k; a method object carries its own")
        deprecated(f"wsq.compress(model, k, {', '.join(f'{k}=' for k in rng)})",
                   "wsq.compress(model, wsq.Uniform(k=k, lo=..., hi=...))")  # fmt: skip
        method = Uniform(k=method, **rng)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if method is None:
        raise TypeError(
            "method must be a wsq method object (wsq.Uniform(...), wsq.Grid(...)) or an int k, "
            "got None"
        )
    return as_method(method, Uniform()).compress(model, pool)


_GRID_LEGACY = ("rd", "probe", "iters", "sensitivities", "probe_step", "start_drop",
                "start_scale", "quantizer")  # fmt: skip


def tune(
    model: torch.nn.Module,
    evaluate: Callable[[torch.nn.Module], float],
    method: Method | None = None,
    *,
    tolerance: float,
    margin: float = 0.0,
    baseline: float | None = None,
    pooling: Pooling | None = None,
    **legacy,
) -> Compressed:
    """The coarsest setting of `method` (default ``wsq.Grid()``) whose model keeps
    ``evaluate >= baseline - tolerance + margin`` -> wsq.Compressed with ``tune_info``.

    ``wsq.Grid``: probe each pooled tensor's sensitivity, then bracket and bisect the step scale
    (see wsq.core.grid.tune; tune_info holds scale, sensitivities, rd, trace, timings).
    ``wsq.Uniform``: the smallest k in [k_min, k_max] (bracket from k, bisect on log k; tune_info
    holds k, trace). Candidates are evaluated on ONE compressed working copy; ``model`` is not
    modified.

    Args:
        tolerance: allowed drop below ``evaluate(model)``, in the metric's units (>= 0).
        margin: how much better than the tolerance requires the decision metric must stay
            (0 <= margin <= tolerance): room for the noise of a small decision set.
        baseline: evaluate(model) when already known (saves one evaluation).
        pooling: which parameters share the codebook (default wsq.Pooling()).

    The old grid keywords (rd=, probe=, iters=, sensitivities=, probe_step=, start_drop=,
    start_scale=, quantizer=, include=, exclude=, min_dims=) still work with a
    DeprecationWarning: they tune the grid exactly as before.

    Raises:
        TypeError / ValueError naming the argument; ValueError when no setting meets the
        tolerance (the message lists what was tried).
    """
    grid_old = {k: legacy.pop(k) for k in _GRID_LEGACY if k in legacy}
    pool = pooling_of(pooling, legacy, "wsq.tune")
    _unknown("tune", legacy)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(evaluate):
        raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}")
    tolerance, margin = tolerance_margin(tolerance, margin)
    if baseline is not None:
        baseline = number("baseline", baseline, lo=-float("inf"))
    if grid_old:
        if method is not None:
            raise ValueError(f"{', '.join(grid_old)}= are Grid settings: give them to the method "
                             "object, not beside it")  # fmt: skip
        deprecated(f"wsq.tune({', '.join(f'{k}=' for k in grid_old)})",
                   "wsq.tune(model, evaluate, wsq.Grid(...), tolerance=...)")  # fmt: skip
        from wsq.core.grid import tune as grid_tune

        return grid_tune(model, evaluate, tolerance=tolerance, margin=margin, baseline=baseline,
                         **grid_old, **pool.options())  # fmt: skip
    m = as_method(method, Grid())
    return m.tune(model, evaluate, tolerance=tolerance, margin=margin, baseline=baseline,
                  pooling=pool)  # fmt: skip
