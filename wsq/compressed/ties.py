"""Which parameters of a model are one tensor: tie groups and byte identity.

Both the pool (wsq.core.pool: which weights share the codebook) and the compressed model
(wsq.compressed: tied names share one packed buffer and table) group parameters the same way; the
rule lives here, below both.
"""

from __future__ import annotations

import torch.nn as tnn
from torch import Tensor

__all__ = ["view_key", "tie_groups", "is_lazy", "name_list"]


def view_key(t: Tensor) -> tuple:
    """Identity of a tensor's bytes: two views with equal keys read the same memory (count once)."""
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), t.dtype, tuple(t.shape))


def tie_groups(model: tnn.Module) -> list[tuple[list[str], list[Tensor]]]:
    """Parameters grouped by identity (same object, or same storage/offset/shape/strides/dtype)."""
    groups: list[tuple[list[str], list[Tensor]]] = []
    by_key: dict = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        keys = [("id", id(p))]
        if not p.is_meta and p.numel() > 0:
            keys.append(
                ("st", p.device, p.untyped_storage().data_ptr(), p.storage_offset(), tuple(p.shape),
                 p.stride(), p.dtype)
            )  # fmt: skip
        gi = next((by_key[k] for k in keys if k in by_key), None)
        if gi is None:
            gi = len(groups)
            groups.append(([], []))
        names, objs = groups[gi]
        names.append(name)
        if not any(o is p for o in objs):
            objs.append(p)
        for k in keys:
            by_key[k] = gi
    return groups


def is_lazy(p: Tensor) -> bool:
    return isinstance(p, tnn.parameter.UninitializedTensorMixin)


def name_list(names: list[str], limit: int = 8) -> str:
    """The first `limit` names, comma-separated, and how many more: errors name what they refuse
    without printing a whole model."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
