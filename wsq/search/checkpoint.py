"""Checkpoint files of :func:`wsq.search`: JSON + .npz snapshots and a JSON-lines evaluation journal.

No pickle anywhere: metadata is JSON, arrays are ``np.savez`` loaded with ``allow_pickle=False``.

Files for a prefix P (``checkpoint="dir/"`` or an existing directory uses P = ``dir/search``):

* ``P.json``: metadata (format, version, config, baseline, generations done, ...) and the name and
  SHA-256 of the snapshot's arrays file. Replaced atomically (temp file + os.replace) after the
  arrays file is complete, so it never points at a partial snapshot.
* ``P.gNNNNN.npz``: the population (X, F) after generation NNNNN and the whole evaluation cache.
  The previous one is deleted only after the new JSON is in place.
* ``P.evals.jsonl``: one line per evaluation finished since the last snapshot, flushed as each
  finishes, so a kill mid-generation loses no finished evaluation. Emptied after each snapshot
  (entries duplicated by a kill in between are harmless: replay skips keys already cached).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np

from wsq.errors import FormatError
from wsq.search.problem import Record

FORMAT = "wsq-search-checkpoint"
VERSION = 1
_REC_FIELDS = ("metric", "bits", "n_bins", "t_hist", "t_write", "t_eval")


def _rec_row(rec: Record) -> list[float]:
    return [float(getattr(rec, f)) for f in _REC_FIELDS]


def _row_rec(row) -> Record:
    v = [float(x) for x in row]
    return Record(v[0], v[1], int(v[2]), v[3], v[4], v[5])


def _atomic_write(path: str, write) -> None:
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Checkpoint:
    """One search's checkpoint files (see the module docstring)."""

    def __init__(self, path) -> None:
        p = os.fspath(path)
        if not isinstance(p, str) or not p:
            raise TypeError(f"checkpoint must be a path, got {path!r}")
        if os.path.isdir(p) or p.endswith(("/", os.sep)):
            os.makedirs(p, exist_ok=True)
            base = os.path.join(p, "search")
        else:
            parent = os.path.dirname(p)
            if parent:
                os.makedirs(parent, exist_ok=True)
            base = p
        self.base = base
        self.json_path = base + ".json"
        self.journal_path = base + ".evals.jsonl"
        self._journal = None

    def exists(self) -> bool:
        return os.path.exists(self.json_path)

    def _npz_name(self, generation: int) -> str:
        return os.path.basename(self.base) + f".g{generation:05d}.npz"

    # -------------------------------------------------------------------------- writing

    def save(
        self,
        meta: dict,
        pop_x: np.ndarray,
        pop_f: np.ndarray,
        cache: dict,
        generations_of: dict,
    ) -> None:
        """Snapshot after a generation: arrays file, then JSON (atomic), then journal emptied."""
        n_var = len(meta["config"]["variables"])
        keys = list(cache)
        arrays = {
            "pop_x": np.asarray(pop_x, dtype=np.int64).reshape(-1, n_var),
            "pop_f": np.asarray(pop_f, dtype=np.float64).reshape(-1, 2),
            "cache_x": np.asarray(keys, dtype=np.int64).reshape(-1, n_var),
            "cache_v": np.asarray([_rec_row(cache[k]) for k in keys], dtype=np.float64).reshape(
                -1, len(_REC_FIELDS)
            ),
            "cache_g": np.asarray([generations_of[k] for k in keys], dtype=np.int64),
        }
        name = self._npz_name(int(meta["generation"]))
        npz_path = os.path.join(os.path.dirname(self.json_path), name)
        _atomic_write(npz_path, lambda f: np.savez(f, **arrays))
        old = self._current_npz()
        meta = dict(meta, format=FORMAT, version=VERSION, npz=name, npz_sha256=_sha256(npz_path))
        text = json.dumps(meta, indent=1, sort_keys=True).encode()
        _atomic_write(self.json_path, lambda f: f.write(text))
        if old is not None and old != npz_path and os.path.exists(old):
            os.unlink(old)
        if self._journal is not None:
            self._journal.seek(0)
            self._journal.truncate()
            self._journal.flush()
        elif os.path.exists(self.journal_path):
            open(self.journal_path, "w").close()

    def _current_npz(self) -> str | None:
        if not self.exists():
            return None
        try:
            with open(self.json_path) as f:
                name = json.load(f).get("npz")
        except (OSError, ValueError):
            return None
        return os.path.join(os.path.dirname(self.json_path), name) if name else None

    def append(self, key: tuple[int, ...], rec: Record, generation: int) -> None:
        """Record one finished evaluation (flushed at once: survives a kill of this process)."""
        if self._journal is None:
            self._journal = open(self.journal_path, "a")  # noqa: SIM115 - held for the run
        line = json.dumps({"x": list(key), "v": _rec_row(rec), "g": int(generation)})
        self._journal.write(line + "\n")
        self._journal.flush()

    def remove(self) -> None:
        """Delete this checkpoint's files (a fresh start with resume=False)."""
        self.close()
        for p in (self._current_npz(), self.json_path, self.journal_path):
            if p is not None and os.path.exists(p):
                os.unlink(p)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    # -------------------------------------------------------------------------- reading

    def load(self) -> tuple[dict, dict, dict, dict]:
        """(meta, arrays, cache, generations_of) from the snapshot; FormatError if it is damaged."""
        where = self.json_path
        try:
            with open(where) as f:
                meta = json.load(f)
        except ValueError as e:
            raise FormatError(f"{where}: not valid JSON ({e})") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise FormatError(f"{where}: not a wsq search checkpoint (format field)")
        if meta.get("version") != VERSION:
            raise FormatError(f"{where}: version {meta.get('version')!r}, expected {VERSION}")
        for field in ("config", "generation", "baseline", "npz", "npz_sha256", "n_requested"):
            if field not in meta:
                raise FormatError(f"{where}: missing field {field!r}")
        name = meta["npz"]
        if not isinstance(name, str) or os.path.basename(name) != name:
            raise FormatError(f"{where}: field 'npz' must be a file name, got {name!r}")
        npz_path = os.path.join(os.path.dirname(where), name)
        if not os.path.exists(npz_path):
            raise FormatError(f"{npz_path}: snapshot arrays file is missing")
        if _sha256(npz_path) != meta["npz_sha256"]:
            raise FormatError(f"{npz_path}: checksum does not match {where}")
        with np.load(npz_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        n_var = len(meta["config"]["variables"])
        shapes = {
            "pop_x": (None, n_var),
            "pop_f": (None, 2),
            "cache_x": (None, n_var),
            "cache_v": (None, len(_REC_FIELDS)),
            "cache_g": (None,),
        }
        for k, shape in shapes.items():
            a = arrays.get(k)
            if (
                a is None
                or a.ndim != len(shape)
                or any(s is not None and s != d for s, d in zip(shape, a.shape, strict=True))
            ):
                raise FormatError(f"{npz_path}: array {k!r} missing or of the wrong shape")
        n = arrays["cache_x"].shape[0]
        if arrays["cache_v"].shape[0] != n or arrays["cache_g"].shape[0] != n:
            raise FormatError(f"{npz_path}: cache arrays disagree in length")
        cache, gens = {}, {}
        for x, v, g in zip(arrays["cache_x"], arrays["cache_v"], arrays["cache_g"], strict=True):
            key = tuple(int(t) for t in x)
            cache[key] = _row_rec(v)
            gens[key] = int(g)
        return meta, arrays, cache, gens

    def journal(self) -> list[tuple[tuple[int, ...], Record, int]]:
        """Evaluations finished after the snapshot; a torn last line (killed mid-write) is skipped."""
        if not os.path.exists(self.journal_path):
            return []
        with open(self.journal_path) as f:
            lines = f.read().split("\n")
        out = []
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                key = tuple(int(t) for t in d["x"])
                out.append((key, _row_rec(d["v"]), int(d["g"])))
            except (ValueError, KeyError, TypeError, IndexError) as e:
                if n >= len(lines) - 2:  # the last line: torn by a kill
                    break
                raise FormatError(f"{self.journal_path}: line {n + 1} is damaged ({e})") from e
        return out
