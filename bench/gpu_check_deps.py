"""The Python packages bench/gpu_check.sh's steps need besides torch: checked, the missing ones
installed with pip, checked again.

    python bench/gpu_check_deps.py [--wheelhouse DIR] [--no-build]

With --wheelhouse (a folder of wheels made on a machine with internet: ``pip download -d DIR
pymoo scikit-learn ...``, for a GPU machine without one) pip installs from it only (--no-index);
without it, from the package index. --no-build leaves out what only the build step needs (the
script passes it under WSQ_CHECK_SKIP_BUILD=1). Prints what each package is for and whether it imports, and
exits 0 only when every one imports after the install. Standard library only.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import subprocess
import sys
from collections.abc import Sequence

# (import name, pip requirement, the steps that need it)
REQUIREMENTS: list[tuple[str, str, str]] = [
    ("pytest", "pytest>=7", "every pytest step"),
    ("numpy", "numpy>=1.24", "wsq itself"),
    ("safetensors", "safetensors>=0.4", "wsq itself (the file format: io tests)"),
    ("tqdm", "tqdm>=4.60", "wsq itself (search and merge progress)"),
    ("pymoo", "pymoo>=0.6.1", "pytest device=cuda: the search tests (wsq.search drives pymoo)"),
    ("sklearn", "scikit-learn>=1.3", "pytest device=cuda: the search tests' digits data"),
    ("matplotlib", "matplotlib>=3.7", "pytest device=cuda: the search tests plot a front"),
    ("pybind11", "pybind11>=2.12", "build (its CMake config)"),
]
BUILD_ONLY = {"pybind11"}


def missing(reqs: Sequence[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    importlib.invalidate_caches()  # packages pip just installed
    return [r for r in reqs if importlib.util.find_spec(r[0]) is None]


def pip_command(pkgs: Sequence[str], wheelhouse: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
    if wheelhouse:
        cmd += ["--no-index", "--find-links", wheelhouse]
    return cmd + list(pkgs)


def ensure(
    reqs: Sequence[tuple[str, str, str]] = REQUIREMENTS,
    wheelhouse: str | None = None,
    run=subprocess.call,
) -> int:
    """Install what is missing of `reqs` with pip (through `run`, a subprocess.call-like); 0 when
    every package imports afterwards, else 1."""
    for name, req, why in reqs:
        state = "ok" if importlib.util.find_spec(name) is not None else "MISSING"
        print(f"  {req:<20} {state:<8} for {why}")
    todo = missing(reqs)
    if not todo:
        print("dependencies: all present")
        return 0
    cmd = pip_command([r[1] for r in todo], wheelhouse)
    print("installing:", " ".join(cmd), flush=True)
    rc = run(cmd)
    still = missing(reqs)
    if still:
        where = f"the wheelhouse {wheelhouse}" if wheelhouse else "the package index"
        print(
            f"dependencies: FAIL: still missing {', '.join(r[1] for r in still)} after pip "
            f"(exit {rc}) from {where}; the steps that need them will fail"
        )
        return 1
    print(f"dependencies: installed {', '.join(r[1] for r in todo)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheelhouse", help="install from this folder of wheels only (no index)")
    ap.add_argument("--no-build", action="store_true", help="leave out build-only packages")
    a = ap.parse_args(argv)
    reqs = [r for r in REQUIREMENTS if not (a.no_build and r[0] in BUILD_ONLY)]
    return ensure(reqs, a.wheelhouse)


if __name__ == "__main__":
    sys.exit(main())
