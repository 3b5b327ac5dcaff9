"""Run the ahead-of-time compiled Gluon sigmoid-attention backward on the GPU, without Triton.

    python3 benchmarks/gluon_bwd/run_on_device.py [--build-dir DIR] [--only S1,S2] [--skip S]
        [--quick] [--stress N] [--no-bench] [--dtypes bf16] [--cases 128:4096,64:4096]
    python3 benchmarks/gluon_bwd/run_on_device.py --dry-run     # CPU: argument packing only

Loads build/<variant>.cubin through the CUDA driver API (ctypes; the driver wrapper is the
forward probe's, benchmarks/gluon_fwd/run_on_device.py), encodes the seven host TMA descriptors
(Q, K, V, dO, the fp32 dQ accumulator, dK, dV) from the compiled kernel's tensordesc metadata,
launches on torch's current stream, and checks dQ, dK, dV against autograd of a float64 torch
reference, with dK/dV poisoned with NaN and NaN guard zones around every output. Then times the
kernel against SDPA's cuDNN backward (softmax) in the same run. Writes $OUT/gluon_bwd.json when
$OUT is set. Exit status: 0 all correct, 1 a check failed, 2 setup error, 3 a kernel did not
finish within the watchdog (hang).
"""

import argparse
import ctypes
import importlib.util
import json
import math
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("gluon_fwd_runner",
                                               HERE.parent / "gluon_fwd" / "run_on_device.py")
_fwd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fwd)
AlignedBlob, CudaDriver = _fwd.AlignedBlob, _fwd.CudaDriver
TMA_DTYPE_DEVICE_TO_HOST = _fwd.TMA_DTYPE_DEVICE_TO_HOST
# The forward runner's watchdog, timing and result file, with this runner's name and limit.
_fwd.JSON_NAME, _fwd.WATCHDOG_S = "gluon_bwd.json", 30.0
RESULT = _fwd.RESULT
finish, wait_or_die, context_alive, time_fn = (_fwd.finish, _fwd.wait_or_die, _fwd.context_alive,
                                               _fwd.time_fn)

CU_FP32 = 7  # CU_TENSOR_MAP_DATA_TYPE_FLOAT32
HOST_ELEM_BYTES = {9: 2, 6: 2, CU_FP32: 4}
DEVICE = "cuda"


class FakeDriver(_fwd.FakeDriver):
    """--dry-run: the forward's fake driver, with fp32 descriptors (the dQ accumulator)."""

    def encode_tiled(self, blob, dtype, addr, dims, strides_bytes, box, swizzle):
        rank = len(dims)
        assert 1 <= rank <= 5 and len(box) == rank and len(strides_bytes) == rank - 1
        assert blob.addr % 64 == 0
        assert addr % 16 == 0, "global address must be 16-byte aligned"
        assert all(s % 16 == 0 and s < (1 << 40) for s in strides_bytes), strides_bytes
        assert all(1 <= b <= 256 for b in box), box
        elem = HOST_ELEM_BYTES[dtype]
        assert (box[0] * elem) % 16 == 0
        if swizzle == 3:
            assert box[0] * elem <= 128, "128B swizzle: inner box must be <= 128 bytes"
        ctypes.memset(blob.addr, 0xAB, 128)
        self.calls.append(("encode", dtype, dims, strides_bytes, box, swizzle))


DESC_DTYPE = {"dq_desc": CU_FP32}  # the others take the variant's dtype
DESC_SEQ = {"q_desc": "q", "do_desc": "q", "dq_desc": "q",
            "k_desc": "k", "v_desc": "k", "dk_desc": "k", "dv_desc": "k"}


