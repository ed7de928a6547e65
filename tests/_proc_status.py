"""Source text the peak-memory tests put at the top of their child scripts: `status(field)` reads
a /proc/self/status field (VmRSS, VmHWM) in bytes."""

STATUS = r"""
def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)
"""
