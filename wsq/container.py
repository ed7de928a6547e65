"""The wsq file format: entropy-coded weight-sharing models in a safetensors container.

This module holds what the writer (wsq.io.writer), the reader (wsq.io.reader, wsq.io.header),
the exact size of a compressed model's file (wsq.compressed.layout) and the checkpoint reader
share: the format's constants, the safetensors dtype names, the canonical JSON wsq writes and
checksums. It sits below all of them, so Compressed.stats() can measure its file without
importing wsq.io.

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
import os
import stat
import sys
import zlib
from typing import Any

import torch

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

DTYPES: dict[str, torch.dtype] = {
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
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
QUANT_DTYPES = ("F64", "F32", "F16", "BF16")


@functools.cache
def itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def little_endian_only() -> None:
    if sys.byteorder != "little":  # the container is little-endian; no byte swapping is implemented
        raise NotImplementedError(
            "wsq files are little-endian; this big-endian host is not supported"
        )


# ============================================================================ canonical JSON


def dumps(obj: Any) -> str:
    """The one serialisation wsq writes and checksums: sorted keys, compact, ASCII, no NaN."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def header_crc(header: dict) -> str:
    meta = {k: v for k, v in header["__metadata__"].items() if k != CRC_KEY}
    body = dict(header, __metadata__=meta)
    return format(zlib.crc32(dumps(body).encode("ascii")), "08x")


def header_bytes(header: dict) -> bytes:
    """Serialise a header (adding its CRC) padded with spaces to a multiple of 8 bytes."""
    header = dict(header, __metadata__=dict(header["__metadata__"]))
    header["__metadata__"].pop(CRC_KEY, None)
    header["__metadata__"][CRC_KEY] = header_crc(header)
    raw = dumps(header).encode("ascii")
    return raw + b" " * (-len(raw) % 8)


def short_repr(v: Any, limit: int = 60) -> str:
    """repr(v) cut to `limit` characters: error messages quote a file's claims, which may be huge."""
    r = repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def regular_file(path: str) -> int:
    """The size of the regular file at `path` (ValueError for a directory, FIFO or device)."""
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"path {path!r} is a directory, not a wsq file")
    if not stat.S_ISREG(st.st_mode):  # FIFOs and devices could block or never end
        raise ValueError(f"path {path!r} is not a regular file")
    return st.st_size
