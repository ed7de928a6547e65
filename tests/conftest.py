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
    devs = ["cpu"]
    if wsq.info()["cuda_available"]:
        devs.append("cuda")
    return devs


DEVICES = _devices()


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
