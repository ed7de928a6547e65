"""Drop-in layers that run on packed codebook indices.

A compressed model (made by :func:`wsq.compress` or :func:`wsq.load`) keeps its module tree; each module
owning a compressed parameter has its class swapped in place (the way torch.nn.utils.parametrize does):

* ``nn.Linear`` -> :class:`Linear` (fused LUT matmul straight from the packed indices);
* ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d`` -> :class:`Conv1d` ... :class:`ConvTranspose3d`
  (dequantize, then torch's own conv with every hyperparameter of the original module);
* ``nn.Embedding`` -> :class:`Embedding` (gathers only the looked-up rows), ``nn.EmbeddingBag`` ->
  :class:`EmbeddingBag`;
* any other owner (``MultiheadAttention.in_proj_weight``, LSTM/GRU/RNN weights, raw ``nn.Parameter`` s
  of custom modules, subclasses that override ``forward``) -> a subclass of its own class in which
  each compressed parameter is a read-only property that dequantizes on access. The dense parameter
  is removed, never stored. RNN modules see dequantized weights in ``_flat_weights`` during forward
  only.

Every swapped module keeps its packed indices (uint8, LSB-first, ``numel * bits`` bits) as a buffer
``<param>_packed`` and ONE lookup table as the buffer ``wsq_table``: the codebook padded with NaN to
``2**bits`` float32 entries, the very same tensor object in every module of the model. The table is
persistent, so a state dict carries its codebook; loading one checks it (see
``_Quantized._load_from_state_dict``). The model's parameter memory is therefore the packed size. ``.to(device)``, ``.cuda()``,
``.half()`` etc. keep that single table (and tied packed tensors) shared; dtype conversions change the
dtype the layers compute in, never the float32 table.

``module.weight`` (or any compressed attribute) returns a freshly dequantized tensor of the original
shape in the layer's compute dtype: reading works as before, assigning raises, and in-place changes
to the returned tensor do not reach the model.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping

import torch
import torch.nn as tnn
from torch import Tensor

from wsq.kernels import ops

__all__ = [
    "SharedCodebook",
    "Linear",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Embedding",
    "EmbeddingBag",
    "is_quantized",
    "quantize_module_",
]

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_TABLE = "wsq_table"
_SUFFIX = "_packed"


class SharedCodebook:
    """The one codebook of a compressed model, referenced by every wsq module in it.

    Holds the float32 codebook (n,) on the CPU and ``bits`` (index width); the device copies live in
    the modules as the shared ``wsq_table`` buffer. It also remembers, per ``Module._apply`` call
    (``.to()``, ``.cuda()``, ``.half()``...), which new tensor each shared tensor became, so the
    modules visited one after the other end up sharing the moved tensor instead of one copy each.
    """

    def __init__(self, codebook: Tensor, bits: int) -> None:
        if not isinstance(codebook, Tensor) or codebook.dtype != torch.float32:
            raise TypeError("codebook must be a float32 tensor")
        self.codebook = codebook.detach().reshape(-1).cpu()
        self.bits = int(bits)
        self.n = int(self.codebook.numel())
        # weak references only: the memo must neither keep old device copies alive nor confuse a
        # later call whose fn happens to reuse a freed id
        self._fn: weakref.ref | None = None
        self._moved: dict[int, tuple[weakref.ref, weakref.ref]] = {}
        self._load_call: list | None = None  # see _Quantized._load_from_state_dict
        self.version = 0  # bumped by every state dict load (Compressed drops cached sizes)

    def set_codebook(self, codebook: Tensor) -> None:
        """Adopt `codebook` (float32, n <= 2**bits) after the shared table was loaded in place."""
        self.codebook = codebook.detach().reshape(-1).cpu().clone()
        self.n = int(self.codebook.numel())
        self.version += 1

    def table(self, device: torch.device | str | None = None) -> Tensor:
        """A new lookup table (2**bits float32, NaN-padded) on `device`."""
        return ops.lut_table(self.codebook, self.bits).to(device)

    def _move(self, fn, t: Tensor, *, is_table: bool) -> Tensor:
        if self._fn is None or self._fn() is not fn:
            try:
                self._fn = weakref.ref(fn)
            except TypeError:  # a callable without weakref support: no sharing across modules
                self._fn = None
            self._moved = {}
        hit = self._moved.get(id(t))
        if hit is not None and hit[0]() is t:
            out = hit[1]()
            if out is not None:
                return out
        out = fn(t)
        if is_table and out.dtype != torch.float32:
            out = t.to(out.device)  # .half() & co. change the compute dtype, never the table
        if self._fn is not None:
            self._moved[id(t)] = (weakref.ref(t), weakref.ref(out))
        return out

    def __deepcopy__(self, memo):
        new = SharedCodebook(self.codebook.clone(), self.bits)
        memo[id(self)] = new
        return new

    def __repr__(self) -> str:
        return f"SharedCodebook(n={self.n}, bits={self.bits})"


class _Quantized:
    """Mixin placed before the original torch class: packed storage, dequantization, device moves."""

    _wsq_cb: SharedCodebook
    _wsq_q: dict  # attr -> [shape, numel, dtype]

    def __init__(self, *args, **kwargs) -> None:
        raise TypeError(
            f"wsq.nn.{type(self).__name__} is made from an existing module by wsq.compress / wsq.load "
            "(or wsq.nn.quantize_module_), not constructed directly"
        )

    def wsq_dequant(self, attr: str) -> Tensor:
        """The dense value of compressed attribute `attr`: original shape, compute dtype."""
        shape, numel, dtype = self._wsq_q[attr]
        packed = self._buffers[attr + _SUFFIX]
        table = self._buffers[_TABLE]
        kdt = dtype if dtype in _KERNEL_DTYPES else torch.float32
        w = ops.dequant(packed, numel, self._wsq_cb.bits, table, kdt)
        if kdt != dtype:
            w = w.to(dtype)
        return w.view(shape)

    def _wsq_shared_names(self) -> list[str]:
        return [
            n
            for n in self._buffers
            if n == _TABLE or (n.endswith(_SUFFIX) and n[: -len(_SUFFIX)] in self._wsq_q)
        ]

    def _apply(self, fn, recurse: bool = True):
        names = self._wsq_shared_names()
        held = {n: self._buffers.pop(n) for n in names}
        try:
            ret = super()._apply(fn, recurse)
        except BaseException:
            self._buffers.update(held)
            raise
        for n, t in held.items():
            self._buffers[n] = self._wsq_cb._move(fn, t, is_table=n == _TABLE)
        dev = self._buffers[_TABLE].device
        for q in self._wsq_q.values():
            probe = fn(torch.empty(0, dtype=q[2], device=dev))
            if isinstance(probe, Tensor) and probe.is_floating_point():
                q[2] = probe.dtype
        return ret

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # The codebook is a persistent buffer: packed indices loaded without the codebook they index
        # would compute with this model's codebook, silently wrong. Everything is checked before
        # this module copies anything; the table stays the one tensor shared by every module.
        key = prefix + _TABLE
        cb = self._wsq_cb
        shared = self._buffers[_TABLE]
        if key not in state_dict:
            given = [
                prefix + a + _SUFFIX for a in self._wsq_q if prefix + a + _SUFFIX in state_dict
            ]
            if given:
                raise ValueError(
                    f"state_dict has {given[0]} but no {key}: packed indices cannot be loaded "
                    "without the codebook they index (a state dict of wsq < 0.1.1 lacks it; "
                    "re-save the source with wsq.save and use wsq.load)"
                )
            return super()._load_from_state_dict(
                state_dict,
                prefix,
                local_metadata,
                strict,
                missing_keys,
                unexpected_keys,
                error_msgs,
            )
        t = state_dict[key]
        n = _check_table(t, cb.bits, key)
        # error_msgs is one list per load_state_dict call: it tells this call's earlier modules
        # (whose table already landed in the shared tensor) from a previous call's
        if cb._load_call is error_msgs and not _same_table(t, shared):
            raise ValueError(
                f"state_dict[{key!r}] differs from the codebook of the layers loaded before it in "
                "this state dict: every layer of a compressed model must share one codebook"
            )
        cb._load_call = error_msgs
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if self._buffers[_TABLE] is not shared:  # load_state_dict(assign=True) swapped it
            with torch.no_grad():
                shared.copy_(self._buffers[_TABLE])
            self._buffers[_TABLE] = shared
        cb.set_codebook(shared[:n])

    def extra_repr(self) -> str:
        base = super().extra_repr()
        cb = self._wsq_cb
        parts = [
            f"{a}={'x'.join(map(str, s)) or 'scalar'} {str(d).replace('torch.', '')}"
            for a, (s, _, d) in self._wsq_q.items()
        ]
        wsq = f"wsq: {', '.join(parts)} as {cb.bits}-bit indices into {cb.n} shared values"
        return f"{base}, {wsq}" if base else wsq


def _check_table(t, bits: int, key: str) -> int:
    """Validate a state dict's lookup table for `bits`-bit indices; returns its codebook size n."""
    if not isinstance(t, Tensor) or t.dtype != torch.float32:
        raise ValueError(
            f"state_dict[{key!r}] must be a float32 tensor, got "
            f"{t.dtype if isinstance(t, Tensor) else type(t).__name__}"
        )
    if t.dim() != 1 or t.numel() != 1 << bits:
        have = t.numel()
        other = f"{have.bit_length() - 1}-bit indices" if have & (have - 1) == 0 else "no bit width"
        raise ValueError(
            f"state_dict[{key!r}] has {have} entries ({other}); this model holds {bits}-bit "
            f"indices and needs {1 << bits}: a compressed state dict loads only into a model "
            "compressed at the same bit width"
        )
    t = t.detach().cpu()
    nan = torch.isnan(t)
    n = int(nan.int().argmax()) if bool(nan.any()) else t.numel()
    cb = t[:n]
    if (
        n == 0
        or not bool(nan[n:].all())
        or not bool(torch.isfinite(cb).all())
        or not bool((cb[1:] >= cb[:-1]).all())
    ):
        raise ValueError(
            f"state_dict[{key!r}] is not a wsq codebook: it must hold n >= 1 finite ascending "
            "values followed by NaN padding"
        )
    return n


