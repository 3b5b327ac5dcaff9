"""Context parallelism: sigmoid_attention_cp over P ranks against the single-GPU op and PyTorch's
context-parallel SDPA (softmax; torch.distributed.tensor.experimental.context_parallel).

    torchrun --nproc-per-node P benchmarks/bench_context_parallel.py [--seqlens 16384 ... 262144]
    python benchmarks/bench_context_parallel.py            # P = 1: the cp function's overhead
    torchrun --nproc-per-node 2 benchmarks/bench_context_parallel.py --device cpu --seqlens 256

For each global length T (the whole sequence; each rank holds T/P positions), per provider:
forward time, forward+backward time (the slowest rank's, median over repetitions that start
together after a barrier), the peak memory allocated per GPU during forward+backward (the
largest over ranks; see peak_mib) and the activation memory held between forward and backward
(inputs, output, saved tensors; see held_mib). FLOPs = 4*B*H*D*T^2 (halved when causal; backward 2.5x
forward), the DESIGN.md count, the same for every provider; TFLOPS are per GPU. Providers:
  sigmoid_attn_cp   sigmoid_attention_cp, layout --layout (zigzag by default), every rank
  sigmoid_attn_1gpu sigmoid_attention on the full sequence, on every GPU at once (same work)
  sdpa_cp           PyTorch CP SDPA: causal with its head-tail load balancing (as zigzag),
                    otherwise the contiguous split
With P = 1, sigmoid_attn_cp goes straight to the plain op: the row measures that shortcut.
The cp output is also compared with the single-GPU output (relative error, recorded).

Cost: the single-GPU rows dominate (T = 256k, hd128, 16 heads: about 1 s forward, 3.5 s
forward+backward on an H200); with the defaults a run of every length, both maskings and all
three providers takes a few minutes; lower --reps or split --seqlens to fit a time limit.

Writes <out-dir>/<device>-x<P>/context_parallel.json (+ .png when matplotlib is present) on
rank 0 and prints a table.
"""

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

import sigmoid_attn
from sigmoid_attn import sigmoid_attention
from sigmoid_attn.distributed import sequence_shard, sigmoid_attention_cp

DEFAULT_SEQLENS = [16384, 32768, 65536, 131072, 262144]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cuda: NCCL, one GPU per rank; cpu: gloo (a smoke test of the script)")
    ap.add_argument("--seqlens", type=int, nargs="+", default=DEFAULT_SEQLENS,
                    help="global sequence lengths T (multiples of 2P)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=None, help="default: --heads (MHA)")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtype", choices=list(DTYPES), default=None,
                    help="default: bf16 on cuda, fp32 on cpu")
    ap.add_argument("--causal", choices=["no", "yes", "both"], default="both")
    ap.add_argument("--layout", choices=["zigzag", "contiguous"], default="zigzag")
    ap.add_argument("--providers", nargs="+",
                    default=["sigmoid_attn_cp", "sigmoid_attn_1gpu", "sdpa_cp"],
                    choices=["sigmoid_attn_cp", "sigmoid_attn_1gpu", "sdpa_cp"])
    ap.add_argument("--no-backward", action="store_true")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--commit", default=os.environ.get("SIGMOID_ATTN_COMMIT"))
    return ap.parse_args(argv)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init(args):
    """The process group: torchrun's environment, or a group of one (P = 1) without it."""
    backend = "nccl" if args.device == "cuda" else "gloo"
    if args.device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if "RANK" in os.environ:
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
    else:
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                                world_size=1)
    return dist.get_rank(), dist.get_world_size()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn, args, device):
    """Median over repetitions of the slowest rank's time; every repetition starts after a
    barrier, so a rank's time includes any wait for its ring neighbours."""
    for _ in range(args.warmup):
        fn()
    times = []
    for _ in range(args.reps):
        sync(device)
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    t = torch.tensor(times, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.median())


def peak_mib(fn, device, own):
    """Memory a provider needs per GPU: its own inputs (`own`: the tensors it holds, a shard or
    the whole sequence) plus the peak allocated above what was resident when fn started (the
    full-length tensors every rank keeps for the other providers are not counted); the largest
    over ranks. None on CPU."""
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    extra = torch.cuda.max_memory_allocated(device) - before
    m = torch.tensor([(extra + sum(t.numel() * t.element_size() for t in own)) / 2**20],
                     device=device)
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    return float(m)


def held_mib(fwd_graph, device, own):
    """Activation memory per GPU: the inputs it holds plus what a forward that records the
    autograd graph keeps allocated until the backward (the output and any saved tensors); the
    largest over ranks. None on CPU."""
    if device.type != "cuda":
        return None
    sync(device)
    before = torch.cuda.memory_allocated(device)
    out = fwd_graph()
    sync(device)
    held = torch.cuda.memory_allocated(device) - before
    del out
    m = torch.tensor([(held + sum(t.numel() * t.element_size() for t in own)) / 2**20],
                     device=device)
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    return float(m)


