"""Writing wsq files: the layout of a compressed model (wsq.compressed.layout) written atomically
(temp file beside the target, fsync, os.replace), its coded streams spooled to a temporary file
as they are made so a save holds one stream at a time."""

from __future__ import annotations

import os
import secrets
import tempfile
from typing import Any

from wsq.compressed.layout import SpooledStream, check_coder, check_compressed, layout


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
                if isinstance(c, SpooledStream):  # a coded stream: copied from the spool in pieces
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


def save(compressed: Any, path: str | os.PathLike, *, coder: str = "auto") -> None:
    """Write `compressed` to `path` as a wsq file (a safetensors file; the format is described in wsq.container).

    coder: "ans", "huffman", or "auto" (per stream, whichever is smaller). The write is atomic
    (temp file in the same directory, fsync, rename) and deterministic: saving the same model twice
    gives byte-identical files. ValueError if path is a directory or coder is unknown.
    """
    check_compressed(compressed)
    coder = check_coder(coder)
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
        header, chunks = layout(compressed, coder, spool=spool)
        _write_atomic(path, header, chunks, spool)
