"""The methods a user would pick instead of wsq, with the same honest size accounting (issue 6).

* k-means weight sharing (Deep Compression style, no retraining): one global codebook for the whole
  pool, or one codebook per layer; fitted with scikit-learn's KMeans as users run it (k-means++,
  n_init="auto", random_state 0) -- on a random subsample when the pool is too large for a run of
  this script, said in the row -- and with an exact-Lloyd 1-D k-means on sorted data
  (:func:`kmeans1d`: one sort, then O(k log N) per iteration from prefix sums).
* per-output-channel symmetric round-to-nearest int8 / int4 (scale = max |w| of the row / qmax).

Sizes are real files. Global k-means is a wsq.Compressed saved by wsq.io (one codebook). The other
peers are written as safetensors files holding exactly what they need: each tensor's codes as a
wsq.entropy stream (the smaller of Huffman and ANS per stream, as wsq.save does), its float32
codebook or per-row float32 scales, and every uncompressed tensor; the file's size on disk is the
size reported.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np
import torch

import wsq
from wsq import entropy
from wsq.core.pool import Pool, collect_pool
from wsq.kernels import ops

# ----------------------------------------------------------------------------- 1-D k-means


def kmeans1d(x: np.ndarray, k: int, *, max_iter: int = 300) -> tuple[np.ndarray, float]:
    """Lloyd's k-means on 1-D data, exact (no sampling, no histogram): wsq.core.tables.lloyd1d
    (what wsq's Lloyd-tables method fits each tensor with). Returns (centers float64 (n,),
    ascending, every cluster non-empty; SSE of the partition)."""
    from wsq.core.tables import lloyd1d

    return lloyd1d(x, k, max_iter=max_iter)


def nearest(x: torch.Tensor, centers: np.ndarray) -> torch.Tensor:
    """int32 index of the nearest center (ascending centers; ties go to the lower one)."""
    c = torch.as_tensor(np.asarray(centers, dtype=np.float32))
    if c.numel() == 1:
        return torch.zeros(x.numel(), dtype=torch.int32)
    mid = 0.5 * (c[1:] + c[:-1])
    return torch.bucketize(x.reshape(-1), mid, right=False).to(torch.int32)


def sklearn_kmeans(x: np.ndarray, k: int, *, sample: int | None, seed: int = 0):
    """scikit-learn KMeans as users run it; returns (centers ascending, fit seconds, n fitted)."""
    from sklearn.cluster import KMeans

    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if sample is not None and x.size > sample:
        x = np.random.default_rng(seed).choice(x, size=sample, replace=False)
    km = KMeans(n_clusters=int(min(k, np.unique(x).size)), random_state=seed, n_init="auto")
    t = time.perf_counter()
    km.fit(x.reshape(-1, 1))
    dt = time.perf_counter() - t
    return np.sort(km.cluster_centers_.reshape(-1).astype(np.float64)), dt, int(x.size)


# ----------------------------------------------------------------------------- honest files


def _rest_tensors(model: torch.nn.Module, pooled: set[str]) -> dict[str, torch.Tensor]:
    """Every state_dict entry that is not pooled, tied entries once (what a file must hold)."""
    out, seen = {}, set()
    for name, t in model.state_dict(keep_vars=False).items():
        if name in pooled:
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().contiguous()
    return out


def original_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer a dense file holds, tied once (wsq's stats rule)."""
    return sum(t.numel() * t.element_size() for t in _rest_tensors(model, set()).values())


def write_safetensors(
    tensors: dict[str, torch.Tensor], meta: dict, directory: str, tag: str
) -> int:
    """Write a real safetensors file and return its size in bytes."""
    from safetensors.torch import save_file

    path = os.path.join(directory, f"{tag}.safetensors")
    save_file(tensors, path, metadata={"peer": json.dumps(meta, sort_keys=True)})
    size = os.path.getsize(path)
    os.unlink(path)
    return size


