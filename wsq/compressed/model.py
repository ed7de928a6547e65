"""The compressed model: ``Compressed``, the pivot every stage shares.

wsq.core builds it (wsq.compress, the grid, merge), wsq.io reads and writes it. Each pooled tensor
is held in its owner (a wsq.nn layer) at the narrowest width for the values it uses, with its own
table (a gather of the one shared codebook); the shared codebook and each tensor's indices into it
(what a file stores) are derived from those tables.

The contract:

* ``Compressed`` (made by :meth:`Compressed.assemble` in the builders or :meth:`from_parts`, never
  directly): ``model`` (a new module; the input is never modified), ``codebook`` (float32 CPU (n,),
  ascending: the union of every tensor's values), ``bits`` (ceil(log2 n), >= 1: the file's index
  width), ``k`` / ``lo`` / ``hi`` (binning arguments, None when loaded), ``quantized`` (canonical
  name -> :class:`QuantizedParam`: names, shape, dtype = the compute dtype, packed = uint8
  LSB-first at the tensor's OWN width ``bits`` on the model's device, numel, table = its lookup
  table), ``global_packed(name)`` (its indices into ``codebook`` at ``bits``: what a file stores),
  ``pool_skipped`` ((name, reason) list).
* ``rest_state()``: every other entry of the original ``state_dict`` under its original name
  (biases, norms, BatchNorm running stats and num_batches_tracked, ...); this plus codebook, bits
  and the global indices is exactly what a file must hold. ``from_parts(model, codebook, bits,
  packed_by_name, rest_state, *, k=None, lo=None, hi=None)`` rebuilds from a fresh instance of the
  architecture (any device, or meta) -- the same assembly the builders use -- and raises
  wsq.FormatError listing missing/unexpected names or naming a mismatched tensor.
* ``with_indices(codebook, bits, packed_by_name)``: the same model with another codebook and
  indices (wsq.merge's output; nothing shared with the source). ``stats(coder="auto")``: sizes
  (see its docstring; file_bytes from wsq.compressed.layout.file_size);
  ``dequantized_state_dict()``: dense weights under the original names. A Compressed is treated
  as immutable (derived values are cached; a state-dict load into its model drops them).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn as tnn
from torch import Tensor

from wsq import nn as wnn
from wsq.compressed.assemble import HeldTensor, assemble, check_codebook, narrow, nbytes
from wsq.compressed.layout import file_size, stream_bits
from wsq.compressed.ties import name_list, view_key
from wsq.errors import FormatError
from wsq.kernels import ops

__all__ = ["QuantizedParam", "Compressed"]


@dataclass(frozen=True)
class QuantizedParam:
    """A compressed parameter as the model holds it.

    names (every tied name), shape and dtype (the compute dtype, live), numel; packed: uint8
    ``ceil(numel * bits / 8)`` LSB-first, the model's live buffer; bits: this tensor's own index
    width; table: its float32 ``(2**bits,)`` lookup table (the values it uses, NaN-padded).
    """

    names: tuple[str, ...]
    shape: torch.Size
    dtype: torch.dtype
    packed: Tensor
    numel: int
    bits: int
    table: Tensor


class Compressed:
    """A model whose pooled parameters are indices into one shared codebook.

    Made by :func:`compress`, :meth:`from_parts` (wsq.load) or wsq.merge. See the module docstring
    for the attributes. ``model`` runs as is (its wsq layers read the packed indices, each tensor
    at its own width).
    """

    def __init__(self, *, model, state, groups, rest_names, state_keys, k, lo, hi, skipped) -> None:
        self.model: tnn.Module = model
        self._state: wnn.ModelState = state
        self._groups: list[HeldTensor] = groups
        self._rest_names: list[str] = rest_names
        self._state_keys: list[str] = state_keys
        self.k: int | None = k
        self.lo: float | None = lo
        self.hi: float | None = hi
        self.pool_skipped: list[tuple[str, str]] = skipped
        self._cache_store: dict = {}
        self._cache_at = state.version

    @property
    def _cache(self) -> dict:
        # model.load_state_dict(...) replaces indices and tables in place and bumps the model
        # state's version: the codebook, sizes and counts derived before it are dropped
        if self._cache_at != self._state.version:
            self._cache_store, self._cache_at = {}, self._state.version
            self.k = self.lo = self.hi = None  # the binning that made the old codebook
        return self._cache_store

    def _tables(self) -> list[Tensor]:
        """Each group's table values (CPU float32, ascending, NaN padding cut off)."""
        hit = self._cache.get("tables")
        if hit is None:
            hit = []
            for g in self._groups:
                t = g.table().detach().cpu()
                hit.append(t[: wnn.table_size(t)])
            self._cache["tables"] = hit
        return hit

    @property
    def codebook(self) -> Tensor:
        """float32 CPU (n,), ascending: the shared values (the union of every tensor's values)."""
        hit = self._cache.get("codebook")
        if hit is None:
            hit = torch.unique(torch.cat(self._tables()))  # sorted; -0.0 and 0.0 are one value
            self._cache["codebook"] = hit
        return hit

    def _maps(self) -> list[Tensor]:
        """Per group, int32: its table entry i is ``codebook[map[i]]``."""
        hit = self._cache.get("maps")
        if hit is None:
            cb = self.codebook
            hit = [torch.searchsorted(cb, t).to(torch.int32) for t in self._tables()]
            self._cache["maps"] = hit
        return hit

    @property
    def bits(self) -> int:
        """Bits of an index into the shared codebook (the file's width): ceil(log2 n), >= 1."""
        return ops.bits_for(int(self.codebook.numel()))

    @property
    def n_weights(self) -> int:
        """Pooled (compressed) elements, tied tensors once."""
        return sum(g.numel for g in self._groups)

    @property
    def quantized(self) -> dict[str, QuantizedParam]:
        """canonical name -> QuantizedParam (packed and table: the model's live buffers)."""
        return {
            g.names[0]: QuantizedParam(
                g.names, g.shape, g.dtype, g.packed(), g.numel, g.bits(), g.table()
            )
            for g in self._groups
        }

    def global_packed(self, name: str) -> Tensor:
        """The indices of quantized parameter `name` into the shared codebook, packed at
        :attr:`bits` (uint8 CPU, LSB-first): what a file stores for it."""
        for g, m in zip(self._groups, self._maps(), strict=True):
            if g.names[0] == name:
                packed = g.packed().detach().cpu()
                return ops.remap_packed(packed, g.numel, g.bits(), m, self.bits)
        raise KeyError(f"{name!r} is not a quantized parameter of this model")

    def widths(self) -> dict[str, int]:
        """canonical name -> the index width each tensor is held at in memory."""
        return {g.names[0]: g.bits() for g in self._groups}

    def __repr__(self) -> str:
        w = sorted({g.bits() for g in self._groups})
        held = f"{w[0]}" if len(w) == 1 else f"{w[0]}-{w[-1]}"
        return (
            f"Compressed({len(self._groups)} tensors, {self.n_weights} weights -> "
            f"{self.codebook.numel()} shared values; held at {held}-bit indices)"
        )

    @classmethod
    def assemble(
        cls,
        template: tnn.Module,
        codebook: Tensor,
        bits: int,
        packed_by_name: Mapping,
        rest_state: Mapping[str, Tensor] | None,
        *,
        k: int | None,
        lo: float | None,
        hi: float | None,
        skipped: list[tuple[str, str]],
        narrowed: bool = False,
    ) -> Compressed:
        """What every builder (wsq.compress, the grid, merge, wsq.load) makes: `template` copied with
        its pooled parameters held by wsq layers (wsq.compressed.assemble.assemble says how);
        k / lo / hi: the binning that made `codebook` (None when unknown), skipped: the pool's."""
        parts = assemble(template, codebook, bits, packed_by_name, rest_state, narrowed=narrowed)
        return cls(**parts, k=k, lo=lo, hi=hi, skipped=list(skipped))

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
            packed_by_name: parameter name (any of a tied group's names) -> uint8 indices into
                `codebook` packed at `bits` (ceil(numel * bits / 8) bytes). Each tensor is then
                held at the width of the values it uses.
            rest_state: every other state_dict entry of the model, by name.

        Raises:
            wsq.FormatError: names missing/unexpected (listed), shape or size mismatch (named).
        """
        if rest_state is None:
            raise TypeError("rest_state must be a mapping name -> tensor, got None")
        return cls.assemble(
            model, codebook, bits, packed_by_name, rest_state, k=k, lo=lo, hi=hi, skipped=[]
        )

    def with_indices(
        self, codebook: Tensor, bits: int, packed_by_name: Mapping[str, Tensor]
    ) -> Compressed:
        """A new Compressed with the same architecture and uncompressed tensors (copied) but another
        codebook and packed indices (what wsq.merge and the grid method produce).

        Args:
            codebook: float (n,), ascending, finite; bits: index width with 2**bits >= n.
            packed_by_name: every canonical name of ``quantized`` -> uint8 indices into `codebook`
                packed at `bits`. Each tensor is then held at the width of the values it uses.

        Raises:
            wsq.FormatError: names missing/unexpected, or a packed size that does not match.
        """
        codebook, bits = check_codebook(codebook, bits)
        if not isinstance(packed_by_name, Mapping):
            raise TypeError("packed_by_name must be a mapping name -> uint8 tensor")
        names = [g.names[0] for g in self._groups]
        missing = [n for n in names if n not in packed_by_name]
        unexpected = [n for n in packed_by_name if n not in names]
        if missing or unexpected:
            msg = [f"missing: {name_list(missing, 20)}"] if missing else []
            msg += [f"unexpected: {name_list(unexpected, 20)}"] if unexpected else []
            raise FormatError(
                "packed indices do not match the compressed parameters; " + "; ".join(msg)
            )
        identity = torch.arange(codebook.numel())
        narrowed = {}
        for g in self._groups:
            t = packed_by_name[g.names[0]]
            need = ops.packed_bytes(g.numel, bits)
            if not isinstance(t, Tensor) or t.dtype != torch.uint8 or t.numel() != need:
                raise FormatError(
                    f"{g.names[0]}: packed indices must be {need} uint8 bytes ({g.numel} indices "
                    f"at {bits} bits)"
                )
            t = t.reshape(-1).to(g.packed().device)
            narrowed[id(g)] = narrow(t, g.numel, bits, identity, codebook, all_used=False)
        return self._replaced(narrowed, k=None, lo=None, hi=None)

    def _replaced(self, narrowed: dict, *, k, lo, hi) -> Compressed:
        """A copy of this Compressed whose groups hold ``narrowed[id(group)] = (packed, table)``;
        everything else (biases, norms...) is deep-copied, nothing is shared with this one."""
        state = wnn.ModelState()
        memo: dict = {id(self._state): state}
        for g in self._groups:  # tied owners hold the same two tensors: one memo entry each
            packed, table = narrowed[id(g)]
            memo[id(g.packed())] = packed
            memo[id(g.table())] = table
        model = copy.deepcopy(self.model, memo)
        groups = [
            HeldTensor(g.names, g.shape, g.numel, memo[id(g.owner)], g.attr) for g in self._groups
        ]
        return Compressed(
            model=model, state=state, groups=groups, rest_names=list(self._rest_names),
            state_keys=list(self._state_keys), k=k, lo=lo, hi=hi, skipped=list(self.pool_skipped),
        )  # fmt: skip

    def _write_values(self, values: Tensor) -> None:
        """Write `values` (float32 (n,), one per shared-codebook entry) into every tensor's table,
        in place: the model then computes as if the codebook held `values` (merge candidates)."""
        done: set[int] = set()
        for g, m in zip(self._groups, self._maps(), strict=True):
            t = g.table()
            if id(t) not in done:
                done.add(id(t))
                t[: m.numel()].copy_(values[m.to(torch.int64)])

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
            c = torch.zeros(self.codebook.numel(), dtype=torch.int64)
            for g, m in zip(self._groups, self._maps(), strict=True):
                b = g.bits()
                idx = ops.unpack(g.packed(), g.numel, b, torch.uint8 if b <= 8 else torch.int32)
                local = torch.bincount(idx, minlength=m.numel())[: m.numel()].cpu()
                c.index_add_(0, m.to(torch.int64), local)
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
        file_bytes, n_skipped and skipped (names left out of the pool), and the keys of
        :meth:`memory` (param_bytes_dense, param_bytes_compressed, cr_memory, bits_memory, widths).
        """
        if coder not in ("auto", "ans", "huffman"):
            raise ValueError(f"coder must be 'auto', 'ans' or 'huffman', got {coder!r}")
        key = ("file", coder)
        if key not in self._cache:
            self._cache[key] = file_size(self, coder)
        file_bytes = int(self._cache[key])
        key = ("streams", coder)
        if key not in self._cache:
            self._cache[key] = stream_bits(self, coder)
        coded_bits = int(self._cache[key])
        n_weights = self.n_weights
        rest = self.rest_state()
        seen: set = set()
        rest_bytes = 0
        for t in rest.values():
            key = view_key(t)
            if key not in seen:
                seen.add(key)
                rest_bytes += nbytes(t)
        q_dense = sum(g.numel * torch.empty(0, dtype=g.dtype).element_size() for g in self._groups)
        original = q_dense + rest_bytes
        return {
            "n_weights": n_weights,
            "n_bins": int(self.codebook.numel()),
            "bits_fixed": self.bits,
            "entropy_bound": self.entropy_bound(),
            "bits_entropy": coded_bits / n_weights,
            "coder": coder,
            "original_bytes": original,
            "file_bytes": file_bytes,
            "cr": original / file_bytes,
            "n_skipped": len(self.pool_skipped),
            "skipped": [n for n, _ in self.pool_skipped],
            **self.memory(),
        }

    def memory(self) -> dict:
        """What the model holds in memory, without encoding anything (cheap).

        Keys: param_bytes_dense and param_bytes_compressed (the model's parameters and buffers,
        dense vs as the compressed model holds them: packed indices and tables, the rest, tied
        tensors once), cr_memory (their ratio), bits_memory (bits per pooled weight in memory:
        packed indices plus tables, each tensor at its own width) and widths (index width ->
        pooled weights held at it).
        """
        seen: set = set()
        lut_ids = {id(g.packed()) for g in self._groups} | {id(g.table()) for g in self._groups}
        comp = other = 0
        for t in list(self.model.parameters()) + list(self.model.buffers()):
            key = view_key(t)
            if key in seen:
                continue
            seen.add(key)
            comp += nbytes(t)
            if id(t) not in lut_ids:
                other += nbytes(t)
        dense = other + sum(
            g.numel * torch.empty(0, dtype=g.dtype).element_size() for g in self._groups
        )
        widths: dict[int, int] = {}
        for g in self._groups:
            widths[g.bits()] = widths.get(g.bits(), 0) + g.numel
        return {
            "param_bytes_dense": dense,
            "param_bytes_compressed": comp,
            "cr_memory": dense / comp,
            "bits_memory": 8 * (comp - other) / self.n_weights,
            "widths": {b: widths[b] for b in sorted(widths)},
        }
