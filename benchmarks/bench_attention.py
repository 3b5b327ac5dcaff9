"""Side-by-side forward benchmark: sigmoid_attn vs PyTorch SDPA (cuDNN, flash) and triton-sigmoid.

    python benchmarks/bench_attention.py [--quick] [--out-dir benchmarks/results] [--commit SHA]

Protocol (DESIGN.md): bf16, B*T = 16384 tokens, H*D = 2048, random inputs, median of
triton.testing.do_bench after warm-up; FLOPs = 4*H*D*sum(Lq*Lk) (halved when causal), the same
count for every provider. Padded rows use lengths uniform in [T/2, T] and count useful FLOPs only.
Writes <out-dir>/<device>/attention.json (+ attention.png when matplotlib is present) and prints a table.
"""

import argparse
import json
import os
import platform
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import sigmoid_attn
from sigmoid_attn import sigmoid_attention

try:
    import triton_sigmoid
except Exception:  # noqa: BLE001 - optional peer
    triton_sigmoid = None

TOKENS, WIDTH = 16384, 2048

# (label, head_dim, T, causal, padded)
CONFIGS = [
    ("fwd hd128 T=1k", 128, 1024, False, False),
    ("fwd hd128 T=4k", 128, 4096, False, False),
    ("fwd hd128 T=16k", 128, 16384, False, False),
    ("fwd hd64 T=4k", 64, 4096, False, False),
    ("fwd hd64 T=16k", 64, 16384, False, False),
    ("fwd causal hd128 T=4k", 128, 4096, True, False),
    ("fwd causal hd128 T=16k", 128, 16384, True, False),
    ("fwd causal hd64 T=4k", 64, 4096, True, False),
    ("fwd padded hd128 T=4k", 128, 4096, False, True),
    ("fwd padded hd64 T=4k", 64, 4096, False, True),
]


# Packed varlen, lengths uniform in [T/2, T] packed into [total, H, D] with cu_seqlens, beside
# FlashAttention's varlen kernel through torch (torch.nn.attention.varlen) on the same tokens,
# and our padded API on the same sequences: (label, head_dim, T, causal, backward)
VARLEN_CONFIGS = [
    ("fwd varlen hd128 T=4k", 128, 4096, False, False),
    # short cells: 32, 64 and 128 sequences of 256-512 / 128-256 / 64-128 tokens (the serving
    # and single-cell batches' shape)
    ("fwd varlen hd128 T=512", 128, 512, False, False),
    ("fwd varlen hd128 T=256", 128, 256, False, False),
    ("fwd varlen hd128 T=128", 128, 128, False, False),
    ("fwd varlen hd64 T=4k", 64, 4096, False, False),
    ("fwd varlen causal hd128 T=4k", 128, 4096, True, False),
    ("bwd varlen hd128 T=4k", 128, 4096, False, True),
]

# Backward: (label, head_dim, T, causal[, padded]); padded rows count the valid pairs only
# (lengths uniform in [T/2, T]) and have no SDPA peer
BWD_CONFIGS = [
    ("bwd hd64 T=1k", 64, 1024, False),
    ("bwd hd64 T=4k", 64, 4096, False),
    ("bwd hd64 T=16k", 64, 16384, False),
    ("bwd hd128 T=1k", 128, 1024, False),
    ("bwd hd128 T=4k", 128, 4096, False),
    ("bwd hd128 T=16k", 128, 16384, False),
    ("bwd causal hd128 T=4k", 128, 4096, True),
    ("bwd padded hd128 T=4k", 128, 4096, False, True),
]


# Head dims beside the next larger compiled one (forward and backward, T=4k; H = 2048 // D, so
# H·D is 1920-2048): run only when asked for (--only headdim), not in the default table.
HEAD_DIM_ROWS = (40, 48, 64, 72, 80, 96, 104, 112, 128, 144, 160, 192, 256)
HEAD_DIM_CONFIGS = [(f"headdim fwd hd{D} T=4k", D, 4096, False, False) for D in HEAD_DIM_ROWS]
HEAD_DIM_BWD_CONFIGS = [(f"headdim bwd hd{D} T=4k", D, 4096, False) for D in HEAD_DIM_ROWS]

