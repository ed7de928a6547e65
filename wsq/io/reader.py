"""Reading wsq files: the data behind a validated header (wsq.io.header), decoded streams,
load_state_dict and load (which rebuilds a wsq.Compressed around a fresh model)."""

from __future__ import annotations

import os
import zlib
from typing import Any

import numpy as np
import torch

from wsq import entropy
from wsq.compressed import Compressed
from wsq.container import (
    DTYPE_NAMES,
    DTYPES,
    STREAM_PREFIX,
    little_endian_only,
    regular_file,
    short_repr,
)
from wsq.errors import FormatError
from wsq.io.header import _CAP_FLOOR, _CAP_PER_BYTE, _Header, _QEntry, _read_header, _Tensor
from wsq.kernels import ops

# ============================================================================ reading data


def _read_bytes(f, h: _Header, t: _Tensor) -> bytearray:
    buf = bytearray(t.end - t.start)
    f.seek(h.data_start + t.start)
    if f.readinto(buf) != len(buf):
        raise FormatError(
            f"wsq file {h.path!r}: tensor {t.name!r}: file shrank while reading its data"
        )
    return buf


def _check_crc(h: _Header, name: str, buf: bytearray, want: int) -> None:
    got = zlib.crc32(buf)
    if got != want:
        raise FormatError(
            f"wsq file {h.path!r}: tensor {name!r}: CRC32 mismatch (stored {want:08x}, data {got:08x}): "
            "the data is corrupted"
        )


