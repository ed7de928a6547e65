"""Data-free per-output-channel range equalization, folded exactly into the following BatchNorm.

One shared codebook serves every layer, but the channels of a CNN differ in range by an order of
magnitude or more (depthwise convolutions most of all): pooled together, a narrow channel sees one
or two levels of the grid. A layer whose output goes straight into a BatchNorm in eval mode can
have each output channel c scaled by 1/s_c at no cost, because the BatchNorm absorbs it exactly:

    y_c = W_c * x + b_c,   BN(y)_c = gamma_c (y_c - mu_c) / sqrt(var_c + eps) + beta_c
    W'_c = W_c / s_c,  b'_c = b_c / s_c,  gamma'_c = gamma_c s_c,  mu'_c = mu_c / s_c
    => BN'(y')_c = gamma_c s_c (y_c / s_c - mu_c / s_c) / sqrt(var_c + eps) + beta_c = BN(y)_c.

With s_c = range_c / target every folded channel spans the same range, so one grid (or one set of
uniform bins) treats all of them alike -- per-channel quantization on ONE shared codebook. The
new gamma and running mean are ordinary BatchNorm entries of the model: a wsq file stores them as
it stores every BatchNorm (nothing new in the format) and the compressed model runs exactly as
before (the LUT layers see smaller weights, the BatchNorm a rescaled gamma). Layers with no
BatchNorm after them (a classifier Linear, a convolution feeding a residual sum directly) are
left alone.

Which layer feeds which BatchNorm is found data-free on one forward pass of an example input:
a pair (layer, bn) qualifies when the BatchNorm's input IS the layer's output tensor, each module
runs once, the layer is a Conv1d/2d/3d (any groups, depthwise included) or Linear and the
BatchNorm is affine with running statistics. Because the layer's output could also be used
elsewhere (unseen by hooks), every pair is then verified: random factors are applied to all pairs
of a scratch copy and its outputs compared with the original's; a pair that changes the function
is dropped (found by testing the pairs one by one). Exact in eval mode only: in training mode a
BatchNorm uses batch statistics, and eps no longer scales with the channel.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

__all__ = ["find_pairs", "equalize", "EqualizeInfo", "correct_bias"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LAYERS = (*_CONVS, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_STATS = ("max", "std")


class EqualizeInfo(dict):
    """What :func:`equalize` did: ``pairs`` [(layer name, bn name)], ``scales`` {layer name:
    float32 (out,) factors s_c (the layer's channel c was divided by s_c)}, ``left`` [(layer name,
    why)] for pooled-size layers not folded, ``stat``, ``target``, ``check`` (max relative output
    difference of the verification pass, float rounding only)."""


def _call(model: nn.Module, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _flat(out) -> torch.Tensor:
    """Every floating tensor of a model output (a tensor, a tuple/list/dict of them), flattened."""
    if isinstance(out, torch.Tensor):
        return out.detach().float().reshape(-1)
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        parts = [_flat(o) for o in out if isinstance(o, (torch.Tensor, tuple, list, dict))]
        return torch.cat(parts) if parts else torch.zeros(0)
    return torch.zeros(0)


def _bn_ok(bn: nn.Module) -> str | None:
    if not bn.affine:
        return "BatchNorm without affine weights"
    if bn.running_mean is None or bn.running_var is None:
        return "BatchNorm without running statistics"
    return None


def find_pairs(model: nn.Module, inputs) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(pairs, left): the (layer, BatchNorm) names whose BatchNorm input is exactly the layer's
    output on one forward pass of `inputs` (eval mode, no_grad; the model's train flags are
    restored), and the Conv/Linear layers left out with the reason. Not yet verified (see
    :func:`equalize`)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = {m: n for n, m in model.named_modules()}
    produced: dict[int, tuple[torch.Tensor, nn.Module]] = {}  # id(output) -> (output, layer)
    calls: dict[nn.Module, int] = {}
    fed: dict[nn.Module, nn.Module] = {}  # layer -> the BatchNorm its output went into

    def after_layer(mod, args, out):
        calls[mod] = calls.get(mod, 0) + 1
        if isinstance(out, torch.Tensor):
            produced[id(out)] = (out, mod)  # the tensor is kept alive so its id stays unique

    def before_norm(mod, args):
        calls[mod] = calls.get(mod, 0) + 1
        if args and isinstance(args[0], torch.Tensor):
            hit = produced.get(id(args[0]))
            if hit is not None and hit[0] is args[0]:
                fed[hit[1]] = mod

    hooks = []
    for m in model.modules():
        if isinstance(m, _LAYERS):
            hooks.append(m.register_forward_hook(after_layer))
        elif isinstance(m, _NORMS):
            hooks.append(m.register_forward_pre_hook(before_norm))
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            _call(model, inputs)
    finally:
        for h in hooks:
            h.remove()
        for m, t in flags.items():
            m.training = t
    pairs, left = [], []
    for m in model.modules():
        if not isinstance(m, _LAYERS):
            continue
        name = names[m]
        bn = fed.get(m)
        why = None
        if calls.get(m, 0) == 0:
            why = "not run by the example input"
        elif bn is None:
            why = "no BatchNorm takes its output directly"
        elif calls[m] > 1 or calls.get(bn, 0) > 1:
            why = "runs more than once per forward"
        elif m.weight.shape[0] != bn.num_features:
            why = "output channels differ from the BatchNorm's features"
        else:
            why = _bn_ok(bn)
        if why is None:
            pairs.append((name, names[bn]))
        else:
            left.append((name, why))
    return pairs, left


def _channel_stat(w: torch.Tensor, stat: str) -> torch.Tensor:
    w = w.detach().float().reshape(w.shape[0], -1)
    return w.abs().amax(1) if stat == "max" else w.pow(2).mean(1).sqrt()


@torch.no_grad()
def _apply(model: nn.Module, pairs, scales: dict[str, torch.Tensor]) -> None:
    mods = dict(model.named_modules())
    for lname, bname in pairs:
        layer, bn, s = mods[lname], mods[bname], scales[lname]
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        layer.weight.div_(s.to(layer.weight).view(shape))
        if layer.bias is not None:
            layer.bias.div_(s.to(layer.bias))
        bn.weight.mul_(s.to(bn.weight))
        bn.running_mean.div_(s.to(bn.running_mean))


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = max(float(a.abs().max()) if a.numel() else 0.0, 1e-30)
    return float((a - b).abs().max()) / scale if a.numel() else 0.0


def equalize(
    model: nn.Module,
    inputs,
    *,
    stat: str = "max",
    target: float | None = None,
    inplace: bool = False,
    rtol: float = 1e-4,
    seed: int = 0,
) -> tuple[nn.Module, EqualizeInfo]:
    """Equalize every output channel of each Conv/Linear that feeds a BatchNorm, folded exactly.

    Args:
        model: any nn.Module (judged in eval mode).
        inputs: an example input for one forward pass (a tensor, a tuple of positional inputs or
            a dict of keyword inputs); any values of the right shape work (random data is fine).
        stat: the channel range equalized: "max" (max |w|, default) or "std" (root mean square).
        target: the range every folded channel gets (default: the median over all folded
            channels of their stat, so the weights keep their typical size).
        inplace: change `model` itself instead of a deep copy.
        rtol: the verification bound on max |out' - out| / max |out| (float rounding is ~1e-6).
        seed: seed of the verification's random factors.

    Returns:
        (model, info): the equalized model (the same function in eval mode, to float rounding)
        and an :class:`EqualizeInfo`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if stat not in _STATS:
        raise ValueError(f"stat must be one of {_STATS}, got {stat!r}")
    if target is not None and (
        isinstance(target, bool)
        or not isinstance(target, (int, float))
        or not math.isfinite(target)
        or target <= 0
    ):
        raise ValueError(f"target must be a finite number > 0 or None, got {target!r}")
    if not (isinstance(rtol, (int, float)) and math.isfinite(rtol) and rtol > 0):
        raise ValueError(f"rtol must be a finite number > 0, got {rtol!r}")
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace must be a bool, got {type(inplace).__name__}")
    out = model if inplace else copy.deepcopy(model)
    pairs, left = find_pairs(out, inputs)
    flags = {m: m.training for m in out.modules()}
    out.eval()
    try:
        with torch.no_grad():
            ref = _flat(_call(out, inputs))
        pairs, left, worst = _verified(out, inputs, pairs, left, ref, rtol, seed)
        mods = dict(out.named_modules())
        stats = {ln: _channel_stat(mods[ln].weight, stat) for ln, _ in pairs}
        if target is None:
            allc = torch.cat([s[s > 0] for s in stats.values()]) if stats else torch.zeros(0)
            target = float(allc.median()) if allc.numel() else 1.0
        scales = {}
        for ln, s in stats.items():
            # a dead channel (all zero) keeps factor 1
            scales[ln] = torch.where(s > 0, s / target, torch.ones_like(s))
        _apply(out, pairs, scales)
        with torch.no_grad():
            check = _max_rel_diff(ref, _flat(_call(out, inputs)))
    finally:
        for m, t in flags.items():
            m.training = t
    if check > rtol:  # cannot happen for verified pairs short of overflow; never hand it back
        raise ValueError(
            f"equalization changed the model's outputs by {check:.3g} (relative) > rtol {rtol}"
        )
    info = EqualizeInfo(pairs=pairs, scales=scales, left=left, stat=stat, target=target,
                        check=max(check, worst))  # fmt: skip
    return out, info


