"""Every example in README.md runs as written, each block on its own in a fresh subprocess.

The README's convention, which this test reads:

- Examples are fenced blocks: ```python (run with this interpreter) and ```bash (run with
  `bash -euo pipefail`, `wsq` and `python` on PATH being this interpreter's). ```text blocks are
  output, never run; any other fence language fails the test, so no example goes unrun unnoticed.
- A block that needs an optional extra has a line starting with
  ``Needs `pip install 'wsq[EXTRA]'` `` in the lines directly above its fence (the paragraph
  that ends there). It is skipped, naming the extra and the missing package, only when a package
  that pyproject.toml lists for that extra is not installed.
- A block the test must not run (installs, the CI itself, minutes-long runs) has
  ``<!-- not run: REASON -->`` directly above its fence; it is skipped with that reason.

Each block runs in its own empty directory (it may write files there), with a timeout, and cannot
see what another block defined or wrote. The blocks share one wsq cache directory
($XDG_CACHE_HOME), so the bundled digits model trains once; a block that finds no cache trains it.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import wsq

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TIMEOUT_S = 300
RUN_LANGS = {"python", "bash"}
OUTPUT_LANGS = {"text"}

_FENCE = re.compile(r"^```(\S*)\s*$")
_NEEDS = re.compile(r"^Needs `pip install 'wsq\[([a-z0-9_,-]+)\]'`")
_NOT_RUN = re.compile(r"^<!-- not run: (.+?) -->\s*$")


def _blocks(text: str) -> list[dict]:
    """Fenced blocks in order: lang, code, the line of the opening fence, extras, not-run reason."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        assert j < len(lines), f"README.md:{start + 1}: fence never closed"
        # the markers: the paragraph directly above the fence (blank lines before it skipped)
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        above = []
        while k >= 0 and lines[k].strip() and not _FENCE.match(lines[k]):
            above.append(lines[k].strip())
            k -= 1
        extras = [e for ln in above if (n := _NEEDS.match(ln)) for e in n.group(1).split(",")]
        reasons = [n.group(1) for ln in above if (n := _NOT_RUN.match(ln))]
        out.append(
            {
                "lang": lang,
                "code": "\n".join(lines[start + 1 : j]) + "\n",
                "line": start + 1,
                "extras": extras,
                "not_run": reasons[0] if reasons else None,
            }
        )
        i = j + 1
    return out


BLOCKS = _blocks(README.read_text())


def _extra_requirements() -> dict[str, list[str]]:
    """pyproject.toml's [project.optional-dependencies], extra -> requirement strings."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ImportError:  # Python 3.10: the table is one `name = [...]` line per extra
        table = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
        return {
            m.group(1): re.findall(r'"([^"]+)"', m.group(2))
            for m in re.finditer(r"^([A-Za-z0-9_-]+)\s*=\s*\[(.*)\]\s*$", table, re.M)
        }
    return tomllib.loads(text)["project"]["optional-dependencies"]


def _missing(extra: str) -> str | None:
    """Why `extra` is not installed (a package absent or outside its range), or None."""
    from packaging.requirements import Requirement

    reqs = _extra_requirements()
    if extra not in reqs:
        return f"README names an extra wsq does not have: {extra!r}"
    for spec in reqs[extra]:
        req = Requirement(spec)
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            return f"{req.name} is not installed"
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            return f"{req.name} {version} is installed, wsq[{extra}] needs {req.specifier}"
    return None


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("wsq-cache")


@pytest.fixture(scope="session")
def shims(tmp_path_factory):
    """`wsq` and `python` for the shell blocks: this interpreter, so they test this wsq."""
    d = tmp_path_factory.mktemp("bin")
    for name, cmd in (("wsq", f'"{sys.executable}" -m wsq.cli'), ("python", f'"{sys.executable}"')):
        p = d / name
        p.write_text(f'#!/bin/sh\nexec {cmd} "$@"\n')
        p.chmod(0o755)
    return d


def _env(shared_cache: Path, shims: Path) -> dict[str, str]:
    env = dict(os.environ)
    # the wsq this test imported (the working tree or an installed wheel), first on the path
    here = str(Path(wsq.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    env["PATH"] = os.pathsep.join((str(shims), env.get("PATH", "")))
    env["XDG_CACHE_HOME"] = str(shared_cache)
    env["MPLBACKEND"] = "Agg"
    env["HF_HUB_OFFLINE"] = "1"  # every example is offline; a download attempt should fail loudly
    return env


def test_readme_blocks_follow_the_convention():
    assert BLOCKS, "README.md has no fenced blocks"
    bad = [(b["line"], b["lang"]) for b in BLOCKS if b["lang"] not in RUN_LANGS | OUTPUT_LANGS]
    assert not bad, f"fences must be python, bash or text (README.md line, language): {bad}"
    assert any(b["lang"] == "python" and not b["not_run"] for b in BLOCKS)
    reqs = _extra_requirements()
    unknown = [(b["line"], e) for b in BLOCKS for e in b["extras"] if e not in reqs]
    assert not unknown, f"README names extras pyproject.toml does not define: {unknown}"
    # a Python block that imports an extra's package must say it needs that extra
    for b in BLOCKS:
        if b["lang"] == "python" and re.search(r"^import .*\btransformers\b", b["code"], re.M):
            assert "hf" in b["extras"], f"README.md:{b['line']}: imports transformers, no hf mark"


RUNNABLE = [b for b in BLOCKS if b["lang"] in RUN_LANGS]


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"{b['lang']}-L{b['line']}" for b in RUNNABLE])
def test_readme_example_runs(block, tmp_path, shared_cache, shims):
    if block["not_run"]:
        pytest.skip(f"README.md:{block['line']}: marked not run: {block['not_run']}")
    for extra in block["extras"]:
        why = _missing(extra)
        if why:
            pytest.skip(f"README.md:{block['line']} needs wsq[{extra}]: {why}")
    if block["lang"] == "python":
        script = tmp_path / "example.py"
        script.write_text(block["code"])
        cmd = [sys.executable, str(script)]
    else:
        script = tmp_path / "example.sh"
        script.write_text(block["code"])
        cmd = ["bash", "-euo", "pipefail", str(script)]
    work = tmp_path / "work"
    work.mkdir()
    try:
        proc = subprocess.run(
            cmd,
            cwd=work,
            env=_env(shared_cache, shims),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"README.md:{block['line']}: still running after {TIMEOUT_S} s\n{e.stderr}")
    assert proc.returncode == 0, (
        f"README.md:{block['line']} ({block['lang']}) exited {proc.returncode}\n"
        f"--- code\n{block['code']}--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n"
        f"{proc.stderr[-4000:]}"
    )
