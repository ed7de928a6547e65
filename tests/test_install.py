"""What an installation reports about itself: ``wsq info`` without FILE names both compiled modules."""

from __future__ import annotations

import json
import os

import wsq
from wsq import cli


def test_wsq_info_without_file_reports_the_build(capsys):
    assert cli.main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] and d["problems"] == []
    assert d["version"] == wsq.__version__
    # the CPU module is the one next to the imported package (source tree or site-packages)
    assert os.path.dirname(d["cpu_module"]) == os.path.dirname(wsq.__file__)
    assert d["cuda_built"] == (d["cuda_module"] is not None)
    if d["cuda_built"]:
        assert os.path.dirname(d["cuda_module"]) == os.path.dirname(wsq.__file__)
    assert cli.main(["info"]) == 0
    text = capsys.readouterr().out
    assert f"cpu_module: {d['cpu_module']}" in text and f"cuda_built: {d['cuda_built']}" in text


def test_kernels_share_torchs_openmp_runtime():
    """torch.set_num_threads governs wsq's kernels: one OpenMP runtime in the process (the wheel's
    vendored libgomp carries the soname libgomp.so.1, so the loader reuses the one torch loaded)."""
    import torch

    from wsq.kernels import ops

    ops.unpack(ops.pack(torch.zeros(64, dtype=torch.uint8), 2), 64, 2)  # load wsq._C
    before = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            assert wsq.info()["openmp_threads"] == n
    finally:
        torch.set_num_threads(before)
    with open("/proc/self/maps") as f:
        gomp = {line.split()[-1] for line in f if "libgomp" in line}
    torch_dir = os.path.dirname(torch.__file__)
    if any(p.startswith(torch_dir) and p.endswith("/libgomp.so.1") for p in gomp):
        # torch's runtime answers to libgomp.so.1: wsq's vendored copy must not be loaded beside it
        # (other packages, e.g. scikit-learn, may bring their own; they are not wsq's concern)
        ours = [p for p in gomp if "wsq.libs" in p]
        assert not ours, f"wsq loaded its own OpenMP runtime beside torch's: {ours}"
