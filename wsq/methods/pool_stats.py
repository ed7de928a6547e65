"""What a search measures of the pool once, before any candidate: the bytes of the tensors it does
not compress, a wsq file's fixed overhead, the pool's fingerprint (a checkpoint's identity) and its
exact median (the centre of the range variables)."""

from __future__ import annotations

import hashlib

import torch

from wsq.compressed.ties import view_key
from wsq.kernels import ops

__all__ = ["state_bytes", "file_overhead", "file_sizes", "pool_fingerprint", "pool_median"]


def state_bytes(model: torch.nn.Module, skip: set[str]) -> int:
    """Bytes of the state_dict tensors not named in `skip`, each storage view counted once."""
    seen, total = set(), 0
    for name, t in model.state_dict(keep_vars=True).items():
        if name in skip:
            continue
        key = view_key(t)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def file_overhead(model, k: int, pool_options: dict, coder: str, rest_bytes: int) -> int:
    """Bytes of a wsq file beyond index streams, codebook and uncompressed tensors (its header and
    alignment), measured by compressing at one k: it hardly depends on k (a few bytes of JSON)."""
    from wsq.core.compress import uniform_compress
    from wsq.core.streaming import trim_heap

    s = uniform_compress(model, k, **pool_options).stats("auto" if coder == "entropy" else coder)
    trim_heap()  # the coders' buffers, freed: not held through the candidates that follow
    streams = s["bits_entropy"] * s["n_weights"] / 8
    return max(0, int(round(s["file_bytes"] - streams - 4 * s["n_bins"] - rest_bytes)))


def file_sizes(model, pool, pool_options: dict, coder: str) -> tuple[int, int, int]:
    """(original bytes, bytes of the tensors not pooled, a file's overhead) for a search: what
    each candidate's all-in compression ratio is measured against. The overhead is measured at
    k = 2 (1-bit streams): it is the header, and compressing at k = 64 only for it held the model's
    6-bit copy (0.2x dense)."""
    pooled_names = {n for e in pool.entries for n in e.names}
    pooled = sum(e.numel * torch.empty(0, dtype=e.dtype).element_size() for e in pool.entries)
    rest = state_bytes(model, pooled_names)
    return pooled + rest, rest, file_overhead(model, 2, pool_options, coder, rest)


def pool_fingerprint(pool, source) -> str:
    """Digest of the pool's names, shapes, dtypes and float32 weights, fed one tensor at a time
    (the same digest as of the concatenated pool: blake2b is a stream)."""
    h = hashlib.blake2b(digest_size=16)
    for e in pool.entries:
        h.update(f"{','.join(e.names)}:{tuple(e.shape)}:{e.dtype};".encode())
    for i in range(len(source)):
        h.update(source.weights(i).detach().float().cpu().contiguous().numpy())
    return h.hexdigest()


def pool_median(source, n: int, wmin: float, wmax: float) -> float:
    """The pool's lower median (``torch.median`` of the concatenated float32 pool), exactly, in two
    passes: a 65536-bin histogram finds the bin holding rank (n - 1) // 2, then only that bin's
    members are gathered and sorted."""
    k = 65536
    lo32, scale = ops.bin_scale(wmin, wmax, k)
    counts = sum(
        ops.histogram(source.weights(i), k, lo32, scale)[0].cpu() for i in range(len(source))
    )
    rank = (n - 1) // 2
    cum = torch.cumsum(counts, 0)
    b = int(torch.searchsorted(cum, torch.tensor([rank]), right=True)[0])
    before = int(cum[b - 1]) if b > 0 else 0
    members = []
    for i in range(len(source)):
        w = source.weights(i)
        idx = ops.histogram(w, k, lo32, scale, indices=True)[2]
        members.append(w[idx.reshape(w.shape).to(torch.int64) == b].float().cpu())
    return float(torch.cat(members).sort().values[rank - before])
