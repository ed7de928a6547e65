"""Iterative neighbour-bin merging of a compressed model's shared codebook.

Method (wsq's version of the paper's merge step): codebook entries are
merged in ADJACENT pairs, cheapest first by the count-weighted squared error a merge adds,
``n_a * n_b / (n_a + n_b) * (mu_a - mu_b) ** 2``; the merged center is the count-weighted mean
(the mean of the union of both bins' weights, so no pass over the weights is needed). A merge is
kept while ``evaluate(model) >= baseline - tolerance`` where ``baseline`` is the score of the
UNCOMPRESSED model (not a ratchet: the bar never moves). Passes repeat until a pass keeps no merge.

Speed:

* A candidate is evaluated without rebuilding anything: each wsq tensor reads its own small
  lookup table (a gather of the shared codebook), so writing the candidate centers into those
  tables (merged entries both get the merged center, indices untouched) makes the model compute
  exactly what the merged model would. Only the final state is remapped, once, on the packed
  indices (``ops.remap_packed``), each tensor repacked at the width of the merged values it uses.
* Candidates are batched and bisected (group testing): within a pass the disjoint cheapest pairs
  are tried m at a time; a batch that passes is kept whole (m doubles), a batch that fails is split
  in halves (m halves). When the first half of a failed batch passes whole, the second half is
  known to fail on top of it and is split without being evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from wsq.compressed import Compressed
from wsq.compressed.assemble import narrow

__all__ = ["merge", "merge_front"]


class _Budget(Exception):
    """Raised internally when max_evals evaluations have been spent."""


def _score(evaluate: Callable, model: torch.nn.Module, what: str) -> float:
    with torch.no_grad():
        v = evaluate(model)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise TypeError(f"evaluate({what}) must return a float, got {type(v).__name__}") from None


class _Segments:
    """The current partition of the n original codebook entries into contiguous runs.

    bounds: int64 (S+1,) run boundaries in original-entry order; count: float64 (S,) pooled
    weights per run; mean: float64 (S,) count-weighted mean of each run's weights.
    """

    def __init__(self, counts: np.ndarray, centers: np.ndarray) -> None:
        n = len(counts)
        self.bounds = np.arange(n + 1, dtype=np.int64)
        self.count = counts.astype(np.float64)
        self.mean = centers.astype(np.float64)

    def __len__(self) -> int:
        return len(self.count)

    def index(self, start: int) -> int:
        """Current run index of the run starting at original entry `start`."""
        i = int(np.searchsorted(self.bounds, start))
        assert self.bounds[i] == start
        return i

    def merged(self, i: int) -> float:
        """Count-weighted mean of runs i and i+1."""
        ca, cb = self.count[i], self.count[i + 1]
        if ca + cb == 0:  # two empty entries (possible in a hand-made codebook): keep them ordered
            return 0.5 * (self.mean[i] + self.mean[i + 1])
        return float((ca * self.mean[i] + cb * self.mean[i + 1]) / (ca + cb))

    def costs(self) -> np.ndarray:
        """(S-1,) count-weighted squared error added by merging each adjacent pair."""
        ca, cb = self.count[:-1], self.count[1:]
        tot = ca + cb
        d2 = (self.mean[1:] - self.mean[:-1]) ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tot > 0, ca * cb / np.where(tot > 0, tot, 1.0) * d2, 0.0)

    def entry_values(self, starts: list[int]) -> np.ndarray:
        """float32 (n,): each original entry's center with the pairs starting at `starts` merged."""
        vals = self.mean.copy()
        for s in starts:
            i = self.index(s)
            vals[i] = vals[i + 1] = self.merged(i)
        return np.repeat(vals, np.diff(self.bounds)).astype(np.float32)

    def commit(self, starts: list[int]) -> None:
        for i in sorted((self.index(s) for s in starts), reverse=True):
            m = self.merged(i)
            self.count[i] += self.count[i + 1]
            self.mean[i] = m
            self.count = np.delete(self.count, i + 1)
            self.mean = np.delete(self.mean, i + 1)
            self.bounds = np.delete(self.bounds, i + 1)


