"""Building a compressed model's parts: a copy of the template whose pooled parameters are held by
wsq layers, each tensor at the narrowest width for the values it uses (its table a gather of the one
shared codebook). wsq.compressed.model wraps the parts into a ``Compressed``; the builders in
wsq.core reach this through ``Compressed.assemble``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as tnn
from torch import Tensor

from wsq import nn as wnn
from wsq.compressed.ties import is_lazy, name_list, tie_groups
from wsq.errors import FormatError
from wsq.kernels import ops

__all__ = ["HeldTensor", "narrow", "check_codebook", "nbytes", "assemble"]


@dataclass
class HeldTensor:
    """One compressed tensor (a tie group) as the model holds it: its names, and the wsq layer and
    attribute whose packed buffer and table hold it."""

    names: tuple[str, ...]
    shape: torch.Size
    numel: int
    owner: tnn.Module  # a module holding it (tied ones share the packed buffer and table)
    attr: str

    @property
    def dtype(self) -> torch.dtype:
        return self.owner._wsq_q[self.attr][2]  # live: .half() on the model changes it

    def packed(self) -> Tensor:
        return self.owner._buffers[self.attr + wnn.PACKED_SUFFIX]

    def table(self) -> Tensor:
        return self.owner._buffers[self.attr + wnn.TABLE_SUFFIX]

    def bits(self) -> int:
        return wnn.table_bits(self.table())

    def dense(self) -> Tensor:
        return self.owner.wsq_dequant(self.attr)


def narrow(
    packed: Tensor, numel: int, bits: int, to_global: Tensor, codebook: Tensor, *, all_used: bool
) -> tuple[Tensor, Tensor]:
    """The same weights at the narrowest width: (packed, table).

    `packed` holds `numel` indices at `bits`; index i stands for ``codebook[to_global[i]]``. The
    result indexes only the codebook entries the tensor uses (ascending), at ceil(log2 of their
    count) bits. With ``all_used`` every index of `to_global` is known to occur (no histogram pass).
    """
    to_global = to_global.to(device="cpu", dtype=torch.int64)
    if all_used or numel == 0:
        present = torch.ones(to_global.numel(), dtype=torch.bool)
        if numel == 0:
            present[1:] = False
    else:
        idx = ops.unpack(packed, numel, bits, torch.uint8 if bits <= 8 else torch.int32)
        present = torch.bincount(idx, minlength=to_global.numel())[: to_global.numel()].cpu() > 0
        del idx
    used = torch.unique(to_global[present])  # sorted
    local = torch.searchsorted(used, to_global).clamp_(max=used.numel() - 1).to(torch.int32)
    out_bits = ops.bits_for(used.numel())
    if out_bits == bits and torch.equal(local, torch.arange(local.numel(), dtype=torch.int32)):
        out = packed
    else:
        out = ops.remap_packed(packed, numel, bits, local.to(packed.device), out_bits)
    return out, ops.lut_table(codebook[used], out_bits).to(packed.device)


def nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def check_codebook(codebook, bits) -> tuple[Tensor, int]:
    if not isinstance(codebook, Tensor) or not codebook.is_floating_point():
        raise FormatError("codebook must be a floating-point tensor")
    cb = codebook.detach().reshape(-1).to(device="cpu", dtype=torch.float32)
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise FormatError(f"bits must be an int in 1..16, got {bits!r}")
    n = cb.numel()
    if not 1 <= n <= 1 << bits:
        raise FormatError(f"codebook has {n} entries; {bits}-bit indices address 1..{1 << bits}")
    if not bool(torch.isfinite(cb).all()):
        raise FormatError("codebook holds NaN or Inf values")
    if n > 1 and not bool((cb[1:] >= cb[:-1]).all()):
        raise FormatError("codebook is not in ascending order")
    return cb, bits


def _resolve(model: tnn.Module, name: str) -> tuple[tnn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (model.get_submodule(path) if path else model), attr


def assemble(
    template: tnn.Module,
    codebook: Tensor,
    bits: int,
    packed_by_name: Mapping[str, Tensor],
    rest_state: Mapping[str, Tensor] | None,
    *,
    narrowed: bool = False,
) -> dict:
    """Copy `template` without its compressed parameters, swap their owners to wsq modules, fill the
    rest from `rest_state` (None: keep the template's values, as compress does).

    With ``narrowed`` the values of `packed_by_name` are ``(packed, table)`` pairs already at each
    tensor's own width (what wsq.core.streaming and the grid build one tensor at a time): they are
    held as given, without a pass over the indices.

    Returns the parts ``Compressed(...)`` takes: model, state, groups (HeldTensor list), rest_names,
    state_keys."""
    if not isinstance(template, tnn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(template).__name__}")
    codebook, bits = check_codebook(codebook, bits)
    lazy = [n for n, p in template.named_parameters(remove_duplicate=False) if is_lazy(p)]
    if lazy:
        raise ValueError(
            f"parameters {name_list(lazy)} of model are not initialised (lazy modules)"
        )
    if not isinstance(packed_by_name, Mapping):
        raise TypeError("packed_by_name must be a mapping name -> uint8 tensor")
    groups = tie_groups(template)
    group_of = {n: gi for gi, (names, _) in enumerate(groups) for n in names}
    state_keys = list(template.state_dict(keep_vars=True).keys())

    unexpected = [n for n in packed_by_name if n not in group_of]
    chosen: dict[int, Tensor] = {}
    for n, t in packed_by_name.items():
        if n not in group_of:
            continue
        gi = group_of[n]
        if gi in chosen:
            raise FormatError(
                f"{n}: packed indices given twice for one tied parameter ({groups[gi][0]})"
            )
        names, objs = groups[gi]
        p = objs[0]
        table = None
        if narrowed:
            t, table = t
        if not isinstance(t, Tensor) or t.dtype != torch.uint8:
            raise FormatError(f"{n}: packed indices must be a uint8 tensor")
        if not p.is_floating_point():
            raise FormatError(
                f"{n}: model parameter is {p.dtype}, only floating-point ones are compressed"
            )
        width = bits if table is None else wnn.table_bits(table)
        need = ops.packed_bytes(p.numel(), width)
        if t.numel() != need:
            raise FormatError(
                f"{n}: {t.numel()} bytes of packed indices; shape {tuple(p.shape)} at {width} "
                f"bits needs {need}"
            )
        # not a view of a 1-D tensor: a view keeps its base, and set_part's set_ on the buffer
        # would then never free the first indices (a working copy held two sets of them)
        flat = t if t.dim() == 1 else t.reshape(-1)
        chosen[gi] = flat if table is None else (flat, table)
    qnames = {n for gi in chosen for n in groups[gi][0]}
    rest_keys = [n for n in state_keys if n not in qnames]
    if rest_state is not None:
        if not isinstance(rest_state, Mapping):
            raise TypeError("rest_state must be a mapping name -> tensor")
        missing = [n for n in rest_keys if n not in rest_state]
        unexpected += [n for n in rest_state if n not in rest_keys]
    else:
        missing = []
    if missing or unexpected:
        msg = [f"missing: {name_list(missing, 20)}"] if missing else []
        msg += [f"unexpected: {name_list(unexpected, 20)}"] if unexpected else []
        raise FormatError("parameter names do not match the model; " + "; ".join(msg))
    if not chosen:
        raise FormatError("no compressed parameters given")

    memo = {id(o): None for gi in chosen for o in groups[gi][1]}
    model = copy.deepcopy(template, memo)
    state = wnn.ModelState()
    identity = torch.arange(codebook.numel())
    owners: dict[int, tuple[tnn.Module, dict]] = {}
    out_groups: list[HeldTensor] = []
    for gi in sorted(chosen):
        names, objs = groups[gi]
        p = objs[0]
        src = chosen[gi][0] if narrowed else chosen[gi]
        dev = src.device if p.is_meta else p.device
        # each tensor at the width of the values it uses; tied owners share both tensors
        if narrowed:
            packed, table = (t.to(dev) for t in chosen[gi])
        else:
            packed, table = narrow(
                chosen[gi].to(dev), p.numel(), bits, identity, codebook, all_used=False
            )
        chosen[gi] = None  # the caller's copy may go as soon as the model holds its own
        first = None
        for n in names:
            mod, attr = _resolve(model, n)
            slot = owners.setdefault(id(mod), (mod, {}))[1]
            slot[attr] = (packed, table, p.shape, p.dtype, dev)
            if first is None:
                first = (mod, attr)
        out_groups.append(HeldTensor(tuple(names), p.shape, p.numel(), first[0], first[1]))
    for mod, attrs in owners.values():
        devs = {v[4] for v in attrs.values()}
        if len(devs) > 1:
            raise ValueError(
                f"{type(mod).__name__} holds compressed parameters on several devices: {devs}"
            )
        # the deep copy left None where the compressed Parameters were: nothing dense is kept
        wnn.quantize_module_(
            mod,
            {a: v[0] for a, v in attrs.items()},
            {a: v[1] for a, v in attrs.items()},
            state,
            dtypes={a: v[3] for a, v in attrs.items()},
            shapes={a: v[2] for a, v in attrs.items()},
        )
    if rest_state is not None:
        _load_rest(model, rest_keys, rest_state)
    meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if meta:
        raise ValueError(
            f"tensors {name_list(meta)} are still on the meta device (not part of the state_dict, e.g. "
            "non-persistent buffers): pass a model instance on a real device"
        )
    return {
        "model": model, "state": state, "groups": out_groups, "rest_names": rest_keys,
        "state_keys": state_keys,
    }  # fmt: skip


def _load_rest(model: tnn.Module, keys: list[str], rest_state: Mapping[str, Tensor]) -> None:
    current = model.state_dict(keep_vars=True)
    replaced: dict[int, Tensor] = {}  # meta tensor -> its materialised replacement (keeps ties)
    with torch.no_grad():
        for n in keys:
            v, t = rest_state[n], current[n]
            if not isinstance(v, Tensor):
                raise FormatError(f"{n}: expected a tensor, got {type(v).__name__}")
            if tuple(v.shape) != tuple(t.shape):
                raise FormatError(
                    f"{n}: shape {tuple(v.shape)} given, the model has {tuple(t.shape)}"
                )
            if not t.is_meta:
                t.copy_(v)
                continue
            mod, attr = _resolve(model, n)
            new = replaced.get(id(t))
            if new is None:
                data = v.detach().to(dtype=t.dtype).clone()
                if attr in mod._parameters:
                    new = tnn.Parameter(data, requires_grad=t.requires_grad)
                else:
                    new = data
                replaced[id(t)] = new
            if attr in mod._parameters:
                mod._parameters[attr] = new
            else:
                mod._buffers[attr] = new
