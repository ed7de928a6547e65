"""Reading a wsq file's header: every claim validated before anything sized by it is allocated.

The format itself (and what each field means) is described in wsq.container. Reading validates
header bounds, JSON schema, dtypes, shapes against byte ranges, byte ranges tiling the data area
exactly, the metadata against the tensor table and the checksums; every defect raises
:class:`wsq.FormatError` naming the tensor or field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from wsq.container import (
    CODERS,
    CRC_KEY,
    DTYPES,
    FORMAT,
    MAX_DIM,
    MAX_HEADER,
    MAX_N,
    MAX_NDIM,
    META_KEY,
    QUANT_DTYPES,
    STREAM_PREFIX,
    VERSION,
    header_crc,
    itemsize,
    short_repr,
)
from wsq.errors import FormatError

# Default cap on decoded elements for load_state_dict: a constant tensor codes to a few bytes, so
# the file size alone cannot honestly bound what a valid stream decodes to; this allows 1024
# elements per file byte (< 0.008 bits per weight) plus a fixed 16M, and callers can raise it.
_CAP_FLOOR = 1 << 24
_CAP_PER_BYTE = 1024


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


class _Json:
    """json.loads hooks that refuse what Python's parser would quietly accept."""

    def __init__(self, where: str):
        self.where = where

    def pairs(self, pairs: list) -> dict:
        out: dict = {}
        for k, v in pairs:
            if k in out:
                raise FormatError(f"{self.where}: duplicate key {short_repr(k)}")
            out[k] = v
        return out

    def const(self, s: str):
        raise FormatError(f"{self.where}: non-finite number {s} is not allowed")

    def number(self, s: str) -> float:
        v = float(s)
        if not math.isfinite(v):  # e.g. 1e999: JSON has no infinities
            raise FormatError(f"{self.where}: number {short_repr(s)} overflows a float")
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
            raise FormatError(
                f"{self.where} is not valid JSON: {short_repr(str(e), 120)}"
            ) from None


# ============================================================================ field checks


def _fail(where: str, defect: str) -> FormatError:
    return FormatError(f"{where}: {defect}")


def _int(v: Any, where: str, lo: int, hi: int) -> int:
    if type(v) is not int:
        raise _fail(where, f"expected an integer, got {short_repr(v)}")
    if not lo <= v <= hi:
        raise _fail(where, f"{v} is outside [{lo}, {hi}]")
    return v


def _str(v: Any, where: str) -> str:
    if type(v) is not str or not v:
        raise _fail(where, f"expected a non-empty string, got {short_repr(v)}")
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
        raise _fail(
            where, f"shape must be a list of at most {MAX_NDIM} integers, got {short_repr(v)}"
        )
    return tuple(_int(d, f"{where} shape[{i}]", 0, MAX_DIM) for i, d in enumerate(v))


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)  # Python ints: no wrap-around; dims <= 2**62, ndim <= 64


def _crc(v: Any, where: str) -> int:
    return _int(v, where, 0, 0xFFFFFFFF)


def _float_or_none(v: Any, where: str) -> float | None:
    if v is None:
        return None
    if type(v) not in (int, float) or not math.isfinite(v):
        raise _fail(where, f"expected a finite number or null, got {short_repr(v)}")
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


def _not_wsq(path: str, why: str) -> FormatError:
    return FormatError(f"{path!r} is not a wsq file: {why}")


def _truncated(path: str, size: int, need: int | str, detail: str) -> FormatError:
    return FormatError(f"wsq file {path!r} is truncated ({size} of {need} bytes): {detail}")


def _read_header(f, path: str, size: int) -> _Header:
    where = f"wsq file {path!r}"
    if size < 8:
        raise _not_wsq(
            path, f"{size} bytes, shorter than the 8-byte header length (or a truncated file)"
        )
    head = f.read(9)
    if len(head) != min(size, 9):
        raise FormatError(f"{where}: file shrank while reading the header length")
    hlen = int.from_bytes(head[:8], "little")
    # A wsq file is a safetensors container: an 8-byte little-endian header length, then the JSON
    # header, whose first byte is '{'. A text, pickle or zip file fails here, named as what it is.
    first = head[8:9]
    if first and first not in b"{[":
        raise _not_wsq(
            path,
            "it does not begin with a safetensors header (an 8-byte length, then JSON); its "
            f"first bytes are {_first_bytes(f)}",
        )
    if hlen > MAX_HEADER:
        if not first:
            raise _not_wsq(path, f"an 8-byte file whose header length {hlen} exceeds the cap")
        raise FormatError(f"{where}: header length {hlen} exceeds the {MAX_HEADER}-byte cap")
    if hlen > size - 8:
        raise _truncated(
            path, size, f"at least {8 + hlen}",
            f"header length {hlen} runs past the end of the file (the header itself is cut)",
        )  # fmt: skip
    f.seek(8)
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
        raise _not_wsq(path, "its header has no __metadata__ (a safetensors file of another tool?)")
    if type(md) is dict and META_KEY not in md:
        raise _not_wsq(
            path,
            f"__metadata__ is missing field {META_KEY!r} (a safetensors file of another tool?)",
        )
    _keys(md, f"{where}: __metadata__", {META_KEY, CRC_KEY})
    for key, v in md.items():
        if type(v) is not str:
            raise FormatError(
                f"{where}: __metadata__[{key!r}] must be a string, got {type(v).__name__}"
            )
    try:
        crc = header_crc(header)
    except (ValueError, RecursionError) as e:  # e.g. nesting deeper than the encoder allows
        raise FormatError(
            f"{where}: header cannot be checksummed ({short_repr(str(e), 80)})"
        ) from None
    if md[CRC_KEY] != crc:
        raise FormatError(
            f"{where}: header checksum {CRC_KEY} mismatch (stored {short_repr(md[CRC_KEY])}, "
            f"computed {crc}): the header is corrupted"
        )

    data_start = 8 + hlen
    data_len = size - data_start
    _check_not_truncated(header, path, size, data_start)
    tensors = _tensor_table(header, where, data_len)
    return _metadata(md[META_KEY], tensors, where, path, data_start)


