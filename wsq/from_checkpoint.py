"""Compressing straight from a safetensors checkpoint: the dense model is never in memory.

``compress_checkpoint(checkpoint, model, method, ...)`` takes a checkpoint (one ``.safetensors``
file, a Hugging Face sharded checkpoint's ``model.safetensors.index.json``, or a directory holding
either) and a model whose parameters may sit on the meta device (see :func:`empty_parameters`), and
builds the same wsq.Compressed as ``wsq.compress`` / the grid would on the materialised model --
the file ``wsq.save`` writes is byte-identical -- while reading the checkpoint one tensor at a
time: peak memory is the compressed model plus a few of the largest tensors.

The checkpoint is read by wsq.io.checkpoint (validated headers, one tensor at a time); the
weights are binned by wsq.core's builders; the result may be saved by wsq.io.writer. This module
joins the three, so it sits above both core and io.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

import torch
import torch.nn as tnn

from wsq.compressed import Compressed
from wsq.compressed.ties import name_list
from wsq.core.pool import collect_pool
from wsq.core.streaming import uniform_parts
from wsq.errors import FormatError
from wsq.io.checkpoint import CheckpointReader
from wsq.io.writer import save

__all__ = ["compress_checkpoint", "empty_parameters"]


class _CheckpointSource:
    """Pool entries read from a checkpoint in the dtype of the model's parameter (as
    ``load_state_dict`` would convert them), so binning sees the in-memory path's exact values."""

    def __init__(self, reader: CheckpointReader, pool) -> None:
        self.reader, self.entries = reader, pool.entries
        self.names = []
        for e in pool.entries:
            name = next((n for n in e.names if n in reader.tensors), None)
            if name is None:
                raise FormatError(f"checkpoint has no tensor named {name_list(list(e.names))}")
            got = reader.tensors[name].shape
            if tuple(got) != tuple(e.shape):
                raise FormatError(
                    f"checkpoint tensor {name!r} has shape {list(got)}, the model {list(e.shape)}"
                )
            self.names.append(name)
        self._cache: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def weights(self, i: int) -> torch.Tensor:
        if self._cache is not None and self._cache[0] == i:
            return self._cache[1]  # the grid reads a tensor several times in a row
        self._cache = None
        w = self.reader.read(self.names[i]).to(self.entries[i].dtype).reshape(-1)
        if w.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            w = w.float()
        self._cache = (i, w)
        return w

    def release(self) -> None:
        self._cache = None


@contextlib.contextmanager
def empty_parameters() -> Iterator[None]:
    """Within this block, new modules get their parameters on the meta device and their buffers
    (e.g. rotary tables, which no checkpoint holds) on the real one: the model to pass to
    :func:`compress_checkpoint` or wsq.load without allocating its dense weights."""
    original = tnn.Module.register_parameter

    def register(self, name, param):
        original(self, name, param)
        if param is not None and not param.is_meta:
            p = self._parameters[name]
            self._parameters[name] = tnn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

    tnn.Module.register_parameter = register
    try:
        yield
    finally:
        tnn.Module.register_parameter = original


def _rest_state(reader: CheckpointReader, model: tnn.Module, names: Iterable[str], strict: bool):
    """Every non-pooled state_dict entry of `model`, read from the checkpoint (tied names may be
    stored once under any of their names)."""
    sd = model.state_dict(keep_vars=True)
    by_obj: dict[int, list[str]] = {}
    for n, t in sd.items():
        by_obj.setdefault(id(t), []).append(n)
    out, missing = {}, []
    for n in names:
        src = next((m for m in [n] + by_obj[id(sd[n])] if m in reader.tensors), None)
        if src is None:
            missing.append(n)
            continue
        if tuple(reader.tensors[src].shape) != tuple(sd[n].shape):
            raise FormatError(
                f"checkpoint tensor {src!r} has shape {list(reader.tensors[src].shape)}, the "
                f"model's {n!r} {list(sd[n].shape)}"
            )
        out[n] = reader.read(src).to(sd[n].dtype)
    if missing:
        raise FormatError(f"checkpoint is missing tensors of the model: {name_list(missing, 20)}")
    if strict:
        extra = sorted(set(reader.tensors) - set(sd))
        if extra:
            raise FormatError(
                f"checkpoint holds tensors the model does not have: {name_list(extra, 20)} "
                "(pass strict=False to ignore them)"
            )
    return out


