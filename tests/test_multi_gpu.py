"""Several GPUs: launches on a device other than the current one and other than 0, lazy module
loading on a device first used in a fresh process, CUDA graphs there, threads bound to different
devices, and context parallelism over NCCL (one process per GPU) against the single-GPU op and
the float64 reference. Needs at least two GPUs; the single-GPU suite runs on every GPU through
conftest's per-worker device spread."""

import datetime
import json
import os
import subprocess
import sys
import threading
import traceback

import pytest
import torch
import torch.distributed as dist

from conftest import REL_TOL, ROOT, has_cuda, rel_err, run_ranks
from sigmoid_attn import (sigmoid_attention, sigmoid_attention_reference,
                          sigmoid_attention_varlen, sigmoid_attention_varlen_reference)
from sigmoid_attn.distributed import sequence_shard, sigmoid_attention_cp

N_GPUS = torch.cuda.device_count() if has_cuda else 0
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(N_GPUS < 2, reason="needs at least two CUDA devices")]
DEVICES = list(range(max(N_GPUS, 2)))
BF16 = torch.bfloat16


def _grads(ts):
    return [t.grad for t in ts]


def _case_tensors(case, device, gen):
    """(inputs, kwargs) of one call: random data on `device`, lengths that end mid-block."""
    B, T, H, Hkv, D = 2, 301, 4, 2, 128
    mk = lambda *s: torch.randn(*s, generator=gen).to(device=device, dtype=BF16)
    q, k, v = mk(B, T, H, D), mk(B, T, Hkv, D), mk(B, T, Hkv, D)
    kw = {}
    if case == "padded":
        kw = dict(seq_lens_q=torch.tensor([T, 17], dtype=torch.int32, device=device),
                  seq_lens_k=torch.tensor([129, T], dtype=torch.int32, device=device))
    elif case == "causal":
        kw = dict(is_causal=True)
    return (q, k, v), kw


def _check_on(dev, case, current):
    """Forward and backward of `case` with tensors on cuda:dev while cuda:current is the current
    device: outputs on the tensors' device and equal to the float64 reference."""
    gen = torch.Generator().manual_seed(17 + dev)
    device = torch.device("cuda", dev)
    with torch.cuda.device(current):
        if case == "varlen":
            lens = [129, 1, 300, 17]
            cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32,
                              device=device)
            n = sum(lens)
            q, k, v = (torch.randn(n, h, 64, generator=gen).to(device=device, dtype=BF16)
                       .requires_grad_() for h in (4, 4, 4))
            out = sigmoid_attention_varlen(q, k, v, cu, cu, max(lens), max(lens))
            r = [t.detach().double().requires_grad_() for t in (q, k, v)]
            ref = sigmoid_attention_varlen_reference(*r, cu, cu, max(lens), max(lens))
        else:
            (q, k, v), kw = _case_tensors(case, device, gen)
            q, k, v = (t.requires_grad_() for t in (q, k, v))
            out = sigmoid_attention(q, k, v, **kw)
            r = [t.detach().double().requires_grad_() for t in (q, k, v)]
            ref = sigmoid_attention_reference(*r, **kw)
        dout = torch.randn(out.shape, generator=gen).to(device=device, dtype=BF16)
        out.backward(dout)
        ref.backward(dout.double())
        assert torch.cuda.current_device() == current
    assert out.device == device
    assert rel_err(out, ref) < REL_TOL[BF16]
    for name, g, gr in zip("qkv", _grads((q, k, v)), _grads(r)):
        assert g is not None and g.device == device, name
        assert rel_err(g, gr) < REL_TOL[BF16], name


@pytest.mark.parametrize("case", ["dense", "padded", "causal", "varlen"])
@pytest.mark.parametrize("dev", DEVICES)
def test_tensors_on_another_device_than_the_current_one(dev, case):
    if dev >= N_GPUS:
        pytest.skip(f"{N_GPUS} devices")
    _check_on(dev, case, current=(dev + 1) % N_GPUS)


# A fresh process whose first CUDA work is on the last device: the kernel's module loads there
# first, a CUDA graph captured there replays with new inputs, and device 0 gets no allocation.
FRESH = r"""
import torch, sigmoid_attn
dev = torch.device("cuda", torch.cuda.device_count() - 1)
g = torch.Generator().manual_seed(3)
def inputs():
    return [torch.randn(2, 1024, 8, 128, generator=g).to(dev, torch.bfloat16) for _ in range(3)]
def err(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()
q, k, v = inputs()
out = sigmoid_attn.sigmoid_attention(q, k, v)
ref = sigmoid_attn.sigmoid_attention_reference(q.double(), k.double(), v.double())
assert out.device == dev, out.device
e1 = err(out, ref)
s = torch.cuda.Stream(dev)
with torch.cuda.stream(s):
    static = inputs()
    o = sigmoid_attn.sigmoid_attention(*static)  # warm-up on the capture stream
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=s):
        o = sigmoid_attn.sigmoid_attention(*static)
new = inputs()
for t, n in zip(static, new):
    t.copy_(n)
o.fill_(float("nan"))
graph.replay()
torch.cuda.synchronize(dev)
e2 = err(o, sigmoid_attn.sigmoid_attention_reference(*(t.double() for t in new)))
print("ERRORS", e1, e2, torch.cuda.memory_allocated(0))
"""


def test_first_launch_in_a_fresh_process_on_the_last_device():
    r = subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    line = [x for x in r.stdout.splitlines() if x.startswith("ERRORS")][-1]
    e1, e2, mem0 = line.split()[1:]
    assert float(e1) < REL_TOL[BF16] and float(e2) < REL_TOL[BF16], line
    assert int(mem0) == 0, f"device 0 got {mem0} bytes from work on the last device"


