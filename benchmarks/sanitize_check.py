"""Every compiled variant once, forward and backward, at small odd shapes, then the Gluon
kernels (which take only calls with a tile per SM at least) on dense, causal and padded batches:
the program that compute-sanitizer runs on the device (memcheck: out-of-bounds and misaligned
accesses; racecheck: shared-memory races).

    compute-sanitizer --tool memcheck python benchmarks/sanitize_check.py [--only D]
"""

import argparse

import torch

import sigmoid_attn
from sigmoid_attn import sigmoid_attention, sigmoid_attention_varlen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", type=int, default=0, help="one head dim only")
    ap.add_argument("--gluon-only", action="store_true", help="the Gluon calls only")
    args = ap.parse_args()
    dt = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    seen = set()
    n = 0
    for var in [] if args.gluon_only else sigmoid_attn.info()["variants"]:
        key = (var["dtype"], var["head_dim"], var["runtime_head_dim"], var["causal"],
               var["score_mod"], var["min_t"])
        if key in seen or (args.only and var["head_dim"] != args.only):
            continue
        seen.add(key)
        # a generic kernel serves a head dim below its BLOCK_D that nothing else is compiled for
        D, dtype = var["head_dim"] - (8 if var["runtime_head_dim"] else 0), dt[var["dtype"]]
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
    gluon = {v["kind"] for v in sigmoid_attn.info()["variants"]} & {
        "fwd_gluon", "fwd_gluon_padded", "bwd_gluon"}
    dims = (64, 128, 48, 72, 80, 112, 160, 256, 192)
    if gluon and (not args.only or args.only in dims):
        # Gluon kernels: enough (128-row tile, head, batch) tiles to fill the GPU; T not a
        # multiple of 128 (the descriptors' zero fill), padded lengths 0 and mid-block; hd48
        # through the kernels of the next power of two and hd72 through hd80's (the columns past
        # D zero-filled, stored nowhere), in bf16; the column-range kernels of 80, 112, 160, 192
        # (score products over D's columns of the next power of two's boxes); hd64's
        # three-consumer forward; hd256's forward (64-key blocks; its backward, and hd160's and
        # hd192's, the Triton kernels).
        B, T, H = 2, 1000, 72
        for D in dims:
            if args.only and D != args.only:
                continue
            for dtype in (torch.float16, torch.bfloat16) if D in (64, 128) else (torch.bfloat16,):
                q, k, v = (torch.randn(B, T, H, D, device="cuda", dtype=dtype,
                                       requires_grad=True) for _ in range(3))
                lens = torch.tensor([T, 0], dtype=torch.int32, device="cuda")
                lens2 = torch.tensor([999, 77], dtype=torch.int32, device="cuda")
                for kw in ({}, {"is_causal": True}, {"seq_lens_q": lens, "seq_lens_k": lens},
                           {"seq_lens_q": lens2, "seq_lens_k": lens2, "is_causal": True}):
                    out = sigmoid_attention(q, k, v, **kw)
                    out.float().sum().backward()
                    torch.cuda.synchronize()
                    n += 1
        # packed batches of many short cells (sequences ending mid-block: masked stores, in the
        # forward and the backward), a tail past cu_seqlens[B], and the same cells padded (the
        # cursor over the lengths)
        g = torch.Generator().manual_seed(0)
        lens = torch.randint(0, 300, (200,), generator=g)
        lens[:3] = torch.tensor([0, 1, 129])
        cu = torch.zeros(201, dtype=torch.int32)
        cu[1:] = lens.cumsum(0)
        cu = cu.cuda()
        total, H = int(cu[-1]) + 7, 8
        for dtype, D in ((torch.float16, 128), (torch.bfloat16, 128), (torch.bfloat16, 96),
                         (torch.bfloat16, 64)):
            q, k, v = (torch.randn(total, H, D, device="cuda", dtype=dtype,
                                   requires_grad=True) for _ in range(3))
            for causal in (False, True):  # (forward and backward through the Gluon kernels)
                out = sigmoid_attention_varlen(q, k, v, cu, cu, 300, 300, is_causal=causal)
                out.float().sum().backward()
                torch.cuda.synchronize()
                n += 1
            qp, kp, vp = (torch.randn(200, 300, H, D, device="cuda", dtype=dtype)
                          for _ in range(3))
            lp = lens.to("cuda", torch.int32)
            sigmoid_attention(qp, kp, vp, seq_lens_q=lp, seq_lens_k=lp)
            torch.cuda.synchronize()
            n += 1
    print(f"sanitize_check: ran {n} forward+backward variant groups and Gluon calls")


if __name__ == "__main__":
    main()
