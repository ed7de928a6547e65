"""Reading a safetensors checkpoint (one file, or a Hugging Face index of shards) one tensor at a
time, for compressing a model that was never materialised (wsq.from_checkpoint).

Headers are validated before anything is allocated (header length within the 100 MB cap and the
file, JSON of the safetensors schema, known dtypes, every tensor's byte range equal to its shape
times its item size and inside the file, shard names plain file names beside the index). Tensors
are read with ``readinto`` into fresh buffers (never mmap: file-backed pages would count as
resident memory). No pickle is involved anywhere.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import torch

from wsq.container import DTYPES, MAX_HEADER, itemsize, little_endian_only, regular_file
from wsq.errors import FormatError

__all__ = ["CheckpointReader", "INDEX_NAME"]

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
    size = regular_file(path)
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
        if dt not in DTYPES:
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
        nbytes = math.prod(shape) * itemsize(DTYPES[dt])  # Python ints: no overflow
        if offs[1] - offs[0] != nbytes:
            raise FormatError(
                f"{where}: tensor {name!r}: {offs[1] - offs[0]} data bytes, shape {shape} of "
                f"{dt} needs {nbytes}"
            )
        spans.append((offs[0], offs[1], name))
        out[name] = _Entry(path, DTYPES[dt], tuple(shape), data_start + offs[0], nbytes)
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
    size = regular_file(path)
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
        little_endian_only()
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
