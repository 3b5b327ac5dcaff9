"""Timing helpers shared by the benchmark and sweep scripts."""

import time

import torch


def cuda_graph_us(fn, n=20, reps=20):
    """GPU time per call, host cost removed: n calls captured in one CUDA graph (after a warm-up
    on the capture stream), the graph replayed reps times between two events."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n):
            fn()
    g.replay()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        g.replay()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) * 1e3 / (n * reps)


def host_only_us(fn, n=200, bursts=25):
    """Host time per call alone: bursts of n calls started on an idle GPU, timed before
    synchronizing (the launch queue never fills, so the GPU never holds the host up); median."""
    t = []
    for _ in range(bursts):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t.append((time.perf_counter() - t0) / n * 1e6)
    torch.cuda.synchronize()
    return sorted(t)[len(t) // 2]


def protocol_batch(D, T, n=3, seed=0):
    """The benchmark protocol's batch at head dim D and length T (bf16, B·T = 16384 tokens,
    H·D = 2048): (H, B, n random [B, T, H, D] tensors, lengths uniform in [T/2, T]), drawn from
    one seeded generator in bench_attention.py's order (the tensors, then the lengths)."""
    H, B = 2048 // D, 16384 // T
    g = torch.Generator(device="cuda").manual_seed(seed)
    xs = [torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
          for _ in range(n)]
    lens = torch.randint(T // 2, T + 1, (B,), device="cuda", dtype=torch.int32, generator=g)
    return H, B, xs, lens


def check_and_time(row, fn, want, flops, with_kernel=None):
    """A sweep candidate: its output against the reference kernel's (want; relative error),
    then its time (median of triton.testing.do_bench) and TFLOPS, written into row; a failure
    to compile or run is recorded as row["error"]. with_kernel: the same call returning
    (output, Triton's compiled kernel), whose thread count is recorded (384 = warp-specialized)."""
    import triton.testing

    try:
        if with_kernel is not None:
            got, kernel = with_kernel()
            row["threads"] = kernel.metadata.num_warps * 32
        else:
            got = fn()
        got = got.float()
        row["rel_err_vs_production"] = float((got - want).norm() / want.norm().clamp_min(1e-30))
        ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
        row.update(ms=ms, tflops=flops / ms / 1e9)
    except Exception as e:  # noqa: BLE001 - a candidate may not compile or fit
        row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
    return row
