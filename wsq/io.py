"""wsq files: entropy-coded weight-sharing models in a safetensors container.

A wsq file is a valid safetensors file (``safetensors.safe_open(path, "pt")`` reads every tensor):

- ``wsq.codebook``: the shared codebook, F32 (n,);
- ``wsq.idx.<name>``: for each quantized parameter (``name`` = its canonical name), its coded index
  stream as a U8 (bytes,) tensor (a self-describing wsq.entropy stream: coder id, counts, payload);
- every other parameter and buffer as a plain tensor under its original name, dtype preserved;
- ``__metadata__["wsq"]``: one JSON string holding the format name and version, n, bits, k, lo, hi,
  the codebook's CRC32, per quantized parameter its canonical name, tied names, shape, original
  dtype, numel, coder, stream length and stream CRC32, and the CRC32 of every plain tensor;
- ``__metadata__["wsq_crc32"]``: CRC32 (8 hex digits) of the canonical JSON form of the whole header
  without this key, so a corrupted shape, name, offset or range is caught, not only corrupted data.

Writes are deterministic (header keys sorted, compact JSON, data laid out by decreasing item size
then name so every tensor is aligned to its item size) and atomic (temp file in the target directory,
fsync, os.replace). Reading validates everything before allocating anything sized by the file's
claims: header bounds, JSON schema, dtypes, shapes against byte ranges, byte ranges tiling the data
area exactly, the metadata against the tensor table, checksums, and shapes against the target model
(or an element cap) before any stream is decoded. Every defect raises :class:`wsq.FormatError`
naming the tensor or field. No pickle, no torch.load.
"""

from __future__ import annotations

import functools
import json
import math
import os
import secrets
import stat
import sys
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from wsq.errors import FormatError

__all__ = ["save", "load", "load_state_dict", "file_size", "stream_bits"]

FORMAT = "wsq"
VERSION = 1
CODEBOOK = "wsq.codebook"
STREAM_PREFIX = "wsq.idx."
META_KEY = "wsq"
CRC_KEY = "wsq_crc32"
MAX_HEADER = 100 * 1024 * 1024  # safetensors' cap
MAX_NDIM = 64
MAX_DIM = 1 << 62
MAX_N = 65536
CODERS = ("huffman", "ans")
# Default cap on decoded elements for load_state_dict: a constant tensor codes to a few bytes, so
# the file size alone cannot honestly bound what a valid stream decodes to; this allows 1024
# elements per file byte (< 0.008 bits per weight) plus a fixed 16M, and callers can raise it.
_CAP_FLOOR = 1 << 24
_CAP_PER_BYTE = 1024

