"""Compressing straight from a safetensors checkpoint: the dense model is never in memory.

``compress_checkpoint(checkpoint, model, method, ...)`` takes a checkpoint (one ``.safetensors``
file, a Hugging Face sharded checkpoint's ``model.safetensors.index.json``, or a directory holding
either) and a model whose parameters may sit on the meta device (see :func:`empty_parameters`), and
builds the same wsq.Compressed as ``wsq.compress`` / the grid would on the materialised model --
the file ``wsq.save`` writes is byte-identical -- while reading the checkpoint one tensor at a
time: peak memory is the compressed model plus a few of the largest tensors.

Checkpoint headers are validated before anything is allocated (header length within the 100 MB
cap and the file, JSON of the safetensors schema, known dtypes, every tensor's byte range equal to
its shape times its item size and inside the file, shard names plain file names beside the index).
Tensors are read with ``readinto`` into fresh buffers (never mmap: file-backed pages would count
as resident memory). No pickle is involved anywhere.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn as tnn

from wsq.core.compressed import Compressed, _assemble, _list
from wsq.core.pool import collect_pool
from wsq.core.streaming import uniform_parts
from wsq.errors import FormatError
from wsq.io.format import _DTYPES, MAX_HEADER, _itemsize, _little_endian_only, _regular_file

__all__ = ["compress_checkpoint", "empty_parameters", "CheckpointReader"]

INDEX_NAME = "model.safetensors.index.json"


@dataclass(frozen=True)
class _Entry:
    path: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int


def _header(path: str) -> dict[str, _Entry]:
    """The validated tensor table of one safetensors file."""
    size = _regular_file(path)
    where = f"safetensors file {path!r}"
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise FormatError(f"{where}: {size} bytes, too short for the 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER or n > size - 8:
            raise FormatError(
                f"{where}: header length {n} is beyond the file ({size} bytes) or the "
                f"{MAX_HEADER}-byte cap"
            )
        raw = f.read(n)
    try:
        table = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{where}: header is not valid JSON ({e})") from None
    if not isinstance(table, dict):
        raise FormatError(f"{where}: header is not a JSON object")
    data_start, data_len = 8 + n, size - 8 - n
    out: dict[str, _Entry] = {}
    spans = []
    for name, t in table.items():
        if name == "__metadata__":
            continue
        if not isinstance(t, dict) or set(t) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"{where}: tensor {name!r}: expected dtype, shape, data_offsets")
        dt, shape, offs = t["dtype"], t["shape"], t["data_offsets"]
        if dt not in _DTYPES:
            raise FormatError(f"{where}: tensor {name!r}: unknown dtype {dt!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise FormatError(f"{where}: tensor {name!r}: shape must be a list of ints >= 0")
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
            or not 0 <= offs[0] <= offs[1] <= data_len
        ):
            raise FormatError(
                f"{where}: tensor {name!r}: data_offsets {offs!r} outside the {data_len} data bytes"
            )
        nbytes = math.prod(shape) * _itemsize(_DTYPES[dt])  # Python ints: no overflow
        if offs[1] - offs[0] != nbytes:
            raise FormatError(
                f"{where}: tensor {name!r}: {offs[1] - offs[0]} data bytes, shape {shape} of "
                f"{dt} needs {nbytes}"
            )
        spans.append((offs[0], offs[1], name))
        out[name] = _Entry(path, _DTYPES[dt], tuple(shape), data_start + offs[0], nbytes)
    spans.sort()
    for (_, e0, a), (s1, _, b) in zip(spans, spans[1:], strict=False):
        if s1 < e0:
            raise FormatError(f"{where}: tensors {a!r} and {b!r} overlap")
    return out


def _shards(checkpoint) -> list[str]:
    """The safetensors files of a checkpoint path (file, index JSON, or directory)."""
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path, got {type(checkpoint).__name__}")
    path = os.fspath(checkpoint)
    if os.path.isdir(path):
        index = os.path.join(path, INDEX_NAME)
        if os.path.isfile(index):
            path = index
        else:
            files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
            if len(files) != 1:
                raise ValueError(
                    f"checkpoint directory {path!r} has no {INDEX_NAME} and "
                    f"{len(files)} .safetensors files; pass the file or the index"
                )
            return [os.path.join(path, files[0])]
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if not path.endswith(".json"):
        return [path]
    size = _regular_file(path)
    if size > MAX_HEADER:
        raise FormatError(f"checkpoint index {path!r}: {size} bytes, above the {MAX_HEADER} cap")
    with open(path, "rb") as f:
        try:
            index = json.loads(f.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FormatError(f"checkpoint index {path!r} is not valid JSON ({e})") from None
    wm = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wm, dict) or not all(isinstance(v, str) for v in wm.values()):
        raise FormatError(f"checkpoint index {path!r}: no weight_map of name -> file name")
    files = sorted(set(wm.values()))
    bad = [f for f in files if os.path.basename(f) != f or f in ("", ".", "..")]
    if bad:
        raise FormatError(f"checkpoint index {path!r}: shard names must be plain file names: {bad}")
    return [os.path.join(os.path.dirname(os.path.abspath(path)), f) for f in files]


class CheckpointReader:
    """The tensors of a safetensors checkpoint (one file or shards), read one at a time."""

    def __init__(self, checkpoint) -> None:
        _little_endian_only()
        self.tensors: dict[str, _Entry] = {}
        for shard in _shards(checkpoint):
            for name, e in _header(shard).items():
                if name in self.tensors:
                    raise FormatError(f"checkpoint: tensor {name!r} is in two shards")
                self.tensors[name] = e

    def read(self, name: str) -> torch.Tensor:
        """A new CPU tensor holding `name`'s data (its own buffer, no mmap)."""
        e = self.tensors[name]
        buf = torch.empty(e.nbytes, dtype=torch.uint8)
        with open(e.path, "rb") as f:
            f.seek(e.start)
            if e.nbytes and f.readinto(buf.numpy()) != e.nbytes:
                raise FormatError(f"checkpoint {e.path!r}: tensor {name!r}: file shrank while read")
        return buf.view(e.dtype).reshape(e.shape)


