#!/usr/bin/env bash
# Device run for deployment and reliability: build, all tests (GPU, threads, >2^31 elements,
# the C++ client on CPU and CUDA), host-cost / cold-start benchmark, compute-sanitizer memcheck
# over every compiled variant (forward + backward) and racecheck over one head dim.
#   bash benchmarks/gpu_reliability.sh        (logs and JSON to $OUT)
set -uo pipefail
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
python3 -m pytest -q -rs tests 2>&1 | tee "$OUT/tests.log" | tail -8
python3 benchmarks/bench_latency.py --out "$OUT/latency.json" | tail -22
timeout 300 compute-sanitizer --tool memcheck --print-limit 20 python3 benchmarks/sanitize_check.py > "$OUT/memcheck.log" 2>&1
echo "memcheck rc=$?"; tail -3 "$OUT/memcheck.log"
timeout 200 compute-sanitizer --tool racecheck --print-limit 20 python3 benchmarks/sanitize_check.py --only 64 > "$OUT/racecheck.log" 2>&1
echo "racecheck rc=$?"; tail -3 "$OUT/racecheck.log"