def _verified(model, inputs, pairs, left, ref, rtol, seed):
    """The pairs whose random rescaling leaves the outputs unchanged (one pass for all, then one
    pass per pair only when the joint pass fails)."""
    if not pairs:
        return pairs, left, 0.0
    g = torch.Generator().manual_seed(seed)
    mods = dict(model.named_modules())

    def trial(subset) -> float:
        scratch = copy.deepcopy(model)
        fac = {}
        for ln, _ in subset:
            n = mods[ln].weight.shape[0]
            fac[ln] = torch.exp(torch.empty(n).uniform_(-1.0, 1.0, generator=g))  # 0.37x .. 2.7x
        _apply(scratch, subset, fac)
        with torch.no_grad():
            return _max_rel_diff(ref, _flat(_call(scratch, inputs)))

    d = trial(pairs)
    if d <= rtol:
        return pairs, left, d
    keep, worst = [], 0.0
    for p in pairs:
        dp = trial([p])
        if dp <= rtol:
            keep.append(p)
            worst = max(worst, dp)
        else:
            left = left + [(p[0], f"its output is also used elsewhere (rescaling moved the "
                                  f"outputs by {dp:.2g})")]  # fmt: skip
    return keep, left, worst


# ----------------------------------------------------------------------------- bias correction


