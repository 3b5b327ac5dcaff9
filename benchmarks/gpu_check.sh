#!/usr/bin/env bash
# A device call: build against the machine's torch/Triton, then run every test (GPU ones included)
# and/or the benchmark with peers. Logs and JSON go to $OUT (or ./gpu_out). One device call is at
# most 10 minutes: the build takes 60-100 s on a cold machine, the tests ~90-150 s, the full
# benchmark ~500 s (triton-sigmoid autotunes each shape), so split it:
#   bash benchmarks/gpu_check.sh tests                   # build + tests (+ HF tests if carried)
#   bash benchmarks/gpu_check.sh bench "fwd" "bwd hd128"  # build + the rows whose label matches
#   bash benchmarks/gpu_check.sh latency                 # build + host cost (Python and C++)
#   bash benchmarks/gpu_check.sh all                     # build + tests + full benchmark
#   bash benchmarks/gpu_check.sh tune_lpt,bench "causal"  # program-order sweep (--write), then build
#   PREBUILT=... bash benchmarks/gpu_check.sh tune_hd    # tiles of the other head dims (JIT
#                                                         # sweeps, --write; tiles.json to $OUT)
#   bash benchmarks/gpu_check.sh cp,train_multi           # several GPUs: context-parallel bench
#                                                         # (every GPU, then one) and the
#                                                         # distributed training example
#   bash benchmarks/gpu_check.sh serving                 # the serving example under load (carry
#                                                         # .whl/serve: litserve and its stack)
#   bash benchmarks/gpu_check.sh probe_fwd               # the Gluon forward probe's carried
#                                                         # cubins (PROBE_ARGS="--only d64");
#                                                         # alone, it builds no library
#   bash benchmarks/gpu_check.sh lengths                 # padded and packed rows over several
#                                                         # draws of lengths, dense beside each
#                                                         # (bench_lengths.py; LENGTHS_ARGS)
#   bash benchmarks/gpu_check.sh waves                   # wave quantization: TFLOPS against the
#                                                         # share of the last wave the tiles fill
#   bash benchmarks/gpu_check.sh ncu_split               # the forward's split last wave against
#                                                         # whole tiles, one dense call, under
#                                                         # Nsight Compute (ncu_split.py)
#   bash benchmarks/gpu_check.sh ncu_bwd                 # the Gluon backward dense vs padded
#                                                         # under Nsight Compute, with per-line
#                                                         # stall sampling (CSV)
#   PREBUILT=a.tar.xz PREBUILT_B=b.tar.xz bash benchmarks/gpu_check.sh ab "fwd padded"
#                                                         # two libraries on the same rows,
#                                                         # interleaved A, B, A, B (AB_ROUNDS;
#                                                         # AB_LENGTHS=1 adds bench_lengths.py;
#                                                         # AB_C_ENV="X=0" a column c: B with
#                                                         # those settings);
#                                                         # an archive's own python/sigmoid_attn
#                                                         # files, if it holds them, replace the
#                                                         # tree's (a library of another commit
#                                                         # may lack entry points this one binds)
#   bash benchmarks/gpu_check.sh compat_suite            # triton-sigmoid's own tests through
#                                                         # the compat module (TS_SUITE: its tests)
#   bash benchmarks/gpu_check.sh memcheck                # compute-sanitizer memcheck: every
#                                                         # variant, the Gluon kernels, the
#                                                         # large-view addressing sweep
#   bash benchmarks/gpu_check.sh stress                  # contention stress of the default
#                                                         # forward: 8 processes, >= 20,000 calls
#                                                         # of the hd128 dense kernel, fewer of
#                                                         # padded / causal / varlen / T = 8k
#                                                         # (STRESS_TARGET=lib_gluon: the Gluon
#                                                         # kernels switched on; STRESS_ARGS=
#                                                         # --backward: the backward; STRESS_NAME:
#                                                         # a prefix of the JSON files)
# PREBUILT=archive.tar.xz: instead of building, run a library built elsewhere (e.g. the wheel's
# ops library from Triton 3.8, which compiles kernels this machine's Triton does not): the
# archive holds libsigmoid_attn_ops.so and catalog.json (the package binds the library through
# ctypes, so any Python serves; an older archive's compiled _C modules are left out), and with
# `bash benchmarks/pack_library.sh OUT.tar.xz` (after a build) its commit's Python files too.
# Modes combine with commas (tests,latency); TESTS="tests/a.py tests/b.py" narrows the tests.
# Carry .whl/ (triton_sigmoid-0.1.2-py3-none-any.whl) for the triton-sigmoid peer.
# The device's copy of the tree has no .git: pass SIGMOID_ATTN_COMMIT=<sha> for the JSON's commit.
# The benchmark saves its JSON after every row under $OUT/results/<device>/ (a cut-off run
# keeps its rows there).
set -uo pipefail
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export SIGMOID_ATTN_COMMIT=${SIGMOID_ATTN_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
if ls .whl/*.whl >/dev/null 2>&1; then  # carried peers (triton-sigmoid)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
cmake --version | head -1 | tee -a "$OUT/gpu.txt"
for m in scikit_build_core matplotlib pandas numpy hypothesis triton_sigmoid; do
  python3 -c "import $m" 2>/dev/null && echo "have $m" || echo "missing $m"; done | tee -a "$OUT/gpu.txt"
MODE=${1:-all}
shift || true
[ "$MODE" = all ] && MODE=tests,bench
has() { case ",$MODE," in *",$1,"*) return 0;; *) return 1;; esac; }
if has tune_lpt; then  # program order (JIT, before the build, which then compiles the winners)
  timeout 240 python3 benchmarks/tune_forward.py --lpt --write --out "$OUT/tune_fwd_lpt.json" \
    2>&1 | tee "$OUT/tune_lpt.log" | grep -E "geometric|Error" ; cp triton_src/tiles.json "$OUT/"
fi
if has tune_hd; then  # tiles of the head dims beside 64 and 128 (JIT sweeps, --write); the
  # winners come back in $OUT/tiles.json for a build elsewhere
  HD=${TUNE_HEAD_DIMS:-40 48 80 96 112 160 192 256}
  timeout "${TUNE_FWD_TIMEOUT:-280}" python3 benchmarks/tune_forward.py --head-dims $HD --write \
    --out "$OUT/tune_fwd_head_dims.json" 2>&1 | tee "$OUT/tune_fwd_head_dims.log" | grep -E "best|tiles.json"
  timeout "${TUNE_BWD_TIMEOUT:-280}" python3 benchmarks/tune_backward.py --head-dims $HD --write \
    --out "$OUT/tune_bwd_head_dims.json" 2>&1 | tee "$OUT/tune_bwd_head_dims.log" | grep -E "best|tiles.json"
  cp triton_src/tiles.json "$OUT/"
fi
t0=$(date +%s)
if [ "$MODE" = probe_fwd ]; then  # the probe runs its own cubins: no library needed
  :
elif [ -n "${PREBUILT:-}" ]; then
  rm -rf /tmp/prebuilt && mkdir -p /tmp/prebuilt && cp -r python/sigmoid_attn /tmp/prebuilt/
  tar xJf "$PREBUILT" -C /tmp/prebuilt/sigmoid_attn --exclude='_C.*.so' || exit 1
  export PYTHONPATH=/tmp/prebuilt${PYTHONPATH:+:$PYTHONPATH}
  python3 -c "import sigmoid_attn as s; i = s.info(); print('prebuilt:', i['triton_build'], len(i['variants']), 'kernels')" \
    | tee -a "$OUT/gpu.txt"
else
  python3 -m pip install --no-build-isolation --no-deps -v -e . > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/gpu.txt"
  grep -E "^aot:|aot: " "$OUT/build.log" | tee -a "$OUT/gpu.txt"
fi
if has tests; then
  # The contention tests start 8 processes each, which under pytest -n beside the memory-heavy
  # varlen and addressing tests can run the GPU out of memory: they run alone, after the rest.
  sel=$(for t in ${TESTS:-tests}; do [ -d "$t" ] && ls "$t"/test_*.py || echo "$t"; done)
  rest=$(echo "$sel" | grep -v test_contention_gpu.py | tr '\n' ' ')
  alone=$(echo "$sel" | grep test_contention_gpu.py | tr '\n' ' ')
  python3 -m pytest -q -rs --durations=25 ${PYTEST_ARGS:-} $rest 2>&1 | tee "$OUT/tests.log" | tail -25
  [ -n "$alone" ] && python3 -m pytest -q -rs $alone 2>&1 | tee -a "$OUT/tests.log" | tail -5
fi
if has stress; then  # the default forward under 8-process contention (stress_contention.py)
  while read -r case dt T B calls; do
    timeout 300 python3 benchmarks/stress_contention.py --target "${STRESS_TARGET:-lib}" --case "$case" --dtype "$dt" \
      --seqlen "$T" --batch "$B" --procs 8 --calls "$calls" ${STRESS_ARGS:-} \
      --json "$OUT/stress_${STRESS_NAME:-}${case}_${dt}_${T}.json" \
      | cut -c1-400
  done <<< "${STRESS_CASES:-dense bf16 4096 4 1300
dense fp16 4096 4 1300
padded bf16 4096 4 300
causal fp16 4096 4 300
varlen bf16 4096 4 300
dense bf16 8192 2 300}"
fi
if has memcheck; then  # compute-sanitizer: every variant and the Gluon kernels, then the
  # large-view addressing sweep (64-bit offsets), each under memcheck (kernels run ~100x slower)
  timeout "${MEMCHECK_TIMEOUT:-300}" compute-sanitizer --tool memcheck --print-limit 20 \
    python3 benchmarks/sanitize_check.py > "$OUT/memcheck.log" 2>&1
  echo "memcheck (variants, Gluon) rc=$?"; tail -3 "$OUT/memcheck.log"
  timeout "${MEMCHECK_TIMEOUT:-300}" compute-sanitizer --tool memcheck --print-limit 20 \
    --target-processes all python3 -m pytest -q -x -p no:xdist tests/test_addressing_gpu.py \
    > "$OUT/memcheck_addressing.log" 2>&1
  echo "memcheck (addressing sweep) rc=$?"; tail -3 "$OUT/memcheck_addressing.log"
fi
if has latency; then  # host cost per tiny call and cold start: Python (with peers), then C++
  python3 benchmarks/bench_latency.py --out "$OUT/latency.json" 2>&1 | tee "$OUT/latency.log" | tail -12
  HOST_COST="$OUT/host_cost_cpp.json" bash examples/cpp/run.sh /tmp/cpp_build > "$OUT/cpp_example.log" 2>&1
  tail -12 "$OUT/cpp_example.log"
fi
if has tests && ls .whl/hf_cp312/*.whl >/dev/null 2>&1; then  # carried transformers
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/hf \
    .whl/hf_cp312/*.whl
  PYTHONPATH=/tmp/hf:${PYTHONPATH:-} python3 -m pytest -q -rs tests/test_integrations_transformers.py \
    tests/test_single_cell_example.py 2>&1 | tee "$OUT/tests_hf.log" | tail -5
fi
if has bench; then
  python3 benchmarks/bench_attention.py --out-dir "$OUT/results" ${1:+--only "$@"} 2>&1 \
    | tee "$OUT/bench.log" | tail -30
  cp "$OUT"/results/*/attention.* "$OUT/" 2>/dev/null
fi
if has ab; then  # two libraries on the same rows, interleaved A, B, A, B (PREBUILT is A, PREBUILT_B
  # is B; AB_ROUNDS rounds): bench_attention.py rows named by the arguments, and with AB_LENGTHS
  # the padded/packed draws of bench_lengths.py (LENGTHS_ARGS); JSON under $OUT/ab/
  mkdir -p "$OUT/ab"
  rm -rf /tmp/lib_b && mkdir -p /tmp/lib_b && cp -r python/sigmoid_attn /tmp/lib_b/
  tar xJf "$PREBUILT_B" -C /tmp/lib_b/sigmoid_attn --exclude='_C.*.so' || exit 1
  # AB_C_ENV="VAR=value ...": a third column c, library B under those settings (a switch off)
  for r in $(seq 1 "${AB_ROUNDS:-2}"); do
    for lib in a b ${AB_C_ENV:+c}; do
      dir=/tmp/prebuilt; [ $lib != a ] && dir=/tmp/lib_b
      settings=""; [ $lib = c ] && settings=$AB_C_ENV
      env $settings PYTHONPATH=$dir${PYTHONPATH:+:$PYTHONPATH} timeout "${AB_TIMEOUT:-120}" \
        python3 benchmarks/bench_attention.py --out-dir "/tmp/ab_$lib$r" ${1:+--only "$@"} \
        > /dev/null 2>&1
      cp /tmp/ab_$lib$r/*/attention.json "$OUT/ab/rows_${lib}${r}.json" 2>/dev/null
      if [ -n "${AB_LENGTHS:-}" ]; then
        env $settings PYTHONPATH=$dir${PYTHONPATH:+:$PYTHONPATH} timeout "${AB_TIMEOUT:-120}" \
          python3 benchmarks/bench_lengths.py --out "$OUT/ab/lengths_${lib}${r}.json" \
          ${LENGTHS_ARGS:-} > /dev/null 2>&1
      fi
    done
  done
  python3 - "$OUT/ab" <<'PY'
import glob, json, os, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "rows_*.json"))):
    rows = json.load(open(f)).get("rows", [])
    print(os.path.basename(f), "  ".join(f"{r['label']}: {r['tflops'].get('sigmoid_attn', 0):.1f}"
                                         for r in rows))
PY
fi
if has serving; then  # the serving example (LitServe, token-budget packed batches): every mode
  # A machine without LitServe's web stack takes wheels from .whl/serve/ (CPython 3.12:
  # `pip download --no-deps --only-binary=:all: --python-version 3.12` of litserve==0.2.19,
  # fastapi, starlette, uvicorn, pydantic, pydantic-core, annotated-types, typing-inspection,
  # pyzmq, opentelemetry-api, and uvloop and httptools: LitServe's uvicorn[standard] brings them
  # in a pip install, and without them uvicorn runs asyncio's loop and the pure-Python h11)
  ls .whl/serve/*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps \
    --no-compile --no-cache-dir --target /tmp/serve .whl/serve/*.whl \
    && export PYTHONPATH=/tmp/serve${PYTHONPATH:+:$PYTHONPATH}
  timeout "${SERVE_TIMEOUT:-420}" python3 examples/serving/bench.py --server-args "--size base" \
    --out-dir "$OUT/results/serving" ${SERVE_ARGS:-} 2>&1 | tee "$OUT/serving.log" | tail -30
  # the low-load overhead, no batch wait (examples/serving/overhead.py), eager and from CUDA
  # graphs: "name: server arguments" per line
  while IFS=: read -r name sargs; do
    python3 examples/serving/server.py --size base --port 8199 $sargs < /dev/null \
      > "$OUT/serving_${name}_server.log" 2>&1 &
    srv=$!
    for _ in $(seq 120); do curl -sf http://127.0.0.1:8199/health >/dev/null && break; sleep 1; done
    timeout 120 python3 examples/serving/overhead.py --url http://127.0.0.1:8199 < /dev/null \
      --out "$OUT/results/serving/overhead_${name}.json" 2>&1 | tee -a "$OUT/serving.log"
    kill "$srv"; wait "$srv" 2>/dev/null
  done <<< "${OVERHEAD_CASES:-wait0ms: --max-wait-ms 0
wait0ms_graphs: --max-wait-ms 0 --cuda-graphs 4096}"
fi
if has probe_fwd; then  # the standalone Gluon forward probe (benchmarks/gluon_fwd): its cubins,
  # compiled here by `python benchmarks/gluon_fwd/compile.py [--only ...]`, carried in
  # benchmarks/gluon_fwd/build; checked against float64, stress-repeated, timed beside cuDNN
  # (its JSON goes to $OUT)
  timeout "${PROBE_TIMEOUT:-300}" python3 benchmarks/gluon_fwd/run_on_device.py \
    ${PROBE_ARGS:-} 2>&1 | tee "$OUT/probe_fwd.log" | tail -30
fi
if has lengths; then  # padded/packed against dense over draws of lengths (bench_lengths.py)
  timeout "${LENGTHS_TIMEOUT:-240}" python3 benchmarks/bench_lengths.py --out "$OUT/lengths.json" \
    ${LENGTHS_ARGS:-} 2>&1 | tee "$OUT/lengths.log" | tail -12
fi
if has waves; then  # wave quantization: dense calls whose tiles fill a varying share of the
  # last wave over the SMs (bench_waves.py)
  timeout "${WAVES_TIMEOUT:-200}" python3 benchmarks/bench_waves.py --out "$OUT/waves.json" \
    2>&1 | tee "$OUT/waves.log" | tail -16
fi
if has ncu_bwd; then  # the Gluon backward dense, then padded (ncu_lengths.py's draw) under Nsight
  # Compute: sections and counters, then per-instruction stall sampling (SASS with the CUDA
  # lines: the cubins carry line info) as CSV, to find where the padded launch's extra cycles go
  NCU="ncu -k regex:bwd_gluon --launch-skip 2 --launch-count 2"
  timeout 300 $NCU --section SpeedOfLight --section WarpStateStats --section ComputeWorkloadAnalysis \
    python3 benchmarks/ncu_lengths.py --backward > "$OUT/ncu_bwd_sections.txt" 2>&1
  timeout 300 $NCU --section SourceCounters --section WarpStateStats --page source --csv \
    --print-source cuda,sass python3 benchmarks/ncu_lengths.py --backward \
    > "$OUT/ncu_bwd_source.csv" 2>&1
  grep -E "Duration|Tensor|Throughput" "$OUT/ncu_bwd_sections.txt" | head -12
fi
if has ncu_split; then  # the Gluon forward's split last wave against whole tiles on one dense
  # call (ncu_split.py; NCU_SPLIT_ARGS, e.g. "--seqlen 4096 --heads 17"): sections, then
  # per-instruction stall sampling of both launches as CSV (where the split's pieces wait)
  NCU="ncu -k regex:fwd_gluon --launch-skip 2 --launch-count 2"
  timeout 300 $NCU --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis \
    --section LaunchStats python3 benchmarks/ncu_split.py ${NCU_SPLIT_ARGS:-} \
    > "$OUT/ncu_split_sections.txt" 2>&1
  timeout 300 $NCU --section SourceCounters --section WarpStateStats --page source --csv \
    --print-source cuda,sass python3 benchmarks/ncu_split.py ${NCU_SPLIT_ARGS:-} \
    > "$OUT/ncu_split_source.csv" 2>&1
  grep -E "Duration|L2 Hit|Memory Throughput|DRAM Throughput" "$OUT/ncu_split_sections.txt" | head -12
fi
if has compat_suite; then  # triton-sigmoid's published tests against the compat module
  timeout "${COMPAT_TIMEOUT:-300}" bash benchmarks/run_triton_sigmoid_suite.sh \
    "${TS_SUITE:-.carry/ts_suite}" -n "${COMPAT_WORKERS:-8}"
fi
NGPU=$(python3 -c "import torch; print(torch.cuda.device_count())")
if has cp; then  # context parallelism on every GPU of the machine (NCCL), then one GPU (P = 1)
  nvidia-smi topo -m > "$OUT/topo.txt" 2>&1
  timeout "${CP_TIMEOUT:-330}" python3 -m torch.distributed.run --standalone --nproc-per-node "$NGPU" \
    benchmarks/bench_context_parallel.py --out-dir "$OUT/results" ${CP_ARGS:-} 2>&1 | tee "$OUT/cp_bench.log"
  timeout "${CP1_TIMEOUT:-150}" python3 benchmarks/bench_context_parallel.py --out-dir "$OUT/results" \
    --providers sigmoid_attn_cp sigmoid_attn_1gpu ${CP1_ARGS:---seqlens 16384 65536} 2>&1 | tee "$OUT/cp_bench_p1.log"
fi
if has train_multi; then  # the distributed training example on every GPU, then on one
  for p in "$NGPU" 1; do
    while read -r mode attention extra; do
      timeout 240 python3 -m torch.distributed.run --standalone --nproc-per-node "$p" \
        examples/single_cell/train_distributed.py --device cuda --mode "$mode" \
        --attention "$attention" --out-dir "$OUT/results/train-x$p" $extra 2>&1 \
        | tee -a "$OUT/train_multi.log" | grep -E "final loss|Error|error" | cut -c1-300
    done <<< "${TRAIN_CASES:-ddp sigmoid
ddp softmax
fsdp2 sigmoid
cp sigmoid}"
  done
fi
if [ -n "${PACK:-}" ]; then  # at most 8 files come back from a device call: all in one archive
  (cd "$OUT" && tar czf all.tgz --remove-files $(ls -d *.log *.txt results 2>/dev/null))
fi