def _tensor_from(buf: bytearray, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if not buf:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(buf, dtype=dtype).reshape(shape)


def _read_codebook(f, h: _Header) -> torch.Tensor:
    buf = _read_bytes(f, h, h.tensors[h.codebook])
    _check_crc(h, h.codebook, buf, h.codebook_crc32)
    cb = _tensor_from(buf, torch.float32, (h.n,))
    where = f"wsq file {h.path!r}: codebook tensor {h.codebook!r}"
    bad = int((~torch.isfinite(cb)).sum())
    if bad:
        raise FormatError(f"{where}: {bad} entries are NaN or Inf")
    if h.n > 1 and bool((cb[1:] < cb[:-1]).any()):
        raise FormatError(f"{where}: entries are not in ascending order")
    return cb


def _read_plain(f, h: _Header) -> dict[str, torch.Tensor]:
    out = {}
    for name in sorted(h.plain):
        t = h.tensors[name]
        buf = _read_bytes(f, h, t)
        _check_crc(h, name, buf, h.plain[name])
        # byte values other than 0 and 1 are undefined behaviour for torch.bool
        if t.dtype == "BOOL" and buf and max(buf) > 1:
            raise FormatError(
                f"wsq file {h.path!r}: tensor {name!r}: BOOL data holds bytes other than 0 and 1"
            )
        out[name] = _tensor_from(buf, DTYPES[t.dtype], t.shape)
    return out


def _read_streams(f, h: _Header) -> dict[str, bytearray]:
    out = {}
    for q in h.quantized:
        sname = STREAM_PREFIX + q.name
        buf = _read_bytes(f, h, h.tensors[sname])
        _check_crc(h, sname, buf, q.crc32)
        out[q.name] = buf
    return out


def _decode(h: _Header, q: _QEntry, stream: bytearray) -> np.ndarray:
    """The numel symbols (each < n) of one validated stream."""

    where = f"wsq file {h.path!r}: stream tensor {STREAM_PREFIX + q.name!r}"
    try:
        sym = entropy.decode(stream, q.numel, h.n)
    except FormatError as e:
        raise FormatError(f"{where}: {e}") from None
    sym = np.asarray(sym)
    # the decoder promises these; re-checked here because an index >= n must never reach a lookup
    if sym.shape != (q.numel,) or sym.dtype.kind not in "ui":
        raise FormatError(
            f"{where}: decoder returned {sym.dtype} {sym.shape}, expected {q.numel} indices"
        )
    if q.numel and (int(sym.min()) < 0 or int(sym.max()) >= h.n):
        raise FormatError(f"{where}: decoded index out of range [0, {h.n})")
    return sym


def parse(path, *, model_state, max_elements):
    """A whole file validated and every stream decoded -> header, codebook, symbols, plain (what
    ``wsq info`` reports; :func:`load_state_dict` and :func:`load` go through the same steps)."""
    h, codebook, streams, plain = _parse_streams(
        path, model_state=model_state, max_elements=max_elements
    )
    symbols = {q.name: _decode(h, q, streams.pop(q.name)) for q in h.quantized}
    return h, codebook, symbols, plain


def _parse_streams(
    path,
    *,
    model_state: dict[str, tuple[tuple[int, ...], torch.dtype]] | None,
    max_elements: int | None,
):
    """Validate a file's header, codebook, plain tensors and stream checksums -> header, codebook,
    streams (coded bytes by name: decode each with :func:`_decode`, one at a time), plain.

    model_state: the target model's state names -> (shape, dtype), matched before any stream is
    read; without it, the total element count is capped by max_elements.
    """
    little_endian_only()
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    size = regular_file(path)
    with open(path, "rb") as f:
        h = _read_header(f, path, size)
        where = f"wsq file {path!r}"
        total = sum(q.numel for q in h.quantized)
        if model_state is not None:
            _match_model(h, model_state, where)
        else:
            cap = _CAP_FLOOR + _CAP_PER_BYTE * size if max_elements is None else max_elements
            if total > cap:
                big = max(h.quantized, key=lambda q: q.numel)
                raise FormatError(
                    f"{where}: quantized tensors declare {total} elements in total (largest: {big.name!r} "
                    f"with {big.numel}), above the cap of {cap} for a {size}-byte file; pass "
                    "max_elements= to allow more, or load(path, model) to check against a model"
                )
        codebook = _read_codebook(f, h)
        plain = _read_plain(f, h)
        streams = _read_streams(f, h)
    return h, codebook, streams, plain


def _match_model(
    h: _Header, model: dict[str, tuple[tuple[int, ...], torch.dtype]], where: str
) -> None:
    """Names, shapes and dtypes of the file against the model's state_dict (before any decoding)."""
    declared: dict[str, tuple[tuple[int, ...], str]] = {}
    for q in h.quantized:
        for s in q.names:
            declared[s] = (q.shape, q.dtype)
    for name in h.plain:
        declared[name] = (h.tensors[name].shape, h.tensors[name].dtype)
    missing, extra = sorted(model.keys() - declared.keys()), sorted(declared.keys() - model.keys())
    if missing or extra:
        raise FormatError(
            f"{where}: parameter names do not match the model: "
            + "; ".join(
                ([f"missing from the file: {short_repr(missing, 400)}"] if missing else [])
                + ([f"unexpected (not in the model): {short_repr(extra, 400)}"] if extra else [])
            )
        )
    bad = [
        f"{s}: file {list(declared[s][0])} vs model {list(model[s][0])}"
        for s in sorted(model)
        if declared[s][0] != tuple(model[s][0])
    ]
    if bad:
        raise FormatError(f"{where}: shapes do not match the model: {short_repr(bad, 400)}")
    # a model in another dtype would not compute what the saved one did
    bad = [
        f"{s}: file {declared[s][1]} vs model {DTYPE_NAMES.get(model[s][1], str(model[s][1]))}"
        for s in sorted(model)
        if DTYPES[declared[s][1]] != model[s][1]
    ]
    if bad:
        raise FormatError(
            f"{where}: dtypes do not match the model: {short_repr(bad, 400)}; convert the model "
            "(e.g. model.to(torch.float16)) before loading"
        )


# ============================================================================ loading


def _check_max_elements(max_elements: Any) -> int | None:
    if max_elements is None:
        return None
    if isinstance(max_elements, bool) or not isinstance(max_elements, int):
        raise TypeError(f"max_elements must be an int or None, got {type(max_elements).__name__}")
    if max_elements < 0:
        raise ValueError(f"max_elements must be >= 0, got {max_elements}")
    return max_elements


def _index_tensor(sym: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(sym))
    return (
        t if t.dtype in (torch.uint8, torch.uint16, torch.int32, torch.int64) else t.to(torch.int64)
    )


def _dense(codebook: torch.Tensor, sym: np.ndarray, q: _QEntry) -> torch.Tensor:
    """codebook[indices] in the parameter's original dtype and shape."""
    vals = torch.from_numpy(codebook.numpy()[sym]) if q.numel else torch.empty(0)
    return vals.to(DTYPES[q.dtype]).reshape(q.shape)


def load_state_dict(
    path: str | os.PathLike, *, max_elements: int | None = None
) -> dict[str, torch.Tensor]:
    """The dense, decompressed state dict stored in a wsq file (CPU tensors).

    Keys are the original names (every tied name present, sharing one tensor), values have their
    original dtypes and shapes. Since a near-constant tensor codes to a few bytes, the file size
    cannot bound the decoded size: the total number of quantized elements is capped at
    ``max_elements`` (default 2**24 + 1024 per file byte) before anything is decoded. Any defect
    raises wsq.FormatError naming the tensor or field.
    """
    max_elements = _check_max_elements(max_elements)
    h, codebook, streams, plain = _parse_streams(path, model_state=None, max_elements=max_elements)
    out: dict[str, torch.Tensor] = dict(plain)
    for q in h.quantized:
        dense = _dense(codebook, _decode(h, q, streams.pop(q.name)), q)
        for s in q.names:
            out[s] = dense
    return dict(sorted(out.items()))


def load(path: str | os.PathLike, model: torch.nn.Module) -> Any:
    """Load a wsq file into `model`, a fresh instance of the saved architecture (any device/meta).

    Returns a wsq.Compressed whose model computes exactly what the saved one did. The file's names
    and shapes are matched against ``model.state_dict()`` before any stream is decoded (FormatError
    listing missing/unexpected names), so the model bounds what loading allocates.

    `model` itself is not modified (the result is built from a copy without its compressed
    parameters), so its own dense weights stay allocated while the caller holds it: build it on the
    meta device (with real non-persistent buffers) to never hold dense weights. Beyond `model`,
    loading holds the coded streams, the packed indices and one tensor's decoded indices at a time
    (tests/test_io_memory.py, tests/test_scale.py).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    state = {n: (tuple(t.shape), t.dtype) for n, t in model.state_dict(keep_vars=True).items()}
    h, codebook, streams, plain = _parse_streams(path, model_state=state, max_elements=None)
    packed = {}
    for q in h.quantized:  # one stream decoded at a time: its symbols live until packed
        packed[q.name] = ops.pack(_index_tensor(_decode(h, q, streams.pop(q.name))), h.bits)
    return Compressed.from_parts(model, codebook, h.bits, packed, plain, k=h.k, lo=h.lo, hi=h.hi)