def measure(fwd, fwd_bwd, own, args, device, fwd_graph=None):
    row = {"fwd_ms": timed_ms(fwd, args, device)}
    if not args.no_backward:
        row["fwd_bwd_ms"] = timed_ms(fwd_bwd, args, device)
        row["peak_mib"] = peak_mib(fwd_bwd, device, own)
        if fwd_graph is not None:
            row["held_mib"] = held_mib(fwd_graph, device, own)
    else:
        row["peak_mib"] = peak_mib(fwd, device, own)
    return row


def run_sigmoid(name, full, grad_out, causal, rank, world, args):
    """sigmoid_attn_cp (this rank's shard) or sigmoid_attn_1gpu (the whole sequence)."""
    if name == "sigmoid_attn_cp":
        q, k, v = (sequence_shard(t, rank, world, args.layout).contiguous() for t in full)
        g = sequence_shard(grad_out, rank, world, args.layout).contiguous()

        def call(q, k, v):
            return sigmoid_attention_cp(q, k, v, layout=args.layout, is_causal=causal)
    else:
        q, k, v = full
        g = grad_out

        def call(q, k, v):
            return sigmoid_attention(q, k, v, is_causal=causal)
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]

    def fwd():
        with torch.no_grad():
            return call(q, k, v)

    def fwd_bwd():
        out = call(*leaves)
        torch.autograd.grad(out, leaves, g)

    return (measure(fwd, fwd_bwd, [q, k, v, g], args, q.device, lambda: call(*leaves)),
            fwd())


_MESH = None  # one device mesh over the world, made on first use


