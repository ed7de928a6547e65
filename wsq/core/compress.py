"""Structure-agnostic compression: any model -> one pooled codebook -> a model on packed indices.

Contract (read by wsq.io, wsq.search and wsq.merge; Pool and collect_pool are re-exported here):

* The pool (which parameters share the codebook): wsq.core.pool.
* ``Compressed`` (made by :func:`compress` or :meth:`Compressed.from_parts`, never directly):
  ``model`` (a new module; the input is never modified), ``codebook`` (float32 CPU (n,), ascending),
  ``bits`` (ceil(log2 n), >= 1), ``k`` / ``lo`` / ``hi`` (binning arguments, None when loaded),
  ``quantized`` (canonical name -> :class:`QuantizedParam`: names, shape, dtype = the original
  parameter dtype, packed = uint8 (ceil(numel*bits/8),) LSB-first, on the model's device, numel),
  ``pool_skipped`` ((name, reason) list).
  ``rest_state()``: every other entry of the original ``state_dict`` under its original name
  (biases, norms, BatchNorm running stats and num_batches_tracked, ...); this plus codebook, bits
  and the packed indices is exactly what a file must hold. ``from_parts(model, codebook, bits,
  packed_by_name, rest_state, *, k=None, lo=None, hi=None)`` rebuilds from a fresh instance of the
  architecture (any device, or meta) -- the same assembly code compress uses -- and raises
  wsq.FormatError listing missing/unexpected names or naming a mismatched tensor.
  ``with_indices(codebook, bits, packed_by_name)``: the same model with another codebook and
  indices (wsq.merge's output; nothing shared with the source). ``stats(coder="auto")``: sizes
  (see its docstring; file_bytes from wsq.io.writer.file_size); ``dequantized_state_dict()``: dense
  weights under the original names. A Compressed is treated as immutable (stats are cached).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn as tnn
from torch import Tensor

from wsq import nn as wnn
from wsq.core.binning import _check_bound, _check_k
from wsq.core.pool import (
    Pool,
    PoolEntry,
    _is_lazy,
    _list,
    _tie_groups,
    collect_pool,
    view_key,
)
from wsq.errors import FormatError
from wsq.kernels import ops

__all__ = ["PoolEntry", "Pool", "collect_pool", "QuantizedParam", "Compressed", "compress"]


# ----------------------------------------------------------------------------- compressed model


@dataclass(frozen=True)
class QuantizedParam:
    """A compressed parameter: all its names, original shape and dtype, packed indices, numel."""

    names: tuple[str, ...]
    shape: torch.Size
    dtype: torch.dtype
    packed: Tensor
    numel: int


@dataclass
class _Group:
    names: tuple[str, ...]
    shape: torch.Size
    dtype: torch.dtype
    numel: int
    owner: tnn.Module  # a module holding it (tied ones share the packed buffer)
    attr: str

    def packed(self) -> Tensor:
        return self.owner._buffers[self.attr + "_packed"]

    def dense(self) -> Tensor:
        return self.owner.wsq_dequant(self.attr)


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _check_codebook(codebook, bits) -> tuple[Tensor, int]:
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


def _assemble(
    template: tnn.Module,
    codebook: Tensor,
    bits: int,
    packed_by_name: Mapping[str, Tensor],
    rest_state: Mapping[str, Tensor] | None,
    *,
    k: int | None,
    lo: float | None,
    hi: float | None,
    skipped: list[tuple[str, str]],
) -> Compressed:
    """Copy `template` without its compressed parameters, swap their owners to wsq modules, fill the
    rest from `rest_state` (None: keep the template's values, as compress does)."""
    if not isinstance(template, tnn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(template).__name__}")
    codebook, bits = _check_codebook(codebook, bits)
    lazy = [n for n, p in template.named_parameters(remove_duplicate=False) if _is_lazy(p)]
    if lazy:
        raise ValueError(f"parameters {_list(lazy)} of model are not initialised (lazy modules)")
    if not isinstance(packed_by_name, Mapping):
        raise TypeError("packed_by_name must be a mapping name -> uint8 tensor")
    groups = _tie_groups(template)
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
        if not isinstance(t, Tensor) or t.dtype != torch.uint8:
            raise FormatError(f"{n}: packed indices must be a uint8 tensor")
        if not p.is_floating_point():
            raise FormatError(
                f"{n}: model parameter is {p.dtype}, only floating-point ones are compressed"
            )
        need = ops.packed_bytes(p.numel(), bits)
        if t.numel() != need:
            raise FormatError(
                f"{n}: {t.numel()} bytes of packed indices; shape {tuple(p.shape)} at {bits} bits "
                f"needs {need}"
            )
        chosen[gi] = t.reshape(-1)
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
        msg = [f"missing: {_list(missing, 20)}"] if missing else []
        msg += [f"unexpected: {_list(unexpected, 20)}"] if unexpected else []
        raise FormatError("parameter names do not match the model; " + "; ".join(msg))
    if not chosen:
        raise FormatError("no compressed parameters given")

    memo = {id(o): None for gi in chosen for o in groups[gi][1]}
    model = copy.deepcopy(template, memo)
    shared = wnn.SharedCodebook(codebook, bits)
    tables: dict[torch.device, Tensor] = {}
    owners: dict[int, tuple[tnn.Module, dict]] = {}
    out_groups: list[_Group] = []
    for gi in sorted(chosen):
        names, objs = groups[gi]
        p = objs[0]
        packed = chosen[gi]
        dev = packed.device if p.is_meta else p.device
        if packed.device != dev:
            packed = packed.to(dev)
        first = None
        for n in names:
            mod, attr = _resolve(model, n)
            slot = owners.setdefault(id(mod), (mod, {}))[1]
            slot[attr] = (packed, p.shape, p.dtype, dev)
            if first is None:
                first = (mod, attr)
        out_groups.append(_Group(tuple(names), p.shape, p.dtype, p.numel(), first[0], first[1]))
    for mod, attrs in owners.values():
        devs = {v[3] for v in attrs.values()}
        if len(devs) > 1:
            raise ValueError(
                f"{type(mod).__name__} holds compressed parameters on several devices: {devs}"
            )
        dev = devs.pop()
        if dev not in tables:
            tables[dev] = shared.table(dev)
        # the deep copy left None where the compressed Parameters were: nothing dense is kept
        wnn.quantize_module_(
            mod,
            {a: v[0] for a, v in attrs.items()},
            shared,
            tables[dev],
            dtypes={a: v[2] for a, v in attrs.items()},
            shapes={a: v[1] for a, v in attrs.items()},
        )
    if rest_state is not None:
        _load_rest(model, rest_keys, rest_state)
    meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if meta:
        raise ValueError(
            f"tensors {_list(meta)} are still on the meta device (not part of the state_dict, e.g. "
            "non-persistent buffers): pass a model instance on a real device"
        )
    return Compressed(
        model=model, shared=shared, groups=out_groups, rest_names=rest_keys, state_keys=state_keys,
        k=k, lo=lo, hi=hi, skipped=list(skipped),
    )  # fmt: skip


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


class Compressed:
    """A model whose pooled parameters are indices into one shared codebook.

    Made by :func:`compress`, :meth:`from_parts` (wsq.load) or wsq.merge. See the module docstring
    for the attributes. ``model`` runs as is (its wsq layers read the packed indices).
    """

    def __init__(
        self, *, model, shared, groups, rest_names, state_keys, k, lo, hi, skipped
    ) -> None:
        self.model: tnn.Module = model
        self._shared: wnn.SharedCodebook = shared
        self._groups: list[_Group] = groups
        self._rest_names: list[str] = rest_names
        self._state_keys: list[str] = state_keys
        self.k: int | None = k
        self.lo: float | None = lo
        self.hi: float | None = hi
        self.pool_skipped: list[tuple[str, str]] = skipped
        self._cache_store: dict = {}
        self._cache_at = shared.version

    @property
    def _cache(self) -> dict:
        # model.load_state_dict(...) replaces indices and codebook in place and bumps the shared
        # codebook's version: sizes and counts computed before it are dropped
        if self._cache_at != self._shared.version:
            self._cache_store, self._cache_at = {}, self._shared.version
            self.k = self.lo = self.hi = None  # the binning that made the old codebook
        return self._cache_store

    @property
    def codebook(self) -> Tensor:
        """float32 CPU (n,), ascending: the shared values."""
        return self._shared.codebook

    @property
    def bits(self) -> int:
        """Bits per packed index: ceil(log2 n), at least 1."""
        return self._shared.bits

    @property
    def n_weights(self) -> int:
        """Pooled (compressed) elements, tied tensors once."""
        return sum(g.numel for g in self._groups)

    @property
    def quantized(self) -> dict[str, QuantizedParam]:
        """canonical name -> QuantizedParam (packed: the model's live buffer, on its device)."""
        return {
            g.names[0]: QuantizedParam(g.names, g.shape, g.dtype, g.packed(), g.numel)
            for g in self._groups
        }

    def __repr__(self) -> str:
        return (
            f"Compressed({len(self._groups)} tensors, {self.n_weights} weights -> "
            f"{self.codebook.numel()} shared values at {self.bits} bits)"
        )

    @classmethod
    def from_parts(
        cls,
        model: tnn.Module,
        codebook: Tensor,
        bits: int,
        packed_by_name: Mapping[str, Tensor],
        rest_state: Mapping[str, Tensor],
        *,
        k: int | None = None,
        lo: float | None = None,
        hi: float | None = None,
    ) -> Compressed:
        """Rebuild from a fresh instance of the architecture plus the stored parts (wsq.load's path).

        Args:
            model: a fresh instance (any device, or meta); it is not modified.
            codebook: float (n,), ascending, finite.
            bits: index width, 2**bits >= n.
            packed_by_name: parameter name (any of a tied group's names) -> uint8 packed indices
                of ceil(numel * bits / 8) bytes.
            rest_state: every other state_dict entry of the model, by name.

        Raises:
            wsq.FormatError: names missing/unexpected (listed), shape or size mismatch (named).
        """
        if rest_state is None:
            raise TypeError("rest_state must be a mapping name -> tensor, got None")
        return _assemble(
            model, codebook, bits, packed_by_name, rest_state, k=k, lo=lo, hi=hi, skipped=[]
        )

    def with_indices(
        self, codebook: Tensor, bits: int, packed_by_name: Mapping[str, Tensor]
    ) -> Compressed:
        """A new Compressed with the same architecture and uncompressed tensors (copied) but another
        codebook and packed indices: what wsq.merge produces after remapping indices.

        Args:
            codebook: float (n,), ascending, finite; bits: index width with 2**bits >= n.
            packed_by_name: every canonical name of ``quantized`` -> uint8 packed indices at `bits`.

        Raises:
            wsq.FormatError: names missing/unexpected, or a packed size that does not match.
        """
        codebook, bits = _check_codebook(codebook, bits)
        if not isinstance(packed_by_name, Mapping):
            raise TypeError("packed_by_name must be a mapping name -> uint8 tensor")
        names = [g.names[0] for g in self._groups]
        missing = [n for n in names if n not in packed_by_name]
        unexpected = [n for n in packed_by_name if n not in names]
        if missing or unexpected:
            msg = [f"missing: {_list(missing, 20)}"] if missing else []
            msg += [f"unexpected: {_list(unexpected, 20)}"] if unexpected else []
            raise FormatError(
                "packed indices do not match the compressed parameters; " + "; ".join(msg)
            )
        for g in self._groups:
            t = packed_by_name[g.names[0]]
            need = ops.packed_bytes(g.numel, bits)
            if not isinstance(t, Tensor) or t.dtype != torch.uint8 or t.numel() != need:
                raise FormatError(
                    f"{g.names[0]}: packed indices must be {need} uint8 bytes ({g.numel} indices "
                    f"at {bits} bits)"
                )
        shared = wnn.SharedCodebook(codebook, bits)
        # the deep copy skips the old indices and tables; the rest (biases, norms...) is copied
        memo: dict = {id(self._shared): shared}
        owners = [m for m in self.model.modules() if wnn.is_quantized(m)]
        for m in owners:
            for n, t in m._buffers.items():
                if n == "wsq_table" or (n.endswith("_packed") and n[: -len("_packed")] in m._wsq_q):
                    memo[id(t)] = None
        model = copy.deepcopy(self.model, memo)
        by_owner = {}  # (id(old module), attr) -> packed
        for g in self._groups:
            t = packed_by_name[g.names[0]].reshape(-1)
            for n in g.names:
                mod, attr = _resolve(self.model, n)
                by_owner[(id(mod), attr)] = t
        new_mods = dict(zip((id(m) for m in self.model.modules()), model.modules(), strict=True))
        tables: dict[torch.device, Tensor] = {}
        moved: dict[int, Tensor] = {}
        out_groups = []
        for old in owners:
            new = new_mods[id(old)]
            dev = old._buffers["wsq_table"].device
            if dev not in tables:
                tables[dev] = shared.table(dev)
            new._buffers["wsq_table"] = tables[dev]
            for attr in new._wsq_q:
                src = by_owner[(id(old), attr)]
                if id(src) not in moved:  # tied owners keep sharing one tensor
                    moved[id(src)] = src.to(dev)
                new._buffers[attr + "_packed"] = moved[id(src)]
        for g in self._groups:
            out_groups.append(
                _Group(g.names, g.shape, g.dtype, g.numel, new_mods[id(g.owner)], g.attr)
            )
        return Compressed(
            model=model, shared=shared, groups=out_groups, rest_names=list(self._rest_names),
            state_keys=list(self._state_keys), k=None, lo=None, hi=None,
            skipped=list(self.pool_skipped),
        )  # fmt: skip

    # ------------------------------------------------------------------ parts

    def rest_state(self) -> dict[str, Tensor]:
        """Every uncompressed state_dict entry of the model under its original name (detached)."""
        sd = self.model.state_dict(keep_vars=True)
        return {n: sd[n].detach() for n in self._rest_names}

    def dequantized_state_dict(self) -> dict[str, Tensor]:
        """The dense state_dict in the original key order (tied names share one tensor)."""
        sd = self.model.state_dict(keep_vars=True)
        dense = {}
        for g in self._groups:
            w = g.dense()
            for n in g.names:
                dense[n] = w
        return {n: dense[n] if n in dense else sd[n].detach() for n in self._state_keys}

    def index_counts(self) -> Tensor:
        """int64 (n,): how many pooled weights use each codebook entry (cached)."""
        c = self._cache.get("counts")
        if c is None:
            n = self.codebook.numel()
            c = torch.zeros(n, dtype=torch.int64)
            for g in self._groups:
                idx = ops.unpack(g.packed(), g.numel, self.bits)
                c += torch.bincount(idx.to(torch.int64), minlength=n)[:n].cpu()
            self._cache["counts"] = c
        return c

    def entropy_bound(self) -> float:
        """Empirical entropy of the indices, bits per pooled weight (what an ideal coder reaches)."""
        c = self.index_counts().double()
        p = c[c > 0] / c.sum()
        return float(-(p * torch.log2(p)).sum()) if p.numel() > 1 else 0.0

    def stats(self, coder: str = "auto") -> dict:
        """Honest sizes of this compressed model.

        Keys: n_weights (pooled), n_bins (codebook entries), bits_fixed (ceil log2 n),
        entropy_bound (bits/weight from the index histogram), bits_entropy (bits of the coded index
        streams per pooled weight, as wsq.save writes them with `coder`), original_bytes (every
        parameter and persistent buffer a dense file holds, at the model's dtypes, tied once),
        file_bytes (exactly the size of ``wsq.save(self, path, coder=coder)``), cr = original_bytes /
        file_bytes, n_skipped and skipped (names left out of the pool), param_bytes_dense and
        param_bytes_compressed (memory of the model's parameters and buffers, dense vs as stored by
        the compressed model: packed indices, one table, the rest).
        """
        if coder not in ("auto", "ans", "huffman"):
            raise ValueError(f"coder must be 'auto', 'ans' or 'huffman', got {coder!r}")
        from wsq.io import writer as wio

        key = ("file", coder)
        if key not in self._cache:
            self._cache[key] = wio.file_size(self, coder)
        file_bytes = int(self._cache[key])
        key = ("streams", coder)
        if key not in self._cache:
            self._cache[key] = wio.stream_bits(self, coder)
        stream_bits = int(self._cache[key])
        n_weights = self.n_weights
        rest = self.rest_state()
        seen: set = set()
        rest_bytes = 0
        for t in rest.values():
            key = view_key(t)
            if key not in seen:
                seen.add(key)
                rest_bytes += _nbytes(t)
        q_dense = sum(g.numel * torch.empty(0, dtype=g.dtype).element_size() for g in self._groups)
        original = q_dense + rest_bytes
        mem_dense, mem_comp = self._memory()
        return {
            "n_weights": n_weights,
            "n_bins": int(self.codebook.numel()),
            "bits_fixed": self.bits,
            "entropy_bound": self.entropy_bound(),
            "bits_entropy": stream_bits / n_weights,
            "coder": coder,
            "original_bytes": original,
            "file_bytes": file_bytes,
            "cr": original / file_bytes,
            "n_skipped": len(self.pool_skipped),
            "skipped": [n for n, _ in self.pool_skipped],
            "param_bytes_dense": mem_dense,
            "param_bytes_compressed": mem_comp,
        }

    def _memory(self) -> tuple[int, int]:
        seen: set = set()
        packed_ids = {id(g.packed()) for g in self._groups}
        comp = other = 0
        for t in list(self.model.parameters()) + list(self.model.buffers()):
            key = view_key(t)
            if key in seen:
                continue
            seen.add(key)
            comp += _nbytes(t)
            if id(t) not in packed_ids and t is not self._table():
                other += _nbytes(t)
        dense = other + sum(
            g.numel * torch.empty(0, dtype=g.dtype).element_size() for g in self._groups
        )
        return dense, comp

    def _table(self) -> Tensor:
        g = self._groups[0]
        return g.owner._buffers["wsq_table"]


# ----------------------------------------------------------------------------- compress


def compress(
    model: tnn.Module,
    k: int,
    *,
    lo: float | None = None,
    hi: float | None = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    min_dims: int = 2,
) -> Compressed:
    """Compress `model` with one codebook of at most k shared values over all its pooled weights.

    Pools the eligible parameters (see :func:`collect_pool`), splits [lo, hi] (default: the pool's
    range) into k equal bins, replaces each weight by its bin's mean and packs each tensor's
    indices at ceil(log2 n) bits. The returned ``.model`` is a new module (the input is untouched,
    and its compressed weights are never copied densely) whose owners of compressed parameters
    are wsq.nn layers sharing one lookup table.

    Args:
        model: any nn.Module with materialised float32/float16/bfloat16 (or float64) weights.
        k: number of bins, 2..65536 (n <= k are non-empty).
        lo, hi: optional range; weights outside it go to the end bins.
        include, exclude, min_dims: pool selection (see collect_pool).

    Raises:
        ValueError: k out of range, NaN/Inf weights (naming the parameter), meta-device parameters,
            no eligible parameters, lo >= hi.
    """
    k = _check_k(k)
    lo, hi = _check_bound("lo", lo), _check_bound("hi", hi)
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"lo must be < hi, got lo={lo}, hi={hi}")
    pool = collect_pool(model, include=include, exclude=exclude, min_dims=min_dims)
    flat = pool.flat()
    b = pool.bin(flat, k, lo=lo, hi=hi)
    del flat
    bits = b.bits
    idx = b.indices.reshape(-1)
    packed = {e.name: ops.pack(idx[e.offset : e.offset + e.numel], bits) for e in pool.entries}
    codebook, lo32, hi32 = b.codebook, b.lo, b.hi
    del idx, b  # the raw indices are no longer needed once packed
    return _assemble(
        model, codebook, bits, packed, None, k=k, lo=lo32, hi=hi32, skipped=pool.skipped
    )
