"""Sweep forward tile configs on the GPU (Triton JIT of the same kernel source) and record them.

    python benchmarks/tune_forward.py --out tune.json [--quick] [--lean] [--tma] [--write]
    python benchmarks/tune_forward.py --small --out tune_small.json [--write]
    python benchmarks/tune_forward.py --ws --out tune_fwd_ws.json    (JIT, no --write)

Times every candidate (BLOCK_M, BLOCK_N, num_warps, num_stages, warp_specialize) per head dim,
causal flag and sequence length at the benchmark protocol's shapes (bf16, B*T=16384, H*D=2048)
and prints the winners. --write stores them in the tuning database triton_src/tiles.json (per
head dim: the best tile below T=8192 by the geometric mean over T=1k, 4k and causal 4k, and the
best at T=16k as an 8192 bucket if it differs); the build compiles exactly those and the C++
dispatcher picks by length. Nothing tunes at run time. Record the why in docs/performance.md.
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
from timing import check_and_time, cuda_graph_us, protocol_batch  # noqa: E402

# (BLOCK_M, BLOCK_N, warps, stages, warp_specialize[, tma])
CANDIDATES = {
    64: [(128, 64, 4, 3, False), (128, 64, 8, 3, False), (128, 128, 8, 3, False),
         (128, 128, 4, 3, False), (64, 64, 4, 4, False), (128, 64, 4, 4, False),
         (128, 128, 8, 2, True), (128, 64, 4, 3, True)],
    128: [(128, 64, 8, 2, False), (128, 64, 8, 3, False), (128, 128, 8, 2, False),
          (128, 128, 8, 3, False), (64, 64, 4, 3, False), (128, 64, 4, 3, False),
          (128, 64, 8, 3, True), (128, 128, 8, 2, True)],
}

# Shared-memory-lean tiles: more resident CTAs per SM (the ncu profile shows 2 CTAs/SM, limited by
# shared memory, for the hd128 64x64x3-stage winner), and the current winners as the baseline.
LEAN_CANDIDATES = {
    64: [(128, 64, 4, 3, False), (128, 32, 4, 3, False), (128, 32, 4, 4, False),
         (64, 64, 4, 3, False), (64, 32, 4, 3, False), (128, 64, 4, 2, False)],
    128: [(64, 64, 4, 3, False), (128, 64, 8, 3, False), (64, 32, 4, 3, False),
          (64, 32, 4, 4, False), (64, 64, 4, 2, False), (128, 32, 8, 3, False),
          (128, 32, 4, 3, False), (64, 128, 4, 2, False)],
}

# K/V through TMA descriptors (6th element), beside the same tiles without. On Triton 3.8 for
# sm_90 it emits UTMALDG loads, but warp_specialize leaves this loop unchanged (no setmaxnreg,
# identical SASS), so the 5th element is expected not to matter.
# Head dims other than 64 and 128 (--head-dims): by BLOCK_D, the power of two the kernel rounds
# the head dim up to (80-128 -> 128, 136-256 -> 256), no warp specialization, no TMA.
HEAD_DIM_CANDIDATES = {
    32: [(128, 64, 4, 3, False), (128, 128, 4, 3, False), (128, 64, 4, 4, False),
         (64, 64, 4, 3, False), (128, 128, 8, 2, False)],
    64: [(128, 64, 4, 3, False), (128, 32, 4, 4, False), (128, 64, 8, 3, False),
         (128, 128, 8, 2, False), (64, 64, 4, 3, False)],
    128: [(128, 64, 8, 2, False), (128, 64, 8, 3, False), (128, 32, 8, 3, False),
          (128, 128, 8, 2, False), (64, 64, 4, 3, False), (128, 64, 4, 3, False),
          (64, 128, 4, 2, False)],
    256: [(64, 64, 4, 2, False), (64, 64, 8, 2, False), (128, 64, 8, 2, False),
          (128, 32, 8, 2, False), (64, 32, 4, 2, False), (128, 64, 8, 1, False),
          (64, 128, 8, 2, False), (128, 128, 8, 1, False)],
}

TMA_CANDIDATES = {
    64: [(128, 32, 4, 4, False, False), (128, 32, 4, 4, False, True),
         (128, 64, 4, 3, False, True), (128, 32, 4, 3, True, True)],
    128: [(128, 32, 8, 3, False, False), (128, 32, 8, 3, False, True),
          (128, 32, 8, 3, True, True), (128, 64, 8, 3, False, False),
          (128, 64, 8, 3, False, True), (64, 64, 4, 3, False, True)],
}

# Small-problem (latency) tiles: problems whose length tile launches fewer programs than the GPU
# has SMs, e.g. the host-cost shape B=1, T=256, H=8. Timed as GPU time per call inside a CUDA
# graph (no host cost), at B=1, H=8 and T up to 2048 (128 programs of 128 rows: still one wave).
SMALL_CANDIDATES = [(64, 64, 4, 2), (64, 64, 4, 3), (64, 32, 4, 3), (64, 128, 4, 2),
                    (32, 64, 4, 2), (32, 32, 4, 2), (32, 128, 4, 2)]
SMALL_SHAPES = [(1, 128, 8), (1, 256, 8), (1, 512, 8), (1, 1024, 8), (1, 2048, 8), (2, 256, 16)]


# CAUSAL_LPT values for --lpt: programs per group of heads, 1 to 8 waves of 132 SMs x 2 CTAs,
# and one group for the whole grid (schedule_model.py favours the larger groups; L2 the smaller).
LPT_GROUPS = (0, 264, 528, 1056, 2112, 1 << 20)

def sweep_small(write):
    """Per head dim: GPU time of each candidate (and of the length tile the dispatcher would
    use otherwise) on the small shapes; --write stores the winner as the -1 bucket when it beats
    the length tile by 5% in geometric mean, and removes the bucket otherwise."""

    import variants as V

    rows = []
    for D in (64, 128):
        base = {(B, T, H): V.fwd_tiles(D, T) for B, T, H in SMALL_SHAPES}
        cands = [None] + SMALL_CANDIDATES  # None: the length tile (what runs without a bucket)
        score = {}
        for cand in cands:
            for B, T, H in SMALL_SHAPES:
                q, k, v = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
                           for _ in range(3))
                tiles = base[(B, T, H)] if cand is None else cand
                fn = lambda: jit_launch.forward(q, k, v, fast_sigmoid=True, tiles=tiles)
                try:
                    us = cuda_graph_us(fn)
                except Exception as e:  # noqa: BLE001 - a config may not compile/fit
                    print(f"D={D} {cand} B={B} T={T} H={H}: {type(e).__name__}: {str(e)[:120]}")
                    us = None
                rows.append({"D": D, "B": B, "T": T, "H": H, "tiles": list(tiles),
                             "length_tile": cand is None, "gpu_us": us})
                if us:
                    score.setdefault(cand, []).append(math.log(us))
            if cand in score:
                print(f"D={D:3d} {'length tile' if cand is None else cand}: " + " ".join(
                    f"T={r['T']}x{r['B']}x{r['H']}:{r['gpu_us']:.2f}" for r in rows
                    if r["D"] == D and r["length_tile"] == (cand is None)
                    and (cand is None or tuple(r["tiles"]) == cand) and r["gpu_us"]), flush=True)
        n = len(SMALL_SHAPES)
        full = {c: sum(v) / n for c, v in score.items() if len(v) == n}
        best = min((c for c in full if c is not None), key=full.get, default=None)
        if write and None in full:
            db = V.load_tiles()
            entry = [b for b in db["fwd"][str(D)] if b[0] != V.SMALL]
            if best is not None and full[best] < full[None] + math.log(0.95):
                entry.insert(0, [V.SMALL, list(best)])
            db["fwd"][str(D)] = entry
            dev = torch.cuda.get_device_name().replace(" ", "_")
            db.setdefault("sources", {})["fwd_small"] = f"benchmarks/results/{dev}/tune_fwd_small.json"
            V.save_tiles(db)
            print(f"tiles.json: fwd hd{D} <- {entry}")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tune.json")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--lean", action="store_true", help="shared-memory-lean candidates")
    ap.add_argument("--tma", action="store_true", help="TMA-descriptor candidates (experimental)")
    ap.add_argument("--lpt", action="store_true",
                    help="program order: causal longest block first (CAUSAL_LPT, several group "
                         "sizes)")
    ap.add_argument("--ws", action="store_true",
                    help="the warp-specialized candidate kernel against production (JIT)")
    ap.add_argument("--lpt-from", help="a saved --lpt sweep (JSON): print and --write its choices")
    ap.add_argument("--small", action="store_true",
                    help="small-problem (latency) tiles: GPU time per call in a CUDA graph")
    ap.add_argument("--head-dims", type=int, nargs="+",
                    help="sweep these head dims (multiples of 8 up to 256) over the candidates of "
                         "their BLOCK_D (HEAD_DIM_CANDIDATES), dense and causal at T = 4k")
    ap.add_argument("--write", action="store_true", help="store the winners in triton_src/tiles.json")
    args = ap.parse_args()
    if args.ws:
        sweep_ws(args.out)
        return
    if args.lpt_from:
        with open(args.lpt_from) as f:
            write_lpt(json.load(f)["rows"], args.write, os.path.relpath(args.lpt_from))
        return
    if args.lpt:
        sweep_lpt(args.out, args.write)
        return
    if args.small:
        rows = sweep_small(args.write)
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "triton": triton.__version__, "shapes": SMALL_SHAPES, "rows": rows}, f,
                      indent=1)
        return
    lengths = (4096,) if args.quick or args.head_dims else (1024, 4096, 16384)
    rows = []
    table = LEAN_CANDIDATES if args.lean else TMA_CANDIDATES if args.tma else CANDIDATES
    if args.head_dims:
        table = {D: HEAD_DIM_CANDIDATES[1 << (D - 1).bit_length()] for D in args.head_dims}
    for D, cands in table.items():
        for causal in (False, True):
            for T in lengths:
                if causal and T != 4096:
                    continue
                H, B = 2048 // D, 16384 // T
                q, k, v = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
                           for _ in range(3))
                flops = 4.0 * B * H * D * T * T * (0.5 if causal else 1.0)
                for cand in cands:
                    bm, bn, w, s, ws = cand[:5]
                    tma = len(cand) > 5 and cand[5]
                    fn = lambda: jit_launch.forward(q, k, v, is_causal=causal, fast_sigmoid=True,
                                                    tiles=(bm, bn, w, s), warp_specialize=ws,
                                                    use_tma=tma)
                    try:
                        ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
                        tf = flops / ms / 1e9
                    except Exception as e:  # noqa: BLE001 - a config may not compile/fit
                        ms, tf = None, None
                        print(f"D={D} causal={causal} T={T} {cand}: "
                              f"{type(e).__name__}: {str(e)[:160]}", flush=True)
                    rows.append({"D": D, "causal": causal, "T": T, "tiles": list(cand),
                                 "ms": ms, "tflops": tf})
                best = max((r for r in rows if r["D"] == D and r["causal"] == causal
                            and r["T"] == T and r["tflops"]), key=lambda r: r["tflops"])
                print(f"D={D:3d} causal={causal!s:5} T={T:5d} best {best['tiles']} "
                      f"{best['tflops']:.1f} TFLOPS  | " + " ".join(
                          f"{tuple(r['tiles'])}:{r['tflops']:.0f}" for r in rows
                          if r["D"] == D and r["causal"] == causal and r["T"] == T and r["tflops"]),
                      flush=True)
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "triton": triton.__version__, "rows": rows}, f, indent=1)
    if args.write:
        write_winners(rows, args.out, head_dims=bool(args.head_dims))


# Warp-specialized candidate tiles (BLOCK_M, BLOCK_N, num_warps, num_stages): num_warps 4 is
# what Triton's Hopper pass specializes (into 3 warpgroups, 384 threads).
# 256-row tiles give each consumer warpgroup 128 rows (specialized, no local memory either).
WS_TILES = {64: [(128, 64, 4, 2), (128, 64, 4, 3), (128, 128, 4, 2), (128, 128, 4, 3),
                 (256, 64, 4, 2), (256, 128, 4, 2)],
            128: [(128, 64, 4, 2), (128, 64, 4, 3), (128, 128, 4, 2), (256, 64, 4, 2)]}


def report_shape(rows, D, T, mode, out):
    """Prints one shape's candidates (TFLOPS, error against production, threads when known)
    and rewrites the sweep's JSON, so that a cut-off sweep keeps the shapes done."""
    print(f"D={D:3d} T={T:5d} {mode:9s}: " + " ".join(
        f"{r['kernel']}{tuple(r['tiles'][:4])}:"
        + (f"{r['tflops']:.0f}(err {r['rel_err_vs_production']:.1e}"
           f"{', %d thr' % r['threads'] if 'threads' in r else ''})"
           if "tflops" in r else "failed " + r.get("error", "")[:60])
        for r in rows if (r["D"], r["T"], r["mode"]) == (D, T, mode)), flush=True)
    with open(out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "triton": triton.__version__, "rows": rows}, f, indent=1)