def run_sdpa_cp(full, grad_out, causal, world, args):
    """PyTorch's context-parallel SDPA: [B, H, T, D] buffers sharded by its own load balancer
    inside the context; softmax attention, so only its time and memory are comparable."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.experimental import context_parallel

    global _MESH
    if _MESH is None:
        _MESH = init_device_mesh(args.device, (world,))
    mesh = _MESH
    group = full[0].shape[2] // full[1].shape[2]
    bufs = [t.transpose(1, 2).contiguous() for t in full]
    if group > 1:  # SDPA's enable_gqa is not among the CP handler's arguments: expand K, V
        bufs[1:] = [t.repeat_interleave(group, dim=1) for t in bufs[1:]]
    g = grad_out.transpose(1, 2).contiguous()
    # PyTorch's head-tail load balancer only takes causal attention; without a mask there is
    # nothing to balance, so the plain contiguous split runs.
    from torch.distributed.tensor.experimental import _attention as cp_impl
    cp_impl._cp_options.enable_load_balance = causal
    with context_parallel(mesh, buffers=bufs + [g], buffer_seq_dims=[2, 2, 2, 2],
                          no_restore_buffers=set(bufs + [g])):
        q, k, v = bufs
        leaves = [t.detach().requires_grad_() for t in bufs]

        def fwd():
            with torch.no_grad():
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        def fwd_bwd():
            out = F.scaled_dot_product_attention(*leaves, is_causal=causal)
            torch.autograd.grad(out, leaves, g)

        return measure(fwd, fwd_bwd, [q, k, v, g], args, q.device,
                       lambda: F.scaled_dot_product_attention(*leaves, is_causal=causal))


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def device_label(args):
    if args.device == "cuda":
        return torch.cuda.get_device_name().replace(" ", "_")
    return "cpu_" + (platform.machine() or "unknown")


def commit(args):
    if args.commit:
        return args.commit
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=os.path.dirname(os.path.abspath(__file__)),
                              check=True).stdout.strip()
    except Exception:  # noqa: BLE001 - outside a checkout
        return "unknown"


def plot(rows, path, title):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    metrics = [("fwd_ms", "forward (ms)"), ("fwd_bwd_ms", "forward + backward (ms)"),
               ("peak_mib", "peak memory per GPU (MiB)")]
    keys = sorted({(r["provider"], r["causal"]) for r in rows})
    for ax, (metric, label) in zip(axes, metrics):
        for prov, causal in keys:
            pts = [(r["T"], r[metric]) for r in rows
                   if (r["provider"], r["causal"]) == (prov, causal) and r.get(metric) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{prov}{' causal' if causal else ''}",
                        linestyle="--" if causal else "-")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("global sequence length T")
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv=None):
    args = parse_args(argv)
    rank, world = init(args)
    device = torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda" \
        else torch.device("cpu")
    dtype = DTYPES[args.dtype or ("bf16" if args.device == "cuda" else "fp32")]
    hkv = args.kv_heads or args.heads
    causal_modes = {"no": [False], "yes": [True], "both": [False, True]}[args.causal]
    label = device_label(args)
    out_dir = os.path.join(args.out_dir, f"{label}-x{world}")
    result = {
        "commit": commit(args), "device": label, "world_size": world,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
        "python": platform.python_version(), "sigmoid_attn": sigmoid_attn.__version__,
        "shape": {"B": args.batch, "H": args.heads, "Hkv": hkv, "D": args.head_dim,
                  "dtype": str(dtype).replace("torch.", "")},
        "layout": args.layout,
        "protocol": "median over reps of the slowest rank (barrier before each rep); FLOPs = "
                    "4*B*H*D*T^2, causal halved, backward 2.5x forward; TFLOPS per GPU; peak "
                    "memory per GPU during fwd+bwd: own inputs + peak above resident, max over "
                    "ranks",
        "rows": [],
    }
    rows = result["rows"]

    def save():
        if rank == 0:
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, "context_parallel.json"), "w") as f:
                json.dump(result, f, indent=1)
            plot(rows, os.path.join(out_dir, "context_parallel.png"),
                 f"sigmoid attention, context parallel over {world} x {label}, "
                 f"B={args.batch} H={args.heads}/{hkv} D={args.head_dim} "
                 f"{result['shape']['dtype']}")

    for T in args.seqlens:
        if T % (2 * world):
            raise SystemExit(f"--seqlens: T={T} is not a multiple of 2P={2 * world}")
        g = torch.Generator(device=device).manual_seed(T)
        full = [torch.randn(args.batch, T, h, args.head_dim, device=device, dtype=dtype,
                            generator=g) for h in (args.heads, hkv, hkv)]
        grad_out = torch.randn(full[0].shape, device=device, dtype=dtype, generator=g)
        for causal in causal_modes:
            flops = 4 * args.batch * args.heads * args.head_dim * T * T * (0.5 if causal else 1)
            outs = {}
            for prov in args.providers:
                row = {"T": T, "causal": causal, "provider": prov}
                try:
                    if prov == "sdpa_cp":
                        row.update(run_sdpa_cp(full, grad_out, causal, world, args))
                    else:
                        m, outs[prov] = run_sigmoid(prov, full, grad_out, causal, rank, world,
                                                    args)
                        row.update(m)
                except Exception as e:  # noqa: BLE001 - a peer may not run here; recorded
                    row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                if "fwd_ms" in row:
                    # the single-GPU op does the whole problem on each GPU; the others share it
                    gpus = 1 if prov == "sigmoid_attn_1gpu" else world
                    row["fwd_tflops_per_gpu"] = flops / row["fwd_ms"] / 1e9 / gpus
                    if "fwd_bwd_ms" in row:
                        row["fwd_bwd_tflops_per_gpu"] = (3.5 * flops / row["fwd_bwd_ms"] / 1e9
                                                         / gpus)
                rows.append(row)
                save()
            if "sigmoid_attn_cp" in outs and "sigmoid_attn_1gpu" in outs:
                want = sequence_shard(outs["sigmoid_attn_1gpu"], rank, world, args.layout)
                e = torch.tensor([rel_err(outs["sigmoid_attn_cp"], want)], device=device)
                dist.all_reduce(e, op=dist.ReduceOp.MAX)
                for r in rows[-len(args.providers):]:
                    if r["provider"] == "sigmoid_attn_cp":
                        r["rel_err_vs_1gpu"] = float(e)
                save()
            if rank == 0:
                print(f"done: T={T} causal={causal}", flush=True)
        del full, grad_out
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if rank == 0:
        print(f"\n{label} x{world}, layout={args.layout}, B={args.batch} H={args.heads}/{hkv} "
              f"D={args.head_dim} {result['shape']['dtype']}")
        print(f"{'T':>8s} {'causal':>6s} {'provider':>18s} {'fwd ms':>10s} {'fwd+bwd ms':>11s} "
              f"{'TFLOPS/GPU':>11s} {'peak MiB':>10s} {'held MiB':>9s}  note")
        for r in rows:
            cell = lambda key, fmt: format(r[key], fmt) if r.get(key) is not None else "-"
            note = r.get("error", "")
            if "rel_err_vs_1gpu" in r:
                note = f"rel err vs 1 GPU {r['rel_err_vs_1gpu']:.1e}"
            print(f"{r['T']:8d} {str(r['causal']):>6s} {r['provider']:>18s} "
                  f"{cell('fwd_ms', '10.3f'):>10s} {cell('fwd_bwd_ms', '11.3f'):>11s} "
                  f"{cell('fwd_bwd_tflops_per_gpu', '11.1f'):>11s} "
                  f"{cell('peak_mib', '10.0f'):>10s} {cell('held_mib', '9.0f'):>9s}  {note}")
        print(f"\nwrote {os.path.join(out_dir, 'context_parallel.json')}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
