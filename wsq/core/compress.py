"""Structure-agnostic compression: any model -> one pooled codebook -> a model on packed indices.

Contract (read by wsq.io, wsq.search and wsq.merge; Pool and collect_pool are re-exported here):

* The pool (which parameters share the codebook): wsq.core.pool.
* ``Compressed`` (made by :func:`compress` or :meth:`Compressed.from_parts`, never directly):
  ``model`` (a new module; the input is never modified), ``codebook`` (float32 CPU (n,), ascending:
  the union of every tensor's values), ``bits`` (ceil(log2 n), >= 1: the file's index width),
  ``k`` / ``lo`` / ``hi`` (binning arguments, None when loaded), ``quantized`` (canonical name ->
  :class:`QuantizedParam`: names, shape, dtype = the compute dtype, packed = uint8 LSB-first at
  the tensor's OWN width ``bits`` on the model's device, numel, table = its lookup table),
  ``global_packed(name)`` (its indices into ``codebook`` at ``bits``: what a file stores),
  ``pool_skipped`` ((name, reason) list).
  ``rest_state()``: every other entry of the original ``state_dict`` under its original name
  (biases, norms, BatchNorm running stats and num_batches_tracked, ...); this plus codebook, bits
  and the global indices is exactly what a file must hold. ``from_parts(model, codebook, bits,
  packed_by_name, rest_state, *, k=None, lo=None, hi=None)`` rebuilds from a fresh instance of the
  architecture (any device, or meta) -- the same assembly code compress uses -- and raises
  wsq.FormatError listing missing/unexpected names or naming a mismatched tensor.
  ``with_indices(codebook, bits, packed_by_name)``: the same model with another codebook and
  indices (wsq.merge's output; nothing shared with the source). ``stats(coder="auto")``: sizes
  (see its docstring; file_bytes from wsq.io.writer.file_size); ``dequantized_state_dict()``: dense
  weights under the original names. A Compressed is treated as immutable (derived values are
  cached; a state-dict load into its model drops them).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch.nn as tnn

from wsq.core.binning import _check_bound, _check_k
from wsq.core.compressed import Compressed, QuantizedParam, _assemble
from wsq.core.pool import Pool, PoolEntry, collect_pool
from wsq.core.streaming import ModelSource, uniform_parts

__all__ = ["PoolEntry", "Pool", "collect_pool", "QuantizedParam", "Compressed", "compress"]


# ----------------------------------------------------------------------------- compress


def compress(
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
    k = _check_k(k)
    lo, hi = _check_bound("lo", lo), _check_bound("hi", hi)
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"lo must be < hi, got lo={lo}, hi={hi}")
    pool = collect_pool(model, include=include, exclude=exclude, min_dims=min_dims)
    u = uniform_parts(ModelSource(pool), k, lo=lo, hi=hi)
    parts = {e.name: part for e, part in zip(pool.entries, u.parts, strict=True)}
    u.parts = None  # the model takes them over
    return _assemble(
        model, u.codebook, u.bits, parts, None, k=k, lo=u.lo, hi=u.hi, skipped=pool.skipped,
        narrowed=True,
    )  # fmt: skip
