"""Writing wsq files: the deterministic layout of a compressed model (header + aligned chunks),
its exact size without writing, and the atomic write (temp file, fsync, os.replace)."""

from __future__ import annotations

import os
import secrets
import tempfile
import threading
import zlib
from typing import Any

import numpy as np
import torch

from wsq.io.format import (
    _DTYPES,
    _NAMES,
    CODEBOOK,
    CODERS,
    FORMAT,
    META_KEY,
    STREAM_PREFIX,
    VERSION,
    _dumps,
    _header_bytes,
    _itemsize,
    _little_endian_only,
    _short,
)

# ============================================================================ writing


def _check_coder(coder: Any) -> str:
    if coder not in ("auto",) + CODERS:
        raise ValueError(f"coder must be 'auto', 'ans' or 'huffman', got {_short(coder)}")
    return coder


def _symbols(packed: torch.Tensor, numel: int, bits: int) -> np.ndarray:
    """The numel indices held in `packed` (uint8 if bits <= 8, else uint16)."""
    from wsq.kernels import ops

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


_SAVING = threading.local()


class _Known:
    """A stream that was encoded and not kept: its length and CRC (what the header needs), and
    where a save spooled its bytes (``offset`` into the spool file, else None)."""

    def __init__(self, stream: bytes, offset: int | None = None) -> None:
        self.nbytes, self.crc, self.offset = len(stream), zlib.crc32(stream), offset

    def __len__(self) -> int:
        return self.nbytes


def _stream(
    compressed: Any, name: str, qp: Any, coder: str, spool=None, sizes_only: bool = False
) -> tuple[str, bytes | _Known]:
    """(coder used, encoded stream) of one quantized parameter; with `sizes_only` only its length
    and CRC (a _Known), and with a `spool` (a binary file) its bytes are appended to the spool and
    the _Known says where (``offset``).

    The stream codes the tensor's indices into the shared codebook (``global_packed``: in memory
    each tensor is held at its own width). Lengths and CRCs are cached on the Compressed object,
    keyed by a CRC of those indices (a mutated object is re-encoded, not served a stale entry);
    the bytes never are: a save holds one stream at a time (a 1B LLaMA at k=256 held 1.41 GiB
    beyond the model while saving with both coders' streams cached). "auto" picks the smaller;
    ties go to the first coder in CODERS (deterministic).
    """
    from wsq.io import entropy

    bits, n = int(compressed.bits), int(compressed.codebook.numel())
    packed = compressed.global_packed(name).contiguous()
    fingerprint = (zlib.crc32(packed.numpy()), int(qp.numel), bits, n)
    cache = _cache(compressed)
    if cache is None:
        cache = {}
    order = CODERS if coder == "auto" else (coder,)
    known: dict[str, _Known] = {}
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
            known[c] = _Known(fresh[c])
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
    out = _Known(data, None if spool is None else spool.tell())
    if out.crc != known[best].crc or out.nbytes != known[best].nbytes:
        raise RuntimeError(f"{name}: the {best} coder gave a different stream on a second run")
    if spool is None:
        return best, data
    spool.write(data)
    return best, out


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


def _layout(
    compressed: Any, coder: str, sizes_only: bool = False
) -> tuple[bytes, list[np.ndarray | bytes]]:
    """The header bytes and the data chunks (in file order) that save writes; inside save the
    coded streams go to save's spool file (``_SAVING.spool``) and the chunks say where."""
    spool = getattr(_SAVING, "spool", None)
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
                "dtype": _NAMES[qp.dtype],
                "numel": int(qp.numel),
                "coder": used,
                "bytes": len(stream),
                "crc32": stream.crc if isinstance(stream, _Known) else zlib.crc32(stream),
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


def _write_atomic(path: str, header: bytes, chunks: list, spool=None) -> None:
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
                if isinstance(c, _Known):  # a coded stream: copied from the spool in pieces
                    spool.seek(c.offset)
                    left = c.nbytes
                    while left:
                        piece = spool.read(min(left, 1 << 24))
                        if not piece:
                            raise OSError(f"the spool file ended {left} bytes early")
                        f.write(piece)
                        left -= len(piece)
                else:
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


# What the writer reads of a wsq.Compressed. Checked by shape, not by isinstance, so this module
# does not import wsq.core: Compressed.stats() measures the exact file size through it.
_FIELDS = ("codebook", "bits", "k", "lo", "hi", "quantized", "global_packed", "rest_state")


def _check_compressed(compressed: Any) -> None:
    if isinstance(compressed, type) or not all(hasattr(compressed, a) for a in _FIELDS):
        raise TypeError(f"compressed must be a wsq.Compressed, got {type(compressed).__name__}")


def file_size(compressed: Any, coder: str = "auto") -> int:
    """Exact size in bytes of the file ``save(compressed, path, coder=coder)`` writes.

    The streams' lengths and CRCs are cached on the object (a following save encodes each
    stream once more, the chosen coder only, to write it).
    """
    _check_compressed(compressed)
    header, chunks = _layout(compressed, _check_coder(coder), sizes_only=True)
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
    # coded streams go to an anonymous spool file beside the target as they are made, so a save
    # holds one stream at a time; the file is then written header first, as before
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.TemporaryFile(dir=directory) as spool:
        _SAVING.spool = spool  # per thread: _layout keeps its (compressed, coder) signature
        try:
            header, chunks = _layout(compressed, coder)
        finally:
            _SAVING.spool = None
        _write_atomic(path, header, chunks, spool)
