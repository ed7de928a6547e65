"""The examples' weight cache: trained models kept as safetensors files, written atomically."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable

import torch.nn as nn

__all__ = ["cache_dir", "cached"]


def cache_dir() -> str:
    """``$XDG_CACHE_HOME/wsq`` (when set and absolute) or ``~/.cache/wsq``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "wsq")


def cached(
    path: str, build: Callable[[], nn.Module], train: Callable[[], nn.Module]
) -> tuple[nn.Module, str | None]:
    """(model in eval mode, path or None): `build()` loaded from the cache file at `path` when it
    loads cleanly, else `train()` saved there (temp file + rename; None when the directory is not
    writable). A truncated or stale file (other keys or shapes) is retrained and replaced."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    if os.path.isfile(path):
        model = build()
        try:
            model.load_state_dict(load_file(path), strict=True)
            return model.eval(), path
        except (SafetensorError, RuntimeError, OSError, ValueError):
            pass  # corrupted or stale: retrain below
    model = train()
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
        os.replace(tmp, path)
    except OSError:
        return model.eval(), None
    return model.eval(), path
