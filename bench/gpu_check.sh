#!/usr/bin/env bash
# One-shot GPU check for a bare machine with a GPU and no internet (torch, nvcc, pybind11, cmake,
# ninja, pytest present; pymoo not needed). From the repository root:
#
#   bash bench/gpu_check.sh            # logs and JSON under ${OUT:-bench/out}
#
# Steps, each time-boxed with `timeout`, continuing past failures (total under 6 minutes):
#   1. environment: GPU name (nvidia-smi), driver, torch, nvcc
#   2. build wsq._C and wsq._cuda in place for this GPU's architecture (CMake + Ninja, as
#      .ci/dev_build.sh does, no pip and no network)
#   3. pytest: tests/test_cuda.py, then the CUDA cases (-k cuda) of the CPU kernel tests (they run
#      on CUDA too through the conftest `device` fixture) when present and free of pymoo
#   4. compute-sanitizer memcheck and racecheck on a small run of every kernel, if installed
#   5. bench/gpu_kernels.py: validate, then time; JSON to $OUT/gpu_kernels.json
# Prints a summary and exits non-zero if any step failed.
# Knobs: WSQ_CHECK_SKIP_BUILD=1 (reuse the .so files in wsq/), WSQ_CUDA_ARCHS (default: this GPU's),
# WSQ_CHECK_BENCH_ARGS (extra arguments for gpu_kernels.py, e.g. "--n 2e8").
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/bench/out}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
: >"$LOG"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
PY=$(command -v python3 || command -v python)
T0=$(date +%s)
BUDGET=${WSQ_CHECK_BUDGET:-345}  # seconds for everything: each step gets min(its limit, what is left)
declare -a STEPS=()
FAILED=0

log() { echo "$*" | tee -a "$LOG"; }
# step NAME SECONDS CMD...: runs CMD under timeout, output to the log, records pass/fail.
step() {
  local name=$1 secs=$2
  shift 2
  local t left
  t=$(date +%s)
  left=$((BUDGET - (t - T0)))
  if [ "$left" -lt 15 ]; then
    log "=== [$name] skipped: the ${BUDGET}s budget is spent"
    STEPS+=("FAIL  $name (no time left)")
    FAILED=1
    return 125
  fi
  [ "$secs" -gt "$left" ] && secs=$left
  log ""
  log "=== [$name] (limit ${secs}s) $*"
  timeout --kill-after=10 "$secs" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]} dt
  dt=$(($(date +%s) - t))
  if [ "$rc" -eq 0 ]; then
    STEPS+=("PASS  $name (${dt}s)")
  else
    [ "$rc" -eq 124 ] && log "[$name] TIMED OUT after ${secs}s"
    STEPS+=("FAIL  $name (rc=$rc, ${dt}s)")
    FAILED=1
  fi
  return "$rc"
}

# ------------------------------------------------------------------------------ 1. environment
log "wsq gpu_check: $(date -u +%FT%TZ) in $ROOT, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
GPU_OK=1
if command -v nvidia-smi >/dev/null 2>&1; then
  step "nvidia-smi" 20 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv ||
    GPU_OK=0
else
  log "nvidia-smi: not found (no NVIDIA driver on this machine?)"
  STEPS+=("FAIL  nvidia-smi (not found)")
  FAILED=1
  GPU_OK=0
fi
step "versions" 40 "$PY" -c "
import sys, torch
print('python', sys.version.split()[0], '| torch', torch.__version__, '| torch cuda', torch.version.cuda,
      '| device visible to torch:', torch.cuda.is_available())
if torch.cuda.is_available():
    print('torch sees', torch.cuda.get_device_name(0))
"
command -v nvcc >/dev/null 2>&1 && nvcc --version | tail -2 | tee -a "$LOG"

# -------------------------------------------------------------------------------- 2. build
if [ -z "${WSQ_CUDA_ARCHS:-}" ]; then
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  WSQ_CUDA_ARCHS=${cap:-80;90}
fi
# cmake and ninja may come as Python packages whose binaries are not on PATH.
command -v cmake >/dev/null 2>&1 || PATH=$("$PY" -c 'import cmake; print(cmake.CMAKE_BIN_DIR)' 2>/dev/null):$PATH
command -v ninja >/dev/null 2>&1 || PATH=$("$PY" -c 'import ninja; print(ninja.BIN_DIR)' 2>/dev/null):$PATH
GEN=Ninja
command -v ninja >/dev/null 2>&1 || GEN="Unix Makefiles"
export PY OUT WSQ_CUDA_ARCHS GEN PATH
build() {
  local dir=build/gpu-check
  cmake -S . -B "$dir" -G "$GEN" -DCMAKE_BUILD_TYPE=Release -DWSQ_CUDA=ON \
    "-DWSQ_CUDA_ARCHS=$WSQ_CUDA_ARCHS" -DPython_EXECUTABLE="$PY" \
    -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >"$OUT/build.log" 2>&1 &&
    cmake --build "$dir" -j "$(nproc)" >>"$OUT/build.log" 2>&1
  local rc=$?
  grep -iE 'error|warning' "$OUT/build.log" | head -40
  [ $rc -eq 0 ] || { tail -30 "$OUT/build.log"; return $rc; }
  cp "$dir"/_C*.so "$dir"/_cuda*.so wsq/ && echo "built for archs $WSQ_CUDA_ARCHS"
}
export -f build
if [ "${WSQ_CHECK_SKIP_BUILD:-0}" = 1 ]; then
  log "build: skipped (WSQ_CHECK_SKIP_BUILD=1)"
else
  step "build (archs $WSQ_CUDA_ARCHS)" 170 bash -c build