def _stream(symbols: torch.Tensor, n_symbols: int) -> torch.Tensor:
    """The wsq.entropy stream (auto coder) of integer symbols 0..n_symbols-1, as a U8 tensor."""
    dt = np.uint8 if n_symbols <= 256 else np.uint16
    s = symbols.reshape(-1).numpy().astype(dt)
    return torch.frombuffer(bytearray(entropy.encode(s, n_symbols, "auto")), dtype=torch.uint8)


def dense_file_bytes(model: torch.nn.Module, directory: str) -> int:
    """Size of the model's plain safetensors file (the baseline's real file)."""
    return write_safetensors(_rest_tensors(model, set()), {"method": "dense"}, directory, "dense")


def packed_file_bytes(c: wsq.Compressed, directory: str) -> int:
    """Size of a real file of the paper's fixed-length form: float32 codebook, each tensor's
    indices packed at ceil(log2 n) bits (no entropy coding), every other tensor as is."""
    t = {"wsq.codebook": c.codebook.contiguous()}
    for name in c.quantized:
        t["wsq.packed." + name] = c.global_packed(name).contiguous()
    for name, v in c.rest_state().items():
        t[name] = v.detach().cpu().contiguous()
    meta = {"bits": c.bits, "shapes": {n: list(q.shape) for n, q in c.quantized.items()}}
    return write_safetensors(t, meta, directory, "packed")


# ----------------------------------------------------------------------------- peers


def _codes_bits(streams: dict[str, torch.Tensor]) -> int:
    return 8 * sum(int(s.numel()) for s in streams.values())


def per_layer_file(
    model: torch.nn.Module,
    pool: Pool,
    codes: list[torch.Tensor],
    tables: list[torch.Tensor],
    n_symbols: list[int],
    kind: str,
    directory: str,
) -> tuple[int, int]:
    """(file bytes, coded index bits) of a per-tensor-table peer: stream + table per tensor."""
    t: dict[str, torch.Tensor] = {}
    meta = {"kind": kind, "tensors": {}}
    pooled = set()
    streams = {}
    for e, c, tab, ns in zip(pool.entries, codes, tables, n_symbols, strict=True):
        streams[e.name] = _stream(c, ns)
        t["codes." + e.name] = streams[e.name]
        t["table." + e.name] = tab.to(torch.float32).contiguous()
        meta["tensors"][e.name] = {"shape": list(e.shape), "n_symbols": ns, "names": list(e.names)}
        pooled.update(e.names)
    t.update(_rest_tensors(model, pooled))
    return write_safetensors(t, meta, directory, kind), _codes_bits(streams)