_DTYPES: dict[str, torch.dtype] = {
    name: getattr(torch, attr)
    for name, attr in (
        ("F64", "float64"),
        ("F32", "float32"),
        ("F16", "float16"),
        ("BF16", "bfloat16"),
        ("I64", "int64"),
        ("I32", "int32"),
        ("I16", "int16"),
        ("I8", "int8"),
        ("U8", "uint8"),
        ("U16", "uint16"),  # the wider unsigned types and float8 exist in recent torch only
        ("U32", "uint32"),
        ("U64", "uint64"),
        ("BOOL", "bool"),
        ("F8_E4M3", "float8_e4m3fn"),
        ("F8_E5M2", "float8_e5m2"),
    )
    if hasattr(torch, attr)
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_QUANT_DTYPES = ("F64", "F32", "F16", "BF16")
_META_FIELDS = {
    "format",
    "version",
    "codebook",
    "codebook_crc32",
    "n",
    "bits",
    "k",
    "lo",
    "hi",
    "quantized",
    "plain",
}
_Q_FIELDS = {"name", "names", "shape", "dtype", "numel", "coder", "bytes", "crc32"}
_T_FIELDS = {"dtype", "shape", "data_offsets"}


@functools.cache
def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _little_endian_only() -> None:
    if sys.byteorder != "little":  # the container is little-endian; no byte swapping is implemented
        raise NotImplementedError(
            "wsq files are little-endian; this big-endian host is not supported"
        )


# ============================================================================ canonical JSON


def _dumps(obj: Any) -> str:
    """The one serialisation wsq writes and checksums: sorted keys, compact, ASCII, no NaN."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def _header_crc(header: dict) -> str:
    meta = {k: v for k, v in header["__metadata__"].items() if k != CRC_KEY}
    body = dict(header, __metadata__=meta)
    return format(zlib.crc32(_dumps(body).encode("ascii")), "08x")


def _header_bytes(header: dict) -> bytes:
    """Serialise a header (adding its CRC) padded with spaces to a multiple of 8 bytes."""
    header = dict(header, __metadata__=dict(header["__metadata__"]))
    header["__metadata__"].pop(CRC_KEY, None)
    header["__metadata__"][CRC_KEY] = _header_crc(header)
    raw = _dumps(header).encode("ascii")
    return raw + b" " * (-len(raw) % 8)


class _Json:
    """json.loads hooks that refuse what Python's parser would quietly accept."""

    def __init__(self, where: str):
        self.where = where

    def pairs(self, pairs: list) -> dict:
        out: dict = {}
        for k, v in pairs:
            if k in out:
                raise FormatError(f"{self.where}: duplicate key {_short(k)}")
            out[k] = v
        return out

    def const(self, s: str):
        raise FormatError(f"{self.where}: non-finite number {s} is not allowed")

    def number(self, s: str) -> float:
        v = float(s)
        if not math.isfinite(v):  # e.g. 1e999: JSON has no infinities
            raise FormatError(f"{self.where}: number {_short(s)} overflows a float")
        return v

    def integer(self, s: str) -> int:
        if len(s) > 24:
            raise FormatError(f"{self.where}: integer with {len(s)} digits is out of range")
        return int(s)

    def loads(self, text: str) -> Any:
        try:
            return json.loads(
                text,
                object_pairs_hook=self.pairs,
                parse_constant=self.const,
                parse_float=self.number,
                parse_int=self.integer,
            )
        except FormatError:
            raise
        except (ValueError, RecursionError) as e:
            raise FormatError(f"{self.where} is not valid JSON: {_short(str(e), 120)}") from None


def _short(v: Any, limit: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


# ============================================================================ field checks


def _fail(where: str, defect: str) -> FormatError:
    return FormatError(f"{where}: {defect}")


def _int(v: Any, where: str, lo: int, hi: int) -> int:
    if type(v) is not int:
        raise _fail(where, f"expected an integer, got {_short(v)}")
    if not lo <= v <= hi:
        raise _fail(where, f"{v} is outside [{lo}, {hi}]")
    return v


def _str(v: Any, where: str) -> str:
    if type(v) is not str or not v:
        raise _fail(where, f"expected a non-empty string, got {_short(v)}")
    return v


def _keys(d: Any, where: str, fields: set[str]) -> dict:
    if type(d) is not dict:
        raise _fail(where, f"expected a JSON object, got {type(d).__name__}")
    missing, extra = sorted(fields - d.keys()), sorted(d.keys() - fields)
    if missing or extra:
        parts = ([f"missing field(s) {missing}"] if missing else []) + (
            [f"unexpected field(s) {extra}"] if extra else []
        )
        raise _fail(where, "; ".join(parts))
    return d


def _shape(v: Any, where: str) -> tuple[int, ...]:
    if type(v) is not list or len(v) > MAX_NDIM:
        raise _fail(where, f"shape must be a list of at most {MAX_NDIM} integers, got {_short(v)}")
    return tuple(_int(d, f"{where} shape[{i}]", 0, MAX_DIM) for i, d in enumerate(v))


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)  # Python ints: no wrap-around; dims <= 2**62, ndim <= 64


def _crc(v: Any, where: str) -> int:
    return _int(v, where, 0, 0xFFFFFFFF)


def _float_or_none(v: Any, where: str) -> float | None:
    if v is None:
        return None
    if type(v) not in (int, float) or not math.isfinite(v):
        raise _fail(where, f"expected a finite number or null, got {_short(v)}")
    return float(v)


# ============================================================================ parsed file


@dataclass(frozen=True)
class _Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # byte offset inside the data area
    end: int


@dataclass(frozen=True)
class _QEntry:
    name: str
    names: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    numel: int
    coder: str
    nbytes: int
    crc32: int


@dataclass(frozen=True)
class _Header:
    path: str
    data_start: int  # absolute file offset of the data area
    tensors: dict[str, _Tensor]
    n: int
    bits: int
    k: int | None
    lo: float | None
    hi: float | None
    codebook: str
    codebook_crc32: int
    quantized: tuple[_QEntry, ...]
    plain: dict[str, int]  # name -> crc32


def _regular_file(path: str) -> int:
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"path {path!r} is a directory, not a wsq file")
    if not stat.S_ISREG(st.st_mode):  # FIFOs and devices could block or never end
        raise ValueError(f"path {path!r} is not a regular file")
    return st.st_size


