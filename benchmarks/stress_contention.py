"""Contention stress: several processes launch one forward kernel at once on one GPU, each with
fresh random inputs every call, and every output is checked (NaN and elements left unwritten
everywhere; agreement with a float32 reference computed by torch on one batch entry per call). Races in warp-specialized and
persistent kernels hide in timing: one process on a quiet GPU does not show them, while
processes time-slicing the GPU (compute preemption in the middle of a kernel) do.

    python benchmarks/stress_contention.py --target lib_ws --procs 8 --calls 500
    python benchmarks/stress_contention.py --target jit_ws:256,64,4,2 --dtype fp16 --case padded
    python benchmarks/stress_contention.py --target lib_gluon --backward --calls 300

--backward stresses the backward instead (library targets): each call runs forward and backward
through autograd, every gradient is checked for NaN and unwritten elements (blocks of the
gradients' size are poisoned and freed just before, so the caching allocator hands them to the
backward), and one batch entry's dQ, dK, dV against autograd through the float32 reference.

Targets:
  lib          the built library as dispatched (torch.ops.sigmoid_attn)
  lib_ws       the built library with the Triton warp-specialized forward switched on (the
               Gluon forward off)
  lib_gluon    the built library with the Gluon forward and backward switched on (the forward:
               cases dense and causal; the backward: dense)
  lib_no_ws    the built library with both warp-specialized forwards switched off
  jit_ws:BM,BN,W,S[,nows]     sigmoid_attn_fwd_ws through Triton's JIT (nows: not specialized)
  jit_fwd:BM,BN,W,S[,tma]     sigmoid_attn_fwd through Triton's JIT (tma: K/V by descriptors)
  A JIT target's flag keepscratch gives the kernels' global scratch (device-side TMA
  descriptors) from one buffer that is never freed, instead of a fresh allocation per launch.
Cases: dense, padded (lengths in [T/2, T]), causal, varlen (packed, lengths in [T/2, T]),
varlen_causal (the same, causal), masked (a random key mask as score_mod and the bias tensor
-log(attended keys), as the SDPA-style function passes them; the library's targets).

Prints one JSON object (totals and the first bad calls' patterns); --json writes it too.
Exit status 1 when any call was bad.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

SENTINEL = 1232.0  # exact in fp16 and bf16; outputs are poisoned with it: an element still holding it was never written


def _parse_target(target):
    kind, _, rest = target.partition(":")
    tiles, flags = (), ()
    if rest:
        parts = rest.split(",")
        tiles = tuple(int(p) for p in parts[:4])
        flags = tuple(parts[4:])
    return kind, tiles, flags


def _make_runner(target, device):
    """fn(q, k, v, out, seq_lens, cu_seqlens, max_seqlen, causal) -> out: writes into the
    poisoned `out` where the target allows it, else returns its own output."""
    import torch

    kind, tiles, flags = _parse_target(target)
    if kind.startswith("lib"):
        import sigmoid_attn as sa

        if kind != "lib":
            gluon = kind == "lib_gluon"
            sa.kernel_options(warp_specialized=kind == "lib_ws", gluon_forward=gluon,
                              gluon_backward=gluon)

        def run(q, k, v, out, lens, cu, max_len, causal, mod=None, bias=None):
            # The op allocates its own output: hand its allocation the poisoned block (the
            # caching allocator gives the same block back to the next request of that size).
            del out
            if cu is not None:
                return sa.sigmoid_attention_varlen(q, k, v, cu, cu, max_len, max_len,
                                                   is_causal=causal)
            return sa.sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens,
                                        is_causal=causal, score_mod=mod, sigmoid_bias=bias)
        return run, kind != "lib"

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                    "triton_src"))
    import jit_launch
    import triton
    from sigmoid_attn_fwd_ws import sigmoid_attn_fwd_ws

    if "keepscratch" in flags:
        kept = torch.empty(64 << 20, dtype=torch.int8, device=device)

        def _kept(size, align, stream):
            assert size + align <= kept.numel(), size
            return kept[(-kept.data_ptr()) % align:][:size]
        jit_launch._descriptor_scratch_from_torch = lambda dev: triton.set_allocator(_kept)

    if kind == "jit_ws":
        def run(q, k, v, out, lens, cu, max_len, causal):
            jit_launch._ws_call(sigmoid_attn_fwd_ws, (q, k, v, out), tiles, causal, None, lens,
                                lens, None, None, cu, cu, max_len, max_len,
                                WARP_SPECIALIZE="nows" not in flags)
            return out
        return run, True
    if kind == "jit_fwd":
        def run(q, k, v, out, lens, cu, max_len, causal):
            out.copy_(jit_launch.forward(q, k, v, seq_lens_q=lens, seq_lens_k=lens,
                                         is_causal=causal, fast_sigmoid=True,
                                         tiles=tiles + (("tma",) if "tma" in flags else ()),
                                         cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=max_len,
                                         max_seqlen_k=max_len))
            return out
        return run, True
    raise SystemExit(f"stress_contention: unknown target {target!r}")


def _packing(lens, T):
    """(keep, cu_seqlens) of the packed batch made of [B, T] rows' first lens[b] rows: keep
    selects them from the rows flattened to [B * T]."""
    import torch

    keep = (torch.arange(T, device=lens.device)[None, :] < lens[:, None]).flatten()
    cu = torch.zeros(lens.numel() + 1, dtype=torch.int32, device=lens.device)
    cu[1:] = torch.cumsum(lens, 0)
    return keep, cu


def _reference(q, k, v, lens, causal, b, mod=None, bias=None):
    """float32 reference of batch entry b of a dense/padded [B, T, H, D] call (TF32 matmuls:
    ~1e-3 relative); mod: a [B, T] score_mod, bias: a [B] bias tensor."""
    import torch

    B, T, H, D = q.shape
    i = torch.arange(T, device=q.device)
    L = T if lens is None else int(lens[b])
    qb, kb, vb = (t[b].transpose(0, 1).float() for t in (q, k, v))
    s = qb @ kb.transpose(1, 2) / math.sqrt(D)
    s = s - math.log(max(L, 1)) if bias is None else s + bias[b]
    if mod is not None:
        s = s + mod[b]
    keep = (i[None, :] < L) & (i[:, None] < L)
    if causal:
        keep = keep & (i[None, :] <= i[:, None])
    return ((torch.sigmoid(s) * keep) @ vb).transpose(0, 1)


def _pattern(bad, T):
    """Where the bad elements of a [B, T, H, D] mask are: per (b, h), the rows' range and the
    row positions within 64-row groups, and the columns' range."""
    rows = {}
    for b, t, h in bad.any(-1).nonzero().tolist():
        rows.setdefault((b, h), []).append(t)
    cols = bad.any(0).any(0).any(0).nonzero().flatten().tolist()
    return {"heads": len(rows), "cols": [cols[0], cols[-1], len(cols)] if cols else [],
            "rows": {f"b{b}h{h}": [min(r), max(r), len(r), sorted({x // 64 for x in r})[:8]]
                     for (b, h), r in list(rows.items())[:6]}}


def backward_worker(args):
    """--backward: forward + backward through autograd per call; every gradient checked for NaN
    and poison, one batch entry against the float32 reference's autograd gradients."""
    import torch

    import sigmoid_attn as sa

    torch.backends.cuda.matmul.allow_tf32 = True
    dev = torch.device("cuda")
    _make_runner(args.target, dev)  # sets the target's switches
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    g = torch.Generator(device=dev).manual_seed(args.seed)
    B, T, H, D = args.batch, args.seqlen, args.heads, args.head_dim
    causal = args.case in ("causal", "varlen_causal")
    stats = {"calls": 0, "nan_calls": 0, "unwritten_calls": 0, "wrong_calls": 0, "bad": []}
    for _ in range(args.calls):
        q, k, v, do = (torch.empty(B, T, H, D, dtype=dt, device=dev).normal_(0, 0.5, generator=g)
                       for _ in range(4))
        lens = mod = bias = None
        if args.case in ("padded", "varlen", "varlen_causal"):
            lens = torch.randint(T // 2, T + 1, (B,), generator=g, device=dev, dtype=torch.int32)
        if args.case == "masked":  # a key mask as score_mod and a bias tensor (SDPA's masks)
            keep_k = torch.rand(B, T, generator=g, device=dev) > 0.3
            mod = torch.zeros(B, T, device=dev).masked_fill(~keep_k, float("-inf"))
            bias = -torch.log(keep_k.sum(-1).float().clamp_min(1.0))
        b = stats["calls"] % B
        if args.case.startswith("varlen"):  # packed: the padded tensors' valid rows, back to back
            keep, cu = _packing(lens, T)
            ins = [t.reshape(B * T, H, D)[keep].requires_grad_() for t in (q, k, v)]
            out = sa.sigmoid_attention_varlen(*ins, cu, cu, T, T, is_causal=causal)
            poison = [torch.full_like(t, SENTINEL) for t in ins]
            del poison
            grads = torch.autograd.grad(out, ins, do.reshape(B * T, H, D)[keep])
            s0, n = int(cu[b]), int(lens[b])
            entry = [t[s0:s0 + n] for t in grads]  # sequence b's rows
        else:
            q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
            out = sa.sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens,
                                       is_causal=causal, score_mod=mod, sigmoid_bias=bias)
            poison = [torch.full_like(q, SENTINEL) for _ in range(3)]
            del poison  # freed: the blocks the backward's gradients get
            grads = torch.autograd.grad(out, (q, k, v), do)
            n = T
            entry = [t[b] for t in grads]
        qb, kb, vb = (t[b:b + 1].detach().float().requires_grad_() for t in (q, k, v))
        ref = _reference(qb, kb, vb, None if lens is None else lens[b:b + 1], causal, 0,
                         None if mod is None else mod[b:b + 1],
                         None if bias is None else bias[b:b + 1])
        refs = torch.autograd.grad(ref, (qb, kb, vb), do[b].float())
        nan = unwritten = wrong = 0
        for got, part, want in zip(grads, entry, refs):
            nan += int(torch.isnan(got).sum())
            unwritten += int((got == SENTINEL).sum())
            want = want[0][:n]
            tol = 3e-2 * want.abs().amax() + 2e-2 * want.abs()
            wrong += int(((part.float() - want).abs() > tol).sum())
        flags = [nan > 0, unwritten > 0, wrong > 0]
        stats["calls"] += 1
        stats["nan_calls"] += flags[0]
        stats["unwritten_calls"] += flags[1]
        stats["wrong_calls"] += flags[2]
        if any(flags) and len(stats["bad"]) < 4:
            stats["bad"].append({"call": stats["calls"] - 1, "nan": nan, "unwritten": unwritten,
                                 "wrong": wrong})
    print("RESULT " + json.dumps(stats), flush=True)


def worker(args):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    dev = torch.device("cuda")
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    run, poisonable = _make_runner(args.target, dev)
    g = torch.Generator(device=dev).manual_seed(args.seed)
    B, T, H, D = args.batch, args.seqlen, args.heads, args.head_dim
    causal = args.case in ("causal", "varlen_causal")
    stats = {"calls": 0, "nan_calls": 0, "unwritten_calls": 0, "wrong_calls": 0, "bad": []}
    for _ in range(args.calls):
        q, k, v = (torch.empty(B, T, H, D, dtype=dt, device=dev).normal_(0, 0.5, generator=g)
                   for _ in range(3))
        lens = cu = mod = bias = None
        max_len = T
        if args.case == "masked":  # a key mask as score_mod and a bias tensor (SDPA's masks)
            keep_k = torch.rand(B, T, generator=g, device=dev) > 0.3
            mod = torch.zeros(B, T, device=dev).masked_fill(~keep_k, float("-inf"))
            bias = -torch.log(keep_k.sum(-1).float().clamp_min(1.0))
        if args.case in ("padded", "varlen", "varlen_causal"):
            lens = torch.randint(T // 2, T + 1, (B,), generator=g, device=dev, dtype=torch.int32)
        out = torch.full_like(q, SENTINEL)
        if args.case.startswith("varlen"):  # packed: the padded tensors' valid rows, back to back
            keep, cu = _packing(lens, T)
            qp, kp, vp = (t.flatten(0, 1)[keep] for t in (q, k, v))
            outp = torch.full_like(qp, SENTINEL)
            del out
            got_p = run(qp, kp, vp, outp, None, cu, T, causal)
            got = torch.zeros_like(q).flatten(0, 1)
            got[keep] = got_p
            got = got.view(B, T, H, D)
        else:
            if not poisonable:
                del out
                torch.full_like(q, SENTINEL)  # freed at once: the op's output block
            got = run(q, k, v, out if poisonable else None, lens, None, max_len, causal,
                      **({} if mod is None else {"mod": mod, "bias": bias}))
        # Every element is checked for NaN and for the poison; one batch entry per call (in
        # turn) against the reference, which costs more than the kernel.
        nan = torch.isnan(got)
        unwritten = got == SENTINEL
        b = stats["calls"] % B
        ref = _reference(q, k, v, lens, causal, b, mod, bias)
        tol = 2e-2 * ref.abs().amax() + 1e-2 * ref.abs()
        wrong = torch.zeros_like(nan)
        wrong[b] = ((got[b].float() - ref).abs() > tol) & ~nan[b] & ~unwritten[b]
        flags = [bool(nan.any()), bool(unwritten.any()), bool(wrong.any())]
        stats["calls"] += 1
        stats["nan_calls"] += flags[0]
        stats["unwritten_calls"] += flags[1]
        stats["wrong_calls"] += flags[2]
        if any(flags) and len(stats["bad"]) < 4:
            stats["bad"].append({"call": stats["calls"] - 1, "nan": int(nan.sum()),
                                 "unwritten": int(unwritten.sum()), "wrong": int(wrong.sum()),
                                 "where": _pattern(nan | unwritten | wrong, T)})
    print("RESULT " + json.dumps(stats), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="lib")
    p.add_argument("--case", default="dense",
                   choices=["dense", "padded", "causal", "varlen", "varlen_causal", "masked"])
    p.add_argument("--dtype", default="bf16", choices=["fp16", "bf16"])
    p.add_argument("--procs", type=int, default=8)
    p.add_argument("--calls", type=int, default=400, help="calls per process")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seqlen", type=int, default=4096)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backward", action="store_true",
                   help="stress the backward (library targets)")
    p.add_argument("--json", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.backward and not args.target.startswith("lib"):
        raise SystemExit("stress_contention: --backward takes a library target")
    if args.case == "masked" and not args.target.startswith("lib"):
        raise SystemExit("stress_contention: --case masked takes a library target")
    if args.worker:
        return backward_worker(args) if args.backward else worker(args)

    # One process first (compiles a JIT target into Triton's cache and checks one call), then
    # all of them at once.
    base = [sys.executable, os.path.abspath(__file__), "--worker", "--target", args.target,
            "--case", args.case, "--dtype", args.dtype, "--batch", str(args.batch),
            "--seqlen", str(args.seqlen), "--heads", str(args.heads),
            "--head-dim", str(args.head_dim)] + (["--backward"] if args.backward else [])
    t0 = time.time()
    first = subprocess.run(base + ["--calls", "1", "--seed", str(args.seed + 10_000)],
                           capture_output=True, text=True)
    if first.returncode != 0:
        print(first.stdout + first.stderr, file=sys.stderr)
        return 2
    procs = [subprocess.Popen(base + ["--calls", str(args.calls), "--seed",
                                      str(args.seed * 1000 + r)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(args.procs)]
    total = {"target": args.target, "backward": args.backward, "case": args.case, "dtype": args.dtype, "procs": args.procs,
             "shape": [args.batch, args.seqlen, args.heads, args.head_dim], "calls": 0,
             "nan_calls": 0, "unwritten_calls": 0, "wrong_calls": 0, "failed_procs": 0,
             "bad": []}
    for pr in procs:
        out, err = pr.communicate()
        line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
        if pr.returncode != 0 or not line:
            total["failed_procs"] += 1
            total.setdefault("errors", []).append(err.strip().splitlines()[-3:])
            continue
        s = json.loads(line[-1][len("RESULT "):])
        for key in ("calls", "nan_calls", "unwritten_calls", "wrong_calls"):
            total[key] += s[key]
        total["bad"] += s["bad"][: max(0, 8 - len(total["bad"]))]
    total["seconds"] = round(time.time() - t0, 1)
    text = json.dumps(total)
    print(text, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    bad = total["nan_calls"] + total["unwritten_calls"] + total["wrong_calls"]
    return 1 if bad or total["failed_procs"] else 0


if __name__ == "__main__":
    sys.exit(main())
