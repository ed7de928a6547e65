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
