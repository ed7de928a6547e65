"""Public name of the kernels module: ``wsq.ops`` IS ``wsq.kernels.ops`` (the same module object,
so attributes, private op handles and monkeypatching behave as on the real module). The ops, their
checks and their CUDA registration live in wsq/kernels/ (docs/architecture.md)."""

import sys

from wsq.kernels import ops as _ops

sys.modules[__name__] = _ops