def sweep_ws(out):
    """The warp-specialized candidate (sigmoid_attn_fwd_ws) against the production kernel with
    the tiles the dispatcher takes, both through the JIT, bf16, B·T = 16k, H·D = 2048: dense,
    causal, padded (lengths uniform in [T/2, T]), with a score_mod, and the padded batch packed
    (varlen), at T = 1k, 4k, 16k. Each candidate's output is first checked against the
    production kernel's (relative error), since the JIT tiles are not the library's; whether
    the compiled kernel is specialized (384 threads) is recorded too."""
    import variants as V

    rows = []
    for D in (128, 64):  # hd128 first: the targets are there
        for T in (4096, 16384, 1024):
            H, B, (q, k, v), lens = protocol_batch(D, T)
            mod = torch.randn(B, T, device="cuda")
            # the padded batch's sequences, packed (varlen)
            cu = torch.zeros(B + 1, dtype=torch.int32, device="cuda")
            cu[1:] = lens.cumsum(0)
            packed = [torch.cat([x[i, :L] for i, L in enumerate(lens.tolist())]) for x in (q, k, v)]
            for mode in ("dense", "causal", "padded", "score_mod", "varlen"):
                causal, lk = mode == "causal", lens if mode == "padded" else None
                sm = mod if mode == "score_mod" else None
                if mode == "varlen":
                    ins = dict(cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=T, max_seqlen_k=T)
                    qx, kx, vx = packed
                else:
                    ins = dict(seq_lens_q=lk, seq_lens_k=lk)
                    qx, kx, vx = q, k, v
                pairs = (float((lens.double() ** 2).sum()) if mode in ("padded", "varlen")
                         else B * T * T * (0.5 if causal else 1.0))
                flops = 4.0 * H * D * pairs
                tiles = V.fwd_tiles(D, T)
                base = lambda: jit_launch.forward(qx, kx, vx, is_causal=causal, score_mod=sm,
                                                  fast_sigmoid=True, tiles=tuple(tiles[:4]),
                                                  use_tma="tma" in tiles, **ins)
                want = base().float()
                cands = [("production", list(tiles), base)] + [
                    ("ws", list(t), lambda t=t: jit_launch.forward_ws(
                        qx, kx, vx, is_causal=causal, score_mod=sm, tiles=t, **ins))
                    for t in WS_TILES[D]]
                for name, t, fn in cands:
                    kernel = None if name != "ws" else lambda t=t: jit_launch.forward_ws(
                        qx, kx, vx, is_causal=causal, score_mod=sm, tiles=tuple(t),
                        return_kernel=True, **ins)
                    rows.append(check_and_time({"D": D, "T": T, "mode": mode, "kernel": name,
                                                "tiles": t}, fn, want, flops, kernel))
                report_shape(rows, D, T, mode, out)


