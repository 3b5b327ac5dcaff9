#!/usr/bin/env bash
# Export a scripted model in Python, build the C++ client against libtorch, run it on CPU (and
# CUDA when available), and check the direct C++ API against the dispatcher op.
set -euo pipefail
usage() {
  cat <<'EOF'
usage: [PYTHON=python] [AOTI=1] [HOST_COST=out.json] bash examples/cpp/run.sh [BUILD_DIR]

  BUILD_DIR    where CMake builds and the exported models go
               (default: ${TMPDIR:-/tmp}/sigmoid_attn_cpp_example, outside the source tree)
  PYTHON       the interpreter with torch and sigmoid_attn installed (default: python)
  AOTI=1       also export a torch.export + AOTInductor package (.pt2) and run it from C++
  HOST_COST=F  (CUDA) time a tiny call from C++ into the JSON file F (CALLS=10000 calls)
EOF
}
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-${TMPDIR:-/tmp}/sigmoid_attn_cpp_example}
PY=${PYTHON:-python}
mkdir -p "$BUILD"
BUILD=$(cd "$BUILD" && pwd)
echo "building in $BUILD with $(command -v "$PY")"
read -r TORCH_PREFIX TORCH_LIB SITE OPS INC CUDA_OK < <("$PY" - <<'PY'
import os, torch, sigmoid_attn
site = os.path.dirname(os.path.dirname(torch.__file__))
print(torch.utils.cmake_prefix_path, os.path.join(os.path.dirname(torch.__file__), "lib"), site,
      sigmoid_attn.library_path(), sigmoid_attn.include_dir(), int(torch.cuda.is_available()))
PY
)
NV=$SITE/nvidia/cu13/lib
EXTRA=()
[ -f "$NV/libnvrtc.so.13" ] && EXTRA+=(-DCUDA_nvrtc_LIBRARY="$NV/libnvrtc.so.13")
[ -d /usr/local/cuda ] && EXTRA+=(-DCUDA_TOOLKIT_ROOT_DIR=/usr/local/cuda -DCUDAToolkit_ROOT=/usr/local/cuda)
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
cmake -S "$HERE" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DSIGMOID_ATTN_LIBRARY="$OPS" -DSIGMOID_ATTN_INCLUDE_DIR="$INC" \
  "${EXTRA[@]}" > "$BUILD/configure.log" 2>&1 \
  || { tail -30 "$BUILD/configure.log"; exit 1; }
cmake --build "$BUILD" -j 2 > "$BUILD/build.log" 2>&1 || { tail -30 "$BUILD/build.log"; exit 1; }
export LD_LIBRARY_PATH="$TORCH_LIB:$NV:${LD_LIBRARY_PATH:-}"
DEVICES=(cpu)
[ "$CUDA_OK" = 1 ] && DEVICES+=(cuda)
for dev in "${DEVICES[@]}"; do
  "$PY" "$HERE/export_model.py" --out-dir "$BUILD" --device "$dev" ${AOTI:+--aoti}
  "$BUILD/run_model" "$BUILD/model_$dev.pt" "$BUILD/io_$dev.pt"
  if [ -n "${AOTI:-}" ]; then
    "$BUILD/run_aoti" "$BUILD/model_$dev.pt2" "$BUILD/io_$dev.pt" "$OPS"
  fi
done
if [ -n "${HOST_COST:-}" ] && [ "$CUDA_OK" = 1 ]; then
  "$BUILD/bench_host_cost" "$HOST_COST" "${CALLS:-10000}"
fi