class Kernel:
    def __init__(self, drv, rec, build_dir):
        self.drv, self.rec, self.name = drv, rec, rec["name"]
        image = (build_dir / rec["cubin"]).read_bytes()
        self.smem, self.threads = int(rec["shared"]), int(rec["threads"])
        self.mod, self.fn, self.attrs = drv.load(image, rec["entry"], self.smem)
        if rec["global_scratch_size"] or rec["profile_scratch_size"]:
            raise RuntimeError(f"{self.name}: needs global/profile scratch; this runner passes "
                               "null hidden pointers")
        self.meta = dict(zip(rec["descs"], rec["tensordesc_meta"]))
        for d, m in self.meta.items():
            want = DESC_DTYPE.get(d, rec["cu_tensor_dtype"])
            if TMA_DTYPE_DEVICE_TO_HOST[m["elem_type"]] != want:
                raise RuntimeError(f"{self.name}: {d} elem_type {m['elem_type']} does not map "
                                   f"to host dtype {want}")
            if m.get("is_im2col") or m.get("fp4_padded"):
                raise RuntimeError(f"{self.name}: unsupported descriptor kind {m}")

    def shapes(self, B, T_Q, T_K, H, H_KV, D):
        """Gluon order (outermost first): [B, T, heads, D], strides in elements (rank 4)."""
        return {"q": _fwd.desc_layout(B, T_Q, H, D), "k": _fwd.desc_layout(B, T_K, H_KV, D)}

    def prepare(self, ptrs, B, T_Q, T_K, H, H_KV, D, scale, bias):
        """ptrs: desc name -> data pointer of a contiguous [B, T, heads, D] tensor (dq_desc:
        fp32, zeroed before each launch). Returns a launcher closure."""
        rec = self.rec
        assert D == rec["head_dim"] and H % H_KV == 0, (D, H, H_KV)
        shp = self.shapes(B, T_Q, T_K, H, H_KV, D)
        keep, blobs = [], {}
        for name in rec["descs"]:
            m = self.meta[name]
            shape, strides = shp[DESC_SEQ[name]]
            dtype = DESC_DTYPE.get(name, rec["cu_tensor_dtype"])
            eb = HOST_ELEM_BYTES[dtype]
            blob = AlignedBlob(128, 64)
            _fwd.encode_desc(self.drv, blob, dtype, eb, ptrs[name], shape, strides, m)
            blobs[name] = blob
            keep.append(blob)
        scalars = {"T_Q": ctypes.c_int32(T_Q), "T_K": ctypes.c_int32(T_K),
                   "kv_group": ctypes.c_int32(H // H_KV), "scale": ctypes.c_float(scale),
                   "bias_value": ctypes.c_float(bias),
                   # (compiled without lengths, not packed: never read)
                   "SEQ_LENS_Q": ctypes.c_uint64(0), "SEQ_LENS_K": ctypes.c_uint64(0),
                   "DK": ctypes.c_uint64(0), "DV": ctypes.c_uint64(0),
                   "stride_kt": ctypes.c_int32(0),
                   "D": ctypes.c_int32(D),  # the tensors' head dim (the box's: asserted above)
                   # no bias tensor, no score_mod: BIAS_MODE 1 (bias_value)
                   "BIAS": ctypes.c_uint64(0), "SCORE_MOD": ctypes.c_uint64(0),
                   "stride_smb": ctypes.c_int64(0), "DMOD": ctypes.c_uint64(0),
                   "stride_dmb": ctypes.c_int64(0), "stride_dmh": ctypes.c_int64(0),
                   "BIAS_MODE": ctypes.c_int32(1),
                   "MAX_Q": ctypes.c_int32(T_Q), "MAX_K": ctypes.c_int32(T_K)}
        addrs = []
        for p in rec["params"]:
            role = p["role"]
            if role == "tensormap":
                addrs.append(blobs[p["arg"]].addr)
                continue
            if role == "desc_shape":
                obj = ctypes.c_int32(shp[DESC_SEQ[p["arg"]]][0][p["dim"]])
            elif role == "desc_stride":
                obj = ctypes.c_int64(shp[DESC_SEQ[p["arg"]]][1][p["dim"]])
            elif role == "scalar":
                obj = scalars[p["arg"]]
            elif role == "hidden_ptr":
                obj = ctypes.c_uint64(0)
            else:
                raise RuntimeError(f"unknown parameter role {role}")
            if ctypes.sizeof(obj) != p["size"]:
                raise RuntimeError(f"{p}: packed {ctypes.sizeof(obj)} bytes")
            keep.append(obj)
            addrs.append(ctypes.addressof(obj))
        arr = (ctypes.c_void_p * len(addrs))(*addrs)
        keep.append(arr)
        grid = (-(-T_K // rec["block_n"]), H_KV, B)

        def run(stream):
            self.drv.launch(self.fn, grid, self.threads, self.smem, stream, arr)
        run.keep, run.grid, run.shapes = keep, grid, shp
        return run


class Finisher:
    """What the library does around the kernel: cuMemsetD32Async zeroes dQ_acc, and one launch
    of the ahead-of-time compiled dq_cast (triton_src/sigmoid_attn_bwd_gluon.py) writes dQ in
    the output dtype. torch's .zero_() and .to() (the runner's 'full') allocate and dispatch
    through ATen on the host; this is the floor a C++ launcher would pay."""

    def __init__(self, drv, rec, build_dir):
        self.drv, self.rec = drv, rec
        self.mod, self.fn, self.attrs = drv.load((build_dir / rec["cubin"]).read_bytes(),
                                                 rec["entry"], int(rec["shared"]))
        if rec["global_scratch_size"] or rec["profile_scratch_size"]:
            raise RuntimeError(f"{rec['name']}: needs global/profile scratch")
        L = drv.lib
        # CUresult cuMemsetD32Async(CUdeviceptr dstDevice, unsigned int ui, size_t N, CUstream)
        L.cuMemsetD32Async.restype = ctypes.c_int
        L.cuMemsetD32Async.argtypes = [ctypes.c_uint64, ctypes.c_uint, ctypes.c_size_t,
                                       ctypes.c_void_p]

    def prepare(self, acc, out):
        n = acc.numel()
        if n >= 2**31 or n % 16 or acc.data_ptr() % 16 or out.data_ptr() % 16:
            raise RuntimeError(f"dq_cast needs n < 2^31, n % 16 == 0 and 16-byte aligned "
                               f"pointers (n={n})")
        objs = [ctypes.c_uint64(acc.data_ptr()), ctypes.c_uint64(out.data_ptr()),
                ctypes.c_int32(n)] + [ctypes.c_uint64(0)] * (self.rec["n_params"] - 3)
        arr = (ctypes.c_void_p * len(objs))(*[ctypes.addressof(o) for o in objs])
        grid = (-(-n // self.rec["block"]), 1, 1)
        acc_ptr, drv, fn, threads = acc.data_ptr(), self.drv, self.fn, self.rec["threads"]

        def zero(stream):
            drv.check(drv.lib.cuMemsetD32Async(acc_ptr, 0, n, ctypes.c_void_p(stream)),
                      "cuMemsetD32Async")

        def cast(stream):
            drv.launch(fn, grid, threads, 0, stream, arr)
        zero.keep = cast.keep = (objs, arr)
        return zero, cast


# ----------------------------------------------------------------------------------------------
# GPU checks and timing
# ----------------------------------------------------------------------------------------------

def guarded(torch, shape, dtype, fill, guard=4096):
    """A tensor of `shape` inside a flat buffer with NaN guard zones on both sides."""
    n = math.prod(shape)
    flat = torch.full((n + 2 * guard,), float("nan"), device=DEVICE, dtype=dtype)
    t = flat[guard:guard + n].view(*shape)
    t.fill_(fill)
    return flat, t


def guards_intact(torch, flat, guard=4096):
    return bool(torch.isnan(flat[:guard].float()).all()
                and torch.isnan(flat[-guard:].float()).all())


def reference_grads(torch, q, k, v, do, scale, bias):
    """dQ, dK, dV of O = sigmoid(Q·Kᵀ·scale + bias)·V by float64 autograd; [B, T, heads, D]."""
    H, H_KV = q.shape[2], k.shape[2]
    q64, k64, v64 = (x.double().requires_grad_() for x in (q, k, v))
    kk = k64.repeat_interleave(H // H_KV, dim=2)
    vv = v64.repeat_interleave(H // H_KV, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q64, kk) * scale + bias
    o = torch.einsum("bhqk,bkhd->bqhd", torch.sigmoid(s), vv)
    o.backward(do.double())
    return q64.grad, k64.grad, v64.grad


def backward(torch, kern, q, k, v, do, scale, bias, dq_acc, dk, dv):
    B, T_Q, H, D = q.shape
    T_K, H_KV = k.shape[1], k.shape[2]
    run = kern.prepare({"q_desc": q.data_ptr(), "k_desc": k.data_ptr(), "v_desc": v.data_ptr(),
                        "do_desc": do.data_ptr(), "dq_desc": dq_acc.data_ptr(),
                        "dk_desc": dk.data_ptr(), "dv_desc": dv.data_ptr()},
                       B, T_Q, T_K, H, H_KV, D, scale, bias)
    return run


_REF_CACHE = {}


def check_one(torch, kern, B, T_Q, T_K, H, H_KV, dtype, seed=0):
    D = kern.rec["head_dim"]
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    q = torch.randn(B, T_Q, H, D, device=DEVICE, generator=g).to(dtype)
    k = torch.randn(B, T_K, H_KV, D, device=DEVICE, generator=g).to(dtype)
    v = torch.randn(B, T_K, H_KV, D, device=DEVICE, generator=g).to(dtype)
    do = torch.randn(B, T_Q, H, D, device=DEVICE, generator=g).to(dtype)
    scale, bias = 1.0 / math.sqrt(D), -math.log(T_K)
    dq_flat, dq_acc = guarded(torch, (B, T_Q, H, D), torch.float32, 0.0)
    dk_flat, dk = guarded(torch, (B, T_K, H_KV, D), dtype, float("nan"))
    dv_flat, dv = guarded(torch, (B, T_K, H_KV, D), dtype, float("nan"))
    run = backward(torch, kern, q, k, v, do, scale, bias, dq_acc, dk, dv)
    run(torch.cuda.current_stream().cuda_stream)
    wait_or_die(torch, f"{kern.name} B={B} T_Q={T_Q} T_K={T_K} H={H}/{H_KV}")
    dq = dq_acc.to(dtype)  # the cast a separate kernel does in the library
    key = (B, T_Q, T_K, H, H_KV, D, str(dtype), seed)  # the same inputs for every variant
    if key not in _REF_CACHE:
        _REF_CACHE.clear()
        _REF_CACHE[key] = reference_grads(torch, q, k, v, do, scale, bias)
    refs = _REF_CACHE[key]
    out = {"variant": kern.name, "B": B, "T_Q": T_Q, "T_K": T_K, "H": H, "H_KV": H_KV, "D": D,
           "dtype": str(dtype), "grid": list(run.grid),
           "guards_untouched": all(guards_intact(torch, f) for f in (dq_flat, dk_flat, dv_flat))}
    ok = out["guards_untouched"]
    for name, got, ref in (("dq", dq, refs[0]), ("dk", dk, refs[1]), ("dv", dv, refs[2])):
        gf = got.double()
        finite = bool(torch.isfinite(gf).all())
        err = gf - ref
        rel_l2 = float(err.norm() / ref.norm().clamp_min(1e-30)) if finite else float("inf")
        max_abs = float(err.abs().max()) if finite else float("inf")
        ref_max = float(ref.abs().max())
        good = finite and rel_l2 < 2e-2 and max_abs <= 5e-2 * ref_max + 1e-6
        out[name] = {"ok": good, "non_finite": int((~torch.isfinite(gf)).sum()),
                     "rel_l2": rel_l2, "max_abs": max_abs, "ref_max_abs": ref_max}
        ok = ok and good
    out["ok"] = ok
    return out


def bench_case(torch, kernels, B, T, H, D, dtype, reps, finisher=None):
    g = torch.Generator(device=DEVICE).manual_seed(1)
    q, k, v, do = (torch.randn(B, T, H, D, device=DEVICE, generator=g).to(dtype)
                   for _ in range(4))
    # backward = 2.5x forward, the same count for every provider
    flops = 2.5 * 4.0 * B * H * T * T * D
    stream = torch.cuda.current_stream().cuda_stream
    row = {"B": B, "T": T, "H": H, "D": D, "dtype": str(dtype), "gluon": {}}
    dq_acc = torch.zeros(B, T, H, D, device=DEVICE, dtype=torch.float32)
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    for kern in kernels:
        try:
            run = backward(torch, kern, q, k, v, do, 1.0 / math.sqrt(D), -math.log(T), dq_acc,
                           dk, dv)
            ms_kernel = time_fn(torch, lambda: run(stream), reps)

            def full():  # what a caller pays: zero the accumulator, kernel, cast dQ
                dq_acc.zero_()
                run(stream)
                return dq_acc.to(dtype)
            ms_full = time_fn(torch, full, reps)
            row["gluon"][kern.name] = {"ms_kernel": ms_kernel, "ms": ms_full,
                                       "tflops_kernel": flops / ms_kernel / 1e9,
                                       "tflops": flops / ms_full / 1e9}
            if finisher is not None:
                dq_out = torch.empty(B, T, H, D, device=DEVICE, dtype=dtype)
                zero, cast = finisher.prepare(dq_acc, dq_out)

                def lib():  # memset + kernel + dq_cast: three launches, no allocation
                    zero(stream)
                    run(stream)
                    cast(stream)
                ms_lib = time_fn(torch, lib, reps)
                # the cast kernel rounds as torch does: its dQ is torch's, bit for bit
                same = bool(torch.equal(dq_out, dq_acc.to(dtype)))
                row["gluon"][kern.name].update({"ms_lib": ms_lib, "tflops_lib": flops / ms_lib
                                                / 1e9, "cast_matches_torch": same})
                if not same:
                    raise RuntimeError("dq_cast output differs from torch's .to()")
        except Exception as e:  # noqa: BLE001
            row["gluon"][kern.name] = {"error": f"{type(e).__name__}: {e}"}
            if not context_alive(torch):
                raise RuntimeError(f"CUDA context lost after {kern.name}: {e}") from e
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        qt, kt, vt = (x.transpose(1, 2).detach().requires_grad_() for x in (q, k, v))
        dot = do.transpose(1, 2)
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            o = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)
            ms = time_fn(torch, lambda: torch.autograd.grad(o, (qt, kt, vt), dot,
                                                            retain_graph=True), reps)
        row["cudnn"] = {"ms": ms, "tflops": flops / ms / 1e9}
    except Exception as e:  # noqa: BLE001
        row["cudnn"] = {"error": f"{type(e).__name__}: {e}"}
    return row


def dry_run(recs, build_dir):
    drv = FakeDriver()
    for rec in recs:
        kern = Kernel(drv, rec, build_dir)
        D = rec["head_dim"]
        for (B, T_Q, T_K, H, H_KV) in [(2, 1000, 129, 8, 2), (1, 16384, 16384, 16, 16),
                                       (3, 1, 1, 4, 4)]:
            base = {n: 0x100000 * (i + 1) for i, n in enumerate(rec["descs"])}
            run = kern.prepare(base, B, T_Q, T_K, H, H_KV, D, 1 / math.sqrt(D), -math.log(T_K))
            run(0)
            assert run.grid == (-(-T_K // 128), H_KV, B), run.grid
            arr = run.keep[-1]
            want_scalar = {"T_Q": T_Q, "T_K": T_K, "kv_group": H // H_KV, "SEQ_LENS_Q": 0,
                           "SEQ_LENS_K": 0, "DK": 0, "DV": 0, "stride_kt": 0, "D": D,
                           "BIAS": 0, "SCORE_MOD": 0, "stride_smb": 0, "DMOD": 0,
                           "stride_dmb": 0, "stride_dmh": 0, "BIAS_MODE": 1,
                           "MAX_Q": T_Q, "MAX_K": T_K}
            # Read every parameter back through the void* array, as cuLaunchKernel will.
            for p, ptr in zip(rec["params"], arr):
                raw = ctypes.string_at(ptr, p["size"])
                val = int.from_bytes(raw, "little")
                if p["role"] == "tensormap":
                    assert ptr % 64 == 0 and raw == b"\xab" * 128, p
                elif p["role"] in ("desc_shape", "desc_stride"):
                    shape, strides = run.shapes[DESC_SEQ[p["arg"]]]
                    want = (shape if p["role"] == "desc_shape" else strides)[p["dim"]]
                    assert val == want, (p, val, want)
                elif p["role"] == "scalar" and p["arg"] in want_scalar:
                    assert val == want_scalar[p["arg"]], (p, val)
                elif p["role"] == "scalar":
                    got = ctypes.c_float.from_buffer_copy(raw).value
                    want = 1 / math.sqrt(D) if p["arg"] == "scale" else -math.log(T_K)
                    assert abs(got - want) <= 1e-6 * max(1.0, abs(want)), (p, got, want)
                elif p["role"] == "hidden_ptr":
                    assert raw == b"\0" * 8
            # the descriptors as the driver gets them, innermost first: {D, heads, T, B}
            encs = [c for c in drv.calls if c[0] == "encode"][-len(rec["descs"]):]
            for name, c in zip(rec["descs"], encs):
                T, heads = (T_Q, H) if DESC_SEQ[name] == "q" else (T_K, H_KV)
                eb = HOST_ELEM_BYTES[DESC_DTYPE.get(name, rec["cu_tensor_dtype"])]
                rows, cols = kern.meta[name]["block_size"][1], kern.meta[name]["block_size"][3]
                assert kern.meta[name]["block_size"] == [1, rows, 1, cols], (name, c)
                assert c[2] == [D, heads, T, B] and c[4] == [cols, 1, rows, 1], (name, c)
                assert c[3] == [D * eb, heads * D * eb, T * heads * D * eb], (name, c)
        enc = [c for c in drv.calls if c[0] == "encode"][-len(rec["descs"]):]
        print(f"{rec['name']}: {len(rec['params'])} params OK; grid {run.grid} x "
              f"{rec['threads']} threads, {rec['shared']} B smem; descriptors "
              + "; ".join(f"{n}: dims={c[2]} box={c[4]} swz={c[5]}"
                          for n, c in zip(rec["descs"], enc)))
    print("dry run OK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", type=Path, default=HERE / "build")
    ap.add_argument("--only", default="",
                    help="comma-separated substrings of variant names (any matches)")
    ap.add_argument("--skip", default="",
                    help="comma-separated substrings of variant names to leave out")
    ap.add_argument("--quick", action="store_true", help="fewer shapes and repetitions")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--stress", type=int, default=50,
                    help="repeat each bf16 kernel N times, checking for NaN and that dK, "
                         "dV are bitwise repeatable")
    ap.add_argument("--dtypes", default="bf16,fp16",
                    help="comma-separated dtypes to check, stress and time")
    ap.add_argument("--cases", default="",
                    help="timed (head_dim:T) pairs, e.g. 128:4096,64:4096 (default: hd128 and "
                         "hd64 at T = 1k, 4k, 16k; fp16 at 4k only)")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()

    try:
        meta = json.loads((args.build_dir / "variants.json").read_text())
    except Exception as e:  # noqa: BLE001
        print(f"SETUP ERROR: cannot read {args.build_dir}/variants.json ({e}); run compile.py "
              "and carry benchmarks/gluon_bwd/build", flush=True)
        return 2
    subs = [x for x in args.only.split(",") if x] or [""]
    skip = [x for x in args.skip.split(",") if x]
    dtypes = [x for x in args.dtypes.split(",") if x]
    recs = [r for r in meta["variants"] if any(x in r["name"] for x in subs)
            and not any(x in r["name"] for x in skip) and r["dtype"] in dtypes]
    if not recs:
        print("SETUP ERROR: no variants selected", flush=True)
        return 2
    if args.dry_run:
        dry_run(recs, args.build_dir)
        return 0

    result = RESULT
    result.update({"compiled_with_triton": meta["triton"], "checks": [], "bench": [],
                   "stress": None,
                   "kernels": {r["name"]: {k: r.get(k) for k in (
                       "shared", "threads", "n_regs", "spill_store_bytes", "setmaxnreg")}
                       for r in recs}})
    try:
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        torch.cuda.init()
        torch.empty(1, device=DEVICE)  # makes torch's primary context current
        drv = CudaDriver()
        drv.ensure_context()
        result["device"] = torch.cuda.get_device_name()
        result["torch"] = torch.__version__
        print(f"device {result['device']}, torch {torch.__version__}, kernels compiled with "
              f"Triton {meta['triton']}", flush=True)
        kernels = []
        for rec in recs:
            kern = Kernel(drv, rec, args.build_dir)
            print(f"  loaded {kern.name}: {kern.attrs}, dyn smem {kern.smem}", flush=True)
            kernels.append(kern)
        finishers = {c["dtype"]: Finisher(drv, c, args.build_dir) for c in meta.get("casts", [])
                     if c["dtype"] in dtypes}
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        print(f"SETUP ERROR: {type(e).__name__}: {e}", flush=True)
        return 2

    tdt = {"bf16": torch.bfloat16, "fp16": torch.float16}
    n_fail = 0
    print("\n== correctness (vs float64 autograd; dK/dV poisoned with NaN, NaN guard zones) ==",
          flush=True)
    # (B, T_Q, T_K, H, H_KV): ragged lengths, one block, GQA, T_Q != T_K. Shapes outermost, so
    # every variant of a dtype and head dim reuses one float64 reference.
    shapes = [(2, 1, 1, 4, 4), (2, 17, 17, 4, 4), (2, 129, 129, 4, 4), (2, 1024, 1024, 4, 4),
              (2, 129, 129, 8, 2), (1, 100, 300, 4, 2), (1, 300, 100, 4, 4),
              (1, 4096, 4096, 4, 4)]
    failed = set()
    groups = {}
    for kern in kernels:
        groups.setdefault((kern.rec["dtype"], kern.rec["head_dim"]), []).append(kern)
    for (dt_name, _), group in groups.items():
        for (B, T_Q, T_K, H, H_KV) in shapes:
            if args.quick and dt_name != "bf16" and T_Q == 4096:
                continue
            for kern in group:
                try:
                    c = check_one(torch, kern, B, T_Q, T_K, H, H_KV, tdt[dt_name])
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    c = {"variant": kern.name, "B": B, "T_Q": T_Q, "T_K": T_K, "H": H,
                         "H_KV": H_KV, "ok": False, "error": f"{type(e).__name__}: {e}"}
                result["checks"].append(c)
                n_fail += not c["ok"]
                if not c["ok"]:
                    failed.add(kern.name)
                tag = f"{kern.name} B={B} T_Q={T_Q} T_K={T_K} H={H}/{H_KV}"
                if "error" in c:
                    print(f"  FAIL {tag}: {c['error']}", flush=True)
                    if not context_alive(torch):
                        print("  (the CUDA context is unusable after this error: stopping)")
                        return finish(result, 1)
                    continue
                errs = " ".join(f"{n}: rel_l2={c[n]['rel_l2']:.2e} max_abs={c[n]['max_abs']:.2e}"
                                f"{'' if c[n]['ok'] else ' BAD'}" for n in ("dq", "dk", "dv"))
                print(f"  {'ok  ' if c['ok'] else 'FAIL'} {tag}: {errs} "
                      f"guards_untouched={c['guards_untouched']}", flush=True)
    result["failed_variants"] = sorted(failed)

    main_k = [k for k in kernels if k.rec["dtype"] == "bf16" and k.name not in failed]
    result["stress"] = {}
    if args.stress and main_k:
        print("\n== stress (B=2, T=2048, H=8, std 0.5; every bf16 variant that passed) ==",
              flush=True)
    for kern in (main_k if args.stress else []):
        B, T, H, D = 2, 2048, 8, kern.rec["head_dim"]
        g = torch.Generator(device=DEVICE).manual_seed(7)
        q, k, v, do = (torch.randn(B, T, H, D, device=DEVICE, generator=g).mul(0.5)
                       .to(torch.bfloat16) for _ in range(4))
        dq_acc = torch.zeros(B, T, H, D, device=DEVICE, dtype=torch.float32)
        dk, dv = torch.empty_like(k), torch.empty_like(v)
        run = backward(torch, kern, q, k, v, do, 1 / math.sqrt(D), -math.log(T), dq_acc, dk, dv)
        stream = torch.cuda.current_stream().cuda_stream
        bad = torch.zeros((), dtype=torch.int64, device=DEVICE)
        first = None
        for i in range(args.stress):
            dk.fill_(float("nan"))
            dv.fill_(float("nan"))
            dq_acc.zero_()
            run(stream)
            bad += (~torch.isfinite(dk)).any() | (~torch.isfinite(dv)).any() \
                | (~torch.isfinite(dq_acc)).any()
            if i == 0:
                wait_or_die(torch, "stress first call")
                first = (dk.clone(), dv.clone(), dq_acc.clone())
        wait_or_die(torch, "stress loop")
        same = bool(torch.equal(first[0], dk) and torch.equal(first[1], dv))
        # dQ is a sum of fp32 TMA reductions in arrival order: equal up to rounding only.
        dq_dev = float((first[2] - dq_acc).abs().max() / dq_acc.abs().max().clamp_min(1e-30))
        result["stress"][kern.name] = {"calls": args.stress, "calls_with_non_finite": int(bad),
                                       "dk_dv_bitwise_repeatable": same,
                                       "dq_max_rel_deviation": dq_dev}
        print(f"  stress {kern.name}: {args.stress} calls, {int(bad)} with non-finite output, "
              f"dK/dV bitwise repeatable={same}, dQ max deviation {dq_dev:.1e}", flush=True)
        n_fail += int(bad) > 0 or not same or dq_dev > 1e-4

    if not args.no_bench:
        print("\n== timing (median of CUDA events; TFLOPS = 2.5*4*B*H*T^2*D / t; 'full' adds "
              "torch's dQ_acc.zero_() and .to(); 'lib' adds cuMemsetD32Async and the AOT "
              "dq_cast kernel instead) ==", flush=True)
        reps = 10 if args.quick else 30
        cases = [(16, 1024, 16, 128), (4, 4096, 16, 128), (1, 16384, 16, 128),
                 (4, 4096, 32, 64), (1, 16384, 32, 64), (16, 1024, 32, 64)]
        picked = {tuple(int(x) for x in c.split(":")) for c in args.cases.split(",") if c}
        if picked:  # B·T = 16384, H·D = 2048
            cases = [(16384 // T, T, 2048 // D, D) for (D, T) in sorted(picked, reverse=True)]
        for dt_name in [d for d in ("bf16", "fp16") if d in dtypes]:
            for (B, T, H, D) in cases:
                if args.quick and (dt_name == "fp16" or (D == 64 and T != 4096)):
                    continue
                if dt_name == "fp16" and T != 4096 and not picked:
                    continue
                ks = [k for k in kernels if k.rec["head_dim"] == D and k.rec["dtype"] == dt_name
                      and k.name not in failed]  # timed only once correct
                if not ks:
                    continue
                try:
                    row = bench_case(torch, ks, B, T, H, D, tdt[dt_name], reps,
                                     finishers.get(dt_name))
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    print(f"  BENCH ABORTED: {e}", flush=True)
                    return finish(result, 1)
                result["bench"].append(row)
                peer = row["cudnn"].get("tflops")
                print(f"  {dt_name} B={B} T={T} H={H} D={D}: cuDNN bwd "
                      + (f"{peer:.0f} TFLOPS" if peer else row["cudnn"]["error"]), flush=True)
                for name, g in row["gluon"].items():
                    if "error" in g:
                        print(f"    {name}: ERROR {g['error']}", flush=True)
                        continue
                    ratio = (f" ({g['tflops_kernel'] / peer:.2f}x / {g['tflops'] / peer:.2f}x "
                             "cuDNN)") if peer else ""
                    lib = (f"; lib {g['ms_lib']:.3f} ms {g['tflops_lib']:.0f} TFLOPS"
                           + (f" ({g['tflops_lib'] / peer:.2f}x)" if peer else "")
                           if "ms_lib" in g else "")
                    print(f"    {name}: kernel {g['ms_kernel']:.3f} ms "
                          f"{g['tflops_kernel']:.0f} TFLOPS; full {g['ms']:.3f} ms "
                          f"{g['tflops']:.0f} TFLOPS{ratio}{lib}", flush=True)
    return finish(result, 1 if n_fail else 0)


if __name__ == "__main__":
    sys.exit(main())
