"""The wsq layer classes: a mixin (packed storage, dequantization, device moves, state-dict loads)
placed before the original torch class, the kernel-backed Linear / Embedding, the dequantizing
Conv / ConvTranspose / EmbeddingBag / RNN classes, and :func:`quantize_module_`, which swaps a
module's class in place (the package docstring, wsq.nn, says what each holds)."""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping

import torch
import torch.nn as tnn
from torch import Tensor

from wsq.kernels import ops
from wsq.nn.state import ModelState
from wsq.nn.tables import PACKED_SUFFIX, TABLE_SUFFIX, _check_pair, table_bits, table_size

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _rebuild_module(base: type, attrs: tuple[str, ...]):
    """Unpickling/deep-copy helper: an empty instance of the wsq class for (base, attrs)."""
    cls = _class_for(base, frozenset(attrs))
    return cls.__new__(cls)


class _Quantized:
    """Mixin placed before the original torch class: packed storage, dequantization, device moves."""

    _wsq_state: ModelState
    _wsq_q: dict  # attr -> [shape, numel, dtype]
    _wsq_base: type  # the original torch class
    _wsq_attrs: frozenset

    def __init__(self, *args, **kwargs) -> None:
        raise TypeError(
            f"wsq.nn.{type(self).__name__} is made from an existing module by wsq.compress / wsq.load "
            "(or wsq.nn.quantize_module_), not constructed directly"
        )

    def __reduce_ex__(self, protocol):
        # pickle and deepcopy rebuild the class from (original class, attrs): the classes made for
        # subclasses and generic owners are created at run time and cannot be found by name
        getstate = getattr(super(), "__getstate__", None)
        state = getstate() if getstate is not None else self.__dict__
        return _rebuild_module, (self._wsq_base, tuple(sorted(self._wsq_attrs))), state

    def wsq_bits(self, attr: str) -> int:
        """Index width of compressed attribute `attr` (1..16)."""
        return table_bits(self._buffers[attr + TABLE_SUFFIX])

    def wsq_dequant(self, attr: str) -> Tensor:
        """The dense value of compressed attribute `attr`: original shape, compute dtype."""
        shape, numel, dtype = self._wsq_q[attr]
        packed = self._buffers[attr + PACKED_SUFFIX]
        table = self._buffers[attr + TABLE_SUFFIX]
        if dtype in _KERNEL_DTYPES:
            return ops.dequant(packed, numel, table_bits(table), table, dtype, shape=shape)
        return ops.dequant(packed, numel, table_bits(table), table, shape=shape).to(dtype)

    def _wsq_buffer_names(self) -> list[str]:
        return [a + s for a in sorted(self._wsq_q) for s in (PACKED_SUFFIX, TABLE_SUFFIX)]

    def _apply(self, fn, recurse: bool = True):
        names = self._wsq_buffer_names()
        order = list(self._buffers)
        held = {n: self._buffers.pop(n) for n in names}
        try:
            ret = super()._apply(fn, recurse)
        except BaseException:
            self._buffers.update(held)
            _reorder(self._buffers, order)
            raise
        for n, t in held.items():
            self._buffers[n] = self._wsq_state._move(fn, t, is_table=n.endswith(TABLE_SUFFIX))
        _reorder(self._buffers, order)
        dev = self._buffers[names[0]].device
        for q in self._wsq_q.values():
            probe = fn(torch.empty(0, dtype=q[2], device=dev))
            if isinstance(probe, Tensor) and probe.is_floating_point():
                q[2] = probe.dtype
        return ret

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # Each compressed tensor loads its indices together with the values they index, and nothing
        # else: a partial load (one layer's state dict, strict=False) changes exactly the tensors
        # it names. A tensor's width may change with the load (the source held it at another
        # width); the buffers are then resized in place, so tied owners keep sharing them.
        ours = self._wsq_buffer_names()
        loads = {}
        bad = False
        for a in sorted(self._wsq_q):
            kp, kt = prefix + a + PACKED_SUFFIX, prefix + a + TABLE_SUFFIX
            has_p, has_t = kp in state_dict, kt in state_dict
            if not has_p and not has_t:
                if strict:
                    missing_keys.extend([kp, kt])
                continue
            if has_p != has_t:
                have, lack = (kp, kt) if has_p else (kt, kp)
                error_msgs.append(
                    f"state_dict has {have} but no {lack}: packed indices and the table of the "
                    "values they index load together"
                )
                bad = True
                continue
            try:
                loads[a] = _check_pair(state_dict[kp], state_dict[kt], self._wsq_q[a][1], kp, kt)
            except ValueError as e:
                error_msgs.append(str(e))
                bad = True
        if bad:  # the load will raise: leave this module as it was, its bias and others too
            return
        order = list(self._buffers)
        held = {n: self._buffers.pop(n) for n in ours}
        try:
            super()._load_from_state_dict(
                state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                error_msgs,
            )  # fmt: skip
        finally:
            self._buffers.update(held)
            _reorder(self._buffers, order)
        keys = {prefix + n for n in ours}
        unexpected_keys[:] = [k for k in unexpected_keys if k not in keys]
        if not loads:
            return
        with torch.no_grad():
            for a, (packed, table) in loads.items():
                _assign(self._buffers, a + PACKED_SUFFIX, packed)
                _assign(self._buffers, a + TABLE_SUFFIX, table)
        self._wsq_state.version += 1

    def extra_repr(self) -> str:
        base = super().extra_repr()
        parts = []
        for a, (s, _, d) in self._wsq_q.items():
            t = self._buffers[a + TABLE_SUFFIX]
            n = table_size(t)
            parts.append(
                f"{a}={'x'.join(map(str, s)) or 'scalar'} {str(d).replace('torch.', '')} as "
                f"{table_bits(t)}-bit indices into {n} shared values"
            )
        wsq = f"wsq: {', '.join(parts)}"
        return f"{base}, {wsq}" if base else wsq


