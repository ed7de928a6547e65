"""How a wsq layer holds one compressed tensor: packed indices (``<p>_packed``) and their table
(``<p>_table``), the table's length giving the index width; the checks a state dict's pair must pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from wsq.kernels import ops

__all__ = ["PACKED_SUFFIX", "TABLE_SUFFIX", "table_bits", "held_width", "held_bytes", "table_size"]

# a compressed attribute `a` is held as two buffers, a + PACKED_SUFFIX and a + TABLE_SUFFIX: the
# state_dict keys wsq layers save and load
TABLE_SUFFIX = "_table"
PACKED_SUFFIX = "_packed"


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


def table_size(t: Tensor) -> int:
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
