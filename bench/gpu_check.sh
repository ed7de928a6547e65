#!/usr/bin/env bash
# One-shot GPU check for a bare machine with a GPU. From the repository root:
#
#   bash bench/gpu_check.sh            # logs, JUnit XML and JSON under ${OUT:-bench/out}
#
# Needs on the machine: torch (a CUDA build), nvcc, cmake (ninja optional), compute-sanitizer (the
# CUDA toolkit's). Python packages the steps need, checked and installed by the "dependencies" step
# (bench/gpu_check_deps.py, which lists what each is for): pytest, numpy, safetensors, tqdm,
# pybind11 (build), and pymoo, scikit-learn, matplotlib (the search tests of the device=cuda step;
# `import wsq` itself must not pull pymoo in, the import step checks). Without internet, bring them
# as wheels: `pip download -d bench/wheelhouse pymoo scikit-learn matplotlib ...` where there is
# internet; the step installs from bench/wheelhouse (or $WSQ_CHECK_WHEELHOUSE) when it exists.
#
# No step can pass without running something: every pytest step goes through bench/pytest_gate.py
# (pytest exit 0 AND a JUnit report AND a minimum number of passed tests; exit 5 "no tests ran"
# fails), and WSQ_REQUIRE_CUDA=1 (exported here) turns "no CUDA device" into a failure carrying the
# CUDA runtime's own error text (tests/conftest.py at collection, and the import step below).
# Steps, each time-boxed with `timeout`, continuing past failures (total under ~9 minutes):
#   1. environment: GPU name (nvidia-smi), driver, torch, nvcc; dependencies (above)
#   2. build wsq._C and wsq._cuda in place for this GPU's architecture (CMake + Ninja, as
#      .ci/dev_build.sh does, no pip and no network)
#   3. import: wsq must see a device, else the runtime's reason is printed and the step fails
#   4. pytest tests/test_cuda.py tests/test_cuda_determinism.py (>= 90% of the collected cases must
#      pass), then the CUDA cases of the device-parametrised tests (layers, compress, merge,
#      save/load, search through conftest's `device` fixture): as many as their CPU cases, none skipped
#   5. bench/gpu_kernels.py: validate, then time (binning vs device copy; GEMV/GEMM b=4 and b=8 vs
#      torch fp16 at batch 1/16/64; the batch sweep 1..4096); the JSON must hold those rows
#   6. compute-sanitizer memcheck, racecheck, initcheck and synccheck on a small run of every kernel
#      (last: they get the time left; too little fails the step, it is never skipped silently). Each
#      tool is judged by its own summary line (bench/sanitizer_verdict.py): racecheck prints
#      "RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)", the others "ERROR SUMMARY".
# Every step is in the summary whatever the settings: PASS, FAIL (with the reason) or SKIP (the
# build under WSQ_CHECK_SKIP_BUILD=1, with the modules reused). Prints the step list, a short table,
# and exits non-zero if any step failed.
# Knobs: WSQ_CHECK_SKIP_BUILD=1 (reuse the .so files in wsq/), WSQ_CUDA_ARCHS (default: this GPU's),
# WSQ_CHECK_BUDGET (seconds, default 510), WSQ_CHECK_BENCH_ARGS (replaces the benchmark arguments).
# Without a GPU (`WSQ_CHECK_SKIP_BUILD=1 bash bench/gpu_check.sh` on a CPU machine) every GPU step
# FAILS with its reason; tests/test_gpu_check.py checks exactly that.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/bench/out}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
: >"$LOG"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
export WSQ_REQUIRE_CUDA=1 # conftest: no CUDA device -> a collection error, never quiet skips
PY=$(command -v python3 || command -v python)
T0=$(date +%s)
BUDGET=${WSQ_CHECK_BUDGET:-510}  # seconds for everything: each step gets min(its limit, what is left)
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
if command -v nvidia-smi >/dev/null 2>&1; then
  step "nvidia-smi" 20 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
else
  log "nvidia-smi: not found (no NVIDIA driver on this machine?)"
  STEPS+=("FAIL  nvidia-smi (not found)")
  FAILED=1
fi
step "versions" 40 "$PY" -c "
import sys, torch
print('python', sys.version.split()[0], '| torch', torch.__version__, '| torch cuda', torch.version.cuda,
      '| device visible to torch:', torch.cuda.is_available())
if not torch.cuda.is_available():  # every CUDA test needs torch's CUDA tensors
    sys.exit('torch sees no CUDA device' + ('' if torch.version.cuda else ' (a CPU-only torch build)'))