class _Merger:
    def __init__(self, work, seg, evaluate, threshold, max_evals, bar) -> None:
        self.work, self.seg = work, seg
        self.evaluate, self.threshold = evaluate, threshold
        self.max_evals, self.bar = max_evals, bar
        self.evaluations = 0
        self.accepted = 0
        self.rejected = 0
        self.metric: float = math.nan

    def write(self, values: np.ndarray) -> None:
        self.work._write_values(torch.from_numpy(values))

    def score(self) -> float:
        if self.max_evals is not None and self.evaluations >= self.max_evals:
            raise _Budget
        self.evaluations += 1
        v = _score(self.evaluate, self.work.model, "model")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(bins=len(self.seg), refresh=False)
        return v

    def try_pairs(self, starts: list[int]) -> bool:
        """Evaluate the current state plus the merges `starts`; keep them when they pass."""
        self.write(self.seg.entry_values(starts))
        v = self.score()
        if v >= self.threshold:  # NaN fails
            self.seg.commit(starts)
            self.accepted += len(starts)
            self.metric = v
            return True
        return False

    def bisect(self, starts: list[int], known_bad: bool = False) -> bool:
        """Keep the merges of `starts` that pass; True when all passed in one evaluation."""
        if not known_bad and self.try_pairs(starts):
            return True
        if len(starts) == 1:
            self.rejected += 1
            return False
        half = len(starts) // 2
        left_whole = self.bisect(starts[:half])
        # left passed whole on the state where the full batch failed: state + right = that state
        self.bisect(starts[half:], known_bad=left_whole)
        return False

    def run_pass(self, m: int) -> tuple[int, int]:
        """One pass over the disjoint cheapest pairs; returns (merges kept, next batch size)."""
        seg = self.seg
        if len(seg) < 2:
            return 0, m
        costs = seg.costs()
        used = np.zeros(len(seg), dtype=bool)
        pairs: list[int] = []
        for i in np.lexsort((np.arange(len(costs)), costs)):  # cost order, index on ties
            if not used[i] and not used[i + 1]:
                used[i] = used[i + 1] = True
                pairs.append(int(seg.bounds[i]))
        before = self.accepted
        pos = 0
        m = max(1, min(m, len(pairs)))
        while pos < len(pairs):
            batch = pairs[pos : pos + m]
            pos += len(batch)
            m = 2 * m if self.bisect(batch) else max(1, m // 2)
        # leave the table at the accepted state (a failed try left a candidate in it)
        self.write(seg.entry_values([]))
        return self.accepted - before, m


def _rebuild(c: Compressed, codebook: torch.Tensor, table_map: torch.Tensor) -> Compressed:
    """A new Compressed: c's model with every shared-codebook entry i standing for
    ``codebook[table_map[i]]`` (int32, old -> new), each tensor repacked at the width of the
    merged values it uses, in one pass over its packed indices."""
    narrowed = {}
    for g, m in zip(c._groups, c._maps(), strict=True):
        to_new = table_map[m.to(torch.int64)]  # this tensor's entries -> merged entries
        narrowed[id(g)] = narrow(g.packed(), g.numel, g.bits(), to_new, codebook, all_used=True)
    return c._replaced(narrowed, k=c.k, lo=c.lo, hi=c.hi)


def merge(
    compressed: Compressed,
    evaluate: Callable[[torch.nn.Module], float],
    *,
    tolerance: float = 0.0,
    baseline: float | None = None,
    reference_model: torch.nn.Module | None = None,
    max_evals: int | None = None,
    batch: int | None = None,
    progress: bool = False,
) -> Compressed:
    """Merge adjacent codebook entries while ``evaluate`` stays >= baseline - tolerance.

    Args:
        compressed: a wsq.Compressed (from wsq.compress, SearchResult.compress, wsq.load...); it
            is not modified.
        evaluate: ``evaluate(model) -> float``, higher is better; called under torch.no_grad on a
            private working copy of ``compressed.model`` (cheap: it holds packed indices).
        tolerance: allowed drop below the baseline, in the metric's units (>= 0).
        baseline: the score of the UNCOMPRESSED model. A Compressed does not keep the original
            weights, so give either ``baseline`` (e.g. ``SearchResult.baseline``) or
            ``reference_model`` (the original model; evaluate is called on it once). One of the
            two is required.
        reference_model: the original model, used only to compute the baseline.
        max_evals: stop after this many evaluations (the kept merges stay); None: no limit.
        batch: first batch size of the group testing (default: the whole first pass at once).
        progress: show a tqdm bar of evaluations.

    Returns:
        A new wsq.Compressed with ``n_after <= n`` entries at ``ceil(log2 n_after)`` bits. Its
        ``merge_info`` dict holds: evaluations (calls of evaluate, the one on the starting state
        included, the baseline's not), decisions (pair decisions made: what one evaluation per
        candidate pair would have cost), accepted, rejected, passes, n_before, n_after,
        bits_before, bits_after, baseline, threshold, metric_before, metric_after (evaluate of
        the returned model), stopped ("converged" or "max_evals").

    Raises:
        TypeError / ValueError naming the argument; TypeError if evaluate returns no number.
    """
    if not isinstance(compressed, Compressed):
        hint = ""
        if type(compressed).__name__ == "Solution":
            hint = (
                "; a Solution (e.g. SearchResult.best()) is a point of the front, not a model: "
                "pass result.compress(solution)"
            )
        raise TypeError(
            f"compressed must be a wsq.Compressed, got {type(compressed).__name__}{hint}"
        )
    if not callable(evaluate):
        raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
        raise TypeError(f"tolerance must be a number, got {type(tolerance).__name__}")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be finite and >= 0, got {tolerance}")
    for name, v in (("max_evals", max_evals), ("batch", batch)):
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int or None, got {type(v).__name__}")
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    if baseline is not None and reference_model is not None:
        raise ValueError("give baseline or reference_model, not both")
    if baseline is not None:
        if isinstance(baseline, bool) or not isinstance(baseline, (int, float)):
            raise TypeError(f"baseline must be a number, got {type(baseline).__name__}")
        baseline = float(baseline)
    elif reference_model is not None:
        if not isinstance(reference_model, torch.nn.Module):
            raise TypeError(
                f"reference_model must be a torch.nn.Module, got {type(reference_model).__name__}"
            )
        baseline = _score(evaluate, reference_model, "reference_model")
    else:
        raise ValueError(
            "merge needs the uncompressed model's score: pass baseline= (e.g. the "
            "SearchResult's .baseline) or reference_model= (the original model)"
        )
    if not math.isfinite(baseline):
        raise ValueError(f"baseline must be finite, got {baseline}")
    threshold = baseline - float(tolerance)

    counts = compressed.index_counts().numpy()
    centers = compressed.codebook.numpy()
    n_before, bits_before = len(centers), compressed.bits
    seg = _Segments(counts, centers)
    # the private working copy: candidates are written into its own tables; the packed indices
    # are only read, so it shares them with `compressed`
    work = compressed._replaced(
        {id(g): (g.packed(), g.table().clone()) for g in compressed._groups},
        k=None, lo=None, hi=None,
    )  # fmt: skip

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="wsq merge", unit="eval", dynamic_ncols=True, disable=None)  # tty only
    merger = _Merger(work, seg, evaluate, threshold, max_evals, bar)
    passes, stopped = 0, "converged"
    try:
        merger.metric = merger.score()
        metric_before = merger.metric
        m = batch if batch is not None else n_before
        while len(seg) > 1:
            passes += 1
            kept, m = merger.run_pass(m)
            if kept == 0:
                break
    except _Budget:
        stopped = "max_evals"
        if merger.evaluations == 0:
            metric_before = math.nan
    finally:
        if bar is not None:
            bar.close()

    table_map = torch.from_numpy(
        np.repeat(np.arange(len(seg), dtype=np.int32), np.diff(seg.bounds))
    )
    codebook = torch.from_numpy(seg.mean.astype(np.float32))
    out = _rebuild(compressed, codebook, table_map)
    out.merge_info = {
        "evaluations": merger.evaluations,
        "decisions": merger.accepted + merger.rejected,
        "accepted": merger.accepted,
        "rejected": merger.rejected,
        "passes": passes,
        "n_before": n_before,
        "n_after": len(seg),
        "bits_before": bits_before,
        "bits_after": out.bits,
        "baseline": baseline,
        "threshold": threshold,
        "metric_before": metric_before,
        "metric_after": merger.metric,
        "stopped": stopped,
    }
    return out


def merge_front(
    result,
    evaluate: Callable[[torch.nn.Module], float],
    *,
    tolerance: float = 0.0,
    progress: bool = False,
) -> dict[int, Compressed]:
    """Merge every front solution of a wsq.SearchResult whose drop is <= tolerance.

    For a custom protocol (wsq.paper_protocol merges the best few). Solutions with a larger drop are
    skipped: they already fail the bar ``baseline - tolerance`` that every merge must pass.

    Returns:
        {front index: merged wsq.Compressed} (each with its ``merge_info``), in front order.
    """
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool):
        raise TypeError(f"tolerance must be a number, got {type(tolerance).__name__}")
    out: dict[int, Compressed] = {}
    for i, s in enumerate(result.front):
        if s.drop <= tolerance:
            out[i] = merge(
                result.compress(i),
                evaluate,
                tolerance=tolerance,
                baseline=result.baseline,
                progress=progress,
            )
    return out
