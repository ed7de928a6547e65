"""bench/gpu_check.sh cannot pass without running: its pytest gate, its sanitizer verdicts (each tool
judged by its own summary line, on recorded outputs of each tool), its dependency step, and the
whole script on a machine without a GPU (here), where every GPU step must FAIL with the CUDA
runtime's reason and every step is in the summary whatever the settings."""

from __future__ import annotations

import os
import re
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
    import gpu_check_deps
    import pytest_gate
    import sanitizer_verdict
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


# Every step of the script, in order: each must be in the summary (PASS, FAIL or SKIP) whatever
# the settings, so a step that did not run can never be mistaken for one that passed.
STEPS = (
    "nvidia-smi",
    "versions",
    "dependencies",
    "build",
    "import",
    "pytest CUDA kernels",
    "pytest device=cuda",
    "bench/gpu_kernels.py",
    "compute-sanitizer memcheck",
    "compute-sanitizer racecheck",
    "compute-sanitizer initcheck",
    "compute-sanitizer synccheck",
)

_FAKE_SANITIZER = """#!/usr/bin/env bash
# fake compute-sanitizer: prints the recorded output of --tool TOOL; exits 9 when it has errors
while [ $# -gt 0 ]; do [ "$1" = --tool ] && tool=$2; shift; done
cat "$(dirname "$0")/$tool.log"
grep -qE 'ERROR SUMMARY: [1-9]|\\([1-9][0-9]* errors?,' "$(dirname "$0")/$tool.log" && exit 9
exit 0
"""