def _read_header(f, path: str, size: int) -> _Header:
    where = f"wsq file {path!r}"
    if size < 8:
        raise FormatError(f"{where}: file is {size} bytes, shorter than the 8-byte header length")
    head = f.read(8)
    if len(head) != 8:
        raise FormatError(f"{where}: file shrank while reading the header length")
    hlen = int.from_bytes(head, "little")
    if hlen > MAX_HEADER:
        raise FormatError(f"{where}: header length {hlen} exceeds the {MAX_HEADER}-byte cap")
    if hlen > size - 8:
        raise FormatError(
            f"{where}: header length {hlen} runs past the end of the {size}-byte file"
        )
    raw = f.read(hlen)
    if len(raw) != hlen:
        raise FormatError(f"{where}: file shrank while reading the header")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{where}: header is not UTF-8 ({e.reason} at byte {e.start})") from None
    header = _Json(f"{where}: header").loads(text)
    if type(header) is not dict:
        raise FormatError(f"{where}: header is a JSON {type(header).__name__}, not an object")

    # __metadata__ and the header checksum come first: a corrupted header is reported as such
    md = header.get("__metadata__")
    if md is None:
        raise FormatError(f"{where}: header has no __metadata__ (not a wsq file)")
    _keys(md, f"{where}: __metadata__", {META_KEY, CRC_KEY})
    for key, v in md.items():
        if type(v) is not str:
            raise FormatError(
                f"{where}: __metadata__[{key!r}] must be a string, got {type(v).__name__}"
            )
    try:
        crc = _header_crc(header)
    except (ValueError, RecursionError) as e:  # e.g. nesting deeper than the encoder allows
        raise FormatError(f"{where}: header cannot be checksummed ({_short(str(e), 80)})") from None
    if md[CRC_KEY] != crc:
        raise FormatError(
            f"{where}: header checksum {CRC_KEY} mismatch (stored {_short(md[CRC_KEY])}, "
            f"computed {crc}): the header is corrupted"
        )

    data_start = 8 + hlen
    data_len = size - data_start
    tensors = _tensor_table(header, where, data_len)
    return _metadata(md[META_KEY], tensors, where, path, data_start)


def _tensor_table(header: dict, where: str, data_len: int) -> dict[str, _Tensor]:
    tensors: dict[str, _Tensor] = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        tw = f"{where}: tensor {name!r}"
        if not name:
            raise FormatError(f"{where}: a tensor has an empty name")
        _keys(e, tw, _T_FIELDS)
        dt = e["dtype"]
        if type(dt) is not str or dt not in _DTYPES:
            raise _fail(tw, f"unknown dtype {_short(dt)}")
        shape = _shape(e["shape"], tw)
        off = e["data_offsets"]
        if type(off) is not list or len(off) != 2:
            raise _fail(tw, f"data_offsets must be a list of 2 integers, got {_short(off)}")
        start = _int(off[0], f"{tw} data_offsets[0]", 0, data_len)
        end = _int(off[1], f"{tw} data_offsets[1]", 0, data_len)
        if end < start:
            raise _fail(tw, f"data_offsets end {end} is before start {start}")
        nbytes = _numel(shape) * _itemsize(_DTYPES[dt])
        if nbytes != end - start:
            raise _fail(
                tw,
                f"shape {list(shape)} x {dt} needs {nbytes} bytes but data_offsets span {end - start}",
            )
        tensors[name] = _Tensor(name, dt, shape, start, end)
    # the byte ranges must tile the data area: no gap, no overlap, ending exactly at end of file
    pos = 0
    for t in sorted(tensors.values(), key=lambda t: (t.start, t.end)):
        if t.start != pos:
            kind = (
                "overlaps the previous tensor"
                if t.start < pos
                else "leaves a gap after the previous tensor"
            )
            raise FormatError(
                f"{where}: tensor {t.name!r} data_offsets [{t.start}, {t.end}] {kind} (ends at {pos})"
            )
        pos = t.end
    if pos != data_len:
        raise FormatError(
            f"{where}: tensor data ends at byte {pos} of a {data_len}-byte data area (trailing bytes or truncation)"
        )
    return tensors