def _own_shifts(model: nn.Module, reference: nn.Module, names: list[str], inputs, batch: int):
    """Per named layer, the mean per output channel (float64) of what its quantized weights add
    to its output on the inputs it actually receives in `model`: the layer's output minus the
    reference layer's output on the same input (errors from the layers before it excluded)."""
    mods, ref_mods = dict(model.named_modules()), dict(reference.named_modules())
    sums: dict[str, torch.Tensor] = {}
    seen = {"n": 0}

    def hook(name):
        def f(mod, args, out):
            d = (out.detach() - ref_mods[name](*args).detach()).double()
            d = d.movedim(1, -1) if isinstance(mod, _CONVS) else d
            sums[name] = sums.get(name, 0) + d.reshape(-1, d.shape[-1]).mean(0) * d.shape[0]

        return f

    hooks = [mods[n].register_forward_hook(hook(n)) for n in names]
    flags = {m: m.training for m in model.modules()}
    rflags = {m: m.training for m in reference.modules()}
    try:
        model.eval()
        reference.eval()
        with torch.no_grad():
            for i in range(0, inputs.shape[0], batch):
                x = inputs[i : i + batch]
                _call(model, x)
                seen["n"] += x.shape[0]
    finally:
        for h in hooks:
            h.remove()
        for m, t in (*flags.items(), *rflags.items()):
            m.training = t
    return {n: v / seen["n"] for n, v in sums.items()}


