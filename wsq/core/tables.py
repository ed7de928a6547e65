"""Per-tensor Lloyd tables on one shared codebook, widths from sensitivities at a bit budget.

What a wsq model holds in memory is, per tensor, indices at the width of the values the tensor
uses plus its table (a gather of the ONE shared codebook). The cheapest way to spend a memory
budget is then to give each tensor the 2**b values that minimise its own squared error (1-D
Lloyd / k-means on the tensor, exact), and to choose the widths b_t where the metric is sensitive:

* tables: for each pooled tensor and each width b in [min_bits, max_bits], exact 1-D Lloyd with
  2**b centers (:func:`lloyd1d`: one sort, then O(k log N) per iteration from prefix sums);
* sensitivities: as the grid method measures them (wsq.core.grid.probe_sensitivity: one evaluation
  per tensor, the tensor alone rounded at a probe step); the predicted metric drop of tensor t at
  width b is ``12 s_t sse_t(b) / n_t`` (s_t is the drop per step^2 of a rounding whose mean squared
  error is step^2 / 12);
* widths: greedy marginal allocation -- start every tensor at min_bits, then repeatedly widen the
  tensor with the largest predicted drop saved per extra bit held (indices plus table) while the
  budget allows (a convex-hull walk: near-optimal because Lloyd's error falls ~4x per bit);
* one codebook: the union of every tensor's centers (float32, ascending); each tensor's indices
  point into it, and wsq's layers hold each tensor at its own width (Compressed.with_indices).

So the file is an ordinary wsq file (one shared codebook, entropy-coded index streams) and the
loaded model runs on the LUT kernels at the widths chosen here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from wsq.compressed import Compressed
from wsq.core.compress import uniform_compress
from wsq.core.grid_quant import GridQuantizer
from wsq.kernels import ops

__all__ = ["lloyd1d", "allocate_widths", "lloyd_tables"]


def lloyd1d(x: np.ndarray, k: int, *, max_iter: int = 300) -> tuple[np.ndarray, float]:
    """Lloyd's k-means on 1-D data, exact (no sampling, no histogram).

    In 1-D every cluster of a Lloyd fixed point is a contiguous run of the sorted data, so after
    one sort each iteration needs only the k-1 boundaries (midpoints between centers, found by
    binary search) and the run sums from prefix sums. Two starts (equal-count quantiles and
    equal-width over the range) run to convergence; the one with the lower squared error is kept.

    Args:
        x: (N,) float data, N >= 1. k: clusters (>= 1; fewer when x has fewer distinct values).

    Returns:
        (centers float64 (n,), ascending, every cluster non-empty; sum of squared errors).
    """
    xs = np.sort(np.asarray(x, dtype=np.float64).reshape(-1))
    n = xs.size
    if n == 0:
        raise ValueError("x is empty")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    k = int(min(k, np.unique(xs).size))
    s1 = np.concatenate([[0.0], np.cumsum(xs)])
    s2 = np.concatenate([[0.0], np.cumsum(xs * xs)])

    def runs(c: np.ndarray) -> np.ndarray:
        cut = np.searchsorted(xs, 0.5 * (c[1:] + c[:-1]), side="right")
        b = np.concatenate([[0], cut, [n]])
        return np.concatenate([[0], b[1:][np.diff(b) > 0]])  # empty runs dropped

    def solve(c: np.ndarray) -> tuple[np.ndarray, float]:
        c = np.unique(c)
        for _ in range(max_iter):
            b = runs(c)
            new = (s1[b[1:]] - s1[b[:-1]]) / np.diff(b)
            if new.size == c.size and np.array_equal(new, c):
                break
            c = new
        b = runs(c)
        cnt = np.diff(b)
        sm = s1[b[1:]] - s1[b[:-1]]
        sse = float(np.sum((s2[b[1:]] - s2[b[:-1]]) - sm * sm / cnt))
        return sm / cnt, max(sse, 0.0)

    q = xs[np.minimum(n - 1, ((np.arange(k) + 0.5) * n / k).astype(np.int64))]
    w = xs[0] + (np.arange(k) + 0.5) * (xs[-1] - xs[0]) / k
    return min((solve(q), solve(w)), key=lambda r: r[1])


def _held_bits(numel: int, b: int) -> int:
    """Bits a wsq layer holds for a tensor at width b: packed indices plus a 2**b float32 table."""
    return 8 * ops.packed_bytes(numel, b) + 32 * (1 << b)


def allocate_widths(
    numel: Sequence[int],
    drops: np.ndarray,
    budget: float,
    *,
    min_bits: int,
) -> np.ndarray:
    """Widths (int (T,)) minimising the predicted drop ``sum_t drops[t, b_t - min_bits]`` with
    the bits held in memory (indices + tables) <= budget * sum(numel).

    `drops` (T, B): the predicted drop of tensor t at width min_bits + j (non-increasing in j).
    Greedy: from min_bits everywhere, widen the tensor saving the most predicted drop per extra
    bit while the budget allows; a tensor whose next step does not fit is skipped, not stopped at.
    Raises ValueError (naming `budget`) when even min_bits everywhere does not fit.
    """
    n = np.asarray(numel, dtype=np.int64)
    d = np.asarray(drops, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != n.size:
        raise ValueError(f"drops must have shape ({n.size}, B), got {d.shape}")
    total = budget * float(n.sum())
    b = np.full(n.size, min_bits, dtype=np.int64)
    used = float(sum(_held_bits(int(m), min_bits) for m in n))
    if used > total + 1e-6:
        raise ValueError(
            f"budget {budget} bits/weight is below what {min_bits}-bit indices and tables hold "
            f"({used / n.sum():.4f} bits/weight); raise budget or lower min_bits"
        )
    top = min_bits + d.shape[1] - 1
    while True:
        best, best_gain = -1, 0.0
        for t in range(n.size):
            if b[t] >= top:
                continue
            extra = _held_bits(int(n[t]), int(b[t]) + 1) - _held_bits(int(n[t]), int(b[t]))
            if used + extra > total + 1e-6:
                continue
            j = b[t] - min_bits
            gain = (d[t, j] - d[t, j + 1]) / extra
            if gain > best_gain:
                best, best_gain = t, gain
        if best < 0:
            return b
        used += _held_bits(int(n[best]), int(b[best]) + 1) - _held_bits(int(n[best]), int(b[best]))
        b[best] += 1


def _assemble(gq, fits, widths, model, include, exclude, min_dims) -> Compressed:
    """The Compressed holding each tensor's chosen table, all in one shared codebook."""
    # one shared codebook: the union of the chosen tables (float32, ascending)
    tables = [
        torch.as_tensor(fits[i][int(w)][0], dtype=torch.float32) for i, w in enumerate(widths)
    ]
    codebook = torch.unique(torch.cat(tables))  # sorted
    gbits = ops.bits_for(int(codebook.numel()))
    packed = {}
    for i, e in enumerate(gq.entries):
        tab = tables[i]
        w = gq.weights(i)
        local = torch.bucketize(w, 0.5 * (tab[1:] + tab[:-1])) if tab.numel() > 1 else None
        glob = torch.searchsorted(codebook, tab).to(torch.int32)
        idx = glob[local] if local is not None else glob.expand(w.numel()).contiguous()
        packed[e.name] = ops.pack(idx, gbits)
        del w, local, idx
    shell = uniform_compress(model, 2, include=include, exclude=exclude, min_dims=min_dims)
    return shell.with_indices(codebook, gbits, packed)


