"""Every compiled variant once, forward and backward, at small odd shapes: the program that
compute-sanitizer runs on the device (memcheck: out-of-bounds and misaligned accesses;
racecheck: shared-memory races).

    compute-sanitizer --tool memcheck python benchmarks/sanitize_check.py [--only D]
"""

import argparse

import torch

import sigmoid_attn
from sigmoid_attn import sigmoid_attention


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", type=int, default=0, help="one head dim only")
    args = ap.parse_args()
    dt = {"float16": torch.float16, "bfloat16": torch.bfloat16}
    seen = set()
    n = 0
    for var in sigmoid_attn.info()["variants"]:
        key = (var["dtype"], var["head_dim"], var["causal"], var["score_mod"], var["min_t"])
        if key in seen or (args.only and var["head_dim"] != args.only):
            continue
        seen.add(key)
        D, dtype = var["head_dim"], dt[var["dtype"]]
        T = max(71, var["min_t"] + 71)
        B, Hq, Hkv = 3, 4, 2
        q = torch.randn(B, T, Hq, D, device="cuda", dtype=dtype, requires_grad=True)
        k = torch.randn(B, T + 5, Hkv, D, device="cuda", dtype=dtype, requires_grad=True)
        v = torch.randn(B, T + 5, Hkv, D, device="cuda", dtype=dtype, requires_grad=True)
        lq = torch.tensor([T, 0, 33], dtype=torch.int32, device="cuda")
        lk = torch.tensor([T + 5, 1, 64], dtype=torch.int32, device="cuda")
        mod = torch.randn(B, T + 5, device="cuda", requires_grad=True) if var["score_mod"] else None
        out = sigmoid_attention(q, k, v, seq_lens_q=lq, seq_lens_k=lk, is_causal=var["causal"],
                                score_mod=mod)
        out.float().sum().backward()
        torch.cuda.synchronize()
        n += 1
    print(f"sanitize_check: ran {n} forward+backward variant groups")


if __name__ == "__main__":
    main()
