"""Kernels: wsq's compiled kernels as torch ops. The public module is ``wsq.kernels.ops``
(``from wsq.kernels import ops``): one checked function per kernel, the ISA cap, and the raw ops.

- ``schemas.py``: every op's ``torch.library`` schema and fake (what torch.compile traces), no kernel;
- ``cpu.py`` and ``cuda.py``: the two backends side by side, registering each op's kernel for their
  device on wsq._C (csrc/cpu/) and wsq._cuda (csrc/cuda/);
- ``ops.py``: the public functions: argument checks, then the op (or, in plain eager CPU inference,
  the CPU kernel directly); ``args.py``: the checks they share; ``isa.py``: the ISA cap;
  ``native.py``: the lazy loader of the compiled modules.

Importing any of these registers Python functions only: no compiled module is loaded and CUDA is
not initialised until a kernel runs. This ``__init__`` imports nothing: importing one module
of the package runs only what that module imports.
"""