def lloyd_tables(
    model: torch.nn.Module,
    bits: int | None = None,
    *,
    budget: float | None = None,
    evaluate: Callable[[torch.nn.Module], float] | None = None,
    sensitivities: np.ndarray | None = None,
    min_bits: int | None = None,
    max_bits: int | None = None,
    probe_step: float = 0.5,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    min_dims: int = 2,
) -> Compressed:
    """Compress `model` with a Lloyd table per tensor, all drawn from one shared codebook.

    Either every tensor at ``bits`` (2**bits Lloyd centers each), or widths chosen per tensor so
    that the model holds at most ``budget`` bits per pooled weight in memory (indices plus tables,
    as ``stats()["bits_memory"]`` counts them), spending them where ``evaluate`` (probed once per
    tensor; or given ``sensitivities`` from wsq.core.grid.probe_sensitivity) says the metric is
    sensitive. ``model`` is not modified (the probe rounds one tensor at a time and restores it).

    The probe measures each tensor at one small error and the allocation extrapolates linearly, so
    widths far from the budget are guesses: by default a budget B gives widths within
    floor(B) - 1 .. floor(B) + 1 ("spread"). With ``evaluate`` the spread allocation is also
    scored against "flat" widths (floor(B), the least sensitive tensors one bit narrower where
    the tables do not fit) and the better on ``evaluate`` is kept (two more evaluations), so a
    probe that misleads costs at most the flat allocation.

    Args:
        model: any nn.Module; pooled as wsq.compress pools it (include/exclude/min_dims).
        bits: one width for every tensor (1..16), or None with ``budget``.
        budget: average bits per pooled weight in memory (> min_bits; needs evaluate or
            sensitivities).
        evaluate: ``evaluate(model) -> float``, higher is better; only probes sensitivities.
        sensitivities: float64 (T,) per pooled tensor (skips the probe).
        min_bits, max_bits: the widths a budget may give a tensor (1 <= min <= max <= 8; default
            floor(budget) - 1 and floor(budget) + 1 within 1..8).
        probe_step: the probe rounds tensor t to step probe_step * std(t).

    Returns:
        wsq.Compressed with ``tables_info``: widths (per pooled tensor name), sensitivities (or
        None), predicted_drop, budget, bits, chosen ("spread", "flat" or "bits"), scores
        (evaluate of each candidate when evaluate was given), probe_s, fit_s, evaluations.

    Raises:
        TypeError / ValueError naming the argument (bits and budget both or neither, a budget
        below min_bits everywhere, widths out of range, no evaluate for a budget).
    """
    from wsq.core import grid

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if (bits is None) == (budget is None):
        raise ValueError("give exactly one of bits (one width for all) or budget (bits/weight)")
    b0 = max(1, min(8, int(math.floor(budget)))) if isinstance(budget, (int, float)) else 4
    min_bits = max(1, b0 - 1) if min_bits is None else min_bits
    max_bits = min(8, b0 + 1) if max_bits is None else max_bits
    for name, v, lo, hi in (("min_bits", min_bits, 1, 8), ("max_bits", max_bits, 1, 8)):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"{name} must be an int in {lo}..{hi}, got {v!r}")
    if min_bits > max_bits:
        raise ValueError(f"min_bits ({min_bits}) must be <= max_bits ({max_bits})")
    if bits is not None and (
        isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16
    ):
        raise ValueError(f"bits must be an int in 1..16, got {bits!r}")
    if budget is not None:
        budget = grid._number("budget", budget, strict=True)
        if evaluate is None and sensitivities is None:
            raise ValueError("budget needs evaluate (to probe sensitivities) or sensitivities")
        if evaluate is not None and not callable(evaluate):
            raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}")
    gq = GridQuantizer(
        model, pool_options={"include": include, "exclude": exclude, "min_dims": min_dims}
    )
    info: dict = {"budget": budget, "bits": bits, "evaluations": 0, "probe_s": 0.0}
    t0 = time.perf_counter()
    if budget is not None and sensitivities is None:
        base = grid._finite_baseline(grid.score(evaluate, model), "evaluate")
        sensitivities = grid.probe_sensitivity(gq, evaluate, base, rel_step=probe_step)
        info["evaluations"] = 1 + len(gq.entries)
    info["probe_s"] = time.perf_counter() - t0
    if sensitivities is not None:
        sensitivities = np.asarray(sensitivities, dtype=np.float64)
        if sensitivities.shape != (len(gq.entries),):
            raise ValueError(
                f"sensitivities must have shape ({len(gq.entries)},) (one per pooled tensor), "
                f"got {sensitivities.shape}"
            )
    t0 = time.perf_counter()
    lo_b, hi_b = (bits, bits) if bits is not None else (min(min_bits, b0 - 1 or 1), max_bits)
    lo_b = max(1, lo_b)
    fits = []  # per tensor: {b: (centers, sse)}
    for i in range(len(gq.entries)):
        x = gq.weights(i).numpy()
        fits.append({b: lloyd1d(x, 1 << b) for b in range(lo_b, hi_b + 1)})
    info["scores"] = {}
    if bits is not None:
        widths = np.full(len(gq.entries), bits, dtype=np.int64)
        info.update(chosen="bits", predicted_drop=None)
        out = _assemble(gq, fits, widths, model, include, exclude, min_dims)
    else:
        drops = np.array(
            [[12.0 * sensitivities[i] * f[b][1] / gq.numel[i] for b in range(lo_b, hi_b + 1)]
             for i, f in enumerate(fits)]
        )  # fmt: skip
        drops = np.minimum.accumulate(drops, axis=1)  # Lloyd's error never rises with width
        cands = {"spread": allocate_widths(
            gq.numel, drops[:, min_bits - lo_b : max_bits - lo_b + 1], budget, min_bits=min_bits
        )}  # fmt: skip
        if evaluate is not None and b0 <= hi_b:
            lo_f = max(lo_b, b0 - 1)
            flat = allocate_widths(
                gq.numel, drops[:, lo_f - lo_b : b0 - lo_b + 1], budget, min_bits=lo_f
            )
            if not np.array_equal(flat, cands["spread"]):
                cands["flat"] = flat
        best = None
        for name, w in cands.items():
            c = _assemble(gq, fits, w, model, include, exclude, min_dims)
            if evaluate is not None and len(cands) > 1:
                info["scores"][name] = grid.score(evaluate, c.model)
                info["evaluations"] += 1
                if best is not None and not info["scores"][name] > info["scores"][best[0]]:
                    continue  # NaN or no better: the earlier candidate stays
            best = (name, w, c)
            del c
        name, widths, out = best
        info.update(
            chosen=name, predicted_drop=float(sum(drops[i, b - lo_b] for i, b in enumerate(widths)))
        )
    info.update(
        widths={e.name: int(w) for e, w in zip(gq.entries, widths, strict=True)},
        sensitivities=sensitivities, fit_s=time.perf_counter() - t0,
    )  # fmt: skip
    out.tables_info = info
    return out