fi
step "import" 30 "$PY" -c "
import sys, wsq
i = wsq.info()
print({k: i[k] for k in ('version', 'cuda_built', 'cuda_available', 'cuda_devices', 'cpu_isa')})
assert 'pymoo' not in sys.modules, 'import wsq pulled in pymoo'
sys.exit(0 if i['cuda_available'] else 3)
" || {
  log "import: wsq sees no CUDA device (exit 3) or failed to import: GPU steps will fail"
  GPU_OK=0
}

# -------------------------------------------------------------------------------- 3. tests
step "pytest tests/test_cuda.py" 90 "$PY" -m pytest tests/test_cuda.py -q -rfEs -p no:cacheprovider \
  -o addopts="" --junitxml="$OUT/pytest.xml"
# The CPU kernel tests also run on CUDA through conftest's `device` fixture: only those cases here.
KTESTS=()
for f in tests/test_binning.py tests/test_pack.py tests/test_lut.py tests/test_ops.py tests/test_nn.py; do
  [ -f "$f" ] && ! grep -q pymoo "$f" && KTESTS+=("$f")
done
if [ "$GPU_OK" = 1 ] && [ ${#KTESTS[@]} -gt 0 ]; then
  # exit 5 = no CUDA case collected: nothing to run, not a failure
  step "pytest -k cuda ${KTESTS[*]}" 60 bash -c '"$0" -m pytest "$@" -q -rfE -p no:cacheprovider \
    -o addopts="" -k cuda; rc=$?; [ $rc -eq 5 ] && echo "no CUDA cases" && rc=0; exit $rc' "$PY" "${KTESTS[@]}"
fi

# --------------------------------------------------------------------------- 4. sanitizer
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -1)
SMOKE=$(mktemp /tmp/wsq_smoke_XXXX.py)
cat >"$SMOKE" <<'EOF'
# Every CUDA kernel path once, small: for compute-sanitizer (memcheck / racecheck).
import torch
from wsq import ops, reference
d = torch.device("cuda")
g = torch.Generator().manual_seed(0)
for dt in (torch.float32, torch.float16):
    w = (torch.randn(5003, generator=g) * 0.05).to(dt).to(d)
    lo, hi = ops.minmax(w)
    for k in (3, 16, 300, 65536):  # private slots, shared atomics, multi-pass
        lo32, s = ops.bin_scale(lo, hi, k)
        ops.histogram(w, k, lo32, s, indices=True)
        ops.histogram(w[1:], k, lo32, s, indices=True)  # misaligned: scalar path
        ops.fake_quant(w, k, lo32, s, torch.randn(k, device=d))
    ops.relabel(torch.randint(0, 9, (77,), device=d), torch.arange(9, dtype=torch.int32, device=d), torch.uint8)
for bits in (3, 8, 16):
    q = torch.randint(0, 1 << bits, (1001,), device=d)
    p = ops.pack(q, bits)
    ops.unpack(p, 1001, bits, torch.int32)
    ops.remap_packed(p, 1001, bits, torch.zeros(1 << min(bits, 12), dtype=torch.int32, device=d), bits)
    t = ops.lut_table(torch.randn(1 << min(bits, 10), device=d), bits)
    ops.dequant(p, 1001, bits, t, torch.float16)
    ops.gather_rows(p, torch.tensor([0, 5, 90], device=d), 91, 11, bits, t)
for m, k, n, bits in [(1, 2048, 70, 4), (3, 53, 9, 5), (8, 1024, 33, 8), (20, 1024, 40, 12)]:
    p = reference.pack(torch.randint(0, 1 << bits, (n * k,)), bits).to(d)
    t = ops.lut_table(torch.randn(1 << bits, device=d), bits)
    ops.lut_matmul(torch.randn(m, k, device=d), p, n, bits, t, torch.randn(n, device=d))
torch.set_float32_matmul_precision("medium")
p = reference.pack(torch.randint(0, 16, (130 * 512,)), 4).to(d)
ops.lut_matmul(torch.randn(24, 512, device=d), p, 130, 4, ops.lut_table(torch.randn(16, device=d), 4))
torch.cuda.synchronize()
print("smoke ok")
EOF
if [ "$GPU_OK" = 1 ] && [ -n "$SAN" ]; then
  export PYTORCH_NO_CUDA_MEMORY_CACHING=1  # one allocation per tensor: exact bounds for memcheck
  step "compute-sanitizer memcheck" 40 "$SAN" --tool memcheck --error-exitcode 9 "$PY" "$SMOKE"
  step "compute-sanitizer racecheck" 40 "$SAN" --tool racecheck --error-exitcode 9 "$PY" "$SMOKE"
  unset PYTORCH_NO_CUDA_MEMORY_CACHING
elif [ -z "$SAN" ]; then
  log "compute-sanitizer: not installed, skipped"
else
  log "compute-sanitizer: skipped (no GPU)"
fi
rm -f "$SMOKE"

# ------------------------------------------------------------------------------- 5. bench
# shellcheck disable=SC2086
step "bench/gpu_kernels.py" 110 "$PY" bench/gpu_kernels.py --json "$OUT/gpu_kernels.json" \
  ${WSQ_CHECK_BENCH_ARGS:-}

# ------------------------------------------------------------------------------- summary
{
  echo ""
  echo "=== gpu_check summary ($(($(date +%s) - T0))s; log $LOG)"
  for s in "${STEPS[@]}"; do echo "  $s"; done
  [ "$FAILED" = 0 ] && echo "  result: all steps passed" || echo "  result: FAILED"
} | tee -a "$LOG" | tee "$OUT/summary.txt"
exit "$FAILED"