def _reorder(buffers: dict, order: list[str]) -> None:
    """Put `buffers` back in `order` (state_dict key order must not change with a load or move)."""
    items = [(n, buffers[n]) for n in order if n in buffers]
    items += [(n, t) for n, t in buffers.items() if n not in order]
    buffers.clear()
    buffers.update(items)


def _assign(buffers: dict, name: str, src: Tensor) -> None:
    """Load `src` into buffer `name` in place (tied owners hold the same tensor object)."""
    dst = buffers[name]
    if dst.is_meta:
        buffers[name] = src.clone()
    elif dst.shape == src.shape:
        dst.copy_(src)
    else:
        dst.set_(src.to(device=dst.device, dtype=dst.dtype).clone())


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
            self._buffers["weight" + PACKED_SUFFIX],
            self.out_features,
            self.wsq_bits("weight"),
            self._buffers["weight" + TABLE_SUFFIX],
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
            self._buffers["weight" + PACKED_SUFFIX],
            input,
            self.num_embeddings,
            self.embedding_dim,
            self.wsq_bits("weight"),
            self._buffers["weight" + TABLE_SUFFIX],
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
    new._wsq_base, new._wsq_attrs = cls, attrs
    _CLASSES[key] = new
    return new


for _base, _cls in _SPECIAL.items():
    _cls._wsq_base, _cls._wsq_attrs = _base, frozenset({"weight"})


def is_quantized(module: tnn.Module) -> bool:
    """True when `module` holds wsq-compressed parameters (its own, not its children's)."""
    return isinstance(module, _Quantized)


def quantize_module_(
    module: tnn.Module,
    packed: Mapping[str, Tensor],
    tables: Mapping[str, Tensor],
    state: ModelState | None = None,
    *,
    dtypes: Mapping[str, torch.dtype] | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> tnn.Module:
    """Swap `module`'s class in place so that parameters ``packed.keys()`` come from packed indices.

    Args:
        module: owner of the parameters (they are removed from it).
        packed: attribute name -> uint8 tensor of ``ceil(numel * b / 8)`` bytes (LSB-first), b the
            width of that attribute's table.
        tables: attribute name -> float32 ``(2**b,)`` lookup table (``wsq.kernels.ops.lut_table``: the
            values the indices address, NaN-padded), on the module's device.
        state: the :class:`ModelState` shared by every wsq module of the model (default: a new one).
        dtypes: compute dtype per attribute (default: the current parameter's dtype).
        shapes: shape per attribute (default: the current parameter's shape; needed when the
            parameter was already removed).

    Packed and table tensors are registered as given (the objects themselves), so tied parameters
    keep sharing them across modules. Returns the same module object (now an instance of a wsq
    class).
    """
    if not isinstance(module, tnn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if not packed:
        raise ValueError("packed is empty: nothing to compress")
    if not isinstance(tables, Mapping) or set(tables) != set(packed):
        raise ValueError("tables must map exactly the attributes of packed to their lookup tables")
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
        for extra in (a + PACKED_SUFFIX, a + TABLE_SUFFIX):
            if extra in module._parameters or extra in module._modules or extra in module._buffers:
                raise ValueError(f"{type(module).__name__} already has an attribute {extra!r}")
        table = tables[a]
        size = table.numel() if isinstance(table, Tensor) else 0
        if (
            not isinstance(table, Tensor)
            or table.dtype != torch.float32
            or table.dim() != 1
            or not 2 <= size <= 1 << 16
            or size & (size - 1)
        ):
            raise ValueError(
                f"tables[{a!r}] must be a 1-D float32 tensor of 2**b entries, b in 1..16 "
                "(wsq.kernels.ops.lut_table)"
            )
        bits = table_bits(table)
        numel = math.prod(shape)
        buf = packed[a]
        if not isinstance(buf, Tensor) or buf.dtype != torch.uint8:
            raise TypeError(f"packed[{a!r}] must be a uint8 tensor")
        if buf.numel() != ops.packed_bytes(numel, bits):
            raise ValueError(
                f"packed[{a!r}] has {buf.numel()} bytes; {numel} indices at {bits} bits "
                f"need {ops.packed_bytes(numel, bits)}"
            )
        q[a] = [torch.Size(shape), numel, dtype]
    if state is not None and not isinstance(state, ModelState):
        raise TypeError(f"state must be a wsq.nn.ModelState, got {type(state).__name__}")
    new_cls = _class_for(type(module), attrs)
    for a in q:
        del module._parameters[a]
    module.__class__ = new_cls
    module._wsq_state = ModelState() if state is None else state
    module._wsq_q = q
    for a in sorted(q):
        buf = packed[a]  # the tensor object itself: tied parameters share it across modules
        module.register_buffer(a + PACKED_SUFFIX, buf if buf.dim() == 1 else buf.reshape(-1))
        module.register_buffer(a + TABLE_SUFFIX, tables[a])  # persistent: indices need their values
    if isinstance(module, tnn.RNNBase):
        module._init_flat_weights()
    return module
