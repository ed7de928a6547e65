"""Structure-agnostic compression: any model -> one pooled codebook -> a model on packed indices.

The pool (which parameters share the codebook) is wsq.core.pool; the result, ``Compressed``, and
its contract are wsq.compressed.model's.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch.nn as tnn

from wsq.compressed import Compressed
from wsq.core.binning import check_bound, check_k
from wsq.core.pool import collect_pool
from wsq.core.streaming import ModelSource, uniform_parts

__all__ = ["uniform_compress"]


# ----------------------------------------------------------------------------- compress


def uniform_compress(
    model: tnn.Module,
    k: int,
    *,
    lo: float | None = None,
    hi: float | None = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    min_dims: int = 2,
) -> Compressed:
    """Compress `model` with one codebook of at most k shared values over all its pooled weights.

    Pools the eligible parameters (see :func:`collect_pool`), splits [lo, hi] (default: the pool's
    range) into k equal bins, replaces each weight by its bin's mean and packs each tensor's
    indices at the width of the bins it uses, one tensor at a time (wsq.core.streaming: no copy
    of the pool; beyond the model, memory holds the packed indices and one tensor's unpacked ones). The returned ``.model`` is a new module (the input is untouched,
    and its compressed weights are never copied densely) whose owners of compressed parameters
    are wsq.nn layers sharing one lookup table.

    Args:
        model: any nn.Module with materialised float32/float16/bfloat16 (or float64) weights.
        k: number of bins, 2..65536 (n <= k are non-empty).
        lo, hi: optional range; weights outside it go to the end bins.
        include, exclude, min_dims: pool selection (see collect_pool).

    Raises:
        ValueError: k out of range, NaN/Inf weights (naming the parameter), meta-device parameters,
            no eligible parameters, lo >= hi.
    """
    k = check_k(k)
    lo, hi = check_bound("lo", lo), check_bound("hi", hi)
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"lo must be < hi, got lo={lo}, hi={hi}")
    pool = collect_pool(model, include=include, exclude=exclude, min_dims=min_dims)
    u = uniform_parts(ModelSource(pool), k, lo=lo, hi=hi)
    parts = {e.name: part for e, part in zip(pool.entries, u.parts, strict=True)}
    u.parts = None  # the model takes them over
    return Compressed.assemble(
        model, u.codebook, u.bits, parts, None, k=k, lo=u.lo, hi=u.hi, skipped=pool.skipped,
        narrowed=True,
    )  # fmt: skip
