"""The host emulation of the CUDA kernels' arithmetic, for the tests on machines without a GPU.

A test-only module, never part of wsq: _cuda_host_emu (csrc/testing/), built by the plain C++
compiler beside the tests (tests/_cuda_host_emu*.so) by .ci/dev_build.sh, .ci/build_wheel.sh and
bench/gpu_check.sh. ``emu`` is that module, or None where it was not built.
"""

import importlib

import pytest

try:
    emu = importlib.import_module("_cuda_host_emu")
except ImportError:
    emu = None

needs_emu = pytest.mark.skipif(
    emu is None, reason="tests/_cuda_host_emu was not built (.ci/dev_build.sh builds it)"
)
