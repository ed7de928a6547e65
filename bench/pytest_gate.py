"""Pass/fail of one pytest run from its JUnit XML, so that a run that tested nothing cannot pass.

    python bench/pytest_gate.py REPORT.xml RC --min-passed N [--max-skipped M]

RC is pytest's exit status. Prints ``collected=.. passed=.. failed=.. errors=.. skipped=..`` and
exits 0 only when RC is 0, the report exists and lists at least one test, at least N passed and at
most M were skipped (default: any). pytest's exit 5 ("no tests ran") and a missing report fail.
Used by bench/gpu_check.sh; standard library only (the GPU machine may have nothing else).
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET


def counts(path: str) -> dict[str, int]:
    """Totals over every <testsuite> of a JUnit XML report."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tot = {"collected": 0, "failed": 0, "errors": 0, "skipped": 0}
    for s in suites:
        tot["collected"] += int(s.get("tests", 0))
        tot["failed"] += int(s.get("failures", 0))
        tot["errors"] += int(s.get("errors", 0))
        tot["skipped"] += int(s.get("skipped", 0))
    tot["passed"] = tot["collected"] - tot["failed"] - tot["errors"] - tot["skipped"]
    return tot


def verdict(
    c: dict[str, int] | None, rc: int, min_passed: int, max_skipped: int | None
) -> list[str]:
    """The reasons this run fails (empty: it passes)."""
    why = []
    if rc == 5:
        why.append("pytest exit 5: no tests ran")
    elif rc != 0:
        why.append(f"pytest exit {rc}")
    if c is None:
        why.append("no JUnit report was written")
        return why
    if c["collected"] == 0:
        why.append("no test was collected")
    if c["passed"] < min_passed:
        why.append(f"{c['passed']} passed, at least {min_passed} required")
    if max_skipped is not None and c["skipped"] > max_skipped:
        why.append(f"{c['skipped']} skipped, at most {max_skipped} allowed")
    return why


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("rc", type=int)
    ap.add_argument("--min-passed", type=int, required=True)
    ap.add_argument("--max-skipped", type=int, default=None)
    a = ap.parse_args(argv)
    if a.min_passed < 1:
        ap.error("--min-passed must be >= 1: a gate that accepts 0 passed tests checks nothing")
    try:
        c = counts(a.report)
    except (OSError, ET.ParseError):
        c = None
    if c is not None:
        print(" ".join(f"{k}={v}" for k, v in c.items()))
    why = verdict(c, a.rc, a.min_passed, a.max_skipped)
    print("gate: PASS" if not why else "gate: FAIL (" + "; ".join(why) + ")")
    return 0 if not why else 1


if __name__ == "__main__":
    sys.exit(main())
