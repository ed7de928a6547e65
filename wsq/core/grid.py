"""Sensitivity-aware steps on one shared grid (``wsq.tune``): wsq's best method.

Public API: the method object ``wsq.Grid`` (wsq.methods.grid) applies these blocks:
``wsq.tune(model, evaluate, wsq.Grid(), tolerance=...)`` runs :func:`tune` here, and
``wsq.search(model, evaluate, method=wsq.Grid())`` searches its (scale, rd) front. The
building blocks (:class:`GridQuantizer`, :class:`GridPlan`, :func:`probe_sensitivity`,
:func:`allocate`, :func:`plan_for`, :func:`tune_scale`) are public for custom drivers.

Uniform binning gives every pooled weight the same step. With entropy-coded index streams (one
stream per tensor, as wsq files store them) the coded size of a tensor depends on its step only
(about h(w) - log2(step) bits per weight, whatever the range), so the bits are best spent where the
metric is sensitive. This module keeps wsq's format -- ONE codebook shared by every layer, each
weight a small index -- and lets each pooled tensor t use a coarser step ``m_t * delta0`` on the
shared grid ``{i * delta0}``:

* assignment: weight w of tensor t -> grid point ``i = m_t * round(w / (m_t * delta0))`` (0 is a
  point, so a tensor's points are a subset of the shared grid's), O(N);
* codebook: the used grid points, relabelled 0..n-1 in ascending order, each holding the mean of
  the weights assigned to it from every tensor (the MSE-optimal value for that partition);
* allocation: minimising the coded bits ``sum_t n_t (h_t - log2 step_t)`` subject to a predicted
  metric drop ``sum_t s_t step_t^2`` gives ``step_t = c * sqrt(n_t / s_t)`` (reverse
  water-filling), where ``s_t`` (the tensor's sensitivity) is measured by quantizing tensor t alone
  at a probe step and calling ``evaluate`` once (one evaluation per tensor, no gradients, the
  user's metric as it is); one scalar c is then tuned by bisection on the decision metric;
* optional rate-aware assignment (``rd > 0``): a weight between two of its tensor's points goes to
  the one minimising ``(w - v)^2 + rd * (ln 2 / 6) * step_t^2 * codelength_t(v)`` (entropy-
  constrained scalar quantization, one O(N) pass per iteration).

Every weight of a tensor whose ``m_t = 1`` is binned exactly like uniform binning with step delta0
(up to the grid's origin), so with all ``m_t = 1`` this is the paper's uniform binning.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from wsq.checks import finite_baseline as _finite_baseline
from wsq.checks import number as _number
from wsq.checks import tolerance_margin
from wsq.compressed import Compressed
from wsq.core.grid_quant import MAX_POINTS, MAX_SPAN, GridPlan, GridQuantizer, GridResult

__all__ = [
    "MAX_POINTS",
    "MAX_SPAN",
    "GridPlan",
    "GridQuantizer",
    "GridResult",
    "probe_sensitivity",
    "allocate",
    "plan_for",
    "tune_scale",
    "tune",
]

# ----------------------------------------------------------------------------- sensitivity


def score(evaluate: Callable, model: torch.nn.Module, name: str = "evaluate") -> float:
    """``float(evaluate(model))`` under no_grad; a non-number is a TypeError naming `name`, and an
    exception raised by the callable carries a note naming it (the caller sees which one failed).
    NaN is returned as it is: callers decide (a NaN candidate never passes a tolerance)."""
    try:
        with torch.no_grad():
            v = evaluate(model)
    except Exception as e:
        e.add_note(f"(raised by the {name} callable given to wsq)")
        raise
    try:
        return float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name}(model) must return a float, got {type(v).__name__}") from None


def probe_sensitivity(
    gq: GridQuantizer,
    evaluate: Callable[[torch.nn.Module], float],
    baseline: float,
    *,
    rel_step: float = 0.5,
    min_drop: float = 1e-9,
) -> np.ndarray:
    """s_t per pool entry (float64 (T,), metric units per step^2): the drop when tensor t alone is
    rounded to step ``rel_step * std_t``, divided by that step squared.

    One evaluation per tensor on the model itself: tensor t is overwritten in place, evaluated and
    restored bit for bit before the next (also when evaluate raises), so no copy of the model is
    made; do not use the model from another thread meanwhile. A tensor whose drop is
    below `min_drop` (insensitive, or unused by the metric) gets the smallest positive measured
    coefficient divided by 100 rather than 0, so its step stays finite. A NaN probe score counts
    as a large drop (that tensor is treated as the most sensitive one).
    """
    if not isinstance(gq, GridQuantizer):
        raise TypeError(f"gq must be a GridQuantizer, got {type(gq).__name__}")
    if not (isinstance(rel_step, (int, float)) and math.isfinite(rel_step) and rel_step > 0):
        raise ValueError(f"rel_step must be a finite number > 0, got {rel_step!r}")
    if gq.model is None:
        raise TypeError("gq reads a checkpoint: probing evaluates a model, so build it on one")
    params = gq.pool.tensors()
    s = np.zeros(len(gq.entries))
    nan = np.zeros(len(gq.entries), dtype=bool)
    for i, p in enumerate(params):
        step = rel_step * gq.std[i]
        with torch.no_grad():
            orig = p.data.clone()  # one tensor: the model itself is probed, then restored
            try:
                if p.dtype == torch.float32 and p.device.type == "cpu":
                    p.data.div_(step).round_().mul_(step)  # what the expression below computes
                else:
                    w = gq._weights(i)
                    p.data.copy_((torch.round(w / step) * step).reshape(p.shape).to(p.dtype))
                    del w
                drop = baseline - score(evaluate, gq.model, "probe")
            finally:
                p.data.copy_(orig)
            del orig
        nan[i] = not math.isfinite(drop)
        s[i] = 0.0 if nan[i] else max(drop, 0.0) / (step * step)
    pos = s[s > min_drop]
    floor = (pos.min() / 100.0) if pos.size else 1.0
    s = np.where(s > 0, np.maximum(s, floor), floor)
    if nan.any():
        s[nan] = s.max() * 100.0
    return s


def allocate(numel: Sequence[int], sens: Sequence[float], scale: float) -> np.ndarray:
    """Steps minimising coded bits for a predicted drop: ``step_t = scale * sqrt(numel_t / s_t)``
    (float64 (T,), weight units)."""
    n = np.asarray(numel, dtype=np.float64)
    s = np.asarray(sens, dtype=np.float64)
    if n.shape != s.shape:
        raise ValueError(f"numel and sens must have the same length, got {n.shape} and {s.shape}")
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError("sens must be finite and > 0 (see probe_sensitivity)")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    return scale * np.sqrt(n / s)


def plan_for(steps: np.ndarray, *, resolution: int = 4, rd: float = 0.0) -> GridPlan:
    """A GridPlan approximating real steps: delta0 = min step / resolution, multiples rounded."""
    steps = np.asarray(steps, dtype=np.float64)
    if steps.size == 0 or not (np.isfinite(steps).all() and (steps > 0).all()):
        raise ValueError("steps must be a non-empty array of finite numbers > 0")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be an int >= 1, got {resolution!r}")
    if not (math.isfinite(rd) and rd >= 0):
        raise ValueError(f"rd must be a finite number >= 0, got {rd!r}")
    delta0 = float(steps.min()) / resolution
    mult = tuple(int(max(1, round(s / delta0))) for s in steps)
    return GridPlan(delta0, mult, rd=float(rd))


def tune_scale(
    make: Callable[[float], tuple[float, object]],
    threshold: float,
    start: float,
    *,
    iters: int = 8,
    factor: float = 2.0,
    max_bracket: int = 8,
) -> tuple[float | None, object, list[tuple[float, float]]]:
    """Largest scale whose metric stays >= threshold: bracket from `start`, then bisect (log scale).

    ``make(scale) -> (metric, payload)``; the metric is assumed to fall as the scale grows (coarser
    steps), noise allowed (the best passing scale seen is returned). Bracketing multiplies or
    divides by `factor` (at most `max_bracket` times); bisection then spends the rest of `iters`
    evaluations in total. Returns (scale or None, payload of that scale, [(scale, metric)...]).
    """
    trace: list[tuple[float, float]] = []
    best: tuple[float | None, object] = (None, None)

    def probe(scale: float) -> bool:
        nonlocal best
        metric, payload = make(scale)
        trace.append((scale, metric))
        ok = metric >= threshold  # NaN fails
        if ok and (best[0] is None or scale > best[0]):
            best = (scale, payload)
        return ok

    lo = hi = None
    s = start
    if probe(s):
        lo = s
        for _ in range(max_bracket):
            s *= factor
            if len(trace) >= iters:
                break
            if not probe(s):
                hi = s
                break
            lo = s
    else:
        hi = s
        for _ in range(max_bracket):
            s /= factor
            if len(trace) >= iters:
                break
            if probe(s):
                lo = s
                break
            hi = s
    if lo is not None and hi is not None:
        a, b = math.log(lo), math.log(hi)
        while len(trace) < iters:
            mid = 0.5 * (a + b)
            if probe(math.exp(mid)):
                a = mid
            else:
                b = mid
    return best[0], best[1], trace


def tune(
    model: torch.nn.Module,
    evaluate: Callable[[torch.nn.Module], float],
    *,
    tolerance: float,
    margin: float = 0.0,
    rd: float = 1.0,
    probe: Callable[[torch.nn.Module], float] | None = None,
    iters: int = 10,
    baseline: float | None = None,
    sensitivities: np.ndarray | None = None,
    probe_step: float = 0.5,
    start_drop: float = 0.01,
    start_scale: float | None = None,
    quantizer: GridQuantizer | None = None,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    min_dims: int = 2,
) -> Compressed:
    """Compress `model` on one shared grid with per-tensor steps, tuned to the tolerance.

    Probes each pooled tensor once with ``probe`` (default: ``evaluate``), allocates
    ``step_t = c * sqrt(n_t / s_t)`` (weight units; n_t weights, s_t the probed sensitivity) and
    finds the largest c that keeps ``evaluate >= baseline - tolerance + margin`` (bracketing from
    the scale predicted for a probe drop of ``start_drop``, then bisection: ``iters`` evaluations).
    Then the model is packed: ONE codebook shared by every layer, as wsq.compress makes, so the
    result works with wsq.save/load, wsq.merge and the LUT layers. ``model`` is not modified.

    Args:
        model: any nn.Module; pooled as wsq.compress pools it (include/exclude/min_dims).
        evaluate: ``evaluate(model) -> float``, higher is better; decides the scale.
        tolerance: allowed drop below ``evaluate(model)``, in the metric's units (>= 0).
        margin: how much better than the tolerance requires the decision metric must stay
            (0 <= margin <= tolerance, metric units): the tune accepts a scale only when
            ``evaluate >= baseline - tolerance + margin``. A small decision set overstates how
            well the chosen scale generalises (the bisection stops at the coarsest scale that
            passes, i.e. where the decision metric's noise happens to be favourable); a margin of
            about that noise keeps held-out data within the tolerance more often. Default 0.
        rd: rate-aware rounding strength (0: nearest point; 1: the high-rate rate-distortion
            slope, default; larger trades more error for fewer bits).
        probe: a smooth proxy for the sensitivities when the metric is coarse (e.g.
            wsq.metrics.kl on the validation inputs when evaluate is accuracy on a few hundred
            samples); default ``evaluate``.
        iters: evaluations spent tuning the scale (>= 1).
        baseline: evaluate(model) when already known (saves one evaluation).
        sensitivities: float64 (T,) from an earlier probe_sensitivity (skips probing).
        probe_step: the probe rounds tensor t to step probe_step * std(t).
        start_drop, start_scale: where the bracketing starts (start_scale wins when given).
        quantizer: a GridQuantizer of `model` to reuse (its pool options win).

    Returns:
        wsq.Compressed with ``tune_info``: baseline, metric (evaluate of the tuned model),
        tolerance, margin, threshold (baseline - tolerance + margin), rd, scale, plan (GridPlan),
        sensitivities, trace [(scale, metric)], evaluations (calls of evaluate and probe, the
        baseline's included), probe_s, tune_s,
        own_s / eval_s (seconds of the tuning in wsq's own work -- quantizing candidates and
        packing them into the one working copy, the final one included -- and in evaluate),
        own_s_per_candidate, eval_s_per_candidate, own_s_per_candidate_per_gweight.

    Memory: candidates are evaluated on ONE compressed working copy (packed indices at each
    tensor's own width, rewritten in place), which becomes the result; the probe overwrites one
    tensor of `model` at a time and restores it. Beyond `model`, a tune holds about the
    compressed size plus a few chunks of the largest tensor.

    Raises:
        TypeError / ValueError naming the argument; ValueError when evaluate or probe returns a
        non-finite score on the original model, or when no scale meets the tolerance (the message
        lists what was tried). Exceptions raised by evaluate/probe propagate with a note naming
        the callable.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(evaluate):
        raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}")
    if probe is not None and not callable(probe):
        raise TypeError(f"probe must be callable or None, got {type(probe).__name__}")
    tolerance, margin = tolerance_margin(tolerance, margin)
    rd = _number("rd", rd)
    probe_step = _number("probe_step", probe_step, strict=True)
    start_drop = _number("start_drop", start_drop, strict=True)
    if start_scale is not None:
        start_scale = _number("start_scale", start_scale, strict=True)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")
    if quantizer is not None and (
        not isinstance(quantizer, GridQuantizer) or quantizer.model is not model
    ):
        raise ValueError("quantizer must be a GridQuantizer built on this model")
    gq = quantizer or GridQuantizer(
        model, pool_options={"include": include, "exclude": exclude, "min_dims": min_dims}
    )
    if baseline is None:
        base = _finite_baseline(score(evaluate, model), "evaluate")
    else:
        base = _number("baseline", baseline, lo=-math.inf)
    threshold = base - tolerance + margin
    info: dict = {"baseline": base, "tolerance": tolerance, "margin": margin,
                  "threshold": threshold, "rd": rd}  # fmt: skip
    info["evaluations"] = 0 if baseline is not None else 1
    t0 = time.perf_counter()
    if sensitivities is None:
        pr = probe or evaluate
        pbase = base if pr is evaluate else _finite_baseline(score(pr, model, "probe"), "probe")
        sensitivities = probe_sensitivity(gq, pr, pbase, rel_step=probe_step)
        info["evaluations"] += len(gq.entries) + (pr is not evaluate)
    sensitivities = np.asarray(sensitivities, dtype=np.float64)
    if sensitivities.shape != (len(gq.entries),):
        raise ValueError(
            f"sensitivities must have shape ({len(gq.entries)},) (one per pooled tensor), "
            f"got {sensitivities.shape}"
        )
    info["probe_s"] = time.perf_counter() - t0
    info["sensitivities"] = sensitivities
    work: Compressed | None = None  # the one working copy: a compressed model, rewritten in place
    own = [0.0, 0.0]  # seconds in wsq's own work, in evaluate
    budget = gq.work_budget()  # bytes a candidate's working copy may hold (within 1.5x dense)
    too_fine = 0  # candidates refused for the budget

    def make(scale: float):
        nonlocal work, too_fine
        plan = plan_for(allocate(gq.numel, sensitivities, scale), rd=rd)
        t0 = time.perf_counter()
        if gq.plan_bytes(plan) > budget:  # too fine to hold within memory: nothing quantized
            too_fine += 1
            return -math.inf, plan
        try:
            res = gq.quantize(plan)
        except ValueError:  # too fine a grid (span or codebook limit): fails like a bad score
            return -math.inf, plan
        if gq.work_bytes(res) > budget:
            too_fine += 1
            return -math.inf, plan
        if work is None:
            work = gq.compress(res)
        else:
            gq.update(work, res)
        t1 = time.perf_counter()
        metric = score(evaluate, work.model)
        own[0] += t1 - t0
        own[1] += time.perf_counter() - t1
        return metric, plan

    if start_scale is None:
        start_scale = math.sqrt(start_drop / max(1.0, float(gq.numel.sum())))
    t0 = time.perf_counter()
    scale, plan, trace = tune_scale(make, threshold, start_scale, iters=iters)
    info["tune_s"] = time.perf_counter() - t0
    info["evaluations"] += len(trace)
    info.update(scale=scale, plan=plan, trace=trace)
    if plan is None:
        tried = [(float(f"{s:.4g}"), float(f"{m:.6g}")) for s, m in trace]
        why = (
            "evaluate returned NaN for every candidate"
            if all(math.isnan(m) for _, m in trace)
            else f"tried (scale, metric): {tried}"
        )
        what = (
            f"baseline - tolerance + margin = {base} - {tolerance} + {margin} = {threshold}"
            if margin
            else f"baseline - tolerance = {base} - {tolerance} = {threshold}"
        )
        mem = (
            f"; {too_fine} finer candidates were not tried: their indices would need more than"
            f" {budget / 2**20:.1f} MiB, the working copy's share that keeps a tune within 1.5x"
            " the dense model"
            if too_fine
            else ""
        )
        raise ValueError(
            f"evaluate never reached {what} on the grid ({why}{mem}); raise tolerance or iters"
            + (" or lower margin" if margin else "")
        )
    info["metric"] = max(m for s, m in trace if s == scale)
    t0 = time.perf_counter()
    gq.update(work, gq.quantize(plan), final=True)  # the working copy becomes the result
    own[0] += time.perf_counter() - t0
    n = len(trace)
    info["own_s"], info["eval_s"] = own[0], own[1]
    info["own_s_per_candidate"] = own[0] / (n + 1)
    info["eval_s_per_candidate"] = own[1] / max(1, n)
    info["own_s_per_candidate_per_gweight"] = info["own_s_per_candidate"] / (gq.numel.sum() / 1e9)
    work.tune_info = info
    return work