def _same_table(a: Tensor, b: Tensor) -> bool:
    return torch.equal(a.detach().cpu().nan_to_num(0.0), b.detach().cpu().nan_to_num(0.0)) and (
        torch.equal(torch.isnan(a.detach().cpu()), torch.isnan(b.detach().cpu()))
    )


def _getter(attr: str):
    def get(self) -> Tensor:
        try:
            return self.wsq_dequant(attr)
        except AttributeError as e:
            # an AttributeError escaping a property would make nn.Module.__getattr__ report a
            # misleading "has no attribute"; keep the real cause visible
            raise RuntimeError(f"dequantizing {type(self).__name__}.{attr} failed: {e}") from e

    return get


_weight = _getter("weight")


_WEIGHT_DOC = "Dequantized weight (a new tensor of the original shape on each access; read-only)."


class Linear(_Quantized, tnn.Linear):
    """nn.Linear on packed indices: ``y = x @ W.T + b`` by the fused LUT matmul kernel.

    The bias stays a trainable Parameter (its gradient flows); when the input requires grad the
    layer uses the dequantized weight with ``F.linear`` so gradients reach the layers below.
    """

    weight = property(_weight, doc=_WEIGHT_DOC)

    def forward(self, input: Tensor) -> Tensor:
        dtype = self._wsq_q["weight"][2]
        grad = torch.is_grad_enabled()
        if (
            input.dtype not in _KERNEL_DTYPES
            or dtype not in _KERNEL_DTYPES
            or (grad and input.requires_grad)
        ):
            # the fused kernel has no backward: when gradients must flow to the input (training
            # layers below this one), use the dequantized weight with torch's differentiable linear
            return tnn.functional.linear(input, self.weight, self.bias)
        bias = self.bias
        trainable_bias = bias is not None and grad and bias.requires_grad
        y = ops.lut_matmul(
            input,
            self._buffers["weight" + _SUFFIX],
            self.out_features,
            self._wsq_cb.bits,
            self._buffers[_TABLE],
            None if trainable_bias else bias,
        )
        return y + bias if trainable_bias else y


