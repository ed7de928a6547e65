""".ci/emulated_cpu.sh: the test suite on an emulated smaller x86-64 CPU (QEMU user mode).

Its refusals are checked everywhere with a stand-in qemu-x86_64; the emulated run itself only where
a real qemu-x86_64 >= 8.0 is installed (a developer's machine, not CI), on one small test file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import wsq

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "emulated_cpu.sh"
BASH = shutil.which("bash") or "/bin/bash"
FAKE_HELP = "Available CPUs:\n  Haswell-v4            Intel Core Processor (Haswell)\n"

pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="not a source checkout (.ci/ absent)")


def _run(args, path: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=path)
    return subprocess.run(
        [BASH, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def _fake_qemu(tmp_path: Path, version: str) -> str:
    d = tmp_path / "fakebin"
    d.mkdir()
    q = d / "qemu-x86_64"
    q.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --version ]; then echo "qemu-x86_64 version {version}"; exit 0; fi\n'
        f"printf '{FAKE_HELP}'; exit 1\n"  # the real one exits 1 after listing the models
    )
    q.chmod(0o755)
    return str(d) + os.pathsep + os.environ["PATH"]


def test_refuses_without_qemu(tmp_path):
    d = tmp_path / "bin"
    d.mkdir()
    for tool in ("dirname",):  # all the script runs before looking for qemu
        os.symlink(shutil.which(tool), d / tool)
    r = _run([], str(d))
    assert r.returncode == 2 and "qemu-x86_64 not found" in r.stderr


def test_refuses_qemu_older_than_8(tmp_path):
    r = _run(["Haswell-v4"], _fake_qemu(tmp_path, "7.2.0 (Debian 1:7.2+dfsg-7)"))
    assert r.returncode == 2 and "older than 8.0" in r.stderr


def test_refuses_unknown_model_by_name(tmp_path):
    r = _run(["Pentium9", "--", "-q"], _fake_qemu(tmp_path, "10.0.2"))
    assert r.returncode == 2 and "unknown CPU model 'Pentium9'" in r.stderr


def test_refuses_python_mode_without_arguments(tmp_path):
    r = _run(["Haswell-v4", "--python"], _fake_qemu(tmp_path, "10.0.2"))
    assert r.returncode == 2 and "--python needs arguments" in r.stderr


def _qemu_major() -> int:
    if shutil.which("qemu-x86_64") is None:
        return 0
    out = subprocess.run(["qemu-x86_64", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version (\d+)\.", out)
    return int(m.group(1)) if m else 0


@pytest.mark.skipif(_qemu_major() < 8, reason="needs qemu-x86_64 >= 8.0 (user-mode emulation)")
@pytest.mark.skipif("WSQ_EMULATED_CPU" in os.environ, reason="already under emulated_cpu.sh")
def test_emulated_avx2_only_cpu_runs_the_avx2_level_and_refuses_avx512():
    # the wsq that this test session imports, found by the emulated interpreter the same way
    env_path = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    root = str(Path(wsq.__file__).resolve().parents[1])
    pp = root + os.pathsep + os.environ.get("PYTHONPATH", "")
    r = subprocess.run(
        [BASH, str(SCRIPT), "Haswell-v4", "--", "-q", "-p", "no:cacheprovider",
         str(Path(__file__).parent / "test_isa.py"), "-k", "each_level"],
        capture_output=True, text=True, timeout=900,
        env=dict(os.environ, PATH=env_path, PYTHONPATH=pp),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "wsq level avx2" in r.stdout and "dispatch AVX2" in r.stdout
    assert re.search(r"\b3 passed\b", r.stdout), r.stdout[-2000:]


def test_bench_json_marks_an_emulated_run(monkeypatch):
    # bench/_timing.machine() heads every bench JSON: under the script "cpu" is the host's model
    # name (qemu-user passes /proc/cpuinfo through), so the record must say it was emulated
    import importlib.util

    path = SCRIPT.parents[1] / "bench" / "_timing.py"
    spec = importlib.util.spec_from_file_location("_wsq_bench_timing", path)
    timing = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(timing)  # loaded by path: bench/ stays off sys.path
    monkeypatch.delenv("WSQ_EMULATED_CPU", raising=False)
    assert "emulated_cpu" not in timing.machine()
    monkeypatch.setenv("WSQ_EMULATED_CPU", "Haswell-v4")
    assert timing.machine()["emulated_cpu"] == "Haswell-v4"