def _metadata(
    text: str, tensors: dict[str, _Tensor], where: str, path: str, data_start: int
) -> _Header:
    mw = f"{where}: metadata"
    meta = _Json(f"{mw} '{META_KEY}'").loads(text)
    if type(meta) is not dict:
        raise _fail(mw, f"'{META_KEY}' must hold a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise _fail(
            f"{mw} field 'format'",
            f"expected {FORMAT!r}, got {_short(meta.get('format'))} (not a wsq file)",
        )
    version = meta.get("version")
    if type(version) is not int or version != VERSION:
        raise _fail(
            f"{mw} field 'version'",
            f"unsupported version {_short(version)} (this wsq reads {VERSION})",
        )
    _keys(meta, mw, _META_FIELDS)
    n = _int(meta["n"], f"{mw} field 'n'", 1, MAX_N)
    bits = _int(meta["bits"], f"{mw} field 'bits'", 1, 16)
    if n > (1 << bits):
        raise _fail(
            f"{mw} field 'bits'", f"{bits}-bit indices cannot address n = {n} codebook entries"
        )
    k = None if meta["k"] is None else _int(meta["k"], f"{mw} field 'k'", max(2, n), MAX_N)
    lo = _float_or_none(meta["lo"], f"{mw} field 'lo'")
    hi = _float_or_none(meta["hi"], f"{mw} field 'hi'")

    cb = _str(meta["codebook"], f"{mw} field 'codebook'")
    cb_t = tensors.get(cb)
    if cb_t is None:
        raise _fail(f"{mw} field 'codebook'", f"codebook tensor {cb!r} is not in the file")
    if cb_t.dtype != "F32" or cb_t.shape != (n,):
        raise _fail(
            f"{where}: codebook tensor {cb!r}",
            f"must be F32 of shape [{n}] (n), got {cb_t.dtype} {list(cb_t.shape)}",
        )
    cb_crc = _crc(meta["codebook_crc32"], f"{mw} field 'codebook_crc32'")

    qlist = meta["quantized"]
    if type(qlist) is not list:
        raise _fail(f"{mw} field 'quantized'", f"expected a list, got {type(qlist).__name__}")
    quantized: list[_QEntry] = []
    seen_state: dict[str, str] = {}  # state-dict name -> where it was declared
    streams: set[str] = set()
    for i, q in enumerate(qlist):
        qw = f"{mw} quantized[{i}]"
        _keys(q, qw, _Q_FIELDS)
        name = _str(q["name"], f"{qw} field 'name'")
        qw = f"{where}: quantized tensor {name!r}"
        names = q["names"]
        if type(names) is not list or not names:
            raise _fail(
                f"{qw} field 'names'", f"expected a non-empty list of names, got {_short(names)}"
            )
        names = tuple(_str(s, f"{qw} field 'names'") for s in names)
        if name not in names:
            raise _fail(f"{qw} field 'names'", f"does not contain the canonical name {name!r}")
        for s in names:
            if s in seen_state:
                raise _fail(
                    f"{qw} field 'names'", f"name {s!r} is also declared by {seen_state[s]}"
                )
            seen_state[s] = f"quantized tensor {name!r}"
        shape = _shape(q["shape"], f"{qw} field 'shape'")
        dt = q["dtype"]
        if type(dt) is not str or dt not in _QUANT_DTYPES:
            raise _fail(f"{qw} field 'dtype'", f"unknown or non-float dtype {_short(dt)}")
        numel = _int(q["numel"], f"{qw} field 'numel'", 0, MAX_DIM)
        if numel != _numel(shape):
            raise _fail(
                f"{qw} field 'numel'", f"{numel} does not equal the product of shape {list(shape)}"
            )
        coder = q["coder"]
        if type(coder) is not str or coder not in CODERS:
            raise _fail(
                f"{qw} field 'coder'", f"unknown coder {_short(coder)} (known: {', '.join(CODERS)})"
            )
        nbytes = _int(q["bytes"], f"{qw} field 'bytes'", 0, MAX_DIM)
        crc = _crc(q["crc32"], f"{qw} field 'crc32'")
        sname = STREAM_PREFIX + name
        st = tensors.get(sname)
        if st is None:
            raise _fail(qw, f"stream tensor {sname!r} is not in the file")
        if st.dtype != "U8" or st.shape != (nbytes,):
            raise _fail(
                f"{where}: stream tensor {sname!r}",
                f"must be U8 of shape [{nbytes}] (the declared stream bytes), got {st.dtype} {list(st.shape)}",
            )
        streams.add(sname)
        quantized.append(_QEntry(name, names, shape, dt, numel, coder, nbytes, crc))

    plain = meta["plain"]
    if type(plain) is not dict:
        raise _fail(
            f"{mw} field 'plain'",
            f"expected an object of name -> crc32, got {type(plain).__name__}",
        )
    for name, crc in plain.items():
        _str(name, f"{mw} field 'plain'")
        _crc(crc, f"{mw} plain tensor {name!r} crc32")
        if name in seen_state:
            raise _fail(f"{mw} plain tensor {name!r}", f"is also declared by {seen_state[name]}")
        if name == cb or name in streams:
            raise _fail(
                f"{mw} plain tensor {name!r}", "collides with the codebook or a stream tensor"
            )
    declared = {cb} | streams | set(plain)
    missing, extra = sorted(declared - tensors.keys()), sorted(tensors.keys() - declared)
    if missing or extra:
        raise FormatError(
            f"{where}: the tensor table does not match the metadata: "
            + "; ".join(
                ([f"missing tensor(s) {_short(missing, 200)}"] if missing else [])
                + ([f"undeclared tensor(s) {_short(extra, 200)}"] if extra else [])
            )
        )
    return _Header(
        path, data_start, tensors, n, bits, k, lo, hi, cb, cb_crc, tuple(quantized), dict(plain)
    )


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
        out[name] = _tensor_from(buf, _DTYPES[t.dtype], t.shape)
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
    from wsq import entropy

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


