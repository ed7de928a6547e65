"""Lazy access to the compiled modules.

Nothing here runs on ``import wsq``: the C++ module is imported at the first kernel call, and the CUDA
module only when a CUDA tensor reaches a kernel, so a CPU-only machine never touches CUDA.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType

# Instruction-set levels of the CPU kernels, lowest first (csrc/cpu/cpu_features.h).
ISA_LEVELS = ("scalar", "avx2", "avx512")


@functools.cache
def cpu() -> ModuleType:
    try:
        from wsq import _C
    except ImportError as e:  # a source checkout that was never built, or a broken wheel
        raise ImportError(
            "wsq's C++ extension wsq._C could not be imported; reinstall wsq with "
            f"`pip install .` (underlying error: {e})"
        ) from e
    # WSQ_ISA caps the kernel level for the whole process (a test or bench run of a lower path on
    # a bigger CPU). Read here, at the first kernel call, so that `import wsq` stays free of it.
    want = os.environ.get("WSQ_ISA", "").strip().lower()
    if want:
        try:
            _C.set_isa(want)
        except ValueError as e:
            raise ValueError(f"environment variable WSQ_ISA={want!r}: {e}") from None
    return _C


@functools.cache
def _cuda_or_error() -> tuple[ModuleType | None, str]:
    try:
        from wsq import _cuda
    except ImportError as e:
        return None, (
            "wsq was built without its CUDA extension (wsq._cuda): rebuild with nvcc on PATH "
            f"and WSQ_CUDA=AUTO or ON ({e})"
        )
    return _cuda, ""


def cuda_built() -> bool:
    """True when the wsq._cuda module exists (importing it initialises no device)."""
    import importlib.util

    return importlib.util.find_spec("wsq._cuda") is not None


def cuda() -> ModuleType:
    """The CUDA module, or a RuntimeError saying why it is missing (raised at the call needing it)."""
    mod, why = _cuda_or_error()
    if mod is None:
        raise RuntimeError(why)
    return mod
