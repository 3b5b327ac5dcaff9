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