def sweep_lpt(out, write):
    """Program order, with the production tiles of hd64/hd128 at T = 1k, 4k, 16k (bf16, B·T =
    16k, H·D = 2048): causal in launch order vs longest first (CAUSAL_LPT, several group sizes).
    With write, tiles.json's fwd_causal_lpt <- the best setting by geometric mean over the rows,
    kept only if it beats launch order by 1% or more."""
    import variants as V

    rows = []
    for D in (64, 128):
        for T in (1024, 4096, 16384):
            tiles = V.fwd_tiles(D, T)
            H, B, (q, k, v), _ = protocol_batch(D, T)
            pairs = B * T * T * 0.5
            for lpt in LPT_GROUPS:
                fn = lambda: jit_launch.forward(
                    q, k, v, is_causal=True, fast_sigmoid=True, tiles=tuple(tiles[:4]),
                    use_tma="tma" in tiles, causal_lpt=lpt)
                ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
                rows.append({"D": D, "T": T, "mode": "causal", "lpt": lpt, "tiles": list(tiles),
                             "ms": ms, "tflops": 4.0 * H * D * pairs / ms / 1e9})
            print(f"D={D:3d} T={T:5d} causal: " + " ".join(
                f"{r['lpt']}:{r['tflops']:.1f}" for r in rows
                if (r["D"], r["T"]) == (D, T)), flush=True)
    with open(out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "triton": triton.__version__, "rows": rows}, f, indent=1)
    write_lpt(rows, write, f"benchmarks/results/{torch.cuda.get_device_name().replace(' ', '_')}/"
              f"{os.path.basename(out)}")


