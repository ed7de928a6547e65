"""wsq's grid method on an equalized CNN, with bias correction (``wsq.tune_equalized``).

:func:`wsq.equalize` folds each output channel's scale into the BatchNorm after it, the grid method
(wsq.core.grid) then gives each tensor its step on the one shared grid, and
:func:`wsq.correct_bias` moves each BatchNorm's running mean by the mean shift the quantized weights
add. Everything it changes lives in the model's own BatchNorm and bias entries.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from wsq.core.equalize import correct_bias, equalize

__all__ = ["tune_equalized"]


def tune_equalized(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    inputs: Tensor,
    *,
    tolerance: float,
    probe: Callable[[nn.Module], float] | None = None,
    stat: str = "std",
    bias: bool = True,
    rd: float = 1.0,
    iters: int = 8,
    baseline: float | None = None,
    sensitivities=None,
    start_scale: float | None = None,
):
    """wsq's grid method on an equalized model, with bias correction: ONE shared codebook for a CNN.

    1. :func:`equalize` folds every output channel's range into the BatchNorm after it (`stat`:
       "std" gives every folded channel the same root mean square, so one step costs every
       channel the same relative error; the classifier and other unfolded layers keep theirs);
    2. the grid method's per-tensor steps on the one shared grid (wsq.core.grid: probe each tensor's
       sensitivity once with `probe`, allocate ``step_t = c sqrt(n_t / s_t)``);
    3. for each candidate scale c, :func:`correct_bias` moves each BatchNorm's running mean (or the
       layer's bias) by the mean shift the quantized weights add, measured on `inputs`;
    4. c is the largest that keeps ``evaluate >= baseline - tolerance`` (bracket, then bisect).

    Everything added lives in the model's own BatchNorm and bias entries, which a wsq file stores
    as it stores every 1-D tensor: the format is unchanged and the LUT layers run as they do.

    Args:
        model: the fp32 model (not modified), BatchNorms in eval mode.
        evaluate: ``evaluate(model) -> float``, higher is better (decides the scale).
        inputs: decision inputs (a tensor, dim 0 the samples): the equalization's example (the
            first two) and the bias correction's sample.
        tolerance: allowed drop below ``evaluate(model)``.
        probe: a smooth proxy for the sensitivities (e.g. wsq.metrics.kl on a few inputs).
        stat, bias, rd, iters: see above; rd is the grid's rate-aware rounding strength.
        baseline, sensitivities, start_scale: skip work already done (as wsq.tune).

    Returns:
        wsq.Compressed whose ``tune_info`` holds baseline, metric, scale, plan, trace,
        sensitivities, evaluations, seconds, and ``equalize`` (the EqualizeInfo) and ``bias``
        (what correct_bias did for the chosen candidate).
    """
    import time

    from wsq.core import grid

    if not callable(evaluate):
        raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}")
    if probe is not None and not callable(probe):
        raise TypeError(f"probe must be callable or None, got {type(probe).__name__}")
    if not isinstance(inputs, torch.Tensor) or inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError("inputs must be a tensor with at least one sample along dim 0")
    tolerance = grid._number("tolerance", tolerance)
    rd = grid._number("rd", rd)
    if not isinstance(bias, bool):
        raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")
    t_all = time.perf_counter()
    eq, einfo = equalize(model, inputs[:2], stat=stat)
    base = grid.score(evaluate, model) if baseline is None else float(baseline)
    base = grid._finite_baseline(base, "evaluate")
    gq = grid.GridQuantizer(eq)
    evals = int(baseline is None)
    if sensitivities is None:
        pr = probe or evaluate
        pbase = (
            base if pr is evaluate else grid._finite_baseline(grid.score(pr, eq, "probe"), "probe")
        )
        sensitivities = grid.probe_sensitivity(gq, pr, pbase)
        evals += len(gq.entries) + (pr is not evaluate)
    sens = np.asarray(sensitivities, dtype=np.float64)
    if sens.shape != (len(gq.entries),):
        raise ValueError(f"sensitivities must have shape ({len(gq.entries)},), got {sens.shape}")

    def make(scale: float):
        plan = grid.plan_for(grid.allocate(gq.numel, sens, scale), rd=rd)
        try:
            c = gq.compress(gq.quantize(plan))
        except ValueError:  # too fine a grid: fails like a bad score
            return -math.inf, None
        binfo = correct_bias(c.model, eq, inputs) if bias else None
        c.bias_info = binfo
        return grid.score(evaluate, c.model), c

    if start_scale is None:
        start_scale = math.sqrt(0.01 / max(1.0, float(gq.numel.sum())))
    scale, c, trace = grid.tune_scale(make, base - tolerance, start_scale, iters=iters)
    evals += len(trace)
    if c is None:
        tried = [(float(f"{s:.4g}"), float(f"{m:.6g}")) for s, m in trace]
        raise ValueError(
            f"evaluate never reached baseline - tolerance = {base} - {tolerance} = "
            f"{base - tolerance} (tried (scale, metric): {tried}); raise tolerance or iters"
        )
    c.tune_info = {
        "baseline": base, "tolerance": tolerance, "rd": rd, "scale": scale,
        "metric": max(m for s, m in trace if s == scale), "trace": trace,
        "sensitivities": sens, "evaluations": evals, "equalize": einfo, "bias": c.bias_info,
        "stat": stat, "seconds": time.perf_counter() - t_all,
    }  # fmt: skip
    return c
