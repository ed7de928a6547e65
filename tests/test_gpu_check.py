"""bench/gpu_check.sh cannot pass without running: its pytest gate, and the whole script on a machine
without a GPU (here), where every GPU step must FAIL with the CUDA runtime's reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import wsq

ROOT = Path(__file__).resolve().parents[1]
GATE = ROOT / "bench" / "pytest_gate.py"
sys.path.insert(0, str(GATE.parent))
try:
    import pytest_gate
finally:  # bench/ must not stay on sys.path: its script names could shadow installed packages
    sys.path.remove(str(GATE.parent))


def _junit(tmp_path, tests, failures=0, errors=0, skipped=0) -> str:
    p = tmp_path / "r.xml"
    p.write_text(
        f'<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="{tests}" '
        f'failures="{failures}" errors="{errors}" skipped="{skipped}"/></testsuites>'
    )
    return str(p)


def test_gate_fails_a_run_that_ran_nothing(tmp_path):
    assert pytest_gate.main([_junit(tmp_path, 0), "5", "--min-passed", "1"]) == 1
    assert pytest_gate.main([_junit(tmp_path, 0), "0", "--min-passed", "1"]) == 1  # rc 0, 0 tests
    assert pytest_gate.main([_junit(tmp_path, 9, skipped=9), "0", "--min-passed", "1"]) == 1
    assert pytest_gate.main([str(tmp_path / "missing.xml"), "0", "--min-passed", "1"]) == 1
    with pytest.raises(SystemExit):
        pytest_gate.main(
            [_junit(tmp_path, 3), "0", "--min-passed", "0"]
        )  # a gate of 0 checks nothing


def test_gate_counts_and_limits(tmp_path, capsys):
    x = _junit(tmp_path, 10, failures=1, skipped=2)
    assert pytest_gate.counts(x) == {
        "collected": 10, "failed": 1, "errors": 0, "skipped": 2, "passed": 7,
    }  # fmt: skip
    assert pytest_gate.main([x, "1", "--min-passed", "7"]) == 1  # a failure: pytest exit 1
    assert "passed=7" in capsys.readouterr().out
    ok = _junit(tmp_path, 10, skipped=2)
    assert pytest_gate.main([ok, "0", "--min-passed", "8"]) == 0
    assert pytest_gate.main([ok, "0", "--min-passed", "9"]) == 1
    assert pytest_gate.main([ok, "0", "--min-passed", "8", "--max-skipped", "1"]) == 1


def test_gate_on_a_real_pytest_run_of_zero_tests(tmp_path):
    """pytest -k selecting nothing exits 5; the old gpu_check step took that as success."""
    xml = tmp_path / "z.xml"
    here = Path(wsq.__file__).resolve().parents[1]  # `-m` puts the cwd first on sys.path
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
         f"--junitxml={xml}", str(Path(__file__)), "-k", "no_such_test_name"],
        capture_output=True, text=True, cwd=here,
    )  # fmt: skip
    assert r.returncode == 5
    assert pytest_gate.main([str(xml), str(r.returncode), "--min-passed", "1"]) == 1


def _checkout_of_the_tested_wsq(tmp_path: Path) -> Path:
    """The script runs the checkout's in-place wsq/. Where the tests run against an installed wheel
    (CI: a fresh clone's wsq/ has no compiled module), give it a checkout whose wsq/ IS that package,
    so the script sees the same build (and the same CUDA error text) as this process."""
    pkg = Path(wsq.__file__).resolve().parent
    if pkg == (ROOT / "wsq").resolve():
        return ROOT
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("bench", "tests", "pyproject.toml"):
        (root / name).symlink_to(ROOT / name)
    (root / "wsq").symlink_to(pkg)
    return root


@pytest.mark.skipif(wsq.info()["cuda_available"], reason="checks the script where there is no GPU")
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_fails_every_gpu_step_without_a_gpu(tmp_path):
    root = _checkout_of_the_tested_wsq(tmp_path)
    out_dir = tmp_path / "out"
    env = dict(os.environ, OUT=str(out_dir), WSQ_CHECK_SKIP_BUILD="1", WSQ_CHECK_BUDGET="240")
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    r = subprocess.run(
        ["bash", str(root / "bench" / "gpu_check.sh")], capture_output=True, text=True, env=env,
        timeout=600, cwd=root,
    )  # fmt: skip
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    summary = (out_dir / "summary.txt").read_text()
    assert "result: FAILED" in summary and "PASS  pytest" not in summary, summary
    for step in (
        "versions",
        "import",
        "pytest CUDA kernels",
        "pytest device=cuda",
        "bench/gpu_kernels.py",
    ):
        assert f"FAIL  {step}" in summary, (step, summary)
    assert "WSQ_REQUIRE_CUDA=1 but wsq sees no CUDA device" in out  # conftest, with the reason
    assert wsq.info()["cuda_error"] in out  # the runtime's (or the loader's) own words
