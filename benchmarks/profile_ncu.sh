#!/usr/bin/env bash
# Nsight Compute evidence for docs/performance.md: our kernels beside cuDNN's on the same shapes
# (bf16, B*T = 16384, H*D = 2048). Clocks are left alone (--clock-control none; docs/performance.md, "Protocol").
# Writes $OUT/ncu/<workload>.csv (raw metrics of the sections below) and a summary table.
#   bash benchmarks/profile_ncu.sh [workload ...]
set -uo pipefail
OUT=${OUT:-$PWD/ncu_out}
mkdir -p "$OUT/ncu"
HERE=$(cd "$(dirname "$0")" && pwd)
WORKLOADS=("$@")
[ ${#WORKLOADS[@]} = 0 ] && WORKLOADS=(ours-fwd-hd128-T4096 cudnn-fwd-hd128-T4096
  ours-fwd-hd128-T16384 cudnn-fwd-hd128-T16384 ours-fwd-hd64-T4096 cudnn-fwd-hd64-T4096
  ours-bwd-hd128-T4096 cudnn-bwd-hd128-T4096)
for w in "${WORKLOADS[@]}"; do
  ncu --clock-control none --profile-from-start off --target-processes all \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats \
    --section Occupancy --section LaunchStats --section InstructionStats \
    --metrics sm__cycles_active.avg,sm__cycles_active.max,sm__cycles_elapsed.max,lts__t_sector_hit_rate.pct,dram__bytes_read.sum \
    --csv --page raw python3 "$HERE/ncu_workloads.py" "$w" > "$OUT/ncu/$w.csv" 2> "$OUT/ncu/$w.err" \
    || { echo "ncu failed on $w"; tail -5 "$OUT/ncu/$w.err"; }
done
python3 "$HERE/ncu_summary.py" "$OUT"/ncu/*.csv | tee "$OUT/ncu/summary.txt"
