"""Kernels: the torch.library ops (wsq.kernels.ops, public as wsq.ops), their CPU implementations
in the compiled wsq._C and CUDA ones in wsq._cuda, the ISA cap and the lazy native-module loader.

Importing this package registers the ops and their CUDA kernels as Python functions only: no
compiled module is loaded and CUDA is not initialised until the first kernel call.
"""

from wsq.kernels import cuda, ops  # noqa: F401  (cuda registers the CUDA kernels on ops' ops)
