import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRITON_SRC = os.path.join(ROOT, "triton_src")

# Tolerances on ||out - ref|| / ||ref|| against a float64 reference, one place for all tests.
# bf16 keeps 8 mantissa bits: rounding P and V to bf16 before the PV product costs ~3e-3;
# fp16 keeps 11 bits: ~5e-4; fp32 on CPU is ~1e-6.
REL_TOL = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 2e-2}

has_cuda = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not has_cuda, reason="needs a CUDA device")

# On a machine with several GPUs, pytest-xdist workers spread over them: worker gwN makes device
# N % count current, so every "cuda" tensor of its tests lives there. The suite then runs on every
# GPU (device index != 0 included: lazy module loading per device, launches on the tensor's
# device) and in a fraction of the time. SIGMOID_ATTN_TEST_DEVICE=i pins a run to one device.
# Workers share the machine's cores: torch's default (one thread per core in every worker)
# oversubscribes them and the CPU tests crawl.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))

if has_cuda:
    _pin = os.environ.get("SIGMOID_ATTN_TEST_DEVICE")
    _worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if _pin is not None:
        torch.cuda.set_device(int(_pin))
    elif _worker.startswith("gw") and torch.cuda.device_count() > 1:
        torch.cuda.set_device(int(_worker[2:]) % torch.cuda.device_count())


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out = out.double().cpu()
    ref = ref.double().cpu()
    assert not torch.isnan(out).any(), "output has NaN"
    denom = ref.norm().item()
    num = (out - ref).norm().item()
    return num / denom if denom > 0 else num


def library_function(name):
    """A C API function of the built library through ctypes, with its signature:
    sigmoid_attn_select_forward_kernel (the dispatcher's forward choice, as a catalog index), or
    sigmoid_attn_select_backward_kernel (the kernel that computes a backward's dK and dV), or
    a dispatch switch (sigmoid_attn_warp_specialized, sigmoid_attn_gluon_forward,
    sigmoid_attn_gluon_backward: takes 1/0,
    returns the setting before; -1 only reads)."""
    import ctypes

    import sigmoid_attn

    f = getattr(ctypes.CDLL(sigmoid_attn.library_path()), name)
    f.restype = ctypes.c_int
    if name == "sigmoid_attn_select_forward_kernel":
        i32, i64 = ctypes.c_int, ctypes.c_int64
        f.argtypes = [i32, i64, i32, i32, i32, i64, i64, i64, i64, i32, i32, i32]
    elif name == "sigmoid_attn_select_backward_kernel":
        i32, i64 = ctypes.c_int, ctypes.c_int64
        f.argtypes = [i32, i64, i32, i32, i32, i64, i32]
    else:
        f.argtypes = [ctypes.c_int]
    return f


def dtype_code(dtype) -> int:
    """The kernel dtype code of a torch dtype or a variant name ("bf16"): its position in
    triton_src/variants.py's DTYPE_TABLE, as the C API's dtype arguments and the catalog take it."""
    sys.path.insert(0, TRITON_SRC)
    try:
        import variants as V
    finally:
        sys.path.remove(TRITON_SRC)
    name = dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")
    for i, (short, (_, torch_name)) in enumerate(V.DTYPE_TABLE.items()):
        if name in (short, torch_name):
            return i
    raise ValueError(f"no kernel dtype {dtype}")


def served_head_dim(var, catalog) -> int:
    """The head dim a catalog entry is dispatched for: its own, or for a generic kernel
    (runtime_head_dim; head_dim is its BLOCK_D) the largest multiple of 8 below its BLOCK_D that
    no kernel of the same kind is compiled for (the dispatcher takes the compiled ones first)."""
    if not var.get("runtime_head_dim"):
        return var["head_dim"]
    own = {v["head_dim"] for v in catalog if v["kind"] == var["kind"] and not v["runtime_head_dim"]}
    return next(d for d in range(var["head_dim"], 0, -8) if d not in own)


def random_lengths(B: int, T: int, gen: torch.Generator, low: int = 0) -> torch.Tensor:
    return torch.randint(low, T + 1, (B,), generator=gen, dtype=torch.int32)


