import os

import pytest
import torch

import wsq


def pytest_report_header(config):
    info = wsq.info()
    return (
        f"wsq {info['version']} from {os.path.dirname(wsq.__file__)}; cpu_isa={info['cpu_isa']}; "
        f"cuda_built={info['cuda_built']} cuda_available={info['cuda_available']}"
    )


def _devices():
    """cpu always; cuda when wsq sees a device. WSQ_REQUIRE_CUDA=1 (the GPU check) makes "no device"
    a collection error carrying the CUDA runtime's own reason, so CUDA cases cannot quietly skip."""
    devs = ["cpu"]
    info = wsq.info()
    if info["cuda_available"]:
        devs.append("cuda")
    elif os.environ.get("WSQ_REQUIRE_CUDA") == "1":
        raise pytest.UsageError(
            "WSQ_REQUIRE_CUDA=1 but wsq sees no CUDA device: "
            f"{info['cuda_error']} (cuda_built={info['cuda_built']}, "
            f"torch.cuda.is_available()={torch.cuda.is_available()})"
        )
    return devs


DEVICES = _devices()


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ----------------------------------------------------------------- instruction-set levels (issue 10)
# Kernel tests take the `isa` fixture: one case per level wsq knows (scalar, avx2, avx512), each run
# with the kernels capped at that level (wsq.kernels.ops.use_isa). A level this CPU lacks is a visible skip,
# never an uncollected case, and the session's header and summary name the levels run and not run.
_ISA_RUN: dict[str, int] = {}


def _isa_levels() -> tuple[tuple[str, ...], tuple[str, ...]]:
    from wsq.kernels import isa as _isa

    have = _isa.isa_levels()
    return have, tuple(lv for lv in _isa.ISA_LEVELS if lv not in have)


@pytest.fixture(params=["scalar", "avx2", "avx512"])
def isa(request):
    from wsq.kernels import ops

    have, _ = _isa_levels()
    if request.param not in have:
        pytest.skip(f"isa {request.param}: this CPU lacks it (best level {have[-1]}); not run here")
    with ops.use_isa(request.param) as level:
        _ISA_RUN[level] = _ISA_RUN.get(level, 0) + 1
        yield level


class _IsaReport:
    """Header and summary lines (a registered plugin, so they add to this file's own hooks)."""

    def pytest_report_header(self, config):
        import wsq

        have, lacking = _isa_levels()
        note = ""
        if "avx512" in have and "avx512vbmi" not in wsq.info()["cpu_features"]:
            note = " (no AVX-512 VBMI: the LUT kernels run their AVX2 path at avx512)"
        return (
            f"wsq kernel ISA levels: runs {', '.join(have)}; "
            f"not run (CPU lacks): {', '.join(lacking) or 'none'}{note}"
        )

    def pytest_terminal_summary(self, terminalreporter):
        if not _ISA_RUN:
            return
        have, lacking = _isa_levels()
        ran = ", ".join(f"{lv} ({_ISA_RUN.get(lv, 0)} tests)" for lv in have)
        terminalreporter.write_sep("-", "wsq kernel ISA levels")
        terminalreporter.write_line(f"ran: {ran}")
        terminalreporter.write_line(f"not run, this CPU lacks them: {', '.join(lacking) or 'none'}")


def pytest_configure(config):
    config.pluginmanager.register(_IsaReport(), "wsq-isa-levels")
