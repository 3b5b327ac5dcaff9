"""The Gluon forward's split last wave for Nsight Compute: one dense call with whole tiles, then
the same call split (`split_wave` 2: every call with a partial wave), each twice (the first of
each a warm-up). Profile the third and fourth Gluon launches:

    ncu -k regex:fwd_gluon --launch-skip 2 --launch-count 2 --section SpeedOfLight \\
        --section WarpStateStats --section MemoryWorkloadAnalysis \\
        python benchmarks/ncu_split.py [--seqlen 2048] [--heads 34]

Default: B·T = 4096 (B = 4096 / T), T = 2048, H = 34, D = 128: 1,088 tiles, 8.24 waves over
132 SMs, the shape where the split read no gain (`bench_waves.py --seqlen 2048`) though the
static walk leaves 8% of the last wave idle. Compare the launches' duration, the L2 traffic (the
split's fp32 partials) and, with --section SourceCounters, where the split launch's warps stall.
"""

import argparse

import torch

import sigmoid_attn
from sigmoid_attn import sigmoid_attention

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--seqlen", type=int, default=2048, help="a divisor of 4096")
ap.add_argument("--heads", type=int, default=34)
ap.add_argument("--lengths", type=int, nargs="+",
                help="a padded call of these lengths instead (B = their count, T = --seqlen): "
                     "whole tiles from the queue against the queue split")
ap.add_argument("--packed", action="store_true", help="with --lengths: the same sequences packed")
args = ap.parse_args()
T, H, D = args.seqlen, args.heads, 128
B = len(args.lengths) if args.lengths else max(1, 4096 // T)
g = torch.Generator(device="cuda").manual_seed(0)
q, k, v = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
           for _ in range(3))
call = lambda: sigmoid_attention(q, k, v)  # noqa: E731
modes = (0, 2, 0, 2)
if args.lengths:
    modes = (0, 1, 0, 1)
    lens = torch.tensor(args.lengths, dtype=torch.int32, device="cuda")
    call = lambda: sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens)  # noqa: E731
    if args.packed:
        from sigmoid_attn import sigmoid_attention_varlen

        cu = torch.nn.functional.pad(torch.cumsum(lens, 0), (1, 0)).to(torch.int32)
        n = int(cu[-1])
        qp, kp, vp = (x.new_empty(n, H, D).normal_(generator=g) for x in (q, k, v))
        call = lambda: sigmoid_attention_varlen(qp, kp, vp, cu, cu, T, T)  # noqa: E731
switch = sigmoid_attn._library.dispatch_switch
before = switch("split_wave", -1)
try:
    for mode in modes:
        switch("split_wave", mode)
        call()
    torch.cuda.synchronize()
finally:
    switch("split_wave", before)