def _run_script(tmp_path: Path, sanitizer: dict[str, str] | None = None, **knobs) -> tuple:
    """bench/gpu_check.sh run here (no GPU), with `sanitizer` {tool: recorded output} served by a
    fake compute-sanitizer on PATH. Returns (completed process, summary.txt)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    root = _checkout_of_the_tested_wsq(tmp_path)
    out_dir = tmp_path / "out"
    env = dict(os.environ, OUT=str(out_dir), **knobs)
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    # an empty wheelhouse: a missing dependency fails the step offline instead of reaching PyPI
    (tmp_path / "wheelhouse").mkdir()
    env["WSQ_CHECK_WHEELHOUSE"] = str(tmp_path / "wheelhouse")
    if sanitizer is not None:
        fake = tmp_path / "fake-bin"
        fake.mkdir()
        (fake / "compute-sanitizer").write_text(_FAKE_SANITIZER)
        (fake / "compute-sanitizer").chmod(0o755)
        for tool, text in sanitizer.items():
            (fake / f"{tool}.log").write_text(text)
        env["PATH"] = str(fake) + os.pathsep + env["PATH"]
    r = subprocess.run(
        ["bash", str(root / "bench" / "gpu_check.sh")], capture_output=True, text=True, env=env,
        timeout=600, cwd=root,
    )  # fmt: skip
    return r, (out_dir / "summary.txt").read_text()


def _step_lines(summary: str) -> list[str]:
    return [ln.strip() for ln in summary.splitlines() if re.match(r"\s+(PASS|FAIL|SKIP)  ", ln)]


def _assert_every_step_listed(summary: str) -> list[str]:
    lines = _step_lines(summary)
    names = [ln[6:] for ln in lines]
    at = [next((i for i, n in enumerate(names) if n.startswith(s)), None) for s in STEPS]
    assert None not in at, (dict(zip(STEPS, at, strict=True)), summary)
    assert at == sorted(at), f"steps out of order: {dict(zip(STEPS, at, strict=True))}"
    return lines


@pytest.mark.skipif(wsq.info()["cuda_available"], reason="checks the script where there is no GPU")
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_fails_every_gpu_step_without_a_gpu(tmp_path):
    # the sanitizer steps see a fake tool with recorded outputs: three clean, synccheck dirty
    recorded = {t: RECORDED[t, "clean"] for t in ("memcheck", "racecheck", "initcheck")}
    recorded["synccheck"] = RECORDED["synccheck", "dirty"]
    r, summary = _run_script(tmp_path, recorded, WSQ_CHECK_SKIP_BUILD="1", WSQ_CHECK_BUDGET="240")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
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
    _assert_every_step_listed(summary)
    assert "SKIP  build (WSQ_CHECK_SKIP_BUILD=1; reused: " in summary, summary
    assert "PASS  dependencies" in summary, out  # this environment has them all
    # each sanitizer tool judged by its own summary: a clean racecheck passes
    for tool in ("memcheck", "racecheck", "initcheck"):
        assert f"PASS  compute-sanitizer {tool}" in summary, (tool, summary)
    assert "FAIL  compute-sanitizer synccheck" in summary, summary
    assert "racecheck: clean: 0 hazards (0 errors, 0 warnings)" in out
    assert "synccheck: FAIL: 1 errors" in out


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_lists_every_step_when_the_budget_is_spent(tmp_path):
    """A budget spent before the first step: nothing runs, yet every step is in the summary (as
    FAIL: no time left), the build as SKIP when skipped, and no sanitizer installed fails too."""
    r, summary = _run_script(tmp_path, None, WSQ_CHECK_SKIP_BUILD="1", WSQ_CHECK_BUDGET="1")
    assert r.returncode != 0 and "result: FAILED" in summary, summary
    lines = _assert_every_step_listed(summary)
    assert not [ln for ln in lines if ln.startswith("PASS")], summary
    assert "SKIP  build" in summary
    r, summary = _run_script(tmp_path / "b", None, WSQ_CHECK_BUDGET="1")
    lines = _assert_every_step_listed(summary)
    assert "FAIL  build (no time left)" in summary, summary


# ----------------------------------------------------------------------------- sanitizer verdicts
# Outputs of `compute-sanitizer --tool TOOL python smoke.py` in the layout the tools print (CUDA 12
# compute-sanitizer: "=========" prefixed records, one summary line per process at the end). They
# are transcribed from the tool's documented format and public logs, not captured on a GPU of this
# project (none has been lent yet); the first GPU run's logs (bench/out/sanitizer_*.log) are the
# ones to add here.
_HEAD = "========= COMPUTE-SANITIZER\n"
RECORDED = {
    ("memcheck", "clean"): _HEAD + "smoke ok\n========= ERROR SUMMARY: 0 errors\n",
    ("memcheck", "dirty"): _HEAD + "========= Invalid __global__ read of size 4 bytes\n"
    "=========     at wsq::cuda::histogram_kernel(const float *, long, int, float, float, int *)+0x1f0\n"
    "=========     by thread (255,0,0) in block (19,0,0)\n"
    "=========     Address 0x7f3a2c0138c0 is out of bounds\n"
    "=========     and is 1 bytes after the nearest allocation at 0x7f3a2c00e800 of size 20012 bytes\n"
    "========= \n"
    "smoke ok\n========= ERROR SUMMARY: 1 error\n",
    ("racecheck", "clean"): _HEAD
    + "smoke ok\n========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n",
    ("racecheck", "warnings"): _HEAD
    + "========= Warning: Race reported between Write access at wsq::cuda::hist_shared()+0x2a0\n"
    "=========     and Write access at wsq::cuda::hist_shared()+0x2a0 [16 hazards]\n"
    "smoke ok\n========= RACECHECK SUMMARY: 1 hazard displayed (0 errors, 1 warning)\n",
    ("racecheck", "dirty"): _HEAD
    + "========= Error: Race reported between Write access at wsq::cuda::lut_gemv()+0x4c0\n"
    "=========     and Read access at wsq::cuda::lut_gemv()+0x610 [248 hazards]\n"
    "smoke ok\n========= RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)\n",
    ("initcheck", "clean"): _HEAD + "smoke ok\n========= ERROR SUMMARY: 0 errors\n",
    ("initcheck", "dirty"): _HEAD
    + "========= Uninitialized __global__ memory read of size 4 bytes\n"
    "=========     at wsq::cuda::remap_packed()+0x130\n"
    "=========     by thread (3,0,0) in block (0,0,0)\n"
    "=========     Address 0x7f0e1a000200\n"
    "smoke ok\n========= ERROR SUMMARY: 2 errors\n",
    ("synccheck", "clean"): _HEAD + "smoke ok\n========= ERROR SUMMARY: 0 errors\n",
    ("synccheck", "dirty"): _HEAD
    + "========= Barrier error detected. Divergent thread(s) in block\n"
    "=========     at wsq::cuda::lut_gemm()+0x8d0\n"
    "=========     by thread (32,0,0) in block (1,0,0)\n"
    "smoke ok\n========= ERROR SUMMARY: 1 error\n",
}


@pytest.mark.parametrize("tool", sanitizer_verdict.TOOLS)
def test_sanitizer_verdict_on_recorded_outputs(tool):
    ok, line = sanitizer_verdict.verdict(tool, RECORDED[tool, "clean"], 0)
    assert ok, line
    ok, line = sanitizer_verdict.verdict(tool, RECORDED[tool, "dirty"], 9)
    assert not ok and "errors" in line, line
    # the error count alone fails, even if the exit status were lost
    assert not sanitizer_verdict.verdict(tool, RECORDED[tool, "dirty"], 0)[0]


def test_racecheck_is_judged_by_its_own_summary():
    """The old gate wanted `ERROR SUMMARY: 0 errors`, which racecheck never prints: every clean
    racecheck run would have FAILED. Warnings are reported, not failed; errors fail."""
    clean = RECORDED["racecheck", "clean"]
    assert "ERROR SUMMARY" not in clean
    ok, line = sanitizer_verdict.verdict("racecheck", clean, 0)
    assert ok and "0 hazards (0 errors, 0 warnings)" in line, line
    ok, line = sanitizer_verdict.verdict("racecheck", RECORDED["racecheck", "warnings"], 0)
    assert ok and "1 warnings" in line, line
    ok, line = sanitizer_verdict.verdict("racecheck", RECORDED["racecheck", "dirty"], 9)
    assert not ok and "1 race errors" in line, line
    # memcheck's summary in a racecheck log is not racecheck's verdict
    ok, line = sanitizer_verdict.verdict("racecheck", RECORDED["memcheck", "clean"], 0)
    assert not ok and "no 'RACECHECK SUMMARY" in line, line


@pytest.mark.parametrize("tool", sanitizer_verdict.TOOLS)
def test_sanitizer_verdict_fails_runs_that_did_not_finish(tool):
    clean = RECORDED[tool, "clean"]
    cut = clean[: clean.index("smoke ok")]  # killed by the time limit: no marker, no summary
    ok, line = sanitizer_verdict.verdict(tool, cut, 124)
    assert not ok and "did not finish" in line and "timed out" in line, line
    ok, line = sanitizer_verdict.verdict(tool, clean.replace("smoke ok\n", ""), 0)
    assert not ok and "did not finish" in line, line
    ok, line = sanitizer_verdict.verdict(tool, clean, 1)  # the tool itself failed
    assert not ok and "exit status 1" in line, line
    # a second process's summary with errors (a child) fails the run
    summary = clean.splitlines()[-1]
    bad = summary.replace("0 errors", "3 errors")
    assert bad != summary
    assert not sanitizer_verdict.verdict(tool, clean + bad + "\n", 0)[0]


def test_sanitizer_verdict_cli(tmp_path, capsys):
    log = tmp_path / "racecheck.log"
    log.write_text(RECORDED["racecheck", "clean"])
    assert sanitizer_verdict.main(["racecheck", str(log), "0"]) == 0
    assert sanitizer_verdict.main(["memcheck", str(log), "0"]) == 1
    assert sanitizer_verdict.main(["memcheck", str(tmp_path / "none.log"), "0"]) == 1
    assert "cannot read the log" in capsys.readouterr().out
    with pytest.raises(ValueError, match="tool must be one of"):
        sanitizer_verdict.verdict("leakcheck", "", 0)


# ----------------------------------------------------------------------------- dependencies


def test_dependencies_name_what_the_cuda_search_step_needs():
    names = {r[0] for r in gpu_check_deps.REQUIREMENTS}
    assert {"pymoo", "sklearn", "pytest", "matplotlib"} <= names
    header = (ROOT / "bench" / "gpu_check.sh").read_text().split("set -u")[0]
    for req in gpu_check_deps.REQUIREMENTS:
        pkg = req[1].split(">")[0]
        assert pkg in header, f"gpu_check.sh's header does not state {pkg}"
    assert "pymoo not needed" not in header


def test_dependencies_are_installed_when_missing(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    reqs = [("wsq_fake_dep_xyz", "wsq-fake-dep-xyz>=1", "a test"), ("json", "json", "present")]
    calls = []

    def pip_that_installs(cmd):
        calls.append(cmd)
        (site / "wsq_fake_dep_xyz.py").write_text("")
        return 0

    assert gpu_check_deps.ensure(reqs, str(tmp_path / "wh"), run=pip_that_installs) == 0
    (cmd,) = calls
    assert cmd[1:4] == ["-m", "pip", "install"] and cmd[-1] == "wsq-fake-dep-xyz>=1"
    assert cmd[cmd.index("--find-links") + 1] == str(tmp_path / "wh") and "--no-index" in cmd
    assert "json" not in cmd  # only what is missing
    assert "installed wsq-fake-dep-xyz>=1" in capsys.readouterr().out


def test_dependencies_fail_when_pip_cannot_install(capsys):
    reqs = [("wsq_fake_dep_never", "wsq-fake-dep-never", "a test")]
    assert gpu_check_deps.ensure(reqs, None, run=lambda cmd: 1) == 1
    out = capsys.readouterr().out
    assert "still missing wsq-fake-dep-never" in out and "package index" in out
    assert gpu_check_deps.ensure([("json", "json", "x")], None, run=None) == 0  # nothing to do
