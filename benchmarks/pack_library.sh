#!/usr/bin/env bash
# The built ops library with its Python package, as one archive for `gpu_check.sh` (PREBUILT,
# PREBUILT_B): the kernels of a Triton the GPU machine lacks travel built, and the Python files
# of the same commit with them (another commit's Python layer may bind entry points this
# library lacks, or miss ones it has).
#   bash benchmarks/pack_library.sh .carry/prebuilt.tar.xz
set -euo pipefail
out=${1:?usage: pack_library.sh OUT.tar.xz}
lib=$(python3 -c "import sigmoid_attn, os; print(os.path.dirname(sigmoid_attn.library_path()))")
src=$(cd "$(dirname "$0")/.." && pwd)/python/sigmoid_attn
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r "$src"/. "$stage"/
cp -r "$lib"/libsigmoid_attn_ops.so "$lib"/catalog.json "$stage"/
[ -d "$lib/include" ] && cp -r "$lib/include" "$stage"/
mkdir -p "$(dirname "$out")"
(cd "$stage" && tar cf - --exclude='__pycache__' --exclude='_C*.so' ./*) | xz -T2 -6 > "$out"
echo "$out: $(du -h "$out" | cut -f1), $(python3 -c "import json; print(len(json.load(open('$lib/catalog.json'))['kernels']))") kernels"
