"""Argument checks shared across stages: each raises ValueError/TypeError naming the argument and
its value (design.md's error convention), so every entry point words a bad number the same way."""

from __future__ import annotations

import math

__all__ = ["number", "finite_baseline"]


def number(name: str, v, *, lo: float = 0.0, strict: bool = False) -> float:
    """`v` as a float: a real number (bools refused), finite, >= lo (> lo with `strict`)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v) or v < lo or (strict and v == lo):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {lo}, got {v}")
    return v


def finite_baseline(v: float, name: str) -> float:
    """The metric of the original model, which every tolerance is measured from: it must be finite."""
    if not math.isfinite(v):
        raise ValueError(f"{name}(model) returned {v} on the original model; it must be finite")
    return v
