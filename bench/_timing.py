"""Timing helpers shared by the bench scripts: medians of repeats, machine-relative ratios."""

from __future__ import annotations

import json
import platform
import subprocess

# One copy of the timing and table logic, shared with `wsq bench` (re-exported for the scripts).
from wsq.cli.bench import median_time, print_table

__all__ = ["median_time", "print_table", "machine", "write_json", "status_kib", "reset_peak"]


def machine() -> dict:
    """Where the figures came from: CPU, threads, versions, git commit."""
    import torch

    import wsq

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = wsq.info()
    return {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "isa": info["cpu_isa"],
        "torch": torch.__version__,
        "wsq": info["version"],
        "commit": commit,
    }


def write_json(path: str | None, payload: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=1)


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now; VmHWM: its high-water mark)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (writing 5 to clear_refs, Linux >= 4.0). VmHWM, not
    ru_maxrss: ru_maxrss carries the parent's peak over fork/exec."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