def int_rtn(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-output-channel (dim 0) symmetric RTN: (codes 0..2*qmax, scales (rows,), dequantized)."""
    qmax = (1 << (bits - 1)) - 1
    w2 = w.reshape(w.shape[0], -1).float()
    scale = w2.abs().amax(1) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(w2 / scale[:, None]), -qmax, qmax)
    return (q + qmax).to(torch.int64), scale, (q * scale[:, None]).reshape(w.shape)


def write_pool(pool: Pool, work: torch.nn.Module, dense: list[torch.Tensor]) -> None:
    """Write dequantized pooled tensors into a working copy, in place."""
    with torch.no_grad():
        for p, d in zip(pool.tensors(work), dense, strict=True):
            p.data.copy_(d.reshape(p.shape).to(p.dtype))


def global_codebook_compressed(
    model: torch.nn.Module, pool: Pool, flat: torch.Tensor, centers: np.ndarray
) -> wsq.Compressed:
    """A real wsq.Compressed with a given global codebook (nearest-center assignment)."""
    idx = nearest(flat, centers)
    used = torch.bincount(idx.to(torch.int64), minlength=len(centers)) > 0
    remap = torch.cumsum(used.to(torch.int64), 0) - 1
    idx = remap[idx.to(torch.int64)].to(torch.int32)
    cb = torch.as_tensor(np.asarray(centers, dtype=np.float32))[used]
    bits = ops.bits_for(int(cb.numel()))
    packed = {e.name: ops.pack(idx[e.offset : e.offset + e.numel], bits) for e in pool.entries}
    shell = wsq.compress(model, 2)
    return shell.with_indices(cb, bits, packed)


def _sse_of(x: torch.Tensor, centers: np.ndarray) -> float:
    c = torch.as_tensor(np.asarray(centers, dtype=np.float64))
    return float(((x.double() - c[nearest(x, centers).to(torch.int64)]) ** 2).sum())


def run_peers(
    task,
    *,
    ks: list[int],
    sample: int | None,
    layer_sample: int | None,
    directory: str,
    log=print,
    include_sklearn: bool = True,
    threshold: float | None = None,
    k_max: int = 1024,
) -> list[dict]:
    """Every peer point on `task` (see the module docstring). Each dict: method, k, n_bins,
    bits_fixed, bits, file_bytes, cr, decide, report, time_s, notes. With `threshold` (wsq's
    bar: baseline - tolerance on the decision data) the exact 1-D k-means, global and per layer,
    also get k tuned to it (smallest_k); those rows have tuned=True."""
    import copy

    model = task.model
    pool = collect_pool(model)
    flat = pool.flat().cpu()
    x = flat.numpy()
    orig = original_bytes(model)
    work = copy.deepcopy(model)
    out: list[dict] = []

    def score(dense: list[torch.Tensor]) -> tuple[float, float]:
        write_pool(pool, work, dense)
        with torch.no_grad():
            return float(task.decide(work)), float(task.report(work))

    def slices(v: torch.Tensor) -> list[torch.Tensor]:
        return [v[e.offset : e.offset + e.numel] for e in pool.entries]

    def add(row: dict) -> None:
        row["cr"] = orig / row["file_bytes"]
        out.append(row)
        log(
            f"  {row['method']:<28} k={row.get('k', '-')!s:>5} bits={row['bits']:.3f} "
            f"CR={row['cr']:.2f} decide={row['decide']:.4f} report={row['report']:.4f} "
            f"t={row['time_s']:.2f}s"
        )

    def global_point(k: int, label: str, samp: int | None) -> dict:
        t0 = time.perf_counter()
        if label.startswith("sklearn"):
            centers, fit_s, n_fit = sklearn_kmeans(x, k, sample=samp)
        else:
            centers, _ = kmeans1d(x, k)
            fit_s, n_fit = time.perf_counter() - t0, x.size
        c = global_codebook_compressed(model, pool, flat, centers)
        total_s = time.perf_counter() - t0
        st = c.stats()
        dec, rep = score([d.reshape(-1) for d in _dense_pool(c, pool)])
        note = f"fitted on {n_fit:,} of {x.size:,} weights" if n_fit < x.size else ""
        return dict(method=f"{label}, global", k=k, n_bins=st["n_bins"], bits_fixed=st["bits_fixed"],
                    bits=st["bits_entropy"], file_bytes=st["file_bytes"], decide=dec, report=rep,
                    time_s=total_s, fit_s=fit_s, n_fit=n_fit, notes=note,
                    sse=_sse_of(flat, centers))  # fmt: skip

    def layer_point(k: int, label: str, samp: int | None) -> dict:
        # one codebook per layer
        t0 = time.perf_counter()
        codes, tables, ns, dense, fit_total, nf = [], [], [], [], 0.0, 0
        for w in slices(flat):
            xw = w.numpy()
            if label.startswith("sklearn"):
                cw, fs, n_f = sklearn_kmeans(xw, k, sample=samp)
            else:
                t1 = time.perf_counter()
                cw, _ = kmeans1d(xw, k)
                fs, n_f = time.perf_counter() - t1, xw.size
            fit_total += fs
            nf += n_f
            idx = nearest(w, cw).to(torch.int64)
            tab = torch.as_tensor(cw, dtype=torch.float32)
            codes.append(idx)
            tables.append(tab)
            ns.append(int(tab.numel()))
            dense.append(tab[idx])
        fb, cbits = per_layer_file(model, pool, codes, tables, ns, "kmeans_layer", directory)
        total_s = time.perf_counter() - t0
        dec, rep = score(dense)
        note = f"fitted on {nf:,} of {x.size:,} weights" if nf < x.size else ""
        return dict(method=f"{label}, per layer", k=k, n_bins=int(sum(ns)),
                    bits_fixed=float(np.mean([ops.bits_for(n) for n in ns])),
                    bits=cbits / x.size, file_bytes=fb, decide=dec, report=rep, time_s=total_s,
                    fit_s=fit_total, n_fit=nf, notes=note)  # fmt: skip

    fitters = [("1-D k-means (exact Lloyd)", None)]
    if include_sklearn:
        fitters.insert(0, ("sklearn KMeans", sample))
    for k in ks:
        for label, samp in fitters:
            add(global_point(k, label, samp))
            add(layer_point(k, label, layer_sample if label.startswith("sklearn") else None))
    if threshold is not None:
        # the peers at wsq's quality bar: the smallest k whose decision score passes it
        label = "1-D k-means (exact Lloyd)"
        for make in (global_point, layer_point):
            row, tried = smallest_k(lambda k, f=make: f(k, label, None), threshold, k_max)
            if row is None:
                log(f"  {label} ({make.__name__}): no k <= {k_max} reaches {threshold:.6g}")
                continue
            row = dict(row, method=row["method"] + ", k tuned to the tolerance", tuned=True,
                       notes=f"smallest k with decision >= {threshold:.6g}; k tried: "
                       + ", ".join(str(k) for k in sorted(tried)))  # fmt: skip
            add(row)
    for b in (8, 4):
        t0 = time.perf_counter()
        codes, scales, dense = [], [], []
        for e, w in zip(pool.entries, slices(flat), strict=True):
            q, s, d = int_rtn(w.reshape(e.shape), b)
            codes.append(q)
            scales.append(s)
            dense.append(d.reshape(-1))
        ns = [(1 << b) - 1] * len(codes)
        fb, cbits = per_layer_file(model, pool, codes, scales, ns, f"int{b}", directory)
        total_s = time.perf_counter() - t0
        dec, rep = score(dense)
        add(dict(method=f"int{b} per-channel RTN", k=(1 << b) - 1, n_bins=(1 << b) - 1,
                 bits_fixed=b, bits=cbits / x.size, file_bytes=fb, decide=dec, report=rep,
                 time_s=total_s, fit_s=total_s, n_fit=x.size,
                 notes="float32 scale per output channel"))  # fmt: skip
    return out


def smallest_k(make, threshold: float, k_max: int) -> tuple[dict | None, dict[int, dict]]:
    """The smallest k in [2, k_max] whose ``make(k)["decide"] >= threshold``: doubling from 2,
    then bisection (the score is taken as non-decreasing in k). Returns (row or None, {k: row})."""
    tried: dict[int, dict] = {}

    def ok(k: int) -> bool:
        if k not in tried:
            tried[k] = make(k)
        return tried[k]["decide"] >= threshold

    lo, k = 1, 2
    while not ok(k):
        lo = k
        if k >= k_max:
            return None, tried
        k = min(2 * k, k_max)
    hi = k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return tried[hi], tried


def _dense_pool(c: wsq.Compressed, pool: Pool) -> list[torch.Tensor]:
    sd = c.dequantized_state_dict()
    return [sd[e.name].detach().float().reshape(-1) for e in pool.entries]


def default_tmp() -> str:
    return tempfile.mkdtemp(prefix="wsq_results_")
