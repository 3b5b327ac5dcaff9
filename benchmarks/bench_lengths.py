"""How the padded and packed rows depend on the draw of lengths: for several draws of B lengths
uniform in [T/2, T], the useful TFLOPS of the padded API (padded to T, as the benchmark's padded
row, and padded to the longest sequence, as its varlen row's peer) and of the packed API, beside
the dense call on the same [B, T] shape, forward and backward; and the share of the work the
128 x 128 tiles do that is useful (a model: the pairs of the tiles a kernel visits, diagonal
and partial ones whole), which bounds what any tile schedule reaches.

    python benchmarks/bench_lengths.py --draws 6 --out lengths.json

Useful FLOPs count the pairs (i, j) with i < L and j < L only, as every row of
bench_attention.py does.
"""

import argparse
import json
import math

import torch

import sigmoid_attn
from bench_attention import bench, settle
from sigmoid_attn import sigmoid_attention, sigmoid_attention_varlen

TOKENS, WIDTH, TILE = 16384, 2048, 128


def tile_share(lens):
    """Useful pairs over the pairs of the 128 x 128 tiles that hold any (padded rows past a
    length visit no keys, so they count nothing here)."""
    useful = sum(L * L for L in lens)
    visited = sum((math.ceil(L / TILE) * TILE) ** 2 for L in lens)
    return useful / visited


def run(D, T, draws, backward, orders=False):
    H, B = WIDTH // D, TOKENS // T
    rows = []
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
                   for _ in range(4))

    def timed(fn, ins, grad):
        if not backward:
            return bench(lambda: fn(*ins), rep=100)
        ins = [x.clone().requires_grad_() for x in ins]
        out = fn(*ins)
        return bench(lambda: torch.autograd.grad(out, ins, grad, retain_graph=True), rep=100)

    mult = 2.5 if backward else 1.0
    dense_flops = mult * 4.0 * H * D * B * T * T
    denses = []
    for seed in range(draws):
        gl = torch.Generator(device="cuda").manual_seed(seed)
        lens = torch.randint(T // 2, T + 1, (B,), device="cuda", dtype=torch.int32, generator=gl)
        Ls = lens.tolist()
        flops = mult * 4.0 * H * D * float(sum(L * L for L in Ls))
        cu = torch.zeros(B + 1, dtype=torch.int32, device="cuda")
        cu[1:] = lens.cumsum(0)
        qp_, kp_, vp_, dp_ = (torch.cat([x[b, :L] for b, L in enumerate(Ls)])
                              for x in (q, k, v, do))
        M = max(Ls)
        row = {"seed": seed, "lens": Ls, "tile_share": tile_share(Ls), "tflops": {}}
        # dense timed beside each draw (a GPU's clock drifts under sustained load: a dense
        # figure from the start of the run would flatter it against the later rows), and the
        # draw after sustained load (timed first after an idle gap, dense would read high)
        settle()
        dense = dense_flops / (timed(lambda a, b, c: sigmoid_attention(a, b, c), (q, k, v), do)
                               * 1e-3) / 1e12
        denses.append(dense)
        row["tflops"]["dense"] = dense
        ms = {
            "padded_to_T": timed(lambda a, b, c: sigmoid_attention(
                a, b, c, seq_lens_q=lens, seq_lens_k=lens), (q, k, v), do),
            "padded_to_max": timed(lambda a, b, c: sigmoid_attention(
                a, b, c, seq_lens_q=lens, seq_lens_k=lens),
                (q[:, :M].contiguous(), k[:, :M].contiguous(), v[:, :M].contiguous()),
                do[:, :M].contiguous()),
            "packed": timed(lambda a, b, c: sigmoid_attention_varlen(
                a, b, c, cu, cu, M, M), (qp_, kp_, vp_), dp_),
        }
        if orders:
            # The same sequences in the batch sorted by length, longest first and shortest
            # first (the hardware launches a grid's programs in order, batch entry slowest, so
            # this is the order a length-aware schedule would give), and every length = T (the
            # cost of the kernel with lengths over the dense one at a tile share of 1).
            for name, desc in (("padded_longest_first", True), ("padded_shortest_first", False)):
                perm = torch.argsort(lens, descending=desc)
                ms[name] = timed(lambda a, b, c, L=lens[perm]: sigmoid_attention(
                    a, b, c, seq_lens_q=L, seq_lens_k=L), (q[perm], k[perm], v[perm]), do[perm])
            full = torch.full_like(lens, T)
            ms["padded_full"] = timed(lambda a, b, c: sigmoid_attention(
                a, b, c, seq_lens_q=full, seq_lens_k=full), (q, k, v), do)
        for name, t in ms.items():
            row["tflops"][name] = (dense_flops if name == "padded_full" else flops) / (
                t * 1e-3) / 1e12
        row["vs_dense"] = {n: row["tflops"][n] / dense for n in ms}
        print(f"{'bwd' if backward else 'fwd'} hd{D} T={T} seed {seed} lens {Ls} "
              f"tiles useful {row['tile_share']:.3f}: "
              + ", ".join(f"{n} {row['tflops'][n]:.0f} ({row['vs_dense'][n]:.3f})" for n in ms)
              + f"; dense {dense:.0f}", flush=True)
        rows.append(row)
    return {"head_dim": D, "T": T, "B": B, "H": H, "backward": backward,
            "dense_tflops": sorted(denses)[len(denses) // 2], "draws": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=6)
    ap.add_argument("--seqlen", type=int, default=4096)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--out", default="lengths.json")
    ap.add_argument("--no-backward", action="store_true", help="the forward rows only")
    ap.add_argument("--orders", action="store_true",
                    help="also the padded call with the batch sorted by length (longest first, "
                         "shortest first) and with every length = T")
    args = ap.parse_args()
    res = {"device": torch.cuda.get_device_name(), "library": sigmoid_attn.info().get("commit"),
           "runs": [run(args.head_dim, args.seqlen, args.draws, bw, args.orders)
                    for bw in ((False,) if args.no_backward else (False, True))]}
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
