"""The Gluon backward's cost per CTA: a fixed part and a part per query tile. Each CTA owns 128
keys (one key block of one KV head and batch entry) and walks every 64-row query tile, so with
T_K fixed the number of CTAs is fixed and T_Q sets the tiles each one walks. A least-squares
line through the backward's time against the tiles per CTA gives both parts, in units of one
tile's time:

    python benchmarks/bwd_cta_cost.py [--head-dim 128] [--out bwd_cta_cost.json]

The fixed part is what a CTA costs beyond its tiles: its launch, the K/V loads and the Q/dO
ring's fill before the first tile, the last dQ reductions and the dK/dV stores after the last
one (one CTA per SM: nothing else runs under them). The time includes the dQ buffer's zeroing
and cast, which grow with T_Q like the tiles.
"""

import argparse
import json

import torch

from bench_attention import bench
from sigmoid_attn import sigmoid_attention

BLOCK_M, BLOCK_N = 64, 128  # the Gluon backward's query tile and key block (tiles.json)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--tk", type=int, default=4096)
    ap.add_argument("--out", default="bwd_cta_cost.json")
    args = ap.parse_args()
    D, Tk, B = args.head_dim, args.tk, 4
    H = 2048 // D
    g = torch.Generator(device="cuda").manual_seed(0)
    k, v = (torch.randn(B, Tk, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
            for _ in range(2))
    ctas = (Tk // BLOCK_N) * H * B
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = []
    for Tq in (256, 512, 1024, 2048, 4096):
        q, do = (torch.randn(B, Tq, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
                 for _ in range(2))
        ins = [x.clone().requires_grad_() for x in (q, k, v)]
        out = sigmoid_attention(*ins)
        ms = bench(lambda: torch.autograd.grad(out, ins, do, retain_graph=True), rep=100)
        tiles = Tq // BLOCK_M
        flops = 2.5 * 4.0 * H * D * B * Tq * Tk
        rows.append({"T_Q": Tq, "tiles_per_cta": tiles, "ms": ms,
                     "us_per_cta_slot": ms * 1e3 * sms / ctas,
                     "tflops": flops / (ms * 1e-3) / 1e12})
        print(f"T_Q={Tq:5d}: {tiles:3d} tiles per CTA, {ms:.3f} ms, "
              f"{rows[-1]['us_per_cta_slot']:.2f} us per CTA and SM, "
              f"{rows[-1]['tflops']:.0f} TFLOPS", flush=True)
    # least squares: us_per_cta = fixed + per_tile * tiles
    n = len(rows)
    xs = [r["tiles_per_cta"] for r in rows]
    ys = [r["us_per_cta_slot"] for r in rows]
    mx, my = sum(xs) / n, sum(ys) / n
    per_tile = (sum((x - mx) * (y - my) for x, y in zip(xs, ys))
                / sum((x - mx) ** 2 for x in xs))
    fixed = my - per_tile * mx
    res = {"device": torch.cuda.get_device_name(), "head_dim": D, "T_K": Tk, "B": B, "H": H,
           "ctas": ctas, "sms": sms, "rows": rows, "per_tile_us": per_tile, "fixed_us": fixed,
           "fixed_in_tiles": fixed / per_tile}
    print(f"per CTA: {fixed:.2f} us fixed + {per_tile:.3f} us per query tile "
          f"(the fixed part = {fixed / per_tile:.1f} tiles)")
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
