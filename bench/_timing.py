"""Timing helpers shared by the bench scripts: medians of repeats, machine-relative ratios."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

# One copy of the timing and table logic, shared with `wsq bench` (re-exported for the scripts).
from wsq.cli.bench import median_time, print_table

__all__ = [
    "median_time",
    "print_table",
    "machine",
    "write_json",
    "status_kib",
    "reset_peak",
    "CAP_ENV",
    "add_cap_argument",
    "cap_all",
    "int4_weight_only",
    "int8_weight_only",
]

# The knobs that cap each contender's instruction set: wsq's kernels, ATen's vectorised CPU ops,
# MKL (torch's fp32 GEMM/GEMV), oneDNN (bf16 linear) and fbgemm (dynamic int8 Linear). Forcing
# only wsq's path down (--isa avx2) leaves the peers on AVX-512; with all of them capped, a run on
# an AVX-512 CPU is the closest this machine gets to an AVX2-only one (the memory system and the
# clocks are still this CPU's). Every library reads its knob once, when it initialises.
CAP_ENV = {
    "avx2": {
        "WSQ_ISA": "avx2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    }
}


def add_cap_argument(ap) -> None:
    """The scripts' --cap option (see CAP_ENV and cap_all)."""
    ap.add_argument(
        "--cap",
        choices=sorted(CAP_ENV),
        help="cap every contender (wsq, ATen, MKL, oneDNN, fbgemm) at this ISA: re-runs the "
        "script in a fresh process with their knobs set",
    )


def cap_all(level: str | None) -> None:
    """With a level, re-executes the running script in a fresh process with every contender capped
    there (CAP_ENV); returns at once when the level is None or the caps are already in force."""
    if level is None:
        return
    env = CAP_ENV[level]
    if all(os.environ.get(k) == v for k, v in env.items()):
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **env})


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
    knobs = {k for env in CAP_ENV.values() for k in env}
    out = {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "isa": info["cpu_isa"],  # the level wsq ran at (WSQ_ISA may hold it down)
        "isa_detected": info["cpu_isa_detected"],  # the CPU's best level
        "torch_isa": torch.backends.cpu.get_cpu_capability(),
        "isa_caps": {k: os.environ[k] for k in sorted(knobs) if k in os.environ},
        "torch": torch.__version__,
        "wsq": info["version"],
        "commit": commit,
    }
    # under .ci/emulated_cpu.sh "cpu" is the host's and no timing means anything: say so
    if "WSQ_EMULATED_CPU" in os.environ:
        out["emulated_cpu"] = os.environ["WSQ_EMULATED_CPU"]
    return out


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


# ----------------------------------------------------------------------------- CPU peers
# The weight-only kernels a CPU user of torch picks, shared by cpu_kernels.py and decode.py. Each
# builder takes the dense (N, K) float32 weight and returns y = f(x) for float32 x (M, K).

INT4_GROUP = 128


def int4_weight_only(w):
    """torch's int4 weight-only CPU kernel (aten._weight_int4pack_mm_for_cpu: the layout torchao's
    int4 weight-only config uses on x86), asymmetric per group of 128 along K, bf16 activations
    and scales. K must be a multiple of 128."""
    import torch

    n, k = w.shape
    wg = w.float().reshape(n, k // INT4_GROUP, INT4_GROUP)
    lo, hi = wg.amin(-1), wg.amax(-1)
    scale = (hi - lo).clamp_min(1e-8) / 15
    q = ((wg - lo[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32)
    zero = lo + 8 * scale  # the kernel dequantizes (q - 8) * scale + zero
    sz = torch.stack([scale.t(), zero.t()], -1).to(torch.bfloat16).contiguous()  # (K/128, N, 2)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.reshape(n, k), 1)

    def f(x):
        return torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.to(torch.bfloat16), packed, INT4_GROUP, sz
        )

    return f


def int8_weight_only(w):
    """torch's int8 weight-only kernel (aten._weight_int8pack_mm), symmetric per output channel,
    float32 activations."""
    import torch

    scale = w.float().abs().amax(1).clamp_min(1e-12) / 127
    q = (w.float() / scale[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()

    def f(x):
        return torch.ops.aten._weight_int8pack_mm(x, q, scale)

    return f
