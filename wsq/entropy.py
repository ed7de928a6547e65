"""Entropy coding of index streams: canonical length-limited Huffman and interleaved rANS.

A compressed model holds one codebook of ``n_symbols <= 65536`` entries; each tensor's indices
(uint8 when ``n_symbols <= 256``, else uint16) are coded into one self-contained byte string by
:func:`encode` and restored by :func:`decode`. The coders run in C++ (csrc/cpu/entropy.cpp,
entropy_huffman.cpp, entropy_rans.cpp) on the CPU; the stream layout is documented in csrc/cpu/entropy.h.

- ``"huffman"``: canonical code, lengths <= 16 (package-merge, optimal under that limit); exact
  sizes from a histogram. Loses up to ~1 bit/symbol when one symbol dominates.
- ``"ans"``: rANS with a 64-bit state, 32-bit renormalisation, frequencies at scale 2^12..2^16
  chosen per histogram; 0.02-0.2% above the entropy on typical weight histograms of 1M+ indices,
  tables included.
  :func:`size_bits` for ANS is a proven upper bound (see :func:`size_bits`).

Sizes for the search come from histograms without coding: :func:`size_bits`,
:func:`size_breakdown`, :func:`choose`. Decoding validates the whole stream and raises
:class:`wsq.errors.FormatError` naming the defect; it never reads out of bounds, and allocates
only the output (``n`` elements) and tables bounded by ``n_symbols``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from wsq.errors import FormatError
from wsq.kernels.cpu import entropy_coders as _coders

__all__ = [
    "CODERS",
    "encode",
    "decode",
    "histogram",
    "size_bits",
    "size_breakdown",
    "code_table",
    "entropy_bits",
    "choose",
    "stream_sizes",
    "coded_table_and_payload_sizes",
    "symbol_dtype",
]

CODERS = ("huffman", "ans")
_CODER_IDS = {"huffman": 1, "ans": 2}
_CODER_NAMES = {v: k for k, v in _CODER_IDS.items()}
MAX_SYMBOLS = 65536


def symbol_dtype(n_symbols: int) -> np.dtype:
    """The element type of decoded indices: uint8 for n_symbols <= 256, else uint16."""
    return np.dtype(np.uint8 if n_symbols <= 256 else np.uint16)


def _check_n_symbols(n_symbols: Any) -> int:
    if isinstance(n_symbols, bool) or not isinstance(n_symbols, (int, np.integer)):
        raise TypeError(f"n_symbols must be an int, got {type(n_symbols).__name__}")
    if not 1 <= int(n_symbols) <= MAX_SYMBOLS:
        raise ValueError(f"n_symbols must be in 1..{MAX_SYMBOLS}, got {n_symbols}")
    return int(n_symbols)


def _check_coder(coder: Any, *, auto: bool = True) -> str:
    allowed = CODERS + (("auto",) if auto else ())
    if coder not in allowed:
        raise ValueError(f"coder must be one of {allowed}, got {coder!r}")
    return coder


def _symbols(symbols: Any) -> np.ndarray:
    """1-D contiguous uint8/uint16 numpy view of a numpy array or CPU tensor."""
    if type(symbols).__module__.startswith("torch"):
        import torch

        if not isinstance(symbols, torch.Tensor):
            raise TypeError(
                f"symbols must be a numpy array or a CPU tensor, got {type(symbols).__name__}"
            )
        if symbols.device.type != "cpu":
            raise ValueError(
                f"symbols must be on the CPU (entropy coding runs there), got {symbols.device}"
            )
        if symbols.dtype not in (torch.uint8, torch.uint16):
            raise TypeError(f"symbols must have dtype uint8 or uint16, got {symbols.dtype}")
        symbols = symbols.detach().contiguous().numpy()
    if not isinstance(symbols, np.ndarray):
        raise TypeError(
            f"symbols must be a numpy array or a CPU tensor, got {type(symbols).__name__}"
        )
    if symbols.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"symbols must have dtype uint8 or uint16, got {symbols.dtype}")
    if symbols.ndim != 1:
        raise ValueError(f"symbols must be 1-D, got shape {symbols.shape}")
    return np.ascontiguousarray(symbols)


def _counts(counts: Any) -> np.ndarray:
    if type(counts).__module__.startswith("torch"):
        counts = counts.detach().cpu().numpy()
    c = np.asarray(counts)
    if c.ndim != 1 or not 1 <= c.size <= MAX_SYMBOLS:
        raise ValueError(
            f"counts must be a 1-D array of 1..{MAX_SYMBOLS} entries, got shape {c.shape}"
        )
    if not np.issubdtype(c.dtype, np.integer):
        raise TypeError(f"counts must be integers, got dtype {c.dtype}")
    if c.size and int(c.min()) < 0:
        raise ValueError("counts must be >= 0")
    return np.ascontiguousarray(c, dtype=np.int64)


def histogram(symbols: Any, n_symbols: int) -> np.ndarray:
    """Counts of each symbol: int64 array of shape (n_symbols,). Raises ValueError for a symbol
    >= n_symbols."""
    n_symbols = _check_n_symbols(n_symbols)
    s = _symbols(symbols)
    counts = np.zeros(n_symbols, dtype=np.int64)
    err = _coders().entropy_histogram(
        s.ctypes.data, s.itemsize, s.size, n_symbols, counts.ctypes.data
    )
    if err:
        raise ValueError(f"symbols: {err}")
    return counts


def entropy_bits(counts: Any) -> float:
    """Empirical entropy bound of a histogram: total bits, sum_s c_s * log2(N / c_s)."""
    c = _counts(counts)
    c = c[c > 0].astype(np.float64)
    if c.size == 0:
        return 0.0
    n = c.sum()
    return float(np.sum(c * (math.log2(n) - np.log2(c))))


def size_breakdown(counts: Any, coder: str) -> dict:
    """Bytes of each part of the stream :func:`encode` would write for this histogram, without
    coding: keys header_bytes, table_bytes, directory_bytes, payload_bytes, total_bytes, plus
    used, lanes, scale_bits and ``exact`` (False for ANS: payload_bytes is an upper bound)."""
    c = _counts(counts)
    coder = _check_coder(coder)
    if coder == "auto":
        coder = choose(c)
    d = _coders().entropy_measure(c.ctypes.data, c.size, _CODER_IDS[coder])
    d["coder"] = coder
    d["total_bytes"] = (
        d["header_bytes"] + d["table_bytes"] + d["directory_bytes"] + d["payload_bytes"]
    )
    return d


def code_table(counts: Any, coder: str) -> tuple[np.ndarray, int]:
    """The code :func:`encode` would use for this histogram: (values, scale_bits) where values is
    a uint32 array of shape (n_symbols,) holding each symbol's Huffman code length (1..16) or
    ANS frequency (summing to 2**scale_bits), 0 for unused symbols; scale_bits is 0 for Huffman."""
    c = _counts(counts)
    coder = _check_coder(coder, auto=False)
    values = np.zeros(c.size, dtype=np.uint32)
    scale_bits, _lanes = _coders().entropy_plan(
        c.ctypes.data, c.size, _CODER_IDS[coder], values.ctypes.data
    )
    return values, scale_bits


def size_bits(counts: Any, coder: str) -> int:
    """Size in bits of the whole stream (header, table, lane directory, payload) that
    :func:`encode` produces for data with this histogram (int64 counts of shape (n_symbols,)).

    Huffman: exact (== 8 * len(encode(...))). ANS: a proven upper bound (the coded size depends
    on the order of the symbols, not only on their counts); it exceeds the real size by less than
    5 bytes per lane (8 lanes per 2M symbols) plus 1.1e-5 bytes per symbol, in practice ~3 bytes
    per lane: a few dozen bytes on millions of symbols. ``coder="auto"``: the smaller.
    """
    return 8 * size_breakdown(counts, coder)["total_bytes"]


def coded_bits(per_stream: Any, coder: str = "auto") -> float:
    """Coded size in bits of index streams, one per pooled tensor, from their histograms.

    ``per_stream``: (n_streams, n) counts of each codebook entry in each pooled tensor. Each stream
    is coded on its own, as wsq.save writes it, so the sum of :func:`size_bits` over streams is the
    file's index-stream size. ``coder="entropy"`` gives instead the empirical entropy bound of each
    stream (what an ideal coder reaches).
    """
    if coder == "entropy":
        return float(sum(entropy_bits(c) for c in per_stream))
    return float(sum(size_bits(c, coder) for c in per_stream))


def choose(counts: Any) -> str:
    """The coder giving the smaller stream for this histogram (Huffman on ties)."""
    c = _counts(counts)
    sizes = {name: size_breakdown(c, name)["total_bytes"] for name in CODERS}
    return min(CODERS, key=lambda name: sizes[name])


def encode(symbols: Any, n_symbols: int, coder: str = "auto") -> bytes:
    """Codes a 1-D uint8/uint16 numpy array or CPU tensor of values < n_symbols into one
    self-contained byte string (header, table, lane directory, payload; see csrc/cpu/entropy.h).
    ``coder`` is "huffman", "ans" or "auto" (the smaller for this data)."""
    n_symbols = _check_n_symbols(n_symbols)
    coder = _check_coder(coder)
    s = _symbols(symbols)
    if coder == "auto":
        coder = choose(histogram(s, n_symbols))
    try:
        return _coders().entropy_encode(
            s.ctypes.data, s.itemsize, s.size, n_symbols, _CODER_IDS[coder]
        )
    except ValueError as e:
        raise ValueError(f"symbols: {e}") from None


def _bytes_view(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise TypeError(
                f"data must be a 1-D uint8 array, got {data.dtype} of shape {data.shape}"
            )
        return np.ascontiguousarray(data)
    if isinstance(data, (bytes, bytearray, memoryview)):
        mv = memoryview(data)
        if not mv.c_contiguous:
            raise ValueError("data must be a contiguous buffer")
        return np.frombuffer(
            mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv, dtype=np.uint8
        )
    raise TypeError(
        "data must be bytes, bytearray, memoryview or a uint8 numpy array, "
        f"got {type(data).__name__}"
    )


def stream_sizes(data: bytes | memoryview | np.ndarray) -> dict:
    """Fields and part sizes of an encoded stream (header, table and directory are validated;
    the payload is not decoded). Raises FormatError if they are malformed."""
    buf = _bytes_view(data)
    err, d = _coders().entropy_inspect(buf.ctypes.data, buf.size)
    if err:
        raise FormatError(f"entropy stream: {err}")
    d["coder"] = _CODER_NAMES[d["coder"]]
    d["total_bytes"] = buf.size
    del d["exact"]
    return d


def coded_table_and_payload_sizes(data: bytes | memoryview | np.ndarray) -> tuple[int, int]:
    """(bytes of header + code table + lane directory, bytes of coded payload) of a stream."""
    d = stream_sizes(data)
    return d["header_bytes"] + d["table_bytes"] + d["directory_bytes"], d["payload_bytes"]


def decode(
    data: bytes | memoryview | np.ndarray, n: int, n_symbols: int, *, threads: int = 0
) -> np.ndarray:
    """Decodes a stream made by :func:`encode` into n indices: a numpy array of shape (n,), uint8
    when n_symbols <= 256 else uint16. ``n`` and ``n_symbols`` are what the caller expects (from
    the tensor's shape and the codebook); any mismatch or defect raises FormatError.
    ``threads``: OpenMP threads for large streams (groups of lanes in parallel; 0 = default)."""
    n_symbols = _check_n_symbols(n_symbols)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be an int >= 0, got {threads!r}")
    n = int(n)
    buf = _bytes_view(data)
    C = _coders()
    # Header, table and directory are validated before the output is allocated.
    err, d = C.entropy_inspect(buf.ctypes.data, buf.size)
    if err:
        raise FormatError(f"entropy stream: {err}")
    if d["n_symbols"] != n_symbols:
        raise FormatError(f"entropy stream: has n_symbols {d['n_symbols']}, expected {n_symbols}")
    if d["n"] != n:
        raise FormatError(f"entropy stream: has {d['n']} elements, expected {n}")
    out = np.empty(n, dtype=symbol_dtype(n_symbols))
    err = C.entropy_decode(
        buf.ctypes.data, buf.size, out.ctypes.data, out.itemsize, n, n_symbols, threads
    )
    if err:
        raise FormatError(f"entropy stream: {err}")
    return out