def _parse(
    path,
    *,
    model_state: dict[str, tuple[tuple[int, ...], torch.dtype]] | None,
    max_elements: int | None,
):
    """Validate a file completely (decoding every stream) -> header, codebook, symbols, plain.

    model_state: the target model's state names -> (shape, dtype), matched before any stream is
    decoded; without it, the total element count is capped by max_elements.
    """
    _little_endian_only()
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    size = _regular_file(path)
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
    symbols = {q.name: _decode(h, q, streams.pop(q.name)) for q in h.quantized}
    return h, codebook, symbols, plain


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
                ([f"missing from the file: {_short(missing, 400)}"] if missing else [])
                + ([f"unexpected (not in the model): {_short(extra, 400)}"] if extra else [])
            )
        )
    bad = [
        f"{s}: file {list(declared[s][0])} vs model {list(model[s][0])}"
        for s in sorted(model)
        if declared[s][0] != tuple(model[s][0])
    ]
    if bad:
        raise FormatError(f"{where}: shapes do not match the model: {_short(bad, 400)}")
    # a model in another dtype would not compute what the saved one did
    bad = [
        f"{s}: file {declared[s][1]} vs model {_NAMES.get(model[s][1], str(model[s][1]))}"
        for s in sorted(model)
        if _DTYPES[declared[s][1]] != model[s][1]
    ]
    if bad:
        raise FormatError(
            f"{where}: dtypes do not match the model: {_short(bad, 400)}; convert the model "
            "(e.g. model.to(torch.float16)) before loading"
        )


# ============================================================================ writing


