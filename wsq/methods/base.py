"""What every method shares: which weights are pooled (:class:`Pooling`), what one evaluated
candidate produced (:class:`Record`), and the two interfaces a method implements (:class:`Method`,
the public object; :class:`Problem`, the search space it hands wsq.search).

A method is a frozen dataclass that owns its variables: ``compress`` applies it at one setting,
``tune`` finds the coarsest setting within a tolerance, and ``problem`` describes its search space
and evaluates its candidates, so wsq.compress, wsq.tune and wsq.search never branch on the method
and a new method is one new module.
"""

from __future__ import annotations

import abc
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

import torch

from wsq.compressed import Compressed

__all__ = ["Pooling", "Record", "Method", "Problem", "int_field", "callable_or_none"]


def int_field(owner: str, name: str, v, lo: int, hi: int | None = None) -> int:
    """`v` as an int in [lo, hi] (bools refused); errors name ``owner.name``."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{owner}.{name} must be an int, got {type(v).__name__}")
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{owner}.{name} must be {rng}, got {v}")
    return v


def callable_or_none(owner: str, name: str, v) -> None:
    if v is not None and not callable(v):
        raise TypeError(f"{owner}.{name} must be callable or None, got {type(v).__name__}")


def _patterns(name: str, v) -> tuple[str, ...] | None:
    # stored as a tuple so that a Pooling stays hashable and equal by value (checkpoint identity)
    if v is None:
        return None
    if isinstance(v, str):
        return (v,)
    try:
        out = tuple(v)
    except TypeError:
        raise TypeError(f"Pooling.{name} must be a pattern, a list of them or None, got "
                        f"{type(v).__name__}") from None  # fmt: skip
    bad = [p for p in out if not isinstance(p, str)]
    if bad:
        raise TypeError(f"Pooling.{name} patterns must be strings, got {bad[0]!r}")
    for p in out:
        fnmatch.translate(p)  # a pattern fnmatch cannot read fails here, not mid-run
    return out


@dataclass(frozen=True)
class Pooling:
    """Which parameters share the codebook (see wsq.core.pool.collect_pool).

    include: fnmatch pattern(s) on parameter names; when given, exactly the matching
    floating-point parameters are pooled, whatever their ndim. exclude: pattern(s) left out.
    min_dims: without include, parameters with fewer dims stay uncompressed (2: biases and norms
    stay).
    """

    include: str | tuple[str, ...] | None = None
    exclude: str | tuple[str, ...] | None = None
    min_dims: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "include", _patterns("include", self.include))
        object.__setattr__(self, "exclude", _patterns("exclude", self.exclude))
        int_field("Pooling", "min_dims", self.min_dims, 0)

    def options(self) -> dict:
        """The keyword arguments of collect_pool."""
        return {"include": self.include, "exclude": self.exclude, "min_dims": self.min_dims}


@dataclass(frozen=True)
class Record:
    """What one evaluation produced.

    metric: evaluate(working copy); bits: entropy-coded bits per pooled weight; n_bins: codebook
    entries; t_hist: seconds in the statistics pass, codebook and coded size; t_write: binning and
    packing into the compressed working copy; t_eval: the user's evaluate.
    """

    metric: float
    bits: float
    n_bins: int
    t_hist: float = 0.0
    t_write: float = 0.0
    t_eval: float = 0.0


class Problem(abc.ABC):
    """A method's search space on one model, as wsq.search drives it.

    Candidates are tuples of integers (the rounded decision vector, also the cache key).
    ``variables`` names them; ``config`` (JSON-safe) identifies the space for checkpoints;
    ``n_weights``, ``original_bytes``, ``rest_bytes`` and ``overhead`` size the files candidates
    would give.
    """

    variables: tuple[str, ...]
    config: dict
    n_weights: int
    original_bytes: int
    rest_bytes: int
    overhead: int
    #: False: candidates run in this process only (no executor, no checkpoint)
    distributable: bool = False

    @property
    def n_var(self) -> int:
        return len(self.variables)

    @abc.abstractmethod
    def bounds(self) -> tuple[list[int], list[int]]:
        """(lower, upper) integer bounds of each variable."""

    def key(self, x) -> tuple[int, ...]:
        """The cache key of a (possibly float) decision vector: rounded and clamped integers."""
        xl, xu = self.bounds()
        return tuple(
            min(u, max(a, int(round(float(v))))) for v, a, u in zip(x, xl, xu, strict=True)
        )

    def prepare(self, baseline: float) -> None:  # noqa: B027 - most methods need no preparation
        """Called once with the baseline before any candidate (the grid probes here)."""

    def sweep(self, budget: int, spacing: str) -> list[tuple[int, ...]]:
        """The candidates of strategy "sweep" (a method with one natural size knob sweeps it)."""
        method = type(self).__name__.removesuffix("Problem")
        raise ValueError(f"strategy 'sweep' is not defined for wsq.{method}: it has no size knob")

    @abc.abstractmethod
    def evaluator(self) -> Callable[[tuple[int, ...]], Record]:
        """Evaluates candidates in this process (on one working copy)."""

    def worker(self, evaluate) -> object:
        """A picklable factory whose ``build()`` makes an evaluator in an executor worker."""
        method = type(self).__name__.removesuffix("Problem")
        raise ValueError(f"wsq.{method} candidates run in this process only")

    @abc.abstractmethod
    def describe(self, key: tuple[int, ...]) -> dict:
        """The method's settings of a candidate, as Solution fields (k, clip, lo, hi, scale...)."""

    @abc.abstractmethod
    def compress(self, key: tuple[int, ...]) -> Compressed:
        """The original model compressed as candidate `key` (what the search evaluated)."""

    def extra(self) -> tuple[dict, dict]:
        """(config, timings) the method adds to the SearchResult after the search."""
        return {}, {}

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release scratch memory after the search (compress(key) must still work)."""


class Method(abc.ABC):
    """A compression method: a frozen dataclass of its settings (validated on construction)."""

    #: the method's short name (Solution.method, CLI, table rows)
    name: str = ""

    @abc.abstractmethod
    def compress(self, model: torch.nn.Module, pooling: Pooling) -> Compressed:
        """``model`` compressed at this setting."""

    @abc.abstractmethod
    def tune(self, model, evaluate, *, tolerance: float, margin: float, baseline: float | None,
             pooling: Pooling) -> Compressed:  # fmt: skip
        """The coarsest setting whose ``evaluate >= baseline - tolerance + margin``."""

    @abc.abstractmethod
    def problem(self, model, evaluate, *, pooling: Pooling, coder: str) -> Problem:
        """This method's search space on `model` (wsq.search)."""