def compress_checkpoint(
    checkpoint: str | os.PathLike,
    model: tnn.Module,
    method,
    *,
    out: str | os.PathLike | None = None,
    lo: float | None = None,
    hi: float | None = None,
    include=None,
    exclude=None,
    min_dims: int = 2,
    strict: bool = True,
    coder: str = "auto",
) -> Compressed:
    """Compress the weights stored in `checkpoint` for the architecture `model`, without ever
    holding the dense model.

    Args:
        checkpoint: a ``.safetensors`` file, a ``model.safetensors.index.json`` of shards, or a
            directory holding one of them.
        model: the architecture, ideally built under :func:`empty_parameters` (parameters on the
            meta device, buffers real); it is not modified.
        method: ``wsq.Uniform(k, lo, hi)`` or an int k (uniform binning into k bins) or a
            ``wsq.core.grid.GridPlan`` (the grid at given steps: ``GridQuantizer.compress``). A tune
            needs a runnable model to evaluate and is refused (TypeError).
        out: when given, the compressed model is also saved there (``wsq.save``, `coder`).
        lo, hi: the uniform range (default: the checkpoint's pooled range), k only.
        include, exclude, min_dims: the pool, as in wsq.compress.
        strict: refuse checkpoint tensors the model does not have (FormatError listing them).

    Returns the wsq.Compressed; ``wsq.save`` of it is byte-identical to saving the in-memory
    path's result for the same weights, method and parameters. Memory: the compressed model, the
    packed raw indices while binning (ceil(log2 k) bits per weight, uniform only) and one
    checkpoint tensor at a time in the model's dtype.
    """
    from wsq.core.grid import GridPlan, GridQuantizer
    from wsq.methods import Uniform

    if isinstance(method, Uniform):  # the object form of (k, lo, hi)
        if lo is not None or hi is not None:
            raise ValueError("lo and hi are wsq.Uniform's fields: give them to the method object")
        method, lo, hi = method.k, method.lo, method.hi
    if not isinstance(model, tnn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
    is_k = isinstance(method, int) and not isinstance(method, bool)
    if not is_k and not isinstance(method, GridPlan):
        raise TypeError(
            "method must be a wsq.Uniform, an int k (uniform bins) or a wsq.core.grid.GridPlan (the grid at given "
            f"steps), got {type(method).__name__}; tuning (wsq.tune, wsq.search) evaluates the "
            "model and needs it materialised: load the checkpoint into the model first"
        )
    if not is_k and (lo is not None or hi is not None):
        raise ValueError("lo and hi apply to uniform binning (an int method) only")
    if is_k:
        from wsq.core.binning import check_bound, check_k

        check_k(method)
        lo, hi = check_bound("lo", lo), check_bound("hi", hi)
        if lo is not None and hi is not None and not lo < hi:
            raise ValueError(f"lo must be < hi, got lo={lo}, hi={hi}")
    reader = CheckpointReader(checkpoint)
    pool = collect_pool(model, include=include, exclude=exclude, min_dims=min_dims, allow_meta=True)
    source = _CheckpointSource(reader, pool)
    pooled = {n for e in pool.entries for n in e.names}
    rest_names = [n for n in model.state_dict(keep_vars=True) if n not in pooled]
    rest = _rest_state(reader, model, rest_names, strict)
    if is_k:
        u = uniform_parts(source, method, lo=lo, hi=hi)
        codebook, bits, parts, k, lo, hi = u.codebook, u.bits, u.parts, u.k, u.lo, u.hi
    else:
        gq = GridQuantizer(source=source, pool=pool)
        codebook, bits, parts = gq.parts(gq.quantize(method))
        k = lo = hi = None
    source.release()
    by_name = {e.name: part for e, part in zip(pool.entries, parts, strict=True)}
    parts.clear()
    c = Compressed.assemble(
        model, codebook, bits, by_name, rest, k=k, lo=lo, hi=hi, skipped=pool.skipped,
        narrowed=True,
    )  # fmt: skip
    if out is not None:
        save(c, out, coder=coder)
    return c
