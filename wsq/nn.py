"""Drop-in layers that run on packed codebook indices, each tensor at its own width.

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

Each compressed parameter ``<p>`` is held as two buffers of its owner:

* ``<p>_packed``: uint8, ``numel * b`` bits LSB-first, where ``b`` is the narrowest width for the
  values THIS tensor uses (a layer that uses 3 of the model's 400 shared values is held at 2 bits);
* ``<p>_table``: float32 ``(2**b,)``, the values it uses (a gather of the model's shared codebook,
  ascending) padded with NaN. The width is the table's length: ``b = log2(table.numel())``.

The model's ONE shared codebook (what a file stores) is the sorted union of every tensor's values
(:attr:`wsq.Compressed.codebook`); each tensor's dequantized weights are bit-identical to indexing
that codebook. Both buffers are persistent, so a state dict carries each tensor's values with its
indices and a load, whole or partial, is exact for the tensors it names and leaves every other one
bit-identical (see ``_Quantized._load_from_state_dict``). Tied parameters share both buffers (the
same tensor objects) across their owners, also after ``.to(device)``, ``.cuda()``, ``.half()``...;
dtype conversions change the dtype a layer computes in, never its float32 table.

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
    "table_bits",
    "held_bytes",
    "held_width",
]

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_TABLE = "_table"
_PACKED = "_packed"


# table length -> index width; a dict lookup (not int.bit_length) so torch.compile on torch 2.4
# traces a layer's forward, where the width is read from its table on every call
_WIDTH = {1 << b: b for b in range(1, 17)}


def table_bits(table: Tensor) -> int:
    """Index width of a lookup table of 2**b entries (b = 1..16)."""
    return _WIDTH[table.shape[0]]


def held_width(n_values: int) -> int:
    """The index width a wsq layer holds a tensor taking `n_values` distinct values at."""
    return ops.bits_for(max(1, n_values))


def held_bytes(numel: int, n_values: int) -> int:
    """Bytes a wsq layer holds for a tensor of `numel` weights taking `n_values` distinct values:
    its indices packed at b = held_width(n_values) bits plus its 2**b float32 table."""
    bits = held_width(n_values)
    return ops.packed_bytes(numel, bits) + (4 << bits)


class ModelState:
    """State shared by every wsq module of one compressed model.

    ``version`` is bumped by every state-dict load, so a :class:`wsq.Compressed` drops sizes and the
    codebook it derived before. It also remembers, per ``Module._apply`` call (``.to()``,
    ``.cuda()``, ``.half()``...), which new tensor each shared tensor (tied packed indices and their
    table) became, so modules visited one after the other keep sharing the moved tensor instead of
    one copy each. That memo holds weak references only and is never pickled.
    """

    def __init__(self) -> None:
        self.version = 0
        self._fn: weakref.ref | None = None
        self._moved: dict[int, tuple[weakref.ref, weakref.ref]] = {}

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

    def __getstate__(self) -> dict:
        return {"version": self.version}  # the memo's weak references cannot (and need not) travel

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self.version = int(state.get("version", 0))

    def __deepcopy__(self, memo):
        new = ModelState()
        new.version = self.version
        memo[id(self)] = new
        return new

    def __repr__(self) -> str:
        return f"ModelState(version={self.version})"


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
        return table_bits(self._buffers[attr + _TABLE])

    def wsq_dequant(self, attr: str) -> Tensor:
        """The dense value of compressed attribute `attr`: original shape, compute dtype."""
        shape, numel, dtype = self._wsq_q[attr]
        packed = self._buffers[attr + _PACKED]
        table = self._buffers[attr + _TABLE]
        if dtype in _KERNEL_DTYPES:
            return ops.dequant(packed, numel, table_bits(table), table, dtype, shape=shape)
        return ops.dequant(packed, numel, table_bits(table), table, shape=shape).to(dtype)

    def _wsq_buffer_names(self) -> list[str]:
        return [a + s for a in sorted(self._wsq_q) for s in (_PACKED, _TABLE)]

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
            self._buffers[n] = self._wsq_state._move(fn, t, is_table=n.endswith(_TABLE))
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
            kp, kt = prefix + a + _PACKED, prefix + a + _TABLE
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
                _assign(self._buffers, a + _PACKED, packed)
                _assign(self._buffers, a + _TABLE, table)
        self._wsq_state.version += 1

    def extra_repr(self) -> str:
        base = super().extra_repr()
        parts = []
        for a, (s, _, d) in self._wsq_q.items():
            t = self._buffers[a + _TABLE]
            n = _table_size(t)
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


def _table_size(t: Tensor) -> int:
    """Entries before the NaN padding of a lookup table."""
    if t.is_meta:
        return t.numel()
    nan = torch.isnan(t.detach())
    return int(nan.int().argmax()) if bool(nan.any()) else t.numel()


def _check_pair(packed, table, numel: int, kp: str, kt: str) -> tuple[Tensor, Tensor]:
    """Validate a state dict's (packed indices, table) pair for a tensor of `numel` elements."""
    if not isinstance(table, Tensor) or table.dtype != torch.float32 or table.dim() != 1:
        what = f"{table.dtype} {table.dim()}-D" if isinstance(table, Tensor) else type(table)
        raise ValueError(f"state_dict[{kt!r}] must be a 1-D float32 tensor, got {what}")
    size = table.numel()
    if size < 2 or size > 1 << 16 or size & (size - 1):
        raise ValueError(
            f"state_dict[{kt!r}] has {size} entries: a lookup table has 2**b entries, b in 1..16"
        )
    bits = table_bits(table)
    t = table.detach().cpu()
    nan = torch.isnan(t)
    n = int(nan.int().argmax()) if bool(nan.any()) else size
    cb = t[:n]
    if (
        n == 0
        or not bool(nan[n:].all())
        or not bool(torch.isfinite(cb).all())
        or not bool((cb[1:] >= cb[:-1]).all())
    ):
        raise ValueError(
            f"state_dict[{kt!r}] is not a wsq table: it must hold n >= 1 finite ascending values "
            "followed by NaN padding"
        )
    if not isinstance(packed, Tensor) or packed.dtype != torch.uint8:
        what = packed.dtype if isinstance(packed, Tensor) else type(packed).__name__
        raise ValueError(f"state_dict[{kp!r}] must be a uint8 tensor, got {what}")
    need = ops.packed_bytes(numel, bits)
    if packed.numel() != need:
        raise ValueError(
            f"state_dict[{kp!r}] has {packed.numel()} bytes; {numel} indices at {bits} bits (the "
            f"width of {kt}) need {need}"
        )
    flat = packed.detach().reshape(-1)
    if numel and n < size:
        top = int(ops.unpack(flat.cpu(), numel, bits, torch.int32 if bits > 8 else None).max())
        if top >= n:
            raise ValueError(f"state_dict[{kp!r}] holds index {top}, beyond the {n} values of {kt}")
    return flat, table.detach()


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
            self._buffers["weight" + _PACKED],
            self.out_features,
            self.wsq_bits("weight"),
            self._buffers["weight" + _TABLE],
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
            self._buffers["weight" + _PACKED],
            input,
            self.num_embeddings,
            self.embedding_dim,
            self.wsq_bits("weight"),
            self._buffers["weight" + _TABLE],
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
        for extra in (a + _PACKED, a + _TABLE):
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
        module.register_buffer(a + _PACKED, buf if buf.dim() == 1 else buf.reshape(-1))
        module.register_buffer(a + _TABLE, tables[a])  # persistent: indices need their values
    if isinstance(module, tnn.RNNBase):
        module._init_flat_weights()
    return module