def _check_coder(coder: Any) -> str:
    if coder not in ("auto",) + CODERS:
        raise ValueError(f"coder must be 'auto', 'ans' or 'huffman', got {_short(coder)}")
    return coder


def _symbols(qp: Any, bits: int) -> np.ndarray:
    """The numel indices held in qp.packed (uint8 if bits <= 8, else uint16)."""
    from wsq import ops

    return ops.unpack(qp.packed.detach().cpu(), int(qp.numel), bits).numpy()


def _cache(compressed: Any) -> dict | None:
    """The private per-object cache of encoded streams (None if the object refuses attributes)."""
    cache = getattr(compressed, "_wsq_io_streams", None)
    if cache is None:
        cache = {}
        try:
            object.__setattr__(compressed, "_wsq_io_streams", cache)
        except (AttributeError, TypeError):
            return None
    return cache


def _stream(compressed: Any, name: str, qp: Any, coder: str) -> tuple[str, bytes]:
    """(coder used, encoded stream) of one quantized parameter, cached on the Compressed object.

    The cache key includes a CRC of the packed indices, so a mutated object is re-encoded, not
    served a stale stream.
    """
    from wsq import entropy

    bits, n = int(compressed.bits), int(compressed.codebook.numel())
    packed = qp.packed.detach().cpu().contiguous()
    fingerprint = (zlib.crc32(packed.numpy()), int(qp.numel), bits, n)
    cache = _cache(compressed)
    sym = None
    out = {}
    for c in CODERS if coder == "auto" else (coder,):
        hit = cache.get((name, c)) if cache is not None else None
        if hit is not None and hit[0] == fingerprint:
            out[c] = hit[1]
            continue
        if sym is None:
            sym = _symbols(qp, bits)
        out[c] = bytes(entropy.encode(sym, n, c))
        if cache is not None:
            cache[(name, c)] = (fingerprint, out[c])
    # auto: the smaller stream; ties go to the first coder in CODERS (deterministic)
    best = min(out, key=lambda c: (len(out[c]), CODERS.index(c)))
    return best, out[best]


def _tensor_bytes(name: str, t: torch.Tensor) -> tuple[str, tuple[int, ...], np.ndarray]:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"state entry {name!r} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _NAMES:
        raise ValueError(f"tensor {name!r} has dtype {t.dtype}, which wsq files cannot hold")
    if t.device.type == "meta":
        raise ValueError(f"tensor {name!r} is on the meta device: it has no data to save")
    t = t.detach().cpu().contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else np.zeros(0, np.uint8)
    return _NAMES[t.dtype], tuple(t.shape), raw


def _layout(compressed: Any, coder: str) -> tuple[bytes, list[np.ndarray | bytes]]:
    """The header bytes and the data chunks (in file order) that save writes."""
    _little_endian_only()
    codebook = compressed.codebook.detach().cpu().to(torch.float32).contiguous().reshape(-1)
    n, bits = int(codebook.numel()), int(compressed.bits)
    cb_raw = codebook.view(torch.uint8).numpy()
    entries: dict[str, tuple[str, tuple[int, ...], Any]] = {CODEBOOK: ("F32", (n,), cb_raw)}
    quantized = []
    state_names: set[str] = set()
    all_q = compressed.quantized
    for name in sorted(all_q):
        qp = all_q[name]
        used, stream = _stream(compressed, name, qp, coder)
        entries[STREAM_PREFIX + name] = ("U8", (len(stream),), stream)
        names = [str(s) for s in qp.names]
        if name not in names:
            names.insert(0, name)
        state_names.update(names)
        quantized.append(
            {
                "name": name,
                "names": names,
                "shape": [int(d) for d in qp.shape],
                "dtype": _NAMES[qp.dtype],
                "numel": int(qp.numel),
                "coder": used,
                "bytes": len(stream),
                "crc32": zlib.crc32(stream),
            }
        )
    plain = {}
    for name, t in sorted(compressed.rest_state().items()):
        if name in entries or name in state_names:
            raise ValueError(
                f"tensor name {name!r} collides with a quantized parameter or a wsq tensor name"
            )
        dt, shape, raw = _tensor_bytes(name, t)
        entries[name] = (dt, shape, raw)
        plain[name] = zlib.crc32(raw)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "codebook": CODEBOOK,
        "codebook_crc32": zlib.crc32(cb_raw),
        "n": n,
        "bits": bits,
        "k": None if compressed.k is None else int(compressed.k),
        "lo": None if compressed.lo is None else float(compressed.lo),
        "hi": None if compressed.hi is None else float(compressed.hi),
        "quantized": quantized,
        "plain": plain,
    }
    # data order: decreasing item size, then name, so each tensor starts aligned to its item size
    order = sorted(entries, key=lambda s: (-_itemsize(_DTYPES[entries[s][0]]), s))
    header: dict[str, Any] = {"__metadata__": {META_KEY: _dumps(meta)}}
    chunks, pos = [], 0
    for s in order:
        dt, shape, raw = entries[s]
        size = len(raw) if isinstance(raw, bytes) else raw.nbytes
        header[s] = {"dtype": dt, "shape": list(shape), "data_offsets": [pos, pos + size]}
        chunks.append(raw)
        pos += size
    return _header_bytes(header), chunks


