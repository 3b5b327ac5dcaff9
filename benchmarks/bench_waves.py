"""Wave quantization of the persistent forward and of the backward's grid, measured: one dense
call at T=4k, hd128, with the head count chosen so that the 128-row tiles (forward) and the
128-key programs (backward) fill a varying share of their last wave over the SMs. If a tile's
cost does not depend on the head count, TFLOPS follows waves / ceil(waves), the share of the
SMs' time a static schedule keeps busy (`schedule_model.py --persistent`); a split of the last
wave's work over every SM (stream-K: sigmoid attention sums partial outputs without rescaling)
would recover the rest (a library that has it: the forward with it on, "fwd", and off,
"fwd_unsplit"). Columns of one row are timed in interleaved rounds (median). --seqlen T < 4k
keeps the waves (a batch of 4k / T sequences); --split-every splits every call with a partial
wave (the library's default only splits tiles of enough key blocks for it to pay).

    python benchmarks/bench_waves.py --out waves.json
    python benchmarks/bench_waves.py --seqlen 1024 --split-every --no-backward
"""

import argparse
import json
import math

import torch

import sigmoid_attn
from bench_attention import bench, settle
from sigmoid_attn import sigmoid_attention

D, BLOCK = 128, 128
HEADS = (33, 34, 37, 50, 64, 66, 67)  # 8.0, 8.24, 8.97, 12.1, 15.5, 16.0, 16.2 waves at 132 SMs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="waves.json")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-backward", action="store_true")
    ap.add_argument("--seqlen", type=int, default=4096, help="a divisor of 4096")
    ap.add_argument("--split-every", action="store_true",
                    help="the forward split in every call with a partial wave")
    args = ap.parse_args()
    T = args.seqlen
    B = max(1, 4096 // T)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    g = torch.Generator(device="cuda").manual_seed(0)
    cases = {}
    for H in HEADS:
        q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
                       for _ in range(4))
        cases[H] = (q, k, v, do)
    kinds = ["fwd"] + ([] if args.no_backward else ["bwd"])
    # a library with the split last wave: the forward also with it off (kernel_options)
    split = "split_wave" in sigmoid_attn.current_kernel_options()
    if split:
        kinds.insert(1, "fwd_unsplit")
        if args.split_every:
            sigmoid_attn._library.dispatch_switch("split_wave", 2)
    times = {(kind, H): [] for kind in kinds for H in HEADS}
    settle()
    for _ in range(args.rounds):  # interleaved: every case once per round
        for H, (q, k, v, do) in cases.items():
            times[("fwd", H)].append(bench(lambda: sigmoid_attention(q, k, v)))
            if split:
                with sigmoid_attn.kernel_options(split_wave=False):
                    times[("fwd_unsplit", H)].append(bench(lambda: sigmoid_attention(q, k, v)))
            if "bwd" in kinds:
                ins = [x.clone().requires_grad_() for x in (q, k, v)]
                out = sigmoid_attention(*ins)
                times[("bwd", H)].append(bench(
                    lambda: torch.autograd.grad(out, ins, do, retain_graph=True)))
    rows = []
    for (kind, H), ts in times.items():
        ms = sorted(ts)[len(ts) // 2]
        flops = (2.5 if kind == "bwd" else 1.0) * 4.0 * B * H * D * T * T
        waves = B * H * math.ceil(T / BLOCK) / sms
        rows.append({"kind": kind, "heads": H, "tiles": B * H * math.ceil(T / BLOCK),
                     "waves": waves,
                     "busy_share": waves / math.ceil(waves), "ms": ms, "ms_rounds": ts,
                     "tflops": flops / (ms * 1e-3) / 1e12})
        print(f"{kind} H={H:3d} waves {waves:5.2f} static share {waves / math.ceil(waves):.3f}"
              f"  {rows[-1]['tflops']:6.1f} TFLOPS", flush=True)
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "sms": sms, "T": T, "B": B,
                   "head_dim": D, "split_every": args.split_every,
                   "library": sigmoid_attn.info().get("commit"), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
