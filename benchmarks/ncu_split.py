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
args = ap.parse_args()
T, H, D = args.seqlen, args.heads, 128
B = max(1, 4096 // T)
g = torch.Generator(device="cuda").manual_seed(0)
q, k, v = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
           for _ in range(3))
switch = sigmoid_attn._library.dispatch_switch
before = switch("split_wave", -1)
try:
    for mode in (0, 2, 0, 2):
        switch("split_wave", mode)
        sigmoid_attention(q, k, v)
    torch.cuda.synchronize()
finally:
    switch("split_wave", before)
