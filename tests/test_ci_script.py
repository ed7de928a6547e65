""".ci/run and the metadata users read: the CI script stops at the first failed command (it runs a
copy with every tool replaced by fakes, one of them failing), its test command is the README's,
and pyproject's torch range and the README's "Supported torch" say the same thing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / ".ci" / "run"
README = (ROOT / "README.md").read_text()


def _readme_test_command() -> list[str]:
    """The README's test command (the indented line starting with .ci/build_wheel.sh), split."""
    lines = [
        ln.strip() for ln in README.splitlines() if ln.strip().startswith(".ci/build_wheel.sh")
    ]
    assert len(lines) == 1, lines
    return [c.strip() for c in lines[0].split("&&")]


def _ci_test_commands() -> list[str]:
    """.ci/run's copy of that command: the lines from `pip install torch==` up to `stamp`."""
    body = RUN.read_text().splitlines()
    start = next(i for i, ln in enumerate(body) if ln.startswith("pip install torch=="))
    end = next(i for i in range(start, len(body)) if body[i].startswith("stamp "))
    return [ln.strip() for ln in body[start:end]]


def test_ci_runs_the_readme_test_command():
    readme = _readme_test_command()
    assert readme[0] == ".ci/build_wheel.sh"
    assert ".ci/build_wheel.sh" in RUN.read_text().splitlines()
    assert _ci_test_commands() == readme[1:]


def test_no_and_lists_outside_conditions_and_subshells():
    """`a && b` as a statement of its own: under set -e a failing `a` does not stop the script.
    Allowed: conditions of if/while (they are tested) and a subshell `( ... )` that is the whole
    line (its status is that of its last list, so set -e sees the failure)."""
    bad = []
    for n, raw in enumerate(RUN.read_text().splitlines(), 1):
        ln = raw.strip()
        if not ln or ln.startswith("#") or "&&" not in ln:
            continue
        if re.match(r"(if|while|until|elif) ", ln):
            continue
        if ln.startswith("(") and ln.endswith(")") and ln.count("(") == ln.count(")"):
            continue
        bad.append(f"{n}: {ln}")
    assert not bad, "&& lists that set -e does not stop on:\n" + "\n".join(bad)


_FAKE_PYTHON3 = r"""#!/usr/bin/env bash
# fake python3: `-c ...` prints an interpreter path; `-m venv --clear DIR` makes a fake venv
if [ "$1" = "-c" ]; then echo /fake/python3; exit 0; fi
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  d=${@: -1}
  mkdir -p "$d/bin"
  cat >"$d/bin/activate" <<EOF
VIRTUAL_ENV=$PWD/$d
export VIRTUAL_ENV
PATH=\$VIRTUAL_ENV/bin:\$PATH
deactivate() { :; }
EOF
  for tool in pip pytest python wsq; do
    cat >"$d/bin/$tool" <<'EOF'
#!/usr/bin/env bash
# a fake tool: fails (exit 7) when its name and arguments contain $WSQ_FAIL
line="$(basename "$0") $*"
echo "fake: $line" >>"$WSQ_FAKE_LOG"
if [ -n "$WSQ_FAIL" ] && [[ $line == *"$WSQ_FAIL"* ]]; then exit 7; fi
exit 0
EOF
    chmod +x "$d/bin/$tool"
  done
  exit 0
fi
echo "fake python3: unexpected $*" >&2
exit 3
"""


def _run_copy(tmp_path: Path, fail: str) -> subprocess.CompletedProcess:
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(RUN, repo / ".ci" / "run")
    (repo / ".ci" / "build_wheel.sh").write_text("#!/usr/bin/env bash\necho fake wheel\n")
    (repo / ".ci" / "build_wheel.sh").chmod(0o755)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "python3").write_text(_FAKE_PYTHON3)
    (bin_ / "python3").chmod(0o755)
    env = dict(
        os.environ,
        PATH=f"{bin_}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
        WSQ_FAIL=fail,
        WSQ_FAKE_LOG=str(tmp_path / "calls.log"),
        WSQ_SKIP_FLOOR="1",
        WSQ_CUDA="OFF",
    )
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        ["bash", str(repo / ".ci" / "run")], capture_output=True, text=True, env=env,
        timeout=120, cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_ci_run_with_fakes_reaches_the_end(tmp_path):
    """The control: with nothing failing, the copy runs every command and says done (so the
    failing cases below fail for the reason they name, not because the harness is broken)."""
    r = _run_copy(tmp_path, "")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tests passed" in r.stdout and ".ci/run: done" in r.stdout, r.stdout
    calls = (tmp_path / "calls.log").read_text()
    for c in _ci_test_commands():
        assert c.split()[0] in calls


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    "fail", ["pip install torch==", "pip install dist/", "pytest", "site-packages", "wsq info"]
)
def test_ci_run_stops_at_a_failed_command(tmp_path, fail):
    r = _run_copy(tmp_path, fail)
    assert r.returncode != 0, r.stdout + r.stderr
    assert ".ci/run: done" not in r.stdout, r.stdout
    if fail in ("pip install torch==", "pip install dist/", "pytest"):
        assert "tests passed" not in r.stdout, r.stdout


def _torch_range_in_pyproject() -> tuple[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    spec = re.findall(r'"torch([^"]*)"', deps)
    assert len(spec) == 1, spec
    m = re.fullmatch(r">=(\d+\.\d+)(?:\.\d+)?,<(\d+)\.(\d+)", spec[0].replace(" ", ""))
    assert m, f"pyproject's torch requirement {spec[0]!r} must be '>=FLOOR,<CEILING'"
    return m.group(1), f"{m.group(2)}.{int(m.group(3)) - 1}"


def test_pyproject_torch_range_is_the_readme_supported_range():
    lo, hi = _torch_range_in_pyproject()
    m = re.search(r"Supported torch: (\d+\.\d+) to (\d+\.\d+)", README)
    assert m, "README must say 'Supported torch: X to Y'"
    assert (lo, hi) == m.groups(), f"pyproject allows {lo} to {hi}, README says {m.groups()}"
    pins = set(re.findall(r"torch==(\d+\.\d+)\.\d+", README + RUN.read_text()))
    assert pins, "README and .ci/run pin the torch the suite runs on"
    v = lambda s: tuple(map(int, s.split(".")))  # noqa: E731
    assert all(v(lo) <= v(p) <= v(hi) for p in pins) and hi in pins, (pins, lo, hi)
    floor = re.search(r"^\s*floor=(\d+\.\d+)\.\d+$", RUN.read_text(), re.M)
    assert floor and floor.group(1) == lo, "the floor .ci/run tests is pyproject's"


def test_readme_says_the_cuda_path_has_not_run_on_a_gpu():
    """Until bench/README.md has GPU figures, the README must not present the CUDA kernels as
    working: it says they are compiled and not yet run on a GPU."""
    bench = (ROOT / "bench" / "README.md").read_text()
    if "never run" not in bench:
        pytest.fail("bench/README.md no longer says the CUDA kernels never ran: update this test")
    flat = " ".join(README.split())
    assert re.search(r"CUDA path is compiled .{0,40}not yet run on a GPU", flat), (
        "README must say the CUDA path is compiled and not yet run on a GPU"
    )