class Embedding(_Quantized, tnn.Embedding):
    """nn.Embedding on packed indices: dequantizes only the looked-up rows.

    ``padding_idx`` keeps its meaning (it only affects gradients); with ``max_norm`` the whole table is
    dequantized and renormalised per call (the stored indices are never rewritten).
    """

    weight = property(_weight, doc=_WEIGHT_DOC)

    def forward(self, input: Tensor) -> Tensor:
        shape, numel, dtype = self._wsq_q["weight"]
        if self.max_norm is not None or input.dtype not in (torch.int64, torch.int32):
            return super().forward(input)
        kdt = dtype if dtype in _KERNEL_DTYPES else torch.float32
        out = ops.gather_rows(
            self._buffers["weight" + _SUFFIX],
            input,
            self.num_embeddings,
            self.embedding_dim,
            self._wsq_cb.bits,
            self._buffers[_TABLE],
            kdt,
        )
        return out if kdt == dtype else out.to(dtype)


def _dequant_subclass(base: type, doc: str) -> type:
    # Conv, ConvTranspose and EmbeddingBag forwards read self.weight once per call: the property
    # dequantizes, then torch's own kernel runs with every hyperparameter of the original module.
    return type(
        base.__name__,
        (_Quantized, base),
        {"weight": property(_weight, doc=_WEIGHT_DOC), "__doc__": doc, "__module__": __name__},
    )