def _first_bytes(f) -> str:
    """The file's first bytes for a message, with what they look like when it is a common kind."""
    f.seek(0)
    start = f.read(16)
    kinds = (
        (b"PK\x03\x04", "a zip archive (torch.save writes one)"),
        (b"\x80", "a pickle"),
        (b"GGUF", "a GGUF file"),
        (b"\x89HDF", "an HDF5 file"),
        (b"\x93NUMPY", "a .npy file"),
    )
    kind = next((k for magic, k in kinds if start.startswith(magic)), None)
    if kind is None:
        try:
            start.decode("utf-8")
            kind = "text" if start.isascii() else None
        except UnicodeDecodeError:
            pass
    return f"{start[:12]!r}" + (f" ({kind})" if kind else "")


def _check_not_truncated(header: dict, path: str, size: int, data_start: int) -> None:
    """After the header checksum held: a file shorter than its header's tensors say is reported as
    truncated (N of M bytes) before any per-tensor check. Entries that are not well formed are left
    to _tensor_table, which names them."""
    end, last = 0, None
    for name, e in header.items():
        off = e.get("data_offsets") if name != "__metadata__" and type(e) is dict else None
        if type(off) is list and len(off) == 2 and all(type(v) is int and v >= 0 for v in off):
            if off[1] > end:
                end, last = off[1], name
    data_len = size - data_start
    if end > data_len:
        raise _truncated(
            path, size, data_start + end,
            f"tensor {last!r} data_offsets[1] {end} is past the end of the {data_len}-byte data "
            "area",
        )  # fmt: skip


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
        if type(dt) is not str or dt not in DTYPES:
            raise _fail(tw, f"unknown dtype {short_repr(dt)}")
        shape = _shape(e["shape"], tw)
        off = e["data_offsets"]
        if type(off) is not list or len(off) != 2:
            raise _fail(tw, f"data_offsets must be a list of 2 integers, got {short_repr(off)}")
        start = _int(off[0], f"{tw} data_offsets[0]", 0, data_len)
        end = _int(off[1], f"{tw} data_offsets[1]", 0, data_len)
        if end < start:
            raise _fail(tw, f"data_offsets end {end} is before start {start}")
        nbytes = _numel(shape) * itemsize(DTYPES[dt])
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
            f"{where}: tensor data ends at byte {pos} of a {data_len}-byte data area: "
            f"{data_len - pos} trailing bytes"
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
            f"expected {FORMAT!r}, got {short_repr(meta.get('format'))} (not a wsq file)",
        )
    version = meta.get("version")
    if type(version) is not int or version != VERSION:
        raise _fail(
            f"{mw} field 'version'",
            f"unsupported version {short_repr(version)} (this wsq reads {VERSION})",
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
                f"{qw} field 'names'",
                f"expected a non-empty list of names, got {short_repr(names)}",
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
        if type(dt) is not str or dt not in QUANT_DTYPES:
            raise _fail(f"{qw} field 'dtype'", f"unknown or non-float dtype {short_repr(dt)}")
        numel = _int(q["numel"], f"{qw} field 'numel'", 0, MAX_DIM)
        if numel != _numel(shape):
            raise _fail(
                f"{qw} field 'numel'", f"{numel} does not equal the product of shape {list(shape)}"
            )
        coder = q["coder"]
        if type(coder) is not str or coder not in CODERS:
            raise _fail(
                f"{qw} field 'coder'",
                f"unknown coder {short_repr(coder)} (known: {', '.join(CODERS)})",
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
                ([f"missing tensor(s) {short_repr(missing, 200)}"] if missing else [])
                + ([f"undeclared tensor(s) {short_repr(extra, 200)}"] if extra else [])
            )
        )
    return _Header(
        path, data_start, tensors, n, bits, k, lo, hi, cb, cb_crc, tuple(quantized), dict(plain)
    )