def test_threads_bound_to_different_devices():
    """2 threads per device, each with its own current device and stream, calling forward and
    backward on fresh random inputs at once; every result checked."""
    errors, failures = [], []

    def work(i):
        dev = i % N_GPUS
        try:
            torch.cuda.set_device(dev)
            gen = torch.Generator().manual_seed(100 + i)
            with torch.cuda.stream(torch.cuda.Stream()):
                for it in range(12):
                    q, k, v = (torch.randn(1, 257, 4, 64, generator=gen)
                               .to("cuda", torch.float16).requires_grad_() for _ in range(3))
                    causal = bool((i + it) % 2)
                    out = sigmoid_attention(q, k, v, is_causal=causal)
                    out.backward(torch.ones_like(out))
                    r = [t.detach().double().requires_grad_() for t in (q, k, v)]
                    ref = sigmoid_attention_reference(*r, is_causal=causal)
                    ref.backward(torch.ones_like(ref))
                    assert out.device.index == dev
                    errors.append(max([rel_err(out, ref)] +
                                      [rel_err(a.grad, b.grad) for a, b in zip((q, k, v), r)]))
                torch.cuda.current_stream().synchronize()
        except Exception:  # noqa: BLE001 - reported below
            failures.append(traceback.format_exc())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2 * N_GPUS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures[0]
    assert len(errors) == 2 * N_GPUS * 12
    assert max(errors) < REL_TOL[torch.float16], max(errors)


# ---------------------------------------------------------------------------------------------
# Context parallelism over NCCL: one process per GPU
# ---------------------------------------------------------------------------------------------

# name -> (layout, is_causal, Hkv, lengths as a function of the global T or None)
CP_CASES = {
    "contiguous": ("contiguous", False, 8, None),
    "contiguous_causal": ("contiguous", True, 8, None),
    "zigzag": ("zigzag", False, 8, None),
    "zigzag_causal": ("zigzag", True, 8, None),
    "zigzag_causal_gqa_lens": ("zigzag", True, 2, lambda T: [T - 77, T // 3 + 5]),
    "contiguous_gqa_lens": ("contiguous", False, 2, lambda T: [T // 2 + 1, T]),
}
CP_B, CP_T, CP_H, CP_D = 2, 4096, 8, 128


def _cp_case(rank, world, case):
    layout, causal, hkv, lens_fn = CP_CASES[case]
    dev = torch.device("cuda", rank)
    gen = torch.Generator().manual_seed(7 + len(case))  # the same full tensors on every rank
    mk = lambda h: torch.randn(CP_B, CP_T, h, CP_D, generator=gen).to(dev, BF16)
    q, k, v, dout = mk(CP_H), mk(hkv), mk(hkv), mk(CP_H)
    lens = None if lens_fn is None else torch.tensor(lens_fn(CP_T), dtype=torch.int32,
                                                     device=dev)
    leaf = lambda t: t.detach().clone().requires_grad_()
    full = [leaf(t) for t in (q, k, v)]
    single = sigmoid_attention(*full, seq_lens_q=lens, seq_lens_k=lens, is_causal=causal)
    single.backward(dout)
    r64 = [leaf(t.double()) for t in (q, k, v)]
    ref = sigmoid_attention_reference(*r64, seq_lens_q=lens, seq_lens_k=lens, is_causal=causal)
    ref.backward(dout.double())
    shard = lambda t: sequence_shard(t, rank, world, layout)
    mine = [leaf(shard(t)) for t in (q, k, v)]
    out = sigmoid_attention_cp(*mine, layout=layout, seq_lens=lens, is_causal=causal)
    out.backward(shard(dout))
    res = {"out": [rel_err(out, shard(single)), rel_err(out, shard(ref))],
           "device": str(out.device)}
    for n, a, b, c in zip("qkv", mine, full, r64):
        res["d" + n] = [rel_err(a.grad, shard(b.grad)), rel_err(a.grad, shard(c.grad))]
    return res


def _cp_worker(rank, world, port, out_dir):
    torch.cuda.set_device(rank)
    result = {}
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=120),
                            device_id=torch.device("cuda", rank))
    try:
        for case in CP_CASES:
            try:
                result[case] = _cp_case(rank, world, case)
            except Exception:  # noqa: BLE001 - reported by the test of that case
                result[case] = {"exception": traceback.format_exc()}
    finally:
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
        dist.destroy_process_group()


_CP = {}


def _cp_results(world):
    if world not in _CP:
        def load(out_dir, r):
            with open(os.path.join(out_dir, f"rank{r}.json")) as f:
                return json.load(f)
        _CP[world] = run_ranks(_cp_worker, world, 300, load)
    return _CP[world]


@pytest.mark.parametrize("case", list(CP_CASES))
@pytest.mark.parametrize("world", [2, 4, 8])
def test_context_parallel_nccl_matches_single_gpu(world, case):
    if world > N_GPUS:
        pytest.skip(f"{N_GPUS} devices")
    for rank, res in enumerate(_cp_results(world)):
        r = res[case]
        assert "exception" not in r, f"rank {rank}:\n{r.get('exception')}"
        assert r["device"] == f"cuda:{rank}"
        for n in ("out", "dq", "dk", "dv"):
            vs_op, vs_ref = r[n]
            # bf16 shards summed in fp32 against the single-GPU bf16 op: both round once
            assert vs_op < REL_TOL[BF16] and vs_ref < REL_TOL[BF16], (rank, n, r[n])
