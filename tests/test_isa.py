"""Forcing the CPU kernels' instruction-set level (issue 10): wsq.kernels.ops.set_isa / use_isa / WSQ_ISA."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import wsq
from wsq.kernels import ops
from wsq.kernels.isa import ISA_LEVELS


@pytest.mark.parametrize("level", ISA_LEVELS)
def test_set_isa_each_level_or_clear_refusal(level):
    have = ops.isa_levels()
    assert have[0] == "scalar" and list(have) == list(ISA_LEVELS[: len(have)])
    if level in have:
        with ops.use_isa(level) as active:
            assert active == level == ops.get_isa() == wsq.info()["cpu_isa"]
        assert ops.get_isa() == have[-1]
    else:  # above this CPU: refused with the argument and the CPU's best level named
        with pytest.raises(ValueError, match=rf"isa='{level}' is not supported by this CPU"):
            ops.set_isa(level)
        assert ops.get_isa() == have[-1]


def test_set_isa_bad_arguments():
    with pytest.raises(ValueError, match="isa must be one of"):
        ops.set_isa("sse9")
    with pytest.raises(TypeError, match="isa must be a str"):
        ops.set_isa(2)
    before = ops.get_isa()
    with pytest.raises(RuntimeError, match="boom"), ops.use_isa("scalar"):
        raise RuntimeError("boom")
    assert ops.get_isa() == before  # restored on error too


def test_set_isa_returns_previous_and_auto():
    best = ops.isa_levels()[-1]
    assert ops.set_isa("scalar") == best
    assert ops.set_isa("auto") == "scalar"
    assert ops.get_isa() == best


def test_forced_level_changes_results_only_in_summation_order():
    # the same matmul at every level: equal up to float32 reassociation, dequant bit for bit
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 16, (37 * 101,), generator=g, dtype=torch.int32)
    table = ops.lut_table(torch.randn(16, generator=g), 4)
    packed = ops.pack(idx, 4)
    x = torch.randn(3, 101, generator=g)
    outs, deqs = [], []
    for level in ops.isa_levels():
        with ops.use_isa(level):
            outs.append(ops.lut_matmul(x, packed, 37, 4, table))
            deqs.append(ops.dequant(packed, idx.numel(), 4, table))
    for o, d in zip(outs[1:], deqs[1:], strict=True):
        torch.testing.assert_close(o, outs[0], rtol=1e-5, atol=1e-5)
        assert torch.equal(d, deqs[0])


def _run(env_isa: str, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, WSQ_ISA=env_isa)
    # `python -c` puts its working directory first on sys.path: run it beside the wsq under test
    # (the source tree in a dev build, site-packages under the wheel), not a bare checkout's wsq/.
    here = os.path.dirname(os.path.dirname(os.path.abspath(wsq.__file__)))
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=here
    )


def test_env_var_is_read_at_first_kernel_use_not_import():
    code = (
        "import sys, wsq; assert 'wsq._C' not in sys.modules, 'import loaded the native module'; "
        "print(wsq.info()['cpu_isa'])"
    )
    r = _run("scalar", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "scalar"


def test_env_var_bad_value_names_the_variable():
    r = _run("sse9", "import wsq; wsq.info()")
    assert r.returncode != 0
    assert "WSQ_ISA='sse9'" in r.stderr
    lacking = [lv for lv in ISA_LEVELS if lv not in ops.isa_levels()]
    if lacking:  # a level above this CPU is refused the same way
        r = _run(lacking[0], "import wsq; wsq.info()")
        assert r.returncode != 0 and "not supported by this CPU" in r.stderr
