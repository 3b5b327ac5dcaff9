"""Sweep backward tile configs (dkdv and dq kernels timed apart) on the GPU via Triton JIT.

    python benchmarks/tune_backward.py --out tune_bwd.json [--T 4096] [--lean] [--write]
    python benchmarks/tune_backward.py --lpt --out tune_bwd_lpt.json [--write]

Shapes follow the benchmark protocol (bf16, B*T=16384, H*D=2048). --write stores each kernel's
fastest tile per head dim in the tuning database triton_src/tiles.json (bwd_dkdv, bwd_dq), which
the build compiles; record the why in docs/performance.md.
"""

import argparse
import json
import math
import os
import sys

import torch
import triton.testing

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "triton_src"))
import jit_launch  # noqa: E402
from timing import protocol_batch  # noqa: E402

CANDIDATES = {
    64: [(64, 64, 4, 2), (64, 64, 4, 3), (64, 128, 4, 2), (64, 128, 8, 2), (128, 64, 8, 2),
         (128, 128, 8, 2), (32, 64, 4, 2), (64, 32, 4, 2)],
    128: [(64, 64, 8, 2), (64, 64, 4, 2), (64, 64, 4, 3), (64, 128, 8, 2), (128, 64, 8, 2),
          (32, 64, 4, 2), (64, 32, 4, 2), (128, 128, 8, 1), (32, 128, 4, 2)],
}

# Head dims other than 64 and 128 (--head-dims): by BLOCK_D, the power of two the kernels round
# the head dim up to.
HEAD_DIM_CANDIDATES = {
    32: [(64, 64, 4, 2), (64, 64, 4, 3), (64, 128, 4, 2), (128, 64, 8, 2), (128, 128, 8, 2)],
    64: [(64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 3), (64, 128, 8, 2), (128, 32, 8, 3)],
    128: [(64, 64, 4, 2), (64, 64, 8, 2), (64, 64, 4, 3), (128, 64, 8, 2), (128, 64, 8, 3),
          (64, 128, 8, 2), (128, 32, 8, 3), (32, 64, 4, 2)],
    256: [(64, 32, 8, 1), (64, 64, 8, 1), (64, 64, 8, 2), (64, 32, 4, 2), (32, 64, 4, 2),
          (128, 32, 8, 1), (32, 32, 4, 2), (64, 64, 4, 1), (128, 64, 8, 1)],
}

# Shared-memory- and register-lean tiles (ncu: both kernels held to 2 CTAs/SM), with the current
# winner (64, 64, 4, 2) as the baseline.
LEAN_CANDIDATES = {
    64: [(64, 64, 4, 3), (128, 32, 8, 2), (128, 32, 8, 3), (64, 32, 4, 3), (32, 64, 4, 3),
         (128, 64, 8, 3)],
    128: [(64, 64, 4, 2), (128, 32, 8, 2), (128, 32, 8, 3), (64, 32, 4, 3), (32, 64, 4, 3),
          (128, 64, 8, 3), (64, 128, 8, 2)],
}


# CAUSAL_LPT settings for --lpt (programs per group of heads; 0 = launch order), as the
# forward's sweep (tune_forward.py LPT_GROUPS).
LPT_GROUPS = (0, 264, 528, 1056, 1 << 20)