def _best_setting(rows, what):
    """The setting with the best geometric mean TFLOPS over rows, if it beats launch order (0)
    by 1% or more; else 0."""
    score = {}
    for r in rows:
        score.setdefault(r["lpt"], []).append(math.log(r["tflops"]))
    mean = {lpt: sum(v) / len(v) for lpt, v in score.items()}
    best = max(mean, key=mean.get)
    choice = best if mean[best] > mean[0] + math.log(1.01) else 0
    print(f"{what}: geometric mean TFLOPS by setting " + " ".join(
        f"{lpt}:{math.exp(m):.1f}" for lpt, m in mean.items()) + f" -> {choice}")
    return choice


def write_lpt(rows, write, source):
    """tiles.json's fwd_causal_lpt (per head dim and tile bucket) from the rows of sweep_lpt
    (or of a saved tune_fwd_lpt.json: --lpt-from, whose padded rows are not used)."""
    import variants as V

    db = V.load_tiles()
    sources = db.setdefault("sources", {})
    sources["fwd_causal_lpt"] = source
    # Causal: per head dim and tile bucket (the variants that the buckets compile).
    causal = {}
    for D in (64, 128):
        buckets = [m for m, _ in V.FWD_TILES[D] if m >= 0]
        for i, m in enumerate(buckets):
            hi = buckets[i + 1] if i + 1 < len(buckets) else 1 << 30
            sel = [r for r in rows if r["mode"] == "causal" and r["D"] == D and m <= r["T"] < hi]
            if sel:
                choice = _best_setting(sel, f"causal hd{D} T>={m}")
                causal.setdefault(str(D), []).append([m, choice])
    db["fwd_causal_lpt"] = causal
    if write:
        V.save_tiles(db)