HAS_WS = any(k["kind"] == "fwd_ws" for k in sigmoid_attn.info()["variants"])


# Training step: forward + backward of one call, FLOPs 3.5x the forward; padded rows count the
# valid pairs only and have no SDPA peer (its masked path is another kernel): (label, head_dim,
# T, padded)
STEP_CONFIGS = [
    ("step hd128 T=1k", 128, 1024, False),
    ("step hd128 T=4k", 128, 4096, False),
    ("step hd128 T=16k", 128, 16384, False),
    ("step padded hd128 T=4k", 128, 4096, True),
]

HAS_GLUON = any(k["kind"] == "fwd_gluon" for k in sigmoid_attn.info()["variants"])
HAS_GLUON_BWD = any(k["kind"] == "bwd_gluon" for k in sigmoid_attn.info()["variants"])


def gluon_options():
    """The library with its Gluon kernels switched on, the forward and (where the build has it)
    the backward: the sigmoid_attn_gluon column. The calls they do not cover take the others."""
    return sigmoid_attn.kernel_options(gluon_forward=True,
                                       **({"gluon_backward": True} if HAS_GLUON_BWD else {}))


def kernel_options_for(column):
    """The library as a column runs it: sigmoid_attn_no_ws without either warp-specialized
    forward (the Triton one nor the Gluon one), sigmoid_attn_no_gluon without the Gluon kernels
    (what the call took before them), any other as it is by default."""
    if column == "sigmoid_attn_no_ws":
        return sigmoid_attn.kernel_options(warp_specialized=False, gluon_forward=False)
    if column == "sigmoid_attn_no_gluon":
        return sigmoid_attn.kernel_options(
            gluon_forward=False, **({"gluon_backward": False} if HAS_GLUON_BWD else {}))
    if column == "sigmoid_attn_gluon":
        return gluon_options()
    return sigmoid_attn.kernel_options()


# Each provider is timed in ROUNDS rounds interleaved with the others' (A B C A B C ...), and
# its figure is the median of its rounds: timed one after another, the first provider of a row
# read up to 11% above a later column running the same kernel (an H200's clocks under
# sustained load), which no ratio between columns should inherit.
ROUNDS = 3


