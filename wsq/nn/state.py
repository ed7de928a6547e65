"""The state every wsq layer of one compressed model shares: a version bumped by state-dict loads,
and which moved tensor each shared one became during a ``.to()``/``.half()`` (so ties survive)."""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

__all__ = ["ModelState"]


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