def _write_atomic(path: str, header: bytes, chunks: list) -> None:
    """Write a fresh temp file beside path, fsync, then os.replace: path is never left partial."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(
        directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    )
    # os.open applies the umask to 0o666: the permissions of a normally created file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with open(fd, "wb", closefd=True) as f:
            f.write(len(header).to_bytes(8, "little"))
            f.write(header)
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename durable; best effort (some filesystems refuse)
        try:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)


def _check_compressed(compressed: Any) -> None:
    from wsq.compress import Compressed

    if not isinstance(compressed, Compressed):
        raise TypeError(f"compressed must be a wsq.Compressed, got {type(compressed).__name__}")


def file_size(compressed: Any, coder: str = "auto") -> int:
    """Exact size in bytes of the file ``save(compressed, path, coder=coder)`` writes.

    Encoded streams are cached on the object, so a following save does not encode again.
    """
    _check_compressed(compressed)
    header, chunks = _layout(compressed, _check_coder(coder))
    return 8 + len(header) + sum(len(c) if isinstance(c, bytes) else c.nbytes for c in chunks)


def stream_bits(compressed: Any, coder: str = "auto") -> int:
    """Total bits of the coded index streams save writes (each stream with its own coder table)."""
    _check_compressed(compressed)
    coder = _check_coder(coder)
    quantized = compressed.quantized
    return 8 * sum(len(_stream(compressed, s, quantized[s], coder)[1]) for s in sorted(quantized))


def save(compressed: Any, path: str | os.PathLike, *, coder: str = "auto") -> None:
    """Write `compressed` to `path` as a wsq file (a safetensors file; see the module docstring).

    coder: "ans", "huffman", or "auto" (per stream, whichever is smaller). The write is atomic
    (temp file in the same directory, fsync, rename) and deterministic: saving the same model twice
    gives byte-identical files. ValueError if path is a directory or coder is unknown.
    """
    _check_compressed(compressed)
    coder = _check_coder(coder)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if os.path.isdir(path):
        raise ValueError(f"path {path!r} is a directory; give a file name")
    header, chunks = _layout(compressed, coder)
    _write_atomic(path, header, chunks)


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
    return vals.to(_DTYPES[q.dtype]).reshape(q.shape)


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
    h, codebook, symbols, plain = _parse(path, model_state=None, max_elements=max_elements)
    out: dict[str, torch.Tensor] = dict(plain)
    for q in h.quantized:
        dense = _dense(codebook, symbols.pop(q.name), q)
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
    loading holds the packed indices and, while decoding, the decoded indices (below the
    dense bytes; tests/test_io_memory.py).
    """
    from wsq import ops
    from wsq.compress import Compressed

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    state = {n: (tuple(t.shape), t.dtype) for n, t in model.state_dict(keep_vars=True).items()}
    h, codebook, symbols, plain = _parse(path, model_state=state, max_elements=None)
    packed = {}
    for q in h.quantized:
        packed[q.name] = ops.pack(_index_tensor(symbols.pop(q.name)), h.bits)
    return Compressed.from_parts(model, codebook, h.bits, packed, plain, k=h.k, lo=h.lo, hi=h.hi)