def bench(fn, rep=200 // ROUNDS):
    import triton.testing

    fn()
    torch.cuda.synchronize()
    return triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median")


# An H200 comes to each row from the idle gap of its setup and slows under sustained load: a
# row's first round read up to ~10% faster than its later ones (every provider alike), so a
# row timed early in a run read high against one timed late. Each row now starts after
# SETTLE_MS of sustained matmuls (--settle-ms; 0 turns it off).
SETTLE_MS = 500


def settle(ms=None):
    """Keeps the GPU busy for about `ms` milliseconds (bf16 matmuls), so that what is timed next
    runs at the clocks of sustained load."""
    ms = SETTLE_MS if ms is None else ms
    if ms <= 0:
        return
    g = torch.Generator(device="cuda").manual_seed(0)  # (the global generator untouched)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16, generator=g)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    while True:
        for _ in range(8):
            a = (a @ a).clamp_(-1, 1)
        end.record()
        end.synchronize()
        if start.elapsed_time(end) >= ms:
            break


def time_providers(row, providers, flops, makers=False):
    """Times each provider (makers: a function that builds the timed call, inside the column's
    kernel options) into row's ms and TFLOPS, ROUNDS interleaved rounds each (row's ms_rounds),
    after settle(); a provider that fails records why."""
    settle()
    rounds = {name: [] for name in providers}
    for _ in range(ROUNDS):
        for name, fn in providers.items():
            if name in row.get("errors", {}):
                continue
            try:
                with kernel_options_for(name):
                    rounds[name].append(bench(fn() if makers else fn))
            except Exception as e:  # noqa: BLE001 - a peer may not support a shape; record why
                row.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:300]
            torch.cuda.empty_cache()
    for name, times in rounds.items():
        if name in row.get("errors", {}) or not times:
            row["ms"][name] = None
            continue
        ms = sorted(times)[len(times) // 2]
        row["ms"][name] = ms
        row.setdefault("ms_rounds", {})[name] = times
        row["tflops"][name] = flops / (ms * 1e-3) / 1e12
    return row


def run_config(label, D, T, causal, padded, dtype=torch.bfloat16):
    H, B = WIDTH // D, TOKENS // T
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(B, T, H, D, device="cuda", dtype=dtype, generator=g) for _ in range(3))
    if padded:
        lens = torch.randint(T // 2, T + 1, (B,), device="cuda", dtype=torch.int32, generator=g)
        pairs = float((lens.double() ** 2).sum())
    else:
        lens = None
        pairs = float(B) * T * T
    flops = 4.0 * H * D * pairs * (0.5 if causal else 1.0)
    row = {"label": label, "head_dim": D, "T": T, "B": B, "H": H, "causal": causal,
           "padded": padded, "flops": flops, "ms": {}, "tflops": {}}

    providers = {
        "sigmoid_attn": lambda: sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens,
                                                  is_causal=causal),
    }
    if HAS_WS or HAS_GLUON:  # the same call without the warp-specialized forwards (the loop
        # switches them off)
        providers["sigmoid_attn_no_ws"] = providers["sigmoid_attn"]
    if HAS_GLUON and not padded and not causal:  # the calls the Gluon forward covers
        providers["sigmoid_attn_no_gluon"] = providers["sigmoid_attn"]
    if HAS_GLUON and not padded:  # the same call with the Gluon kernels switched on
        providers["sigmoid_attn_gluon"] = providers["sigmoid_attn"]
    if not padded:
        qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))  # SDPA's own layout
        for name, backend in (("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION),
                              ("sdpa_flash", SDPBackend.FLASH_ATTENTION)):
            def sdpa(backend=backend):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
            providers[name] = sdpa
    if triton_sigmoid is not None:
        if padded:
            providers["triton_sigmoid"] = lambda: triton_sigmoid.sigmoid_attention_padded(
                q, k, v, seq_lens_k=lens, seq_lens_q=lens, is_causal=causal)
        else:
            providers["triton_sigmoid"] = lambda: triton_sigmoid.sigmoid_attention(
                q, k, v, is_causal=causal)
    return time_providers(row, providers, flops)


def run_step(label, D, T, padded, dtype=torch.bfloat16):
    """A training step of one attention call: forward then backward (autograd.grad), timed
    together; FLOPs = 3.5 x the forward's (valid pairs only when padded)."""
    H, B = WIDTH // D, TOKENS // T
    g = torch.Generator(device="cuda").manual_seed(2)
    q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=dtype, generator=g)
                   for _ in range(4))
    if padded:
        lens = torch.randint(T // 2, T + 1, (B,), device="cuda", dtype=torch.int32, generator=g)
        pairs = float((lens.double() ** 2).sum())
    else:
        lens, pairs = None, float(B) * T * T
    flops = 3.5 * 4.0 * H * D * pairs
    row = {"label": label, "head_dim": D, "T": T, "B": B, "H": H, "causal": False,
           "padded": padded, "flops": flops, "ms": {}, "tflops": {}}

    def make(fwd, layout_bhtd=False, backend=None):
        ins = [(x.transpose(1, 2).contiguous() if layout_bhtd else x.clone()).requires_grad_()
               for x in (q, k, v)]
        grad = do.transpose(1, 2).contiguous() if layout_bhtd else do

        def step():
            if backend is None:
                return torch.autograd.grad(fwd(*ins), ins, grad)
            with sdpa_kernel(backend):
                return torch.autograd.grad(fwd(*ins), ins, grad)
        return step

    ours = make(lambda a, b, c: sigmoid_attention(a, b, c, seq_lens_q=lens, seq_lens_k=lens))
    providers = {"sigmoid_attn": ours}
    if HAS_GLUON or HAS_GLUON_BWD:
        providers["sigmoid_attn_gluon"] = ours
    if not padded:
        for name, backend in (("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION),
                              ("sdpa_flash", SDPBackend.FLASH_ATTENTION)):
            providers[name] = make(F.scaled_dot_product_attention, True, backend)
    if triton_sigmoid is not None:
        providers["triton_sigmoid"] = make(
            (lambda a, b, c: triton_sigmoid.sigmoid_attention_padded(a, b, c, seq_lens_k=lens,
                                                                     seq_lens_q=lens))
            if padded else triton_sigmoid.sigmoid_attention)
    return time_providers(row, providers, flops)


def run_varlen(label, D, T, causal, backward, dtype=torch.bfloat16):
    """Packed sequences, lengths uniform in [T/2, T], B = TOKENS // T of them: useful FLOPs only
    (backward 2.5x). Peers: FlashAttention varlen through torch, our padded API, triton-sigmoid
    padded, all on the same tokens."""
    from sigmoid_attn import sigmoid_attention_varlen

    H, B = WIDTH // D, TOKENS // T
    g = torch.Generator(device="cuda").manual_seed(2)
    lens = torch.randint(T // 2, T + 1, (B,), device="cuda", dtype=torch.int32, generator=g)
    cu = torch.zeros(B + 1, dtype=torch.int32, device="cuda")
    cu[1:] = lens.cumsum(0)
    total, max_len = int(cu[-1]), int(lens.max())
    q, k, v, do = (torch.randn(total, H, D, device="cuda", dtype=dtype, generator=g)
                   for _ in range(4))
    pad = lambda x: torch.nn.utils.rnn.pad_sequence(list(x.split(lens.tolist())), batch_first=True)
    qp, kp, vp, dop = (pad(x) for x in (q, k, v, do))
    flops = (2.5 if backward else 1.0) * 4.0 * H * D * float((lens.double() ** 2).sum())
    flops *= 0.5 if causal else 1.0
    row = {"label": label, "head_dim": D, "T": T, "B": B, "H": H, "causal": causal,
           "padded": True, "varlen": True, "flops": flops, "ms": {}, "tflops": {}}
    fwds = {
        "sigmoid_attn": (lambda a, b, c: sigmoid_attention_varlen(
            a, b, c, cu, cu, max_len, max_len, is_causal=causal), False),
        **({"sigmoid_attn_no_ws": (lambda a, b, c: sigmoid_attention_varlen(
            a, b, c, cu, cu, max_len, max_len, is_causal=causal), False)}
           if (HAS_WS or HAS_GLUON) and not backward else {}),
        "sigmoid_attn_padded": (lambda a, b, c: sigmoid_attention(
            a, b, c, seq_lens_q=lens, seq_lens_k=lens, is_causal=causal), True),
    }
    try:
        from torch.nn.attention.varlen import varlen_attn

        fwds["sdpa_flash"] = (lambda a, b, c: varlen_attn(
            a, b, c, cu, cu, max_len, max_len,
            window_size=(-1, 0) if causal else (-1, -1)), False)
    except Exception as e:  # noqa: BLE001 - older torch: no varlen entry point
        row.setdefault("errors", {})["sdpa_flash"] = f"{type(e).__name__}: {e}"[:300]
    if triton_sigmoid is not None:
        fwds["triton_sigmoid"] = (lambda a, b, c: triton_sigmoid.sigmoid_attention_padded(
            a, b, c, seq_lens_k=lens, seq_lens_q=lens, is_causal=causal), True)
    def maker(fwd, padded):
        """The timed call of one provider, built inside its column's kernel options."""
        def make():
            ins = (qp, kp, vp) if padded else (q, k, v)
            if not backward:
                return lambda: fwd(*ins)
            ins = [x.clone().requires_grad_() for x in ins]
            out = fwd(*ins)
            grad = dop if padded else do
            return lambda: torch.autograd.grad(out, ins, grad, retain_graph=True)
        return make

    providers = {name: maker(fwd, padded) for name, (fwd, padded) in fwds.items()}
    return time_providers(row, providers, flops, makers=True)


def run_backward(label, D, T, causal, padded=False, dtype=torch.bfloat16):
    """Times the backward alone (autograd.grad over a retained graph), FLOPs = 2.5 x forward
    (valid pairs only when padded)."""
    H, B = WIDTH // D, TOKENS // T
    g = torch.Generator(device="cuda").manual_seed(1)
    q, k, v, do = (torch.randn(B, T, H, D, device="cuda", dtype=dtype, generator=g)
                   for _ in range(4))
    lens = (torch.randint(T // 2, T + 1, (B,), device="cuda", dtype=torch.int32, generator=g)
            if padded else None)
    pairs = float((lens.double() ** 2).sum()) if padded else float(B) * T * T
    flops = 2.5 * 4.0 * H * D * pairs * (0.5 if causal else 1.0)
    row = {"label": label, "head_dim": D, "T": T, "B": B, "H": H, "causal": causal,
           "padded": padded, "flops": flops, "ms": {}, "tflops": {}}

    def make(fwd, layout_bhtd=False):
        ins = [x.transpose(1, 2).contiguous() if layout_bhtd else x.clone() for x in (q, k, v)]
        ins = [x.requires_grad_() for x in ins]
        out = fwd(*ins)
        grad = do.transpose(1, 2).contiguous() if layout_bhtd else do
        return lambda: torch.autograd.grad(out, ins, grad, retain_graph=True)

    providers = {"sigmoid_attn": lambda: make(lambda a, b, c: sigmoid_attention(
        a, b, c, seq_lens_q=lens, seq_lens_k=lens, is_causal=causal))}
    if HAS_GLUON_BWD:  # the same call, the Gluon backward switched on, and off
        providers["sigmoid_attn_gluon"] = providers["sigmoid_attn"]
        providers["sigmoid_attn_no_gluon"] = providers["sigmoid_attn"]
    for name, backend in (() if padded else (("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION),
                                             ("sdpa_flash", SDPBackend.FLASH_ATTENTION))):
        def sdpa_make(backend=backend):
            with sdpa_kernel(backend):
                fn = make(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=causal),
                          layout_bhtd=True)

            def run():
                with sdpa_kernel(backend):
                    return fn()
            return run
        providers[name] = sdpa_make
    if triton_sigmoid is not None:
        providers["triton_sigmoid"] = lambda: make(
            (lambda a, b, c: triton_sigmoid.sigmoid_attention_padded(
                a, b, c, seq_lens_k=lens, seq_lens_q=lens, is_causal=causal)) if padded
            else (lambda a, b, c: triton_sigmoid.sigmoid_attention(a, b, c, is_causal=causal)))
    return time_providers(row, providers, flops, makers=True)


def tiny_call_latency(n=2000):
    """Wall time per call of a tiny problem (B=1, T=256, H=8, D=64, bf16): host overhead.
    bench_latency.py is the full host-cost benchmark (10,000 calls, cold start)."""
    from bench_latency import per_call_us

    q, k, v = (torch.randn(1, 256, 8, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))
    fns = {"sigmoid_attn": lambda: sigmoid_attention(q, k, v),
           "sdpa": lambda: F.scaled_dot_product_attention(qt, kt, vt)}
    if triton_sigmoid is not None:
        fns["triton_sigmoid"] = lambda: triton_sigmoid.sigmoid_attention(q, k, v)
    return {name: per_call_us(fn, n) for name, fn in fns.items()}


def plot(rows, path, device=None):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001
        return False
    names = sorted({n for r in rows for n in r["tflops"]})
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        ax.bar([x + i * width for x in range(len(rows))],
               [r["tflops"].get(n, 0) or 0 for r in rows], width, label=n)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(rows))])
    ax.set_xticklabels([r["label"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("TFLOPS (bf16)")
    ax.set_title(f"sigmoid_attn vs peers (bf16), {device or torch.cuda.get_device_name()}")
    ax.set_ylim(0, 1.18 * max([r["tflops"].get(n) or 0 for r in rows for n in names] + [1]))
    ax.legend(fontsize=8, ncol=len(names), loc="upper center", frameon=False)  # above the bars
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main():
    global SETTLE_MS
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--commit", default=os.environ.get("SIGMOID_ATTN_COMMIT", "unknown"))
    ap.add_argument("--quick", action="store_true", help="first two configs only")
    ap.add_argument("--no-backward", action="store_true")
    ap.add_argument("--only", nargs="+", help="run the configs whose label contains any of these "
                    "(\"headdim\" adds the head-dim rows, hd40-hd256 at T=4k)")
    ap.add_argument("--settle-ms", type=float, default=SETTLE_MS,
                    help="sustained load before each row (ms), so every row is timed at the "
                         "same clocks; 0: none")
    args = ap.parse_args()
    SETTLE_MS = args.settle_ms
    device = torch.cuda.get_device_name()
    out_dir = os.path.join(args.out_dir, device.replace(" ", "_"))
    os.makedirs(out_dir, exist_ok=True)
    result = {
        "commit": args.commit, "device": device, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "torch": torch.__version__, "python": platform.python_version(),
        "sigmoid_attn": sigmoid_attn.info() | {"variants": None},
        "triton_sigmoid": getattr(triton_sigmoid, "__version__", None),
        "protocol": "bf16, B*T=16384, H*D=2048, median of triton.testing.do_bench; "
                    "FLOPs=4*H*D*sum(Lq*Lk), causal halved, backward 2.5x forward; "
                    f"each row after {args.settle_ms:g} ms of sustained load",
        "rows": [], "tiny_call_us": None,
    }
    rows = result["rows"]

    def save():  # after every row: a run cut short by a time limit keeps what it measured
        with open(os.path.join(out_dir, "attention.json"), "w") as f:
            json.dump(result, f, indent=1)
        plot(rows, os.path.join(out_dir, "attention.png"))

    jobs = [(run_config, c) for c in (CONFIGS[:2] if args.quick else CONFIGS)]
    if not args.no_backward:
        jobs += [(run_backward, c) for c in (BWD_CONFIGS[:2] if args.quick else BWD_CONFIGS)]
        jobs += [(run_step, c) for c in (STEP_CONFIGS[:1] if args.quick else STEP_CONFIGS)]
    jobs += [(run_varlen, c) for c in (VARLEN_CONFIGS[:1] if args.quick else VARLEN_CONFIGS)]
    if args.only and any("headdim" in o for o in args.only):
        jobs += [(run_config, c) for c in HEAD_DIM_CONFIGS]
        jobs += [] if args.no_backward else [(run_backward, c) for c in HEAD_DIM_BWD_CONFIGS]
    if args.only:
        jobs = [(f, c) for f, c in jobs if any(o in c[0] for o in args.only)]
    for fn, cfg in jobs:
        rows.append(fn(*cfg))
        save()
        print(f"done: {cfg[0]}", flush=True)
    latency = result["tiny_call_us"] = tiny_call_latency()
    save()
    names = ["sigmoid_attn", "sdpa_cudnn", "sdpa_flash", "triton_sigmoid", "sigmoid_attn_padded"]
    names += ["sigmoid_attn_no_ws"] if HAS_WS or HAS_GLUON else []
    names += ["sigmoid_attn_no_gluon"] if HAS_GLUON else []
    names += ["sigmoid_attn_gluon"] if HAS_GLUON or HAS_GLUON_BWD else []
    print(f"\n{device}  (TFLOPS; ratio = sigmoid_attn / peer)")
    print(f"{'config':30s}" + "".join(f"{n[:19]:>20s}" for n in names) + "   vs cuDNN  vs t-sigmoid")
    for r in rows:
        t = r["tflops"]
        cells = "".join(f"{t[n]:20.1f}" if t.get(n) else f"{'-':>20s}" for n in names)
        ratio = lambda p: f"{t['sigmoid_attn'] / t[p]:9.2f}" if t.get(p) and t.get("sigmoid_attn") else f"{'-':>9s}"
        print(f"{r['label']:30s}{cells}  {ratio('sdpa_cudnn')}  {ratio('triton_sigmoid')}")
    print("tiny call (us/call wall): " + ", ".join(f"{k} {v:.1f}" for k, v in latency.items()))


if __name__ == "__main__":
    main()
