"""Argument checks and dispatch helpers shared by the modules of wsq.kernels.

Every public function of wsq/kernels/ops.py checks its arguments with these (TypeError /
ValueError naming the argument) before it calls its op; ``_direct`` says when an eager CPU call may
skip the torch.library dispatcher; ``_CODES`` are the dtype codes both backends pass to C++.
"""

# No `from __future__ import annotations`: torch 2.4 (the supported floor) infers custom-op
# schemas from real annotation objects and rejects the strings that import would produce.

import torch

# dtype codes shared with csrc/common.h (enum DType)
_CODES = {
    torch.float32: 0,
    torch.float16: 1,
    torch.bfloat16: 2,
    torch.uint8: 3,
    torch.uint16: 4,
    torch.int32: 5,
    torch.int64: 6,
}
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
_INDEX_DTYPES = (torch.uint8, torch.uint16, torch.int32, torch.int64)


def packed_bytes(n: int, bits: int) -> int:
    """Bytes of n indices packed at `bits` bits each (ceil(n*bits/8))."""
    return (n * bits + 7) // 8


# ----------------------------------------------------------------------------- argument checks


def _tensor(name: str, t, dtypes=None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(
            f"{name} must have dtype in ({allowed}), got {str(t.dtype).replace('torch.', '')}"
        )
    if t.device.type not in ("cpu", "cuda", "meta"):
        raise ValueError(f"{name} is on device {t.device}; wsq kernels run on cpu and cuda")
    return t


def _same_device(**tensors) -> None:
    first = None
    for t in tensors.values():
        if t is None:
            continue
        if first is None:
            first = t.device
        elif t.device != first:  # the one-device case, every call, stays cheap
            desc = ", ".join(f"{n} on {t.device}" for n, t in tensors.items() if t is not None)
            raise ValueError(f"tensors must be on one device: {desc}")


def _bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"bits must be an int, got {type(bits).__name__}")
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    return bits


def _k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= k <= 65536:
        raise ValueError(f"k must be in 1..65536, got {k}")
    return k


def _count(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    return n


def _flat(name: str, t: torch.Tensor) -> torch.Tensor:
    """A contiguous 1-D view (copying only when t is strided)."""
    if t.is_contiguous():
        return t if t.dim() == 1 else t.reshape(-1)
    return t.contiguous().reshape(-1)


def _packed(name: str, packed, n: int, bits: int) -> torch.Tensor:
    _tensor(name, packed, (torch.uint8,))
    need = packed_bytes(n, bits)
    if packed.numel() != need:
        raise ValueError(
            f"{name} holds {packed.numel()} bytes; {n} indices at {bits} bits need {need}"
        )
    return _flat(name, packed)


_PLAIN = (torch.Tensor, torch.nn.Parameter)  # what _direct accepts (no tensor subclasses)


def _direct(*tensors) -> bool:
    """True when a CPU inference op may call its kernel without the torch.library dispatcher.

    The dispatcher exists for tracing (torch.compile/export, fake tensors, dispatch and function
    modes) and autograd; in plain eager CPU inference it cost 25-40 us a call, a third to half of
    the kernel of a 1024 x 1024 4-bit layer (bench/README.md, issue 10 section). Anything else, a
    tensor subclass, an active mode or a tensor that needs grad, takes the op as before.
    """
    if (
        torch.compiler.is_compiling()
        or torch._C._len_torch_dispatch_stack()
        or torch._C._is_torch_function_mode_enabled()
    ):
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t is None:
            continue
        if type(t) not in _PLAIN or not t.is_cpu or (grad and t.requires_grad):
            return False
    return True