def sweep_lpt(out, write):
    """Causal backward, each kernel timed apart with the production tiles, bf16, B·T = 16k,
    H·D = 2048, T = 4k and 16k: launch order vs longest first (CAUSAL_LPT group sizes). With
    write, tiles.json's bwd_dkdv_causal_lpt / bwd_dq_causal_lpt <- per head dim, the setting
    with the best geometric mean over the lengths, if it beats launch order by 1% or more."""
    import variants as V

    rows = []
    for D in (64, 128):
        for T in (4096, 16384):
            H, B, (q, k, v, do), _ = protocol_batch(D, T, n=4)
            for part in ("dkdv", "dq"):
                flops = (4 if part == "dkdv" else 3) * 2.0 * B * H * D * T * T * 0.5
                for lpt in LPT_GROUPS:
                    fn = lambda: jit_launch.backward(do, q, k, v, is_causal=True,
                                                     fast_sigmoid=True, parts=(part,),
                                                     causal_lpt=(lpt, lpt))
                    ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
                    rows.append({"D": D, "T": T, "part": part, "lpt": lpt, "ms": ms,
                                 "tflops": flops / ms / 1e9})
                print(f"D={D:3d} T={T:5d} {part:4s}: " + " ".join(
                    f"{r['lpt']}:{r['tflops']:.1f}" for r in rows
                    if (r["D"], r["T"], r["part"]) == (D, T, part)), flush=True)
    with open(out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "triton": triton.__version__,
                   "rows": rows}, f, indent=1)
    db = V.load_tiles()
    for part in ("dkdv", "dq"):
        choice = {}
        for D in (64, 128):
            score = {}
            for r in rows:
                if (r["D"], r["part"]) == (D, part):
                    score.setdefault(r["lpt"], []).append(math.log(r["tflops"]))
            mean = {lpt: sum(v) / len(v) for lpt, v in score.items()}
            best = max(mean, key=mean.get)
            choice[str(D)] = best if mean[best] > mean[0] + math.log(1.01) else 0
            print(f"{part} hd{D}: geometric mean TFLOPS by setting " + " ".join(
                f"{lpt}:{math.exp(m):.1f}" for lpt, m in mean.items())
                + f" -> {choice[str(D)]}")
        db[f"bwd_{part}_causal_lpt"] = choice
        db.setdefault("sources", {})[f"bwd_{part}_causal_lpt"] = (
            f"benchmarks/results/{torch.cuda.get_device_name().replace(' ', '_')}/"
            f"{os.path.basename(out)}")
    if write:
        V.save_tiles(db)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tune_bwd.json")
    ap.add_argument("--T", type=int, default=4096)
    ap.add_argument("--lean", action="store_true", help="lean candidates")
    ap.add_argument("--lpt", action="store_true",
                    help="causal program order (CAUSAL_LPT) of each kernel, production tiles")
    ap.add_argument("--head-dims", type=int, nargs="+",
                    help="sweep these head dims (multiples of 8 up to 256) over the candidates of "
                         "their BLOCK_D (HEAD_DIM_CANDIDATES)")
    ap.add_argument("--write", action="store_true", help="store the winners in triton_src/tiles.json")
    args = ap.parse_args()
    if args.lpt:
        sweep_lpt(args.out, args.write)
        return
    rows = []
    T = args.T
    table = LEAN_CANDIDATES if args.lean else CANDIDATES
    if args.head_dims:
        table = {D: HEAD_DIM_CANDIDATES[1 << (D - 1).bit_length()] for D in args.head_dims}
    for D, cands in table.items():
        H, B = 2048 // D, 16384 // T
        q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
                       for _ in range(4))
        for part in ("dkdv", "dq"):
            # dkdv: 4 matmuls per score element, dq: 3 (forward has 2).
            flops = (4 if part == "dkdv" else 3) * 2.0 * B * H * D * T * T
            for t in cands:
                fn = lambda: jit_launch.backward(do, q, k, v, fast_sigmoid=True, tiles=t,
                                                 tiles_dq=t, parts=(part,))
                try:
                    ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
                    tf = flops / ms / 1e9
                except Exception as e:  # noqa: BLE001
                    ms = tf = None
                    print(f"D={D} {part} {t}: {type(e).__name__}: {str(e)[:120]}", flush=True)
                rows.append({"D": D, "part": part, "T": T, "tiles": list(t), "ms": ms, "tflops": tf})
            ok = [r for r in rows if r["D"] == D and r["part"] == part and r["tflops"]]
            best = max(ok, key=lambda r: r["tflops"])
            print(f"D={D} {part:4s} best {best['tiles']} {best['ms']:.3f} ms | " + " ".join(
                f"{tuple(r['tiles'])}:{r['ms']:.2f}ms" for r in ok), flush=True)
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "triton": triton.__version__,
                   "rows": rows}, f, indent=1)
    if args.write:
        import variants as V

        db = V.load_tiles()
        for D in sorted({r["D"] for r in rows}):
            for part in ("dkdv", "dq"):
                ok = [r for r in rows if r["D"] == D and r["part"] == part and r["ms"]]
                if ok:
                    win = min(ok, key=lambda r: r["ms"])["tiles"]
                    db[f"bwd_{part}"][str(D)] = list(win)
                    print(f"tiles.json: bwd_{part} hd{D} <- {win}")
        if args.head_dims:
            db.setdefault("sources", {})["bwd_head_dims"] = args.out
        else:
            db.setdefault("sources", {})["bwd_dkdv"] = db["sources"]["bwd_dq"] = args.out
        db["device"] = torch.cuda.get_device_name()
        V.save_tiles(db)


if __name__ == "__main__":
    main()
