"""The bytes of a compressed model as a wsq file: the header and the data chunks in file order, and
from them the exact file size without writing anything (Compressed.stats()'s file_bytes).

The layout is deterministic (data by decreasing item size, then name, so every tensor is aligned to
its item size); wsq.io.writer writes it atomically. The format is described in wsq.container.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import torch

from wsq import entropy
from wsq.container import (
    CODEBOOK,
    CODERS,
    DTYPE_NAMES,
    DTYPES,
    FORMAT,
    META_KEY,
    STREAM_PREFIX,
    VERSION,
    dumps,
    header_bytes,
    itemsize,
    little_endian_only,
    short_repr,
)
from wsq.kernels import ops

__all__ = ["SpooledStream", "check_coder", "check_compressed", "layout", "file_size", "stream_bits"]


def check_coder(coder: Any) -> str:
    if coder not in ("auto",) + CODERS:
        raise ValueError(f"coder must be 'auto', 'ans' or 'huffman', got {short_repr(coder)}")
    return coder


def _symbols(packed: torch.Tensor, numel: int, bits: int) -> np.ndarray:
    """The numel indices held in `packed` (uint8 if bits <= 8, else uint16)."""
    return ops.unpack(packed, numel, bits).numpy()


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


class SpooledStream:
    """A stream that was encoded and not kept: its length and CRC (what the header needs), and
    where a save spooled its bytes (``offset`` into the spool file, else None)."""

    def __init__(self, stream: bytes, offset: int | None = None) -> None:
        self.nbytes, self.crc, self.offset = len(stream), zlib.crc32(stream), offset

    def __len__(self) -> int:
        return self.nbytes


def _stream(
    compressed: Any, name: str, qp: Any, coder: str, spool=None, sizes_only: bool = False
) -> tuple[str, bytes | SpooledStream]:
    """(coder used, encoded stream) of one quantized parameter; with `sizes_only` only its length
    and CRC (a SpooledStream), and with a `spool` (a binary file) its bytes are appended to the spool and
    the SpooledStream says where (``offset``).

    The stream codes the tensor's indices into the shared codebook (``global_packed``: in memory
    each tensor is held at its own width). Lengths and CRCs are cached on the Compressed object,
    keyed by a CRC of those indices (a mutated object is re-encoded, not served a stale entry);
    the bytes never are: a save holds one stream at a time (a 1B LLaMA at k=256 held 1.41 GiB
    beyond the model while saving with both coders' streams cached). "auto" picks the smaller;
    ties go to the first coder in CODERS (deterministic).
    """
    bits, n = int(compressed.bits), int(compressed.codebook.numel())
    packed = compressed.global_packed(name).contiguous()
    fingerprint = (zlib.crc32(packed.numpy()), int(qp.numel), bits, n)
    cache = _cache(compressed)
    if cache is None:
        cache = {}
    order = CODERS if coder == "auto" else (coder,)
    known: dict[str, SpooledStream] = {}
    for c in order:
        hit = cache.get((name, c))
        if hit is not None and hit[0] == fingerprint:
            known[c] = hit[1]
    sym = None
    fresh: dict[str, bytes] = {}
    for c in order:
        if c not in known:
            if sym is None:
                sym = _symbols(packed, int(qp.numel), bits)
            fresh[c] = bytes(entropy.encode(sym, n, c))
            known[c] = SpooledStream(fresh[c])
            cache[(name, c)] = (fingerprint, known[c])
    best = min(known, key=lambda c: (len(known[c]), CODERS.index(c)))
    if sizes_only:
        return best, known[best]
    data = fresh.get(best)
    fresh.clear()
    if data is None:
        if sym is None:
            sym = _symbols(packed, int(qp.numel), bits)
        data = bytes(entropy.encode(sym, n, best))
    del sym
    out = SpooledStream(data, None if spool is None else spool.tell())
    if out.crc != known[best].crc or out.nbytes != known[best].nbytes:
        raise RuntimeError(f"{name}: the {best} coder gave a different stream on a second run")
    if spool is None:
        return best, data
    spool.write(data)
    return best, out


def _tensor_bytes(name: str, t: torch.Tensor) -> tuple[str, tuple[int, ...], np.ndarray]:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"state entry {name!r} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in DTYPE_NAMES:
        raise ValueError(f"tensor {name!r} has dtype {t.dtype}, which wsq files cannot hold")
    if t.device.type == "meta":
        raise ValueError(f"tensor {name!r} is on the meta device: it has no data to save")
    t = t.detach().cpu().contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else np.zeros(0, np.uint8)
    return DTYPE_NAMES[t.dtype], tuple(t.shape), raw


def layout(
    compressed: Any, coder: str, *, spool=None, sizes_only: bool = False
) -> tuple[bytes, list[np.ndarray | bytes | SpooledStream]]:
    """The header bytes and the data chunks (in file order) that wsq.save writes. With a `spool`
    (a binary file) the coded streams are appended to it as they are made and their chunks say
    where (SpooledStream); with `sizes_only` nothing but their lengths and CRCs is kept."""
    little_endian_only()
    codebook = compressed.codebook.detach().cpu().to(torch.float32).contiguous().reshape(-1)
    n, bits = int(codebook.numel()), int(compressed.bits)
    cb_raw = codebook.view(torch.uint8).numpy()
    entries: dict[str, tuple[str, tuple[int, ...], Any]] = {CODEBOOK: ("F32", (n,), cb_raw)}
    quantized = []
    state_names: set[str] = set()
    all_q = compressed.quantized
    for name in sorted(all_q):
        qp = all_q[name]
        used, stream = _stream(compressed, name, qp, coder, spool, sizes_only)
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
                "dtype": DTYPE_NAMES[qp.dtype],
                "numel": int(qp.numel),
                "coder": used,
                "bytes": len(stream),
                "crc32": stream.crc if isinstance(stream, SpooledStream) else zlib.crc32(stream),
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
    order = sorted(entries, key=lambda s: (-itemsize(DTYPES[entries[s][0]]), s))
    header: dict[str, Any] = {"__metadata__": {META_KEY: dumps(meta)}}
    chunks, pos = [], 0
    for s in order:
        dt, shape, raw = entries[s]
        size = len(raw) if isinstance(raw, bytes) else raw.nbytes
        header[s] = {"dtype": dt, "shape": list(shape), "data_offsets": [pos, pos + size]}
        chunks.append(raw)
        pos += size
    return header_bytes(header), chunks


# What the layout reads of a wsq.Compressed. Checked by shape, not by isinstance: wsq.compressed.model
# imports this module (Compressed.stats() measures the exact file size through it), not back.
FIELDS = ("codebook", "bits", "k", "lo", "hi", "quantized", "global_packed", "rest_state")


def check_compressed(compressed: Any) -> None:
    if isinstance(compressed, type) or not all(hasattr(compressed, a) for a in FIELDS):
        raise TypeError(f"compressed must be a wsq.Compressed, got {type(compressed).__name__}")


def file_size(compressed: Any, coder: str = "auto") -> int:
    """Exact size in bytes of the file ``save(compressed, path, coder=coder)`` writes.

    The streams' lengths and CRCs are cached on the object (a following save encodes each
    stream once more, the chosen coder only, to write it).
    """
    check_compressed(compressed)
    header, chunks = layout(compressed, check_coder(coder), sizes_only=True)
    return 8 + len(header) + sum(len(c) if isinstance(c, bytes) else c.nbytes for c in chunks)


def stream_bits(compressed: Any, coder: str = "auto") -> int:
    """Total bits of the coded index streams save writes (each stream with its own coder table)."""
    check_compressed(compressed)
    coder = check_coder(coder)
    quantized = compressed.quantized
    return 8 * sum(len(_stream(compressed, s, quantized[s], coder)[1]) for s in sorted(quantized))
