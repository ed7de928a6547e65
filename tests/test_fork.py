"""Kernels must run in a fork()ed child after the parent used OpenMP (ProcessPoolExecutor on Linux).

libgomp's thread pool does not survive fork; without wsq's atfork handler the child's first parallel
region waits forever. The child runs in a subprocess so a regression shows up as a timeout, not a hang.
"""

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import os, sys, torch, wsq
    from wsq.kernels import ops
    w = torch.randn(4_000_000)
    wsq.uniform_bins(w, 256)                      # the parent opens parallel regions first
    pid = os.fork()
    if pid == 0:
        b = wsq.uniform_bins(w, 256)
        p = ops.pack(b.indices, 8)
        y = ops.dequant(p, w.numel(), 8, ops.lut_table(b.codebook, 8))
        os._exit(0 if y.numel() == w.numel() else 3)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_kernels_run_in_forked_child(tmp_path):
    # cwd elsewhere: `python -c` puts cwd first on sys.path, which must not shadow the installed wsq
    r = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=tmp_path, timeout=120, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
