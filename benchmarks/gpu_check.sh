#!/usr/bin/env bash
# One device call does it all: build against the machine's torch/triton, run every test (GPU ones
# included), run the benchmark with peers. Logs and JSON go to $OUT (or ./gpu_out).
#   bash benchmarks/gpu_check.sh [quick]
set -uo pipefail
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then  # carried peers (triton-sigmoid)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
cmake --version | head -1 | tee -a "$OUT/gpu.txt"
for m in scikit_build_core pybind11 matplotlib pandas numpy hypothesis triton_sigmoid; do
  python3 -c "import $m" 2>/dev/null && echo "have $m" || echo "missing $m"; done | tee -a "$OUT/gpu.txt"
t0=$(date +%s)
python3 -m pip install --no-build-isolation --no-deps -v -e . > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/gpu.txt"
grep -E "^aot:|aot: " "$OUT/build.log" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -rs tests 2>&1 | tee "$OUT/tests.log" | tail -25
if ls .whl/hf_cp312/*.whl >/dev/null 2>&1; then  # carried Hugging Face transformers (cp312)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/hf \
    .whl/hf_cp312/*.whl
  PYTHONPATH=/tmp/hf:${PYTHONPATH:-} python3 -m pytest -q -rs tests/test_integrations_transformers.py \
    tests/test_single_cell_example.py 2>&1 | tee "$OUT/tests_hf.log" | tail -5
fi
if [ "${1:-}" != "notbench" ]; then
  python3 benchmarks/bench_attention.py --out-dir "$OUT/results" ${1:+--$1} 2>&1 | tee "$OUT/bench.log" | tail -20
  cp "$OUT"/results/*/attention.* "$OUT/" 2>/dev/null
fi