Conv1d = _dequant_subclass(tnn.Conv1d, "nn.Conv1d on packed indices (dequantize, then F.conv1d).")
Conv2d = _dequant_subclass(tnn.Conv2d, "nn.Conv2d on packed indices (dequantize, then F.conv2d).")
Conv3d = _dequant_subclass(tnn.Conv3d, "nn.Conv3d on packed indices (dequantize, then F.conv3d).")
ConvTranspose1d = _dequant_subclass(tnn.ConvTranspose1d, "nn.ConvTranspose1d on packed indices.")
ConvTranspose2d = _dequant_subclass(tnn.ConvTranspose2d, "nn.ConvTranspose2d on packed indices.")
ConvTranspose3d = _dequant_subclass(tnn.ConvTranspose3d, "nn.ConvTranspose3d on packed indices.")
EmbeddingBag = _dequant_subclass(
    tnn.EmbeddingBag, "nn.EmbeddingBag on packed indices (dequantize, then F.embedding_bag)."
)

_SPECIAL: dict[type, type] = {
    tnn.Linear: Linear,
    tnn.Conv1d: Conv1d,
    tnn.Conv2d: Conv2d,
    tnn.Conv3d: Conv3d,
    tnn.ConvTranspose1d: ConvTranspose1d,
    tnn.ConvTranspose2d: ConvTranspose2d,
    tnn.ConvTranspose3d: ConvTranspose3d,
    tnn.Embedding: Embedding,
    tnn.EmbeddingBag: EmbeddingBag,
}


class _QuantizedRNN(_Quantized):
    """RNN/LSTM/GRU: the fused kernels read self._flat_weights, filled with dequantized tensors for
    the duration of each forward and emptied afterwards, so no dense copy outlives the call."""

    def _init_flat_weights(self) -> None:
        q = self._wsq_q
        self._flat_weights = [
            None if wn in q else (getattr(self, wn) if hasattr(self, wn) else None)
            for wn in self._flat_weights_names
        ]
        self._flat_weight_refs = [
            weakref.ref(w) if w is not None else None for w in self._flat_weights
        ]
        self.flatten_parameters()

    def _update_flat_weights(self) -> None:
        pass  # forward rebuilds _flat_weights itself; the base check would dequantize everything

    def forward(self, *args, **kwargs):
        q = self._wsq_q
        saved = self._flat_weights
        self._flat_weights = [
            self.wsq_dequant(wn) if wn in q else (getattr(self, wn) if hasattr(self, wn) else None)
            for wn in self._flat_weights_names
        ]
        try:
            return super().forward(*args, **kwargs)
        finally:
            self._flat_weights = saved


_CLASSES: dict[tuple[type, frozenset], type] = {}


def _attr_property(attr: str) -> property:
    return property(
        _getter(attr),
        doc=f"Dequantized {attr} (a new tensor on each access; read-only).",
    )


