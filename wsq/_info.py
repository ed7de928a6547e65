from __future__ import annotations

from wsq import _native


def info() -> dict:
    """What this wsq build is and what it can use here.

    Keys: ``version``; ``cuda_built`` (wsq._cuda exists); ``cuda_available`` (built and a device is
    visible; this call may initialise the CUDA runtime, import does not); ``cuda_devices``;
    ``cpu_isa`` (the kernel level in use: scalar, avx2 or avx512, capped by ``WSQ_ISA`` or
    ``wsq.ops.set_isa``); ``cpu_isa_detected`` (the CPU's best);
    ``cpu_features`` (flags seen on this CPU); ``openmp_threads``; ``torch``.
    """
    import torch

    from wsq import __version__

    c = _native.cpu()
    built = _native.cuda_built()
    devices = 0
    if built:
        try:
            devices = int(_native.cuda().device_count())
        except Exception:  # a module that fails to load on this machine means "not available"
            devices = 0
    return {
        "version": __version__,
        "cuda_built": built,
        "cuda_available": devices > 0,
        "cuda_devices": devices,
        "cpu_isa": c.active_isa(),
        "cpu_isa_detected": c.detected_isa(),
        "cpu_features": c.cpu_feature_list().split(",") if c.cpu_feature_list() else [],
        "openmp_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
