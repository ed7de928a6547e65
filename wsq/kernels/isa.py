"""Which instruction-set level the CPU kernels use (scalar, AVX2, AVX-512), and forcing a lower one.

Every kernel family (binning, pack/remap, LUT dequant/matmul/gather) has a path per level and picks
the best the CPU has. Capping the level runs a lower path on a bigger CPU: the tests run every path
this way, and a bench can time the AVX2 path on an AVX-512 machine. The cap is process-wide (not
per thread) and can also be set before the first kernel call with the environment variable
``WSQ_ISA=scalar|avx2|avx512|auto``. Re-exported by :mod:`wsq.kernels.ops`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from wsq.kernels import native as _native

ISA_LEVELS = _native.ISA_LEVELS


def isa_levels() -> tuple[str, ...]:
    """The levels this CPU can run, lowest first (always starts with ``"scalar"``)."""
    best = _native.cpu().detected_isa()
    return ISA_LEVELS[: ISA_LEVELS.index(best) + 1]


def get_isa() -> str:
    """The level the kernels use now (what ``wsq.info()["cpu_isa"]`` reports)."""
    return _native.cpu().active_isa()


def set_isa(isa: str) -> str:
    """Cap the kernels at `isa` ("scalar", "avx2", "avx512", or "auto" for the CPU's best).

    Returns the level that was active before, so a caller can restore it. A level this CPU lacks
    raises ValueError (never silently runs a lower one)."""
    if not isinstance(isa, str):
        raise TypeError(f"isa must be a str, not {type(isa).__name__}")
    name = isa.strip().lower()
    if name not in (*ISA_LEVELS, "auto"):
        raise ValueError(f"isa must be one of {', '.join(ISA_LEVELS)} or 'auto', not {isa!r}")
    c = _native.cpu()
    before = c.active_isa()
    if name != "auto" and name not in isa_levels():
        raise ValueError(
            f"isa={isa!r} is not supported by this CPU (its best level is {c.detected_isa()!r}; "
            f"features: {c.cpu_feature_list() or 'none'})"
        )
    c.set_isa(name)
    return before


@contextlib.contextmanager
def use_isa(isa: str) -> Iterator[str]:
    """``with use_isa("avx2"):`` runs the kernels at that level, then restores the previous one."""
    before = set_isa(isa)
    try:
        yield get_isa()
    finally:
        _native.cpu().set_isa(before)
