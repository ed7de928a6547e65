#!/usr/bin/env bash
# Developer build: compiles the extensions into build/dev-<cpu|cuda> and copies them next to the
# sources (wsq/_C*.so, wsq/_cuda*.so) so `python -m pytest` from the repo root runs the fresh code
# without a reinstall; the test-only module (the CUDA kernels' host emulation, csrc/testing/) goes
# to tests/, never into wsq/. A lock serialises concurrent builds from several shells.
#   .ci/dev_build.sh          CPU module only (fast)
#   .ci/dev_build.sh cuda     also the CUDA module (nvcc; compiles, runs only where a GPU is)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-cpu}
cuda=OFF; [ "$mode" = cuda ] && cuda=ON
dir=build/dev-$mode
exec 9>build.lock
flock 9
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DWSQ_CUDA=$cuda -DWSQ_TESTING=ON \
  -DPython_EXECUTABLE="$(command -v python3)" -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" >/dev/null
if ! cmake --build "$dir" -- -k 0 >"$dir/build.log" 2>&1; then
  grep -vE '^\[[0-9]+/[0-9]+\]' "$dir/build.log" >&2
  echo "dev_build: build failed (full log: $dir/build.log)" >&2
  exit 1
fi
grep -iE 'warning' "$dir/build.log" >&2 || true
# Copy then rename: a process that has the old module mapped keeps its inode and does not crash.
install_so() {
  local to=$1; shift
  for f in "$@"; do cp "$f" "$to/.$(basename "$f").tmp" && mv -f "$to/.$(basename "$f").tmp" "$to/$(basename "$f")"; done
}
install_so wsq "$dir"/_C.*so
if [ "$cuda" = ON ]; then install_so wsq "$dir"/_cuda.*so; fi
install_so tests "$dir"/_cuda_host_emu.*so
echo "dev_build: ok ($mode)"
