"""One workload per process for Nsight Compute: warm it up, then run it once between
cudaProfilerStart and cudaProfilerStop (ncu --profile-from-start off profiles only those
kernels; process-wide, so the backward's kernels, launched from autograd's worker thread, count).

    python benchmarks/ncu_workloads.py {ours,cudnn}-{fwd,bwd}-hd{64,128}-T{4096,16384}
    python benchmarks/ncu_workloads.py ours-{padded,causal}-hd{64,128}-T4096
    python benchmarks/ncu_workloads.py jit-causal-hd128-T4096-lpt528

jit-...-lptN: the Triton JIT of the same kernel with the production tiles and N programs per
group of heads in longest-first order (CAUSAL_LPT; 0 = launch order), to profile an order
without rebuilding (needs Triton on the machine).

padded: lengths uniform in [T/2, T] (bench_attention.py's padded rows, same seed); causal: the
causal forward (SDPA's is_causal for cudnn).
    bash benchmarks/profile_ncu.sh          # all of them under ncu, CSV to $OUT/ncu/
"""

import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

TOKENS, WIDTH = 16384, 2048


def main(name):
    who, kind, hd, t, *rest = name.split("-")
    D, T = int(hd[2:]), int(t[1:])
    H, B = WIDTH // D, TOKENS // T
    g = torch.Generator(device="cuda").manual_seed(0)
    mk = lambda: torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
    q, k, v = mk(), mk(), mk()
    causal = kind == "causal"
    lens = None
    if kind == "padded":
        lens = torch.randint(T // 2, T + 1, (B,), device="cuda", dtype=torch.int32, generator=g)
    do = mk()
    if who == "jit":
        import os

        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                        "triton_src"))
        import jit_launch

        lpt = int(rest[0][3:]) if rest and rest[0].startswith("lpt") else 0
        fwd = lambda a, b, c: jit_launch.forward(a, b, c, seq_lens_q=lens, seq_lens_k=lens,
                                                 is_causal=causal, fast_sigmoid=True,
                                                 causal_lpt=lpt)
    elif who == "ours":
        import sigmoid_attn
        fwd = lambda a, b, c: sigmoid_attn.sigmoid_attention(a, b, c, seq_lens_q=lens,
                                                             seq_lens_k=lens, is_causal=causal)
    else:
        q, k, v, do = (x.transpose(1, 2).contiguous() for x in (q, k, v, do))

        def fwd(a, b, c):
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(a, b, c, is_causal=causal)
    if kind == "bwd":
        ins = [x.requires_grad_() for x in (q, k, v)]
        out = fwd(*ins)  # the backward kernels follow the forward that built the graph
        step = lambda: torch.autograd.grad(out, ins, do, retain_graph=True)
    else:
        step = lambda: fwd(q, k, v)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    step()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()


if __name__ == "__main__":
    main(sys.argv[1])