class _CheckpointSource:
    """Pool entries read from a checkpoint in the dtype of the model's parameter (as
    ``load_state_dict`` would convert them), so binning sees the in-memory path's exact values."""

    def __init__(self, reader: CheckpointReader, pool) -> None:
        self.reader, self.entries = reader, pool.entries
        self.names = []
        for e in pool.entries:
            name = next((n for n in e.names if n in reader.tensors), None)
            if name is None:
                raise FormatError(f"checkpoint has no tensor named {_list(list(e.names))}")
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
        raise FormatError(f"checkpoint is missing tensors of the model: {_list(missing, 20)}")
    if strict:
        extra = sorted(set(reader.tensors) - set(sd))
        if extra:
            raise FormatError(
                f"checkpoint holds tensors the model does not have: {_list(extra, 20)} "
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
        method: an int k (uniform binning into k bins: ``wsq.compress(model, k, lo=, hi=)``) or a
            ``wsq.grid.GridPlan`` (the grid at given steps: ``GridQuantizer.compress``). A tune
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

    if not isinstance(model, tnn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
    is_k = isinstance(method, int) and not isinstance(method, bool)
    if not is_k and not isinstance(method, GridPlan):
        raise TypeError(
            "method must be an int k (uniform bins) or a wsq.grid.GridPlan (the grid at given "
            f"steps), got {type(method).__name__}; tuning (wsq.tune, wsq.search) evaluates the "
            "model and needs it materialised: load the checkpoint into the model first"
        )
    if not is_k and (lo is not None or hi is not None):
        raise ValueError("lo and hi apply to uniform binning (an int method) only")
    if is_k:
        from wsq.core.binning import _check_bound, _check_k

        _check_k(method)
        lo, hi = _check_bound("lo", lo), _check_bound("hi", hi)
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
    c = _assemble(
        model, codebook, bits, by_name, rest, k=k, lo=lo, hi=hi, skipped=pool.skipped,
        narrowed=True,
    )  # fmt: skip
    if out is not None:
        from wsq.io.writer import save

        save(c, out, coder=coder)
    return c