print('torch sees', torch.cuda.get_device_name(0))
"
if command -v nvcc >/dev/null 2>&1; then nvcc --version | tail -2 | tee -a "$LOG"; fi
WHEELHOUSE=${WSQ_CHECK_WHEELHOUSE:-$ROOT/bench/wheelhouse}
deps_args=()
[ -d "$WHEELHOUSE" ] && deps_args+=(--wheelhouse "$WHEELHOUSE")
if [ "${WSQ_CHECK_SKIP_BUILD:-0}" = 1 ]; then deps_args+=(--no-build); fi
step "dependencies" 120 "$PY" bench/gpu_check_deps.py "${deps_args[@]}"

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
  cmake -S . -B "$dir" -G "$GEN" -DCMAKE_BUILD_TYPE=Release -DWSQ_CUDA=ON -DWSQ_TESTING=ON \
    "-DWSQ_CUDA_ARCHS=$WSQ_CUDA_ARCHS" -DPython_EXECUTABLE="$PY" \
    -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >"$OUT/build.log" 2>&1 &&
    cmake --build "$dir" -j "$(nproc)" >>"$OUT/build.log" 2>&1
  local rc=$?
  grep -iE 'error|warning' "$OUT/build.log" | head -40
  [ $rc -eq 0 ] || { tail -30 "$OUT/build.log"; return $rc; }
  # the shipped modules into wsq/, the test-only host emulation (csrc/testing/) beside the tests
  cp "$dir"/_C.*so "$dir"/_cuda.*so wsq/ && cp "$dir"/_cuda_host_emu.*so tests/ &&
    echo "built for archs $WSQ_CUDA_ARCHS"
}
export -f build
if [ "${WSQ_CHECK_SKIP_BUILD:-0}" = 1 ]; then
  # shellcheck disable=SC2012
  reused=$(ls -l --time-style=+%FT%T wsq/_C.*so wsq/_cuda.*so 2>/dev/null | awk '{print $7, $6}' |
    tr '\n' ',' | sed 's/,$//; s/,/, /g')
  log "build: SKIPPED (WSQ_CHECK_SKIP_BUILD=1), reusing: ${reused:-no compiled module in wsq/}"
  STEPS+=("SKIP  build (WSQ_CHECK_SKIP_BUILD=1; reused: ${reused:-no compiled module in wsq/})")
else
  log "build: archs $WSQ_CUDA_ARCHS"
  step "build" 170 bash -c build
fi
step "import" 30 "$PY" -c "
import sys, wsq
i = wsq.info()
print({k: i[k] for k in ('version', 'cuda_built', 'cuda_available', 'cuda_devices', 'cpu_isa')})
assert 'pymoo' not in sys.modules, 'import wsq pulled in pymoo'
if not i['cuda_available']:
    print('wsq sees no CUDA device:', i['cuda_error'])
    sys.exit(3)
" || log "import: wsq sees no CUDA device (exit 3) or failed to import: the GPU steps will fail"

