"""The C++ CPU path against the pure-torch reference and PyTorch's CPU SDPA (softmax), fp32.

    python benchmarks/bench_cpu.py [--out results/cpu/bench_cpu.json] [--rounds 10] [--passes 3]
                                    [--threads 2,1]

Forward, and forward + backward (a training step: autograd through the reference and through
SDPA), at B=2, H=4, D=64, T in {256, 1024}, causal and not, with each of --threads intra-op
threads (torch.set_num_threads; default: torch's current setting). Providers run in interleaved
rounds, spread over --passes sweeps of all cases, and each figure is the fastest round: on a
shared machine the other processes only ever add time, so the minimum is the least disturbed
measurement, and a burst of load lasting a whole sweep spoils no case (the median is recorded
too). Prints a table, writes JSON.
"""

import argparse
import json
import os
import platform
import subprocess
import time

import torch
import torch.nn.functional as F

from sigmoid_attn import sigmoid_attention, sigmoid_attention_reference

B, H, D = 2, 4, 64
LENGTHS = (256, 1024)


def providers(q, k, v, grad, causal):
    qt, kt, vt, gt = (x.transpose(1, 2).contiguous() for x in (q, k, v, grad))  # SDPA: BHTD

    def ours():
        return sigmoid_attention(q, k, v, is_causal=causal)

    def ref():
        return sigmoid_attention_reference(q, k, v, is_causal=causal)

    def sdpa():
        return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)

    def step(fn, ins, g):
        def run():
            for t in ins:
                t.grad = None
            fn().backward(g)
        return run

    ours_in = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
    sdpa_in = [t.clone().requires_grad_() for t in (qt, kt, vt)]
    return {
        ("forward", "sigmoid_attn"): ours,
        ("forward", "reference"): ref,
        ("forward", "sdpa (softmax)"): sdpa,
        ("fwd+bwd", "sigmoid_attn"): step(lambda: sigmoid_attention(*ours_in, is_causal=causal),
                                          ours_in, grad),
        ("fwd+bwd", "reference"): step(
            lambda: sigmoid_attention_reference(*ref_in, is_causal=causal), ref_in, grad),
        ("fwd+bwd", "sdpa (softmax)"): step(
            lambda: F.scaled_dot_product_attention(*sdpa_in, is_causal=causal), sdpa_in, gt),
    }


def measure(fns, rounds):
    for fn in fns.values():  # warm-up: allocator, thread pool, lazy library loads
        fn()
    times = {key: [] for key in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - t0) * 1e3)
    return times


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=os.path.dirname(__file__)).stdout.strip() or None
    except OSError:
        return None


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run(rounds, passes):
    torch.manual_seed(0)
    cases = {(T, causal): [torch.randn(B, T, H, D) for _ in range(4)]
             for T in LENGTHS for causal in (False, True)}
    times = {case: {} for case in cases}
    for _ in range(passes):
        for (T, causal), (q, k, v, grad) in cases.items():
            for key, ts in measure(providers(q, k, v, grad, causal), rounds).items():
                times[(T, causal)].setdefault(key, []).extend(ts)
    rows = []
    for (T, causal), by_provider in times.items():
        flops = 4.0 * B * H * D * T * T * (0.5 if causal else 1.0)
        for (kind, name), ts in by_provider.items():
            ms = min(ts)
            work = flops * (3.5 if kind == "fwd+bwd" else 1.0)  # backward: 2.5x forward
            rows.append({"T": T, "causal": causal, "pass": kind, "provider": name,
                         "ms": ms, "ms_median": sorted(ts)[len(ts) // 2],
                         "gflops": work / (ms * 1e-3) / 1e9})
    for r in rows:
        ours = next(o["ms"] for o in rows if o["provider"] == "sigmoid_attn"
                    and (o["T"], o["causal"], o["pass"]) == (r["T"], r["causal"], r["pass"]))
        r["speedup_of_sigmoid_attn"] = r["ms"] / ours  # > 1: sigmoid_attn is faster
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cpu",
                                                  "bench_cpu.json"))
    ap.add_argument("--rounds", type=int, default=10, help="rounds per case and pass")
    ap.add_argument("--passes", type=int, default=3, help="sweeps over all cases")
    ap.add_argument("--threads", default=str(torch.get_num_threads()),
                    help="comma-separated intra-op thread counts")
    args = ap.parse_args()

    print(f"CPU: {cpu_name()}, torch {torch.__version__}")
    print(f"B={B} H={H} D={D} fp32, fastest of {args.passes} x {args.rounds} interleaved rounds")
    runs = []
    for n in (int(x) for x in args.threads.split(",")):
        torch.set_num_threads(n)
        rows = run(args.rounds, args.passes)
        runs.append({"threads": n, "rows": rows})
        print(f"\n{n} thread{'s' if n > 1 else ''}")
        print(f"  {'T':>5s} {'causal':>6s} {'pass':8s} {'provider':15s} {'ms':>9s} "
              f"{'GFLOP/s':>8s} {'ours x':>7s}")
        for r in rows:
            print(f"  {r['T']:5d} {str(r['causal']):>6s} {r['pass']:8s} {r['provider']:15s} "
                  f"{r['ms']:9.3f} {r['gflops']:8.1f} {r['speedup_of_sigmoid_attn']:6.2f}x")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                   "commit": commit(), "shape": {"B": B, "H": H, "D": D, "dtype": "float32"},
                   "rounds": args.rounds, "passes": args.passes,
                   "runs": runs}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
