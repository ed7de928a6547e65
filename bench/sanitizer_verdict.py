"""Pass/fail of one compute-sanitizer run, judged by the summary line of the tool that ran.

    python bench/sanitizer_verdict.py TOOL LOG RC [--done-marker TEXT]

Each tool prints its own summary: memcheck, initcheck and synccheck end with
``========= ERROR SUMMARY: N errors`` (``1 error`` when one); racecheck ends with
``========= RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)`` and prints no ERROR
SUMMARY, so a gate that wants ``ERROR SUMMARY: 0 errors`` from racecheck fails every clean run.
A run passes only when the sanitizer exited 0 (gpu_check.sh passes ``--error-exitcode 9``), the
program under test printed its done marker (default ``smoke ok``: it ran to the end), the log holds
at least one summary line of TOOL, and every such line reports 0 errors (a child process prints a
summary of its own). Racecheck warnings (hazards of warning severity, e.g. a benign same-value
write) are reported, not failed. Prints one line and exits 0 (pass) or 1. Standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys

TOOLS = ("memcheck", "racecheck", "initcheck", "synccheck")
_ERROR_SUMMARY = re.compile(r"^=+ ERROR SUMMARY: (\d+) errors?\s*$", re.M)
_RACE_SUMMARY = re.compile(
    r"^=+ RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?, (\d+) warnings?\)\s*$", re.M
)


def verdict(tool: str, text: str, rc: int, done_marker: str = "smoke ok") -> tuple[bool, str]:
    """(passed, one line saying why) for the output `text` of `compute-sanitizer --tool TOOL`."""
    if tool not in TOOLS:
        raise ValueError(f"tool must be one of {', '.join(TOOLS)}, got {tool!r}")
    why = []
    errors_elsewhere = [int(n) for n in _ERROR_SUMMARY.findall(text)]
    if tool == "racecheck":
        found = [tuple(map(int, m)) for m in _RACE_SUMMARY.findall(text)]
        if not found:
            why.append("no 'RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)' line")
        hazards = sum(f[0] for f in found)
        errors = sum(f[1] for f in found)
        warnings = sum(f[2] for f in found)
        summary = f"{hazards} hazards ({errors} errors, {warnings} warnings)"
        if errors:
            why.append(f"{errors} race errors")
        if any(errors_elsewhere):  # e.g. an API error reported beside the race summary
            why.append(f"ERROR SUMMARY reports {sum(errors_elsewhere)} errors")
    else:
        if not errors_elsewhere:
            why.append("no 'ERROR SUMMARY: N errors' line")
        errors = sum(errors_elsewhere)
        summary = f"{errors} errors" + (
            f" over {len(errors_elsewhere)} summaries" if len(errors_elsewhere) > 1 else ""
        )
        if errors:
            why.append(f"{errors} errors")
    if done_marker not in text:
        why.append(f"the program did not finish ({done_marker!r} not printed)")
    if rc != 0:
        why.append(f"exit status {rc}" + (" (timed out)" if rc in (124, 137) else ""))
    if why:
        return False, f"{tool}: FAIL: {'; '.join(why)} [summary: {summary}]"
    return True, f"{tool}: clean: {summary}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tool", choices=TOOLS)
    ap.add_argument("log", help="the sanitizer's output (stdout and stderr together)")
    ap.add_argument("rc", type=int, help="compute-sanitizer's exit status")
    ap.add_argument("--done-marker", default="smoke ok")
    a = ap.parse_args(argv)
    try:
        with open(a.log, errors="replace") as f:
            text = f.read()
    except OSError as e:
        print(f"{a.tool}: FAIL: cannot read the log {a.log!r}: {e.strerror or e}")
        return 1
    ok, line = verdict(a.tool, text, a.rc, a.done_marker)
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
