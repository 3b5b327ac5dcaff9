"""The Gluon forward dense and with lengths, for Nsight Compute: each call twice (the first
of each a warm-up), dense first. Profile the third and fourth Gluon launches:

    ncu -k regex:fwd_gluon --launch-skip 2 --launch-count 2 --section SpeedOfLight \\
        --section WarpStateStats python benchmarks/ncu_lengths.py [--backward]

Lengths: a draw uniform in [T/2, T] (bench_lengths.py's seed 3), B=4, T=4k, H=16, D=128.
"""

import sys

import torch

from sigmoid_attn import sigmoid_attention

B, T, H, D = 4, 4096, 16, 128
backward = "--backward" in sys.argv
g = torch.Generator(device="cuda").manual_seed(0)
q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
               for _ in range(4))
lens = torch.tensor([3762, 3108, 2055, 3618], device="cuda", dtype=torch.int32)


def call(padded):
    ins = [x.clone().requires_grad_(backward) for x in (q, k, v)]
    out = sigmoid_attention(*ins, seq_lens_q=lens if padded else None,
                            seq_lens_k=lens if padded else None)
    if backward:
        torch.autograd.grad(out, ins, do)


for padded in (False, True, False, True):
    call(padded)
torch.cuda.synchronize()
