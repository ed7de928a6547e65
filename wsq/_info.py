from __future__ import annotations

from wsq.kernels import native as _native

# The package version lives here (not in wsq/__init__.py) so info() needs no import of the package.
__version__ = "0.1.0"


def info() -> dict:
    """What this wsq build is and what it can use here.

    Keys: ``version``; ``cuda_built`` (wsq._cuda exists); ``cuda_available`` (built and a device is
    visible; this call may initialise the CUDA runtime, import does not); ``cuda_devices``;
    ``cuda_error`` (why ``cuda_available`` is False: the CUDA runtime's own error text, such as a
    driver older than the runtime, or why wsq._cuda failed to load; "" when a device is seen);
    ``cpu_isa`` (the kernel level in use: scalar, avx2 or avx512, capped by ``WSQ_ISA`` or
    ``wsq.kernels.ops.set_isa``); ``cpu_isa_detected`` (the CPU's best);
    ``cpu_features`` (flags seen on this CPU); ``openmp_threads`` (threads wsq's CPU kernels
    use: they share torch's OpenMP runtime, so ``torch.set_num_threads`` sets it); ``torch``.
    """
    import torch

    c = _native.cpu()
    built = _native.cuda_built()
    devices = 0
    error = "wsq._cuda was not built"
    if built:
        try:
            lib = _native.cuda()
            devices = int(lib.device_count())
            error = "" if devices > 0 else str(lib.device_error())
        except Exception as e:  # a module that fails to load on this machine means "not available"
            devices, error = 0, f"wsq._cuda failed to load: {e}"
    return {
        "version": __version__,
        "cuda_built": built,
        "cuda_available": devices > 0,
        "cuda_devices": devices,
        "cuda_error": error,
        "cpu_isa": c.active_isa(),
        "cpu_isa_detected": c.detected_isa(),
        "cpu_features": c.cpu_feature_list().split(",") if c.cpu_feature_list() else [],
        "openmp_threads": c.openmp_threads(),
        "torch": torch.__version__,
    }