# -------------------------------------------------------------------------------- 3. tests
GATE=$ROOT/bench/pytest_gate.py
# ptest NAME SECONDS MIN_PASSED MAX_SKIPPED PYTEST_ARGS...: pytest under step(), judged by the gate.
ptest() {
  local name=$1 secs=$2 min=$3 maxskip=$4
  shift 4
  local xml=$OUT/junit_${#STEPS[@]}.xml
  rm -f "$xml"
  step "$name" "$secs" bash -c 'py=$1 gate=$2 xml=$3 min=$4 maxskip=$5
    shift 5
    "$py" -m pytest -q -rfEs -p no:cacheprovider -o addopts="" --junitxml="$xml" "$@"
    "$py" "$gate" "$xml" $? --min-passed "$min" --max-skipped "$maxskip"' \
    _ "$PY" "$GATE" "$xml" "$min" "$maxskip" "$@"
}
# collected REGEX FILES...: how many collected test ids match (CPU-side collection, no device).
collected() {
  local re=$1
  shift
  timeout 90 env WSQ_REQUIRE_CUDA=0 "$PY" -m pytest --collect-only -q -p no:cacheprovider \
    -o addopts="" "$@" 2>/dev/null | grep -cE "$re"
}
CUDA_FILES=(tests/test_cuda.py tests/test_cuda_determinism.py)
n=$(collected '::' "${CUDA_FILES[@]}")
min=$((n * 9 / 10 > 0 ? n * 9 / 10 : 1))
log "collected $n cases in ${CUDA_FILES[*]}: >= $min must pass, <= $((n / 10)) may skip"
ptest "pytest CUDA kernels" 120 "$min" $((n / 10)) "${CUDA_FILES[@]}"
# The device-parametrised tests: their CUDA cases, as many as their CPU cases, none skipped.
DEV_FILES=(tests/test_nn.py tests/test_compress.py tests/test_merge.py tests/test_io.py
  tests/test_search.py)
ncpu=$(collected '[[-]cpu[]-]' "${DEV_FILES[@]}")
log "device-parametrised tests: $ncpu CPU cases, so >= $ncpu CUDA cases must pass, none skip"
ptest "pytest device=cuda (layers compress merge io search)" 150 "$((ncpu > 0 ? ncpu : 1))" 0 \
  "${DEV_FILES[@]}" -k cuda

# ------------------------------------------------------------------------------- 4. bench
# shellcheck disable=SC2086
BENCH_ARGS=${WSQ_CHECK_BENCH_ARGS:---n 2e8 --sizes 4096 --batches 1,16,64 --sweep 1..4096 --repeats 5}
rm -f "$OUT/gpu_kernels.json"
# shellcheck disable=SC2086
step "bench/gpu_kernels.py" 150 bash -c '"$0" bench/gpu_kernels.py --json "$1" ${2} &&
  "$0" -c "
import json, sys
d = json.load(open(sys.argv[1]))
kinds = sorted({r[\"bench\"] for r in d[\"rows\"]})
print(len(d[\"rows\"]), \"rows:\", kinds)
need = {\"binning(hist+idx)\", \"copy\", \"lut_matmul\"} | ({\"lut_sweep\"} if \"none\" not in sys.argv[2] else set())
missing = need - set(kinds)
print(\"missing:\", sorted(missing)) if missing else None
sys.exit(0 if not missing and not d.get(\"validation_failures\") else 1)
" "$1" "$2"' "$PY" "$OUT/gpu_kernels.json" "$BENCH_ARGS"

# --------------------------------------------------------------------------- 5. sanitizer
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -1)
SMOKE=$(mktemp /tmp/wsq_smoke_XXXX.py)
cat >"$SMOKE" <<'EOF'
# Every CUDA kernel path once, small: for compute-sanitizer (memcheck / racecheck).
import torch
from wsq import reference
from wsq.kernels import ops
d = torch.device("cuda")
g = torch.Generator().manual_seed(0)
for dt in (torch.float32, torch.float16):
    w = (torch.randn(5003, generator=g) * 0.05).to(dt).to(d)
    lo, hi = ops.minmax(w)
    for k in (3, 16, 300, 65536):  # private slots, shared atomics, multi-pass
        lo32, s = ops.bin_scale(lo, hi, k)
        ops.histogram(w, k, lo32, s, indices=True)
        ops.histogram(w[1:], k, lo32, s, indices=True)  # misaligned: scalar path
        ops.histogram(w, k, *ops.bin_scale(lo / 4, hi / 4, k))  # clamped outliers: integer slots
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
# sanitize TOOL: the smoke run under compute-sanitizer, judged by bench/sanitizer_verdict.py: the
# sanitizer exited 0, the smoke run printed "smoke ok", and TOOL's own summary line reports 0 errors.
sanitize() {
  local log=$OUT/sanitizer_$1.log rc
  "$SAN" --tool "$1" --error-exitcode 9 "$PY" "$SMOKE" >"$log" 2>&1
  rc=$?
  tail -40 "$log"
  "$PY" "$ROOT/bench/sanitizer_verdict.py" "$1" "$log" "$rc"
}
export -f sanitize
export SAN SMOKE ROOT
SANITIZER_TOOLS=(memcheck racecheck initcheck synccheck)
if [ -n "$SAN" ]; then
  export PYTORCH_NO_CUDA_MEMORY_CACHING=1 # one allocation per tensor: exact bounds for memcheck
  for tool in "${SANITIZER_TOOLS[@]}"; do
    step "compute-sanitizer $tool" 75 bash -c "sanitize $tool"
  done
  unset PYTORCH_NO_CUDA_MEMORY_CACHING
else
  log "compute-sanitizer: not installed"
  for tool in "${SANITIZER_TOOLS[@]}"; do
    STEPS+=("FAIL  compute-sanitizer $tool (compute-sanitizer not installed)")
  done
  FAILED=1
fi
rm -f "$SMOKE"

# ------------------------------------------------------------------------------- summary
{
  echo ""
  echo "=== gpu_check summary ($(($(date +%s) - T0))s; log $LOG)"
  grep -hE '^(collected=|gate: )' "$LOG" | sed 's/^/  /'
  for s in "${STEPS[@]}"; do echo "  $s"; done
  if [ -s "$OUT/gpu_kernels.json" ]; then
    "$PY" -c "
import json, sys
for r in json.load(open(sys.argv[1]))['rows']:
    if r['bench'] in ('lut_matmul', 'lut_sweep'):
        print(f\"  {r['bench']:<10} {r.get('size', r.get('n'))} b={r['bits']} batch={r['batch']:<5} \"
              f\"{r['precision']:<7} wsq {r['kernel_us']:9.1f}us  torch fp16 {r['torch_fp16_us']:9.1f}us  \"
              f\"x{r['speedup_kernel']:.2f}\")
    elif 'vs_copy' in r:
        print(f\"  {r['bench']:<10} {r.get('dtype', '')} k={r.get('k', '')} {r['ms']:.3f}ms  x{r['vs_copy']:.2f} of copy\")
" "$OUT/gpu_kernels.json"
  fi
  nskip=$(printf '%s\n' "${STEPS[@]}" | grep -c '^SKIP')
  if [ "$FAILED" != 0 ]; then
    echo "  result: FAILED"
  elif [ "$nskip" -gt 0 ]; then
    echo "  result: every step run passed, $nskip SKIPPED (see above)"
  else
    echo "  result: all steps passed"
  fi
} | tee -a "$LOG" | tee "$OUT/summary.txt"
exit "$FAILED"
