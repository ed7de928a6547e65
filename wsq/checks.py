"""Argument checks shared across stages: each raises ValueError/TypeError naming the argument and
its value (design.md's error convention), so every entry point words a bad number the same way."""

from __future__ import annotations

import math

__all__ = ["number", "finite_baseline", "tolerance_margin"]


def number(name: str, v, *, lo: float = 0.0, strict: bool = False) -> float:
    """`v` as a float: a real number (bools refused), finite, >= lo (> lo with `strict`)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v) or v < lo or (strict and v == lo):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {lo}, got {v}")
    return v


def tolerance_margin(tolerance, margin) -> tuple[float, float]:
    """(tolerance, margin) checked: both finite numbers >= 0, margin <= tolerance (a larger margin
    would ask the compressed model to beat the original)."""
    tolerance = number("tolerance", tolerance)
    margin = number("margin", margin)
    if margin > tolerance:
        raise ValueError(
            f"margin must be <= tolerance ({tolerance}), got {margin}: the tune would ask the "
            "compressed model to beat the original"
        )
    return tolerance, margin


def finite_baseline(v: float, name: str) -> float:
    """The metric of the original model, which every tolerance is measured from: it must be finite."""
    if not math.isfinite(v):
        raise ValueError(f"{name}(model) returned {v} on the original model; it must be finite")
    return v