def write_winners(rows, source, head_dims=False):
    """Per head dim: the short-sequence bucket (geometric mean over T < 8192, causal included)
    and, if another tile wins at T >= 8192, a long bucket. Plain tiles, with or without TMA
    (tiles.json's "tma" flag), can go to the table; warp specialization cannot."""

    import variants as V

    def key(tiles):
        return tuple(tiles[:4]) + (("tma",) if len(tiles) > 5 and tiles[5] else ())

    plain = [r for r in rows if r["tflops"] and len(r["tiles"]) >= 5 and not r["tiles"][4]]
    db = V.load_tiles()
    for D in sorted({r["D"] for r in plain}):
        def best(sel):
            score = {}
            for r in plain:
                if r["D"] == D and sel(r):
                    score.setdefault(key(r["tiles"]), []).append(math.log(r["tflops"]))
            n = max((len(v) for v in score.values()), default=0)
            full = {t: sum(v) / len(v) for t, v in score.items() if len(v) == n}
            return max(full, key=full.get) if full else None
        short, long = best(lambda r: r["T"] < 8192), best(lambda r: r["T"] >= 8192)
        # (the latency bucket, swept apart by --small, is kept)
        entry = [b for b in db["fwd"].get(str(D), []) if b[0] == V.SMALL]
        entry.append([0, list(short or long)])
        if long and short and long != short:
            entry.append([8192, list(long)])
        db["fwd"][str(D)] = entry
        print(f"tiles.json: fwd hd{D} <- {entry}")
    db.setdefault("sources", {})["fwd_head_dims" if head_dims else "fwd"] = source
    db["device"] = torch.cuda.get_device_name()
    V.save_tiles(db)

if __name__ == "__main__":
    main()