def correct_bias(
    model: nn.Module,
    reference: nn.Module,
    inputs: Tensor,
    *,
    passes: int = 2,
    batch: int = 32,
) -> dict:
    """Remove the mean output shift that quantization adds to each channel, for free.

    A quantized layer's output is off by ``dW x``, whose mean over data is a per-channel constant
    delta_c (Nagel et al.'s bias correction). A BatchNorm after the layer absorbs it exactly
    (``running_mean_c += delta_c``), a layer's own bias likewise (``bias_c -= delta_c``); both are
    ordinary 1-D entries that a wsq file stores as they are, so nothing is added at run time.
    delta_c is measured in one pass over `inputs` (any representative sample, no labels: the
    decision data): each layer of `model` and its twin in `reference` (the unquantized model with
    the same module names) are run on the SAME input, the one the layer receives in `model`, so
    each shift is the layer's own and no error is corrected twice. Correcting the layers before
    it changes that input a little: `passes` rounds measure again with the corrections in place.

    Args:
        model: the compressed model (e.g. ``Compressed.model``), changed in place.
        reference: the model before quantization (e.g. the equalized fp32 model), unchanged.
        inputs: a tensor of inputs, split along dim 0 into batches of `batch`.

    Returns:
        {"layers": [(layer name, the BatchNorm's name or "bias")], "largest": the largest change
        the last pass made, in the layers' output units}.
    """
    if not isinstance(model, nn.Module) or not isinstance(reference, nn.Module):
        raise TypeError("model and reference must be torch.nn.Modules")
    if not isinstance(inputs, torch.Tensor) or inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError("inputs must be a tensor with at least one sample along dim 0")
    for name, v in (("passes", passes), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    pairs, _ = find_pairs(model, inputs[:1])
    bn_of = dict(pairs)
    mods = dict(model.named_modules())
    ref_mods = dict(reference.named_modules())
    targets = []
    for n, m in mods.items():
        if not isinstance(m, _LAYERS) or not isinstance(ref_mods.get(n), _LAYERS):
            continue
        if n in bn_of:
            targets.append((n, bn_of[n]))
        elif getattr(m, "bias", None) is not None and isinstance(m.bias, torch.Tensor):
            targets.append((n, "bias"))
    names = [n for n, _ in targets]
    base = {w: mods[w].running_mean.detach().clone() for _, w in targets if w != "bias"}
    largest = 0.0
    for _ in range(passes):
        # a BatchNorm's correction leaves its layer's own output as it was: the shift measured
        # again is the whole shift (set base + delta); a bias is inside the layer's output: the
        # shift measured again is what is left (subtract it)
        shifts = _own_shifts(model, reference, names, inputs, batch)
        largest = 0.0
        with torch.no_grad():
            for n, where in targets:
                d = shifts.get(n)
                if d is None:
                    continue
                if where == "bias":
                    largest = max(largest, float(d.abs().max()))
                    mods[n].bias.sub_(d.to(mods[n].bias))
                else:
                    rm = mods[where].running_mean
                    largest = max(largest, float((base[where] + d.to(rm) - rm).abs().max()))
                    rm.copy_(base[where] + d.to(rm))
    return {"layers": targets, "largest": largest}
