"""The pool: which parameters of a model share the one codebook, and their weights as one vector.

Contract (read by wsq.core.compress and wsq.search; wsq.reference.fake_quant_model states the
same rule plainly, as the oracle):

* ``collect_pool(model, *, include=None, exclude=None, min_dims=2) -> Pool``. Eligible: floating-point
  parameters with ``ndim >= min_dims``; with ``include`` (fnmatch patterns) exactly the parameters
  whose name matches one of them, of any ndim; ``exclude`` removes matches. Non-float parameters and
  excluded ones are listed in ``Pool.skipped`` as ``(name, reason)``. Tied parameters (same tensor
  object, or same storage, offset, shape and strides) are pooled once, all their names kept in
  ``PoolEntry.names`` (first = canonical, in ``named_parameters`` order). Parameters on the meta
  device -> ValueError naming them; nothing eligible -> ValueError. ``Pool.flat()`` returns one new
  contiguous float32 tensor (n_weights,) of the pooled weights, entry after entry (``PoolEntry.offset``),
  on the device of the first pooled parameter. ``Pool.bin(flat, k, lo=, hi=)`` is
  ``wsq.uniform_bins`` with NaN/Inf reported by parameter name. ``Pool.tensors(model)`` resolves the
  entries to the live parameters of a model of the same architecture (e.g. a working copy).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn as tnn
from torch import Tensor

from wsq.compressed.ties import is_lazy, name_list, tie_groups
from wsq.core.binning import Binning, uniform_bins

__all__ = ["PoolEntry", "Pool", "collect_pool"]


@dataclass(frozen=True)
class PoolEntry:
    """One pooled tensor: all its names (tied ones included), shape, dtype, numel, offset in the pool."""

    names: tuple[str, ...]
    shape: torch.Size
    dtype: torch.dtype
    numel: int
    offset: int

    @property
    def name(self) -> str:
        """The canonical name (first in ``named_parameters`` order)."""
        return self.names[0]


def _patterns(arg: str, value) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable):
        out = tuple(value)
        if all(isinstance(v, str) for v in out):
            return out
    raise TypeError(f"{arg} must be a name pattern or a list of them, got {value!r}")


def _match(names: Iterable[str], patterns: tuple[str, ...]) -> str | None:
    for n in names:
        for p in patterns:
            if fnmatch.fnmatchcase(n, p):
                return p
    return None


class Pool:
    """The eligible parameters of a model, pooled (see the module docstring for the rules).

    Attributes:
        entries: list of PoolEntry, in ``named_parameters`` order.
        n_weights: total pooled elements (tied tensors counted once).
        skipped: (name, reason) for parameters left out that one might expect in the pool.
    """

    def __init__(
        self, entries: list[PoolEntry], objs: list[list[Tensor]], skipped: list[tuple[str, str]]
    ):
        self.entries = entries
        self.n_weights = sum(e.numel for e in entries)
        self.skipped = skipped
        self._objs = (
            objs  # per entry: every Parameter object holding it (ties may be distinct objects)
        )

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"Pool({len(self.entries)} tensors, {self.n_weights} weights, {len(self.skipped)} skipped)"

    @property
    def names(self) -> list[str]:
        """Canonical names of the entries."""
        return [e.name for e in self.entries]

    def tensors(self, model: tnn.Module | None = None) -> list[Tensor]:
        """The live pooled parameter of each entry, in `model` (default: the model collected from).

        `model` must have the same parameter names (e.g. a deepcopy used as a working copy); the
        returned Parameters can be written in place (``p.data.copy_(...)`` or ``ops.fake_quant(...,
        out=p.data.view(-1))``).
        """
        if model is None:
            return [objs[0] for objs in self._objs]
        params = dict(model.named_parameters(remove_duplicate=False))
        missing = [e.name for e in self.entries if e.name not in params]
        if missing:
            raise ValueError(f"model has no parameters named {name_list(missing)}")
        out = []
        for e in self.entries:
            p = params[e.name]
            if p.shape != e.shape:
                raise ValueError(
                    f"{e.name}: shape {tuple(p.shape)} in model, {tuple(e.shape)} in pool"
                )
            out.append(p)
        return out

    def flat(self, device: torch.device | str | None = None) -> Tensor:
        """One new contiguous float32 tensor (n_weights,) holding every pooled weight (one copy)."""
        if device is None:
            device = self._objs[0][0].device
        out = torch.empty(self.n_weights, dtype=torch.float32, device=device)
        with torch.no_grad():
            for e, objs in zip(self.entries, self._objs, strict=True):
                out[e.offset : e.offset + e.numel].copy_(objs[0].detach().reshape(-1))
        return out

    def nonfinite(self, flat: Tensor) -> list[str]:
        """Canonical names of the entries whose slice of `flat` holds NaN or Inf (a pass per entry:
        call it only after the one-pass check failed)."""
        bad = []
        for e in self.entries:
            if not bool(torch.isfinite(flat[e.offset : e.offset + e.numel]).all()):
                bad.append(e.name)
        return bad

    def bin(
        self, flat: Tensor, k: int, *, lo: float | None = None, hi: float | None = None
    ) -> Binning:
        """``wsq.uniform_bins(flat, k, lo=lo, hi=hi)``; NaN/Inf -> ValueError naming the parameters."""
        try:
            return uniform_bins(flat, k, lo=lo, hi=hi)
        except ValueError:
            bad = self.nonfinite(flat)
            if not bad:
                raise
            raise ValueError(
                f"parameter {name_list(bad)} contains NaN or Inf values (or values beyond the float32 "
                "range); wsq cannot bin them"
            ) from None


def collect_pool(
    model: tnn.Module,
    *,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    min_dims: int = 2,
    allow_meta: bool = False,
) -> Pool:
    """Pool the eligible parameters of `model` (nothing is copied; see :meth:`Pool.flat`).

    Args:
        model: any nn.Module.
        include: fnmatch pattern(s) on parameter names; when given, exactly the matching
            floating-point parameters are pooled, whatever their ndim (e.g. biases too).
        exclude: pattern(s); matching parameters are left out (reported in ``skipped``).
        min_dims: without include, parameters with fewer dims stay uncompressed (default 2:
            biases and norms stay).
        allow_meta: pool parameters on the meta device too (their names, shapes and dtypes only:
            wsq.compress_checkpoint reads their values from a checkpoint, never from them).

    Raises:
        TypeError: model not an nn.Module, bad pattern or min_dims types.
        ValueError: parameters on the meta device (named), or no eligible parameter.
    """
    if not isinstance(model, tnn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inc, exc = _patterns("include", include), _patterns("exclude", exclude)
    if isinstance(min_dims, bool) or not isinstance(min_dims, int):
        raise TypeError(f"min_dims must be an int, got {type(min_dims).__name__}")
    if min_dims < 0:
        raise ValueError(f"min_dims must be >= 0, got {min_dims}")
    if not isinstance(allow_meta, bool):
        raise TypeError(f"allow_meta must be a bool, got {type(allow_meta).__name__}")
    lazy = [n for n, p in model.named_parameters(remove_duplicate=False) if is_lazy(p)]
    if lazy:
        raise ValueError(
            f"parameters {name_list(lazy)} are not initialised yet (lazy modules): run one forward "
            "pass before compressing"
        )
    groups = tie_groups(model)
    meta = [n for names, objs in groups if any(o.is_meta for o in objs) for n in names]
    if meta and not allow_meta:
        raise ValueError(
            f"parameters on the meta device have no values to compress: {name_list(meta)}; materialise "
            "the model first (e.g. load its weights)"
        )
    entries: list[PoolEntry] = []
    objs_out: list[list[Tensor]] = []
    skipped: list[tuple[str, str]] = []
    offset = 0
    for names, objs in groups:
        p = objs[0]
        if not p.is_floating_point():
            skipped += [
                (n, f"{str(p.dtype).replace('torch.', '')} is not a floating-point dtype")
                for n in names
            ]
            continue
        if inc is not None:
            if _match(names, inc) is None:
                continue
        elif p.dim() < min_dims:
            continue
        pat = _match(names, exc) if exc is not None else None
        if pat is not None:
            skipped += [(n, f"excluded by pattern {pat!r}") for n in names]
            continue
        if p.numel() == 0:
            skipped += [(n, "empty") for n in names]
            continue
        entries.append(PoolEntry(tuple(names), p.shape, p.dtype, p.numel(), offset))
        objs_out.append(objs)
        offset += p.numel()
    if not entries:
        rule = f"matching include={list(inc)}" if inc is not None else f"with >= {min_dims} dims"
        extra = f", excluding {list(exc)}" if exc else ""
        n_all = sum(len(n) for n, _ in groups)
        raise ValueError(
            f"model has no eligible parameters (floating-point, {rule}{extra}); it has {n_all} "
            f"parameters{': ' + name_list([n for ns, _ in groups for n in ns]) if n_all else ''}"
        )
    return Pool(entries, objs_out, skipped)
