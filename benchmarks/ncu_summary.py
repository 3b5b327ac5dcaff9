"""Summarizes profile_ncu.sh's CSV files: per kernel, duration, the busiest pipes, issue
activity, occupancy, registers and the top warp stall reasons.

    python benchmarks/ncu_summary.py ncu_out/ncu/*.csv
"""

import csv
import os
import sys

WANT = {
    "gpu__time_duration.sum": "us",
    "launch__registers_per_thread": "regs",
    "launch__shared_mem_per_block_dynamic": "smem",
    "launch__grid_size": "grid",
    "launch__occupancy_limit_shared_mem": "ctas_by_smem",
    "launch__occupancy_limit_registers": "ctas_by_regs",
    "launch__block_size": "block",
    "sm__warps_active.avg.pct_of_peak_sustained_active": "occ%",
    "sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active": "xu%",
    "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active": "tensor%",
    "sm__inst_executed_pipe_tensor_op_gmma.avg.pct_of_peak_sustained_active": "gmma_inst%",
    "sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active": "fma%",
    "sm__pipe_shared_cycles_active.avg.pct_of_peak_sustained_active": "shared%",
    "l1tex__data_pipe_lsu_wavefronts.avg.pct_of_peak_sustained_elapsed": "lsu_wavefronts%",
    "smsp__inst_executed.sum": "inst",
    "sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active": "alu%",
    "sm__inst_executed.avg.per_cycle_active": "ipc",
    "smsp__issue_active.avg.pct_of_peak_sustained_active": "issue%",
    "lts__t_sector_hit_rate.pct": "l2_hit%",
    "dram__bytes_read.sum": "dram_read",
}
# Load balance across SMs (profile_ncu.sh asks for these): the average SM's active cycles over
# the kernel's elapsed cycles. 1.0 means every SM was busy to the end; the rest is the tail of
# the last wave and programs of unequal length.
BALANCE = ("sm__cycles_active.avg", "sm__cycles_active.max", "sm__cycles_elapsed.max")


def num(s):
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


def rows(path):
    with open(path) as f:
        lines = [ln for ln in f if ln.startswith('"')]
    if len(lines) < 3:
        return []
    r = list(csv.reader(lines))
    header, units, data = r[0], r[1], r[2:]
    return [(dict(zip(header, d)), dict(zip(header, units))) for d in data]


def main(paths):
    for p in paths:
        for d, u in rows(p):
            name = d.get("Kernel Name", "?")[:60]
            out = []
            for key, short in WANT.items():
                v = num(d.get(key, ""))
                if v is None:
                    continue
                if key == "gpu__time_duration.sum":
                    unit = u.get(key, "")
                    v = v / 1000 if unit in ("ns", "nsecond") else v * 1000 if unit in ("ms", "msecond") else v
                out.append(f"{short}={v:.4g}")
            act, act_max, elapsed = (num(d.get(k, "")) for k in BALANCE)
            if act and act_max and elapsed:
                out.append(f"sm_active_avg/elapsed={act / elapsed:.3f}")
                out.append(f"sm_active_max/elapsed={act_max / elapsed:.3f}")
            stalls = sorted(((num(v) or 0, k) for k, v in d.items()
                             if k.startswith("smsp__average_warps_issue_stalled_")
                             and k.endswith("_per_issue_active.ratio")), reverse=True)[:4]
            st = ", ".join(f"{k[len('smsp__average_warps_issue_stalled_'):-len('_per_issue_active.ratio')]}"
                           f" {v:.2f}" for v, k in stalls)
            print(f"{os.path.basename(p)[:-4]:24s} {name}\n    {' '.join(out)}\n    stalls/issue: {st}")


if __name__ == "__main__":
    main(sys.argv[1:])