def cu_of(lengths, device="cpu") -> torch.Tensor:
    """int32 cu_seqlens [B + 1] of a packed batch of these sequence lengths."""
    c = [0]
    for L in lengths:
        c.append(c[-1] + L)
    return torch.tensor(c, dtype=torch.int32, device=device)


def make_qkv(B, Tq, Tk, Hq, Hkv, D, dtype, device, gen):
    q = torch.randn(B, Tq, Hq, D, generator=gen).to(dtype=dtype, device=device)
    k = torch.randn(B, Tk, Hkv, D, generator=gen).to(dtype=dtype, device=device)
    v = torch.randn(B, Tk, Hkv, D, generator=gen).to(dtype=dtype, device=device)
    return q, k, v


def heads_to_fill(programs_per_head, multiple_of):
    """Heads for a grid of at least one program per SM: the dispatcher then keeps the length's
    tile instead of the small-problem one (ops_cuda.cpp)."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    h = -(-sms // programs_per_head)
    return -(-h // multiple_of) * multiple_of


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))



def free_port() -> int:
    """A free TCP port on loopback (for a process group's rendezvous)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(worker, world: int, timeout_s: float, load):
    """Runs worker(rank, world, port, out_dir) in `world` spawned processes and returns
    [load(out_dir, rank) for each rank], what each rank left in out_dir; kills them all past
    timeout_s."""
    import tempfile
    import time

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out_dir:
        ctx = mp.start_processes(worker, args=(world, free_port(), out_dir),
                                 nprocs=world, join=False, start_method="spawn")
        deadline = time.monotonic() + timeout_s
        try:
            while not ctx.join(timeout=2):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{world} processes did not finish in {timeout_s} s")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
        return [load(out_dir, r) for r in range(world)]


def launched_kernels(fn):
    """Names of the CUDA kernels fn launches (the profiler's view), or skip where it sees none."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = {e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA}
    if not any("sigmoid_attn" in n for n in names):
        pytest.skip("the profiler records no kernels here")
    return names


def nan_padded(t, lens):
    """A copy of t with the rows past each sequence's length set to NaN."""
    t = t.clone()
    for b, L in enumerate(lens):
        t[b, L:] = float("nan")
    return t


def padded_inputs(B, T, H, D, dtype, gen, lens, n=3):
    """n random [B, T, H, D] CUDA tensors with zeros past each sequence's length (what a
    reference computes on), and copies with NaN there (what the kernels must never read)."""
    clean = [torch.randn(B, T, H, D, generator=gen).to("cuda", dtype) for _ in range(n)]
    for t in clean:
        for b, L in enumerate(lens):
            t[b, L:] = 0
    return clean, [nan_padded(t, lens) for t in clean]


def packed_inputs(lens_q, lens_k, Hq, Hkv, D, dtype, gen, tail=37):
    """q, k, v, grad_out of a packed batch ([total + tail, heads, D]) whose rows past the last
    sequence are NaN (never to be read), and copies with zeros there: (nan, clean, nq, nk)."""
    nq, nk = sum(lens_q), sum(lens_k)
    mk = lambda *s: torch.randn(*s, generator=gen).to("cuda", dtype)  # noqa: E731
    q, grad = mk(nq + tail, Hq, D), mk(nq + tail, Hq, D)
    k, v = mk(nk + tail, Hkv, D), mk(nk + tail, Hkv, D)
    clean = [t.clone() for t in (q, k, v, grad)]
    for t, c, n in zip((q, k, v, grad), clean, (nq, nk, nk, nq)):
        c[n:] = 0
        t[n:] = float("nan")
    return [q, k, v, grad], clean, nq, nk


def key_masks(T, gen, masked_from):
    """For B = 3 sequences of T keys: a random finite score_mod [3, T]; a key mask as score_mod
    (-inf from key masked_from on in entry 0, every third key of entry 1, every key of entry 2:
    its outputs and gradients are zero); a bias tensor [3]."""
    mod = torch.randn(3, T, generator=gen).cuda()
    mask = torch.zeros(3, T, device="cuda")
    mask[0, masked_from:] = float("-inf")
    mask[1, ::3] = float("-inf")
    mask[2] = float("-inf")
    return mod, mask, torch.tensor([-1.0, 0.5, -4.0], device="cuda")
