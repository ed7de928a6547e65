#!/usr/bin/env bash
# Runs wsq's tests as they run on a smaller x86-64 CPU: every Python process (pytest and each child
# the tests start through sys.executable) runs under QEMU user-mode emulation of a CPU model, so
# cpuid, torch's dispatch and wsq's ISA levels all see that CPU. It checks correctness only (no
# SIGILL, every level the model has passes, the levels above it are refused and reported); timings
# under emulation mean nothing, so no speed figure may come from it.
#
#   .ci/emulated_cpu.sh [MODEL] [-- PYTEST ARGS]    (default MODEL Haswell-v4, default args: the
#                                                     whole suite, -q -p no:cacheprovider)
#   .ci/emulated_cpu.sh MODEL --python ARGS...      the emulated interpreter runs ARGS instead, e.g.
#                                                     a bench script at --quick sizes as a smoke test
#   Haswell-v4   AVX2 + FMA + F16C, no AVX-512: a laptop / older cloud VM (wsq levels scalar, avx2)
#   Nehalem-v2   SSE4.2, no AVX: wsq's scalar level only
#
# Uses the python3 on PATH (a venv or interpreter where wsq imports: a dev build with PYTHONPATH, or
# the installed wheel). Needs qemu-x86_64 >= 8.0 (Debian 12: bookworm-backports' qemu-user): QEMU
# 7.2 returns wrong values from AVX2 gathers whose index register is ymm4 (reproduced with an asm
# test and three lut_matmul cases; right under 10.0.2, the version checked here).
# About 15x slower than native: the whole suite took 29 minutes on the 2-core dev VM (Haswell-v4).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-Haswell-v4}
if [ $# -gt 0 ]; then shift; fi
mode=pytest
if [ "${1:-}" = -- ]; then shift; elif [ "${1:-}" = --python ]; then mode=python; shift; fi
args=("$@")
if [ $mode = pytest ] && [ ${#args[@]} -eq 0 ]; then args=(-q -p no:cacheprovider); fi
if [ $mode = python ] && [ ${#args[@]} -eq 0 ]; then echo "emulated_cpu: --python needs arguments" >&2; exit 2; fi

command -v qemu-x86_64 >/dev/null || { echo "emulated_cpu: qemu-x86_64 not found (apt-get install qemu-user)" >&2; exit 2; }
ver=$(qemu-x86_64 --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1)
if [ -z "$ver" ] || [ "$ver" -lt 8 ]; then
  echo "emulated_cpu: qemu-x86_64 $(qemu-x86_64 --version | head -1) is older than 8.0 (wrong AVX2 gathers)" >&2
  exit 2
fi
models=$(qemu-x86_64 -cpu help || true)  # exits 1 after listing; not piped into grep -q (SIGPIPE)
grep -qE "^(x86)? +$model( |\$)" <<<"$models" || { echo "emulated_cpu: unknown CPU model '$model' (qemu-x86_64 -cpu help)" >&2; exit 2; }

# A prefix whose bin/python is a wrapper starting the real interpreter under QEMU with argv[0] set to
# the wrapper: Python then reports the wrapper as sys.executable (children are emulated too) and
# finds the real environment's packages through the prefix's pyvenv.cfg.
real=$(python3 -c "import os, sys; print(os.path.realpath(sys.executable))")
read -r site venv < <(python3 -c "import site, sys; print(site.getsitepackages()[0], int(sys.prefix != sys.base_prefix))")
pyver=$(python3 -c "import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}')")
pre=$(mktemp -d /tmp/wsq-emu.XXXXXX)
trap 'rm -rf "$pre"' EXIT
mkdir -p "$pre/bin" "$pre/lib/$pyver"
{
  echo "home = $(dirname "$real")"
  if [ "$venv" = 1 ]; then echo "include-system-site-packages = false"; else echo "include-system-site-packages = true"; fi
} >"$pre/pyvenv.cfg"
if [ "$venv" = 1 ]; then ln -s "$site" "$pre/lib/$pyver/site-packages"; fi
cat >"$pre/bin/python" <<EOF
#!/bin/sh
exec qemu-x86_64 -cpu $model -0 "$pre/bin/python" "$real" "\$@"
EOF
chmod +x "$pre/bin/python"
ln -s python "$pre/bin/python3"

# Both run as script files, not -c / -m: those put the working directory (the repository root) first
# on sys.path, where the source tree's wsq (no compiled module in a fresh clone) would shadow the
# installed wheel.
cat >"$pre/about.py" <<'EOF'
import sys

import torch

import wsq

i = wsq.info()
print(f"emulated_cpu: {sys.argv[1]}: torch {torch.__version__} dispatch "
      f"{torch.backends.cpu.get_cpu_capability()}, wsq level {i['cpu_isa']} from {wsq.__file__}, "
      f"features {' '.join(i['cpu_features'])}")
EOF
cat >"$pre/run_pytest.py" <<'EOF'
import sys

import pytest

sys.exit(pytest.main())
EOF
# qemu warns once per process about host features TCG lacks (tsc-deadline, ...): not ours, dropped.
"$pre/bin/python" "$pre/about.py" "$model" 2> >(grep -v "TCG doesn't support" >&2)
# WSQ_EMULATED_CPU tells the tests they run emulated (tests/test_emulated_cpu.py does not nest).
if [ $mode = pytest ]; then args=("$pre/run_pytest.py" "${args[@]}"); fi
WSQ_EMULATED_CPU=$model PATH="$pre/bin:$PATH" "$pre/bin/python" "${args[@]}" 2> >(grep -v "TCG doesn't support" >&2)
