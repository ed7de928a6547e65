"""Checks of wsq.search's own arguments: each raises TypeError/ValueError naming the argument."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wsq.search.problem import KNOWN_VARIABLES

__all__ = ["STRATEGIES", "CODERS", "int_arg", "choice", "check_variables"]

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


def choice(name: str, v, options: Sequence[str]) -> str:
    if not isinstance(v, str) or v not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {v!r}")
    return v


def check_variables(v) -> tuple[str, ...]:
    if isinstance(v, str):
        v = (v,)
    try:
        out = tuple(v)
    except TypeError:
        raise TypeError(f"variables must be a sequence of names, got {v!r}") from None
    bad = [x for x in out if x not in KNOWN_VARIABLES]
    if bad or "k" not in out or len(set(out)) != len(out):
        raise ValueError(
            f"variables must be distinct names from {KNOWN_VARIABLES} including 'k', got {out!r}"
        )
    return tuple(x for x in KNOWN_VARIABLES if x in out)  # canonical order