def _class_for(cls: type, attrs: frozenset) -> type:
    """The swapped class for a module of class `cls` whose parameters `attrs` are compressed."""
    if issubclass(cls, _Quantized):
        raise ValueError(f"{cls.__name__} module is already compressed")
    key = (cls, attrs)
    hit = _CLASSES.get(key)
    if hit is not None:
        return hit
    special = _SPECIAL.get(cls)
    if special is not None and attrs == {"weight"}:
        return special
    for base, wsq_cls in _SPECIAL.items():
        # subclasses keep their identity (isinstance) when they do not change forward
        if attrs == {"weight"} and issubclass(cls, base) and cls.forward is base.forward:
            new = type(cls.__name__, (wsq_cls, cls), {"__module__": cls.__module__})
            break
    else:
        mixin = _QuantizedRNN if issubclass(cls, tnn.RNNBase) else _Quantized
        ns = {a: _attr_property(a) for a in sorted(attrs)}
        ns["__module__"] = cls.__module__
        new = type(cls.__name__, (mixin, cls), ns)
    _CLASSES[key] = new
    return new


def is_quantized(module: tnn.Module) -> bool:
    """True when `module` holds wsq-compressed parameters (its own, not its children's)."""
    return isinstance(module, _Quantized)


def quantize_module_(
    module: tnn.Module,
    packed: Mapping[str, Tensor],
    codebook: SharedCodebook,
    table: Tensor,
    dtypes: Mapping[str, torch.dtype] | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> tnn.Module:
    """Swap `module`'s class in place so that parameters ``packed.keys()`` come from packed indices.

    Args:
        module: owner of the parameters (they are removed from it).
        packed: attribute name -> uint8 tensor of ``ceil(numel * bits / 8)`` bytes (LSB-first).
        codebook: the model's SharedCodebook (one per model).
        table: the model's lookup table on the module's device (``codebook.table(device)``), the
            same tensor object for every module.
        dtypes: compute dtype per attribute (default: the current parameter's dtype).
        shapes: shape per attribute (default: the current parameter's shape; needed when the
            parameter was already removed).

    Returns the same module object (now an instance of a wsq class).
    """
    if not isinstance(module, tnn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if not packed:
        raise ValueError("packed is empty: nothing to compress")
    attrs = frozenset(packed)
    q: dict[str, list] = {}
    for a in sorted(attrs):
        p = module._parameters.get(a)
        shape = (
            shapes[a] if shapes is not None and a in shapes else (None if p is None else p.shape)
        )
        dtype = (
            dtypes[a] if dtypes is not None and a in dtypes else (None if p is None else p.dtype)
        )
        if shape is None or dtype is None:
            raise ValueError(
                f"{type(module).__name__}.{a}: no parameter to take the shape/dtype from"
            )
        if a not in module._parameters:
            raise ValueError(f"{type(module).__name__} has no parameter {a!r}")
        for extra in (a + _SUFFIX, _TABLE):
            if (
                extra in module._parameters
                or extra in module._modules
                or (extra in module._buffers and extra != _TABLE)
            ):
                raise ValueError(f"{type(module).__name__} already has an attribute {extra!r}")
        shape = torch.Size(shape)
        numel = math.prod(shape)
        buf = packed[a]
        if not isinstance(buf, Tensor) or buf.dtype != torch.uint8:
            raise TypeError(f"packed[{a!r}] must be a uint8 tensor")
        if buf.numel() != ops.packed_bytes(numel, codebook.bits):
            raise ValueError(
                f"packed[{a!r}] has {buf.numel()} bytes; {numel} indices at {codebook.bits} bits "
                f"need {ops.packed_bytes(numel, codebook.bits)}"
            )
        q[a] = [shape, numel, dtype]
    if table.numel() != 1 << codebook.bits or table.dtype != torch.float32:
        raise ValueError("table must be codebook.table(device): 2**bits float32 entries")
    new_cls = _class_for(type(module), attrs)
    for a in q:
        del module._parameters[a]
    module.__class__ = new_cls
    module._wsq_cb = codebook
    module._wsq_q = q
    for a in sorted(q):
        buf = packed[a]  # the tensor object itself: tied parameters share it across modules
        module.register_buffer(a + _SUFFIX, buf if buf.dim() == 1 else buf.reshape(-1))
    module.register_buffer(_TABLE, table)  # persistent: indices are meaningless without it
    if isinstance(module, tnn.RNNBase):
        module._init_flat_weights()
    return module
