"""Where a tiny cell's model time goes in the server (CUDA): packing, the graph's staging copies,
the replay, the answer's copy back, with the linear layers' parameters in fp32 (autocast casting
them on every replay) and stored in bf16, and after 2 ms idle (as between requests at low
load). A model of the base size with random weights; the kernels of one eager call at the end.

    python examples/serving/tiny_compute.py     # JSON to $OUT/tiny_compute.json (default: .)
"""
import json
import os
import statistics
import sys
import time
from collections import Counter

import numpy as np
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checkpoint as C  # noqa
from model import CellTransformer, ModelConfig  # noqa
from packed_model import PackedEncoder, GraphedEncoder, linears_to, pack  # noqa

out = {}
dev = torch.device("cuda")
torch.manual_seed(0)
cfg = ModelConfig(n_genes=765, n_bins=16, dim=128, heads=4, layers=4, ff=512, max_positions=16384)
model = CellTransformer(cfg, "sigmoid").to(dev).eval()
enc = PackedEncoder(model)
rng = np.random.default_rng(0)


def cells_of(n):
    return [(rng.choice(765, n, replace=False).astype(np.int64) + C.D.N_SPECIAL, rng.integers(1, 17, n).astype(np.int64))]


def med(f, reps=300):
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); f(); ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


for precast, min_tokens in ((False, 256), (True, 256), (True, 64)):
    if precast:
        linears_to(model, torch.bfloat16)
    g = GraphedEncoder(enc, dev, torch.bfloat16, max_tokens=4096, max_cells=1024, min_tokens=min_tokens)
    with torch.inference_mode():
        g.capture_all()
    for n in (16, 64, 256):
        cells = cells_of(n)
        p = pack(cells)
        r = {}
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            r["pack_ms"] = med(lambda: pack(cells))
            r["covers_ms"] = med(lambda: g.covers(p))
            def host():
                return g.embed_cells(p)
            torch.cuda.synchronize()
            r["embed_host_ms"] = med(lambda: (host(), torch.cuda.synchronize()) and None)
            def full():
                x = pack(cells)
                g.covers(x)
                e = g.embed_cells(x)
                t = x.lens.int().tolist()
                return e.float().cpu(), t
            r["full_predict_ms"] = med(full)
            ts = []
            for _ in range(200):
                time.sleep(0.002)
                t0 = time.perf_counter(); full(); ts.append((time.perf_counter() - t0) * 1e3)
            r["full_predict_after_2ms_idle_ms"] = statistics.median(ts)
            key = (g._bucket(n, g.min_tokens), 1)
            graph = g.graphs[key][0]
            torch.cuda.synchronize()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(200):
                graph.replay()
            e.record(); torch.cuda.synchronize()
            r["replay_gpu_ms"] = s.elapsed_time(e) / 200
            r["replay_sync_ms"] = med(lambda: (graph.replay(), torch.cuda.synchronize()))
        out[f"precast{int(precast)}_min{min_tokens}_n{n}"] = r
        print(precast, min_tokens, n, {k: round(v, 4) for k, v in r.items()}, flush=True)

# eager kernels of one tiny batch
from torch.profiler import profile, ProfilerActivity
p = pack(cells_of(64)).to(dev)
with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
    for _ in range(3):
        enc.embed_cells(p)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        enc.embed_cells(p); torch.cuda.synchronize()
ev = [e for e in prof.events() if e.device_type.name == "CUDA"]
out["eager_kernels"] = len(ev)
out["eager_kernel_us_sum"] = sum(e.device_time for e in ev)
out["eager_kernel_names"] = Counter(e.name[:60] for e in ev).most_common(40)
print(json.dumps(out, indent=1))
os.makedirs(os.environ.get("OUT", "."), exist_ok=True)
json.dump(out, open(os.path.join(os.environ.get("OUT", "."), "tiny_compute.json"), "w"), indent=1)
