"""Where a warp-specialized forward goes wrong on the GPU: runs the JIT kernel (specialized and
not) and, when the package is built, the compiled one through the dispatcher, on poisoned
outputs, and prints which (batch, head, row block, column range) elements stay NaN and the
relative error of the rest against the float64 reference.

    python benchmarks/ws_diag.py [--case NAME] [--json OUT]
"""

import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "triton_src"))
import jit_launch  # noqa: E402


def reference(q, k, v, lq=None, lk=None, causal=False):
    B, Tq, Hq, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    qd, kd, vd = (t.double().transpose(1, 2) for t in (q, k, v))
    kd = kd.repeat_interleave(Hq // Hkv, 1)
    vd = vd.repeat_interleave(Hq // Hkv, 1)
    s = qd @ kd.transpose(-1, -2) / math.sqrt(D)
    lk_ = lk.tolist() if lk is not None else [Tk] * B
    lq_ = lq.tolist() if lq is not None else [Tq] * B
    i = torch.arange(Tq, device=q.device)[:, None]
    j = torch.arange(Tk, device=q.device)[None, :]
    out = torch.zeros_like(qd)
    for b in range(B):
        s_b = s[b] - math.log(max(lk_[b], 1))
        keep = j < lk_[b]
        if causal:
            keep = keep & (j <= i)
        p = torch.sigmoid(s_b) * keep
        o = p @ vd[b]
        o[:, lq_[b]:] = 0
        out[b] = o
    return out.transpose(1, 2)


def describe(out, ref, block_m):
    nan = torch.isnan(out.float())
    res = {"nan_fraction": nan.float().mean().item()}
    if nan.any():
        B, T, H, D = out.shape
        pattern = {}
        for b in range(B):
            for h in range(H):
                rows = nan[b, :, h, :].any(-1).nonzero().flatten().tolist()
                if not rows:
                    continue
                cols = nan[b, :, h, :].any(0).nonzero().flatten().tolist()
                blocks = sorted({r // block_m for r in rows})
                key = f"rows%{block_m}={sorted({r % block_m for r in rows})[:3]}..{max(r % block_m for r in rows)} n={len(rows)} cols={cols[0]}..{cols[-1]} n={len(cols)} blocks={blocks}"
                pattern.setdefault(key, []).append((b, h))
        res["pattern"] = {k: v[:6] + ([f"+{len(v) - 6}"] if len(v) > 6 else [])
                          for k, v in list(pattern.items())[:8]}
    ok = ~nan.any(-1, keepdim=True).expand_as(nan)
    diff = (out.double() - ref)[ok]
    res["rel_err_finite"] = (diff.norm() / ref[ok].norm().clamp_min(1e-30)).item()
    return res


def cases():
    g = torch.Generator().manual_seed(0)
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", torch.bfloat16)  # noqa: E731
    yield "dense_T256_d128", (mk(2, 256, 4, 128), mk(2, 256, 2, 128), mk(2, 256, 2, 128)), {}
    yield "dense_T300_d128", (mk(2, 300, 4, 128), mk(2, 333, 2, 128), mk(2, 333, 2, 128)), {}
    yield "dense_T256_d64", (mk(2, 256, 4, 64), mk(2, 256, 2, 64), mk(2, 256, 2, 64)), {}
    lq = torch.tensor([300, 0, 17, 129], dtype=torch.int32, device="cuda")
    lk = torch.tensor([333, 5, 1, 200], dtype=torch.int32, device="cuda")
    yield "padded_d128", (mk(4, 300, 4, 128), mk(4, 333, 2, 128), mk(4, 333, 2, 128)), \
        {"seq_lens_q": lq, "seq_lens_k": lk}
    yield "causal_T300_d128", (mk(2, 300, 4, 128), mk(2, 300, 2, 128), mk(2, 300, 2, 128)), \
        {"is_causal": True}


def poison(shape, dtype):
    torch.empty(shape, dtype=dtype, device="cuda").fill_(float("nan"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case")
    ap.add_argument("--json")
    ap.add_argument("--no-aot", action="store_true")
    args = ap.parse_args()
    report = {}
    sa = None
    if not args.no_aot:
        try:
            import sigmoid_attn as sa
        except Exception as e:  # noqa: BLE001
            print("no package:", e)
    for name, (q, k, v), kw in cases():
        if args.case and args.case != name:
            continue
        D = q.shape[-1]
        tiles = (128, 128, 4, 2) if D == 64 else (128, 64, 4, 2)
        ref = reference(q, k, v, kw.get("seq_lens_q"), kw.get("seq_lens_k"),
                        kw.get("is_causal", False))
        for label, ws in (("jit_ws", True), ("jit_plain", False)):
            poison(q.shape, q.dtype)
            try:
                out, kern = jit_launch.forward_ws(q, k, v, tiles=tiles, warp_specialize=ws,
                                                  return_kernel=True, **kw)
                torch.cuda.synchronize()
                r = describe(out, ref, tiles[0])
                r["num_warps"] = kern.metadata.num_warps
            except Exception as e:  # noqa: BLE001
                r = {"error": repr(e)[:300]}
            report[f"{name}/{label}"] = r
            print(name, label, r, flush=True)
        if sa is not None:
            import ctypes
            sw = ctypes.CDLL(sa.library_path()).sigmoid_attn_warp_specialized
            sw.restype, sw.argtypes = ctypes.c_int, [ctypes.c_int]
            for label, on in (("aot_ws", 1), ("aot_plain", 0)):
                before = sw(on)
                poison(q.shape, q.dtype)
                out = sa.sigmoid_attention(q, k, v, **kw)
                torch.cuda.synchronize()
                sw(before)
                r = describe(out, ref, 128)
                report[f"{name}/{label}"] = r
                print(name, label, r, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)


if __name__ == "__main__":
    main()
