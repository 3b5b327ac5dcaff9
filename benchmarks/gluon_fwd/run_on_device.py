"""Run the ahead-of-time compiled Gluon sigmoid-attention forward on the GPU, without Triton.

    python3 benchmarks/gluon_fwd/run_on_device.py [--build-dir DIR] [--only SUBSTR] [--quick]
                                                  [--stress N] [--no-bench]
    python3 benchmarks/gluon_fwd/run_on_device.py --dry-run     # CPU: argument packing only

Loads build/<variant>.cubin with the CUDA driver API through ctypes (cuModuleLoadData,
cuModuleGetFunction, cuFuncSetAttribute for dynamic shared memory), encodes host TMA
descriptors with cuTensorMapEncodeTiled (box, swizzle and data type from the compiled kernel's
tensordesc metadata in build/variants.json), launches with cuLaunchKernel on torch's current
stream, checks against a float64 torch reference, and times against SDPA (cuDNN, softmax).
Writes $OUT/gluon_fwd.json when $OUT is set. Exit status: 0 all correct, 1 a check failed,
2 setup error, 3 a kernel did not finish within the watchdog (hang).
"""

import argparse
import ctypes
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------------------------
# CUDA driver API through ctypes
# ----------------------------------------------------------------------------------------------

CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0
CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1
CU_FUNC_ATTRIBUTE_NUM_REGS = 4
CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES = 3
CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
CU_TENSOR_MAP_INTERLEAVE_NONE = 0
CU_TENSOR_MAP_L2_PROMOTION_L2_128B = 2
CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE = 0  # out-of-bounds elements read as zeros
# Triton's device-side TMA dtype enum -> host CUtensorMapDataType (triton/backends/nvidia/driver.py)
TMA_DTYPE_DEVICE_TO_HOST = {i: i for i in range(16)}
TMA_DTYPE_DEVICE_TO_HOST.update({8: 10, 9: 8, 10: 9})

u32, u64, vp = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_void_p


class AlignedBlob:
    """`size` bytes at a `align`-byte aligned address (ctypes has no _align_ before 3.13);
    used for CUtensorMap, which is 64-byte aligned by definition."""

    def __init__(self, size=128, align=64):
        self._raw = ctypes.create_string_buffer(size + align)
        base = ctypes.addressof(self._raw)
        self.addr = (base + align - 1) // align * align
        self.size = size

    def bytes(self):
        return ctypes.string_at(self.addr, self.size)


class CudaDriver:
    def __init__(self):
        try:
            self.lib = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            raise RuntimeError(f"cannot load libcuda.so.1: {e}") from e
        L = self.lib
        sig = {
            "cuGetErrorName": (ctypes.c_int, [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]),
            "cuGetErrorString": (ctypes.c_int, [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]),
            "cuInit": (ctypes.c_int, [ctypes.c_uint]),
            "cuCtxGetCurrent": (ctypes.c_int, [ctypes.POINTER(vp)]),
            "cuModuleLoadData": (ctypes.c_int, [ctypes.POINTER(vp), ctypes.c_char_p]),
            "cuModuleUnload": (ctypes.c_int, [vp]),
            "cuModuleGetFunction": (ctypes.c_int, [ctypes.POINTER(vp), vp, ctypes.c_char_p]),
            "cuFuncSetAttribute": (ctypes.c_int, [vp, ctypes.c_int, ctypes.c_int]),
            "cuFuncGetAttribute": (ctypes.c_int, [ctypes.POINTER(ctypes.c_int), ctypes.c_int, vp]),
            # CUresult cuTensorMapEncodeTiled(CUtensorMap*, CUtensorMapDataType, cuuint32_t rank,
            #   void* globalAddress, const cuuint64_t* globalDim,
            #   const cuuint64_t* globalStrides /* rank-1, bytes */, const cuuint32_t* boxDim,
            #   const cuuint32_t* elementStrides, CUtensorMapInterleave, CUtensorMapSwizzle,
            #   CUtensorMapL2promotion, CUtensorMapFloatOOBfill)   -- enums are C ints
            "cuTensorMapEncodeTiled": (ctypes.c_int, [
                vp, ctypes.c_int, u32, vp, ctypes.POINTER(u64), ctypes.POINTER(u64),
                ctypes.POINTER(u32), ctypes.POINTER(u32), ctypes.c_int, ctypes.c_int,
                ctypes.c_int, ctypes.c_int]),
            # CUresult cuLaunchKernel(CUfunction f, unsigned gridDimX, gridDimY, gridDimZ,
            #   blockDimX, blockDimY, blockDimZ, unsigned sharedMemBytes, CUstream hStream,
            #   void** kernelParams, void** extra)
            "cuLaunchKernel": (ctypes.c_int, [
                vp, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                ctypes.c_uint, ctypes.c_uint, vp, ctypes.POINTER(vp), ctypes.POINTER(vp)]),
        }
        for name, (res, args) in sig.items():
            f = getattr(L, name)
            f.restype, f.argtypes = res, args

    def err(self, code):
        name, s = ctypes.c_char_p(), ctypes.c_char_p()
        self.lib.cuGetErrorName(code, ctypes.byref(name))
        self.lib.cuGetErrorString(code, ctypes.byref(s))
        return f"{code} {name.value.decode() if name.value else '?'}: " \
               f"{s.value.decode() if s.value else '?'}"

    def check(self, code, what):
        if code != 0:
            raise RuntimeError(f"{what} failed: CUDA error {self.err(code)}")

    def ensure_context(self):
        ctx = vp()
        self.check(self.lib.cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
        if not ctx.value:
            raise RuntimeError("no current CUDA context (torch should have made its primary "
                               "context current)")

    def load(self, image: bytes, entry: str, dyn_smem: int):
        mod, fn = vp(), vp()
        self.check(self.lib.cuModuleLoadData(ctypes.byref(mod), image), "cuModuleLoadData")
        self.check(self.lib.cuModuleGetFunction(ctypes.byref(fn), mod, entry.encode()),
                   f"cuModuleGetFunction({entry})")
        self.check(self.lib.cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                               dyn_smem),
                   f"cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES={dyn_smem})")
        attrs = {}
        for nm, a in (("num_regs", CU_FUNC_ATTRIBUTE_NUM_REGS),
                      ("max_threads", CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK),
                      ("static_smem", CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES),
                      ("local_bytes", CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)):
            v = ctypes.c_int()
            self.check(self.lib.cuFuncGetAttribute(ctypes.byref(v), a, fn), "cuFuncGetAttribute")
            attrs[nm] = v.value
        return mod, fn, attrs

    def encode_tiled(self, blob, dtype, addr, dims, strides_bytes, box, swizzle):
        """dims/strides_bytes/box innermost first (the driver's order); strides_bytes has
        rank-1 entries (dim 0 is contiguous)."""
        rank = len(dims)
        gd = (u64 * rank)(*dims)
        gs = (u64 * max(rank - 1, 1))(*strides_bytes)
        bd = (u32 * rank)(*box)
        es = (u32 * rank)(*([1] * rank))
        code = self.lib.cuTensorMapEncodeTiled(
            vp(blob.addr), dtype, rank, vp(addr), gd, gs, bd, es, CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE)
        self.check(code, f"cuTensorMapEncodeTiled(dtype={dtype}, dims={dims}, "
                         f"strides={strides_bytes}, box={box}, swizzle={swizzle}, "
                         f"addr=0x{addr:x})")

    def launch(self, fn, grid, threads, smem, stream, params_array):
        code = self.lib.cuLaunchKernel(fn, grid[0], grid[1], grid[2], threads, 1, 1, smem,
                                       vp(stream), params_array, None)
        self.check(code, f"cuLaunchKernel(grid={grid}, threads={threads}, smem={smem})")


class FakeDriver:
    """--dry-run: records what would be passed, checks the driver's documented constraints."""

    def __init__(self):
        self.calls = []

    def ensure_context(self):
        pass

    def load(self, image, entry, dyn_smem):
        assert image[:4] == b"\x7fELF", "cubin is not an ELF image"
        assert dyn_smem <= 232448, f"dynamic shared memory {dyn_smem} > 227 KB"
        return None, None, {}

    def encode_tiled(self, blob, dtype, addr, dims, strides_bytes, box, swizzle):
        rank = len(dims)
        assert 1 <= rank <= 5 and len(box) == rank and len(strides_bytes) == rank - 1
        assert blob.addr % 64 == 0
        assert addr % 16 == 0, "global address must be 16-byte aligned"
        assert all(s % 16 == 0 and s < (1 << 40) for s in strides_bytes), strides_bytes
        assert all(1 <= b <= 256 for b in box), box
        assert all(b <= d or True for b, d in zip(box, dims))
        elem = {9: 2, 6: 2}[dtype]
        assert (box[0] * elem) % 16 == 0
        if swizzle == 3:
            assert box[0] * elem <= 128, "128B swizzle: inner box must be <= 128 bytes"
        ctypes.memset(blob.addr, 0xAB, 128)
        self.calls.append(("encode", dtype, dims, strides_bytes, box, swizzle))

    def launch(self, fn, grid, threads, smem, stream, params_array):
        self.calls.append(("launch", grid, threads, smem))


# ----------------------------------------------------------------------------------------------
# The kernel's argument list, built from the compiled PTX parameter list (build/variants.json)
# ----------------------------------------------------------------------------------------------

class Kernel:
    def __init__(self, drv, rec, build_dir):
        self.drv, self.rec = drv, rec
        self.name = rec["name"]
        image = (build_dir / rec["cubin"]).read_bytes()
        self.smem = int(rec["shared"])
        self.threads = int(rec["threads"])
        self.mod, self.fn, self.attrs = drv.load(image, rec["entry"], self.smem)
        if rec["global_scratch_size"] or rec["profile_scratch_size"]:
            raise RuntimeError(f"{self.name}: needs global/profile scratch "
                               f"({rec['global_scratch_size']}, {rec['profile_scratch_size']}); "
                               "this runner passes null hidden pointers")
        self.descs = ["q_desc", "k_desc", "v_desc", "o_desc"]
        self.meta = dict(zip(self.descs, rec["tensordesc_meta"]))
        for d, m in self.meta.items():
            if TMA_DTYPE_DEVICE_TO_HOST[m["elem_type"]] != rec["cu_tensor_dtype"]:
                raise RuntimeError(f"{self.name}: {d} elem_type {m['elem_type']} does not map "
                                   f"to host dtype {rec['cu_tensor_dtype']}")
            if m.get("is_im2col") or m.get("fp4_padded"):
                raise RuntimeError(f"{self.name}: unsupported descriptor kind {m}")

    def prepare(self, q, k, v, o, B, T, H, D, scale, bias):
        """Encodes the four descriptors and packs every parameter; returns a launcher
        closure. q/k/v/o: data pointers of contiguous [B, T, H, D] tensors."""
        rec = self.rec
        assert D == rec["head_dim"], (D, rec["head_dim"])
        eb = rec["elem_bytes"]
        # Gluon order (outermost first): [B, T, H*D], strides in elements
        shape = [B, T, H * D]
        strides = [T * H * D, H * D, 1]
        keep = []
        values = {}
        for name, ptr in zip(self.descs, (q, k, v, o)):
            m = self.meta[name]
            blob = AlignedBlob(128, 64)
            box = list(reversed(m["block_size"]))       # innermost first
            dims = list(reversed(shape))
            sbytes = [s * eb for s in reversed(strides)][1:]
            self.drv.encode_tiled(blob, rec["cu_tensor_dtype"], ptr, dims, sbytes, box,
                                  m["swizzle"])
            values[name] = blob
            keep.append(blob)
        scalars = {"T_K": ctypes.c_int32(T), "kv_group": ctypes.c_int32(1),
                   "scale": ctypes.c_float(scale), "bias_value": ctypes.c_float(bias)}
        ptrs = []
        for p in rec["params"]:
            role = p["role"]
            if role == "tensormap":
                blob = values[p["arg"]]
                ptrs.append(blob.addr)
                continue
            if role == "desc_shape":
                obj = ctypes.c_int32(shape[p["dim"]])
            elif role == "desc_stride":
                obj = ctypes.c_int64(strides[p["dim"]])
            elif role == "scalar":
                obj = scalars[p["arg"]]
            elif role == "hidden_ptr":
                obj = ctypes.c_uint64(0)
            else:
                raise RuntimeError(f"unknown parameter role {role}")
            if ctypes.sizeof(obj) != p["size"]:
                raise RuntimeError(f"{p}: packed {ctypes.sizeof(obj)} bytes")
            keep.append(obj)
            ptrs.append(ctypes.addressof(obj))
        arr = (vp * len(ptrs))(*ptrs)
        keep.append(arr)
        grid = (-(-T // rec["block_m"]), H, B)

        def run(stream):
            self.drv.launch(self.fn, grid, self.threads, self.smem, stream, arr)
        run.keep = keep  # parameters stay alive as long as the closure
        run.grid = grid
        return run


# ----------------------------------------------------------------------------------------------
# GPU checks and timing
# ----------------------------------------------------------------------------------------------

WATCHDOG_S = 20.0
DEVICE = "cuda"
RESULT = {}


def context_alive(torch):
    """False after a sticky error (illegal address, launch failure): nothing more can run."""
    try:
        torch.cuda.synchronize()
        torch.zeros(1, device=DEVICE).add_(1).item()
        return True
    except Exception:  # noqa: BLE001
        return False


def wait_or_die(torch, what):
    ev = torch.cuda.Event()
    ev.record()
    t0 = time.time()
    while not ev.query():
        if time.time() - t0 > WATCHDOG_S:
            print(f"\nHANG: {what} did not finish within {WATCHDOG_S}s; aborting", flush=True)
            RESULT["hang"] = what
            finish(RESULT, 3)
            os._exit(3)
        time.sleep(0.0005)
    torch.cuda.synchronize()  # surfaces asynchronous errors (illegal address, ...)


def reference(torch, q, k, v, scale, bias):
    """float64 sigmoid attention, [B, T, H, D] in and out, one (b, h) at a time."""
    B, T, H, D = q.shape
    out = torch.empty(B, T, H, D, dtype=torch.float64, device=q.device)
    for b in range(B):
        for h in range(H):
            qq = q[b, :, h].double()
            kk = k[b, :, h].double()
            vv = v[b, :, h].double()
            p = torch.sigmoid(qq @ kk.T * scale + bias)
            out[b, :, h] = p @ vv
    return out


def check_one(torch, kern, B, T, H, D, dtype, seed=0, std=1.0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    q = (torch.randn(B, T, H, D, device=DEVICE, generator=g) * std).to(dtype)
    k = (torch.randn(B, T, H, D, device=DEVICE, generator=g) * std).to(dtype)
    v = torch.randn(B, T, H, D, device=DEVICE, generator=g).to(dtype)
    guard = 4096
    flat = torch.full((B * T * H * D + 2 * guard,), float("nan"), device=DEVICE, dtype=dtype)
    o = flat[guard:guard + B * T * H * D].view(B, T, H, D)
    scale, bias = 1.0 / math.sqrt(D), -math.log(T)
    run = kern.prepare(q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), B, T, H, D,
                       scale, bias)
    run(torch.cuda.current_stream().cuda_stream)
    wait_or_die(torch, f"{kern.name} B={B} T={T}")
    ref = reference(torch, q, k, v, scale, bias)
    of = o.double()
    finite = bool(torch.isfinite(of).all())
    n_nan = int((~torch.isfinite(of)).sum())
    guards_ok = bool(torch.isnan(flat[:guard].float()).all() and
                     torch.isnan(flat[-guard:].float()).all())
    err = (of - ref)
    rel_l2 = float(err.norm() / ref.norm()) if finite else float("inf")
    max_abs = float(err.abs().max()) if finite else float("inf")
    ref_max = float(ref.abs().max())
    ok = finite and guards_ok and rel_l2 < 2e-2 and max_abs < 5e-2 * ref_max
    return {"variant": kern.name, "B": B, "T": T, "H": H, "D": D, "dtype": str(dtype),
            "ok": ok, "finite": finite, "non_finite": n_nan, "guards_untouched": guards_ok,
            "rel_l2": rel_l2, "max_abs": max_abs, "ref_max_abs": ref_max}


def time_fn(torch, fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    wait_or_die(torch, "warm-up")
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        starts[i].record()
        fn()
        ends[i].record()
    wait_or_die(torch, "timed loop")
    ts = sorted(s.elapsed_time(e) for s, e in zip(starts, ends))
    return ts[len(ts) // 2]


def bench_case(torch, kernels, B, T, H, D, dtype, reps):
    g = torch.Generator(device=DEVICE).manual_seed(1)
    q = torch.randn(B, T, H, D, device=DEVICE, generator=g).to(dtype)
    k = torch.randn(B, T, H, D, device=DEVICE, generator=g).to(dtype)
    v = torch.randn(B, T, H, D, device=DEVICE, generator=g).to(dtype)
    o = torch.empty_like(q)
    flops = 4.0 * B * H * T * T * D
    stream = torch.cuda.current_stream().cuda_stream
    row = {"B": B, "T": T, "H": H, "D": D, "dtype": str(dtype), "gluon": {}}
    for kern in kernels:
        try:
            run = kern.prepare(q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), B, T, H,
                               D, 1.0 / math.sqrt(D), -math.log(T))
            ms = time_fn(torch, lambda: run(stream), reps)
            row["gluon"][kern.name] = {"ms": ms, "tflops": flops / ms / 1e9}
        except Exception as e:  # noqa: BLE001
            row["gluon"][kern.name] = {"error": f"{type(e).__name__}: {e}"}
            if not context_alive(torch):
                raise RuntimeError(f"CUDA context lost after {kern.name}: {e}") from e
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, T, D] views
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            f = lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)  # noqa
            ms = time_fn(torch, f, reps)
        row["cudnn"] = {"ms": ms, "tflops": flops / ms / 1e9}
    except Exception as e:  # noqa: BLE001
        row["cudnn"] = {"error": f"{type(e).__name__}: {e}"}
    return row


def dry_run(recs, build_dir):
    drv = FakeDriver()
    for rec in recs:
        kern = Kernel(drv, rec, build_dir)
        for (B, T, H, D) in [(2, 1000, 8, rec["head_dim"]), (1, 16384, 16, rec["head_dim"])]:
            run = kern.prepare(0x10000, 0x20000, 0x30000, 0x40000, B, T, H, D,
                               1 / math.sqrt(D), -math.log(T))
            run(0)
            arr = run.keep[-1]
            # Read every parameter back through the void* array, as cuLaunchKernel will.
            for p, ptr in zip(rec["params"], arr):
                raw = ctypes.string_at(ptr, p["size"])
                if p["role"] == "tensormap":
                    assert ptr % 64 == 0 and raw == b"\xab" * 128, p
                elif p["role"] == "desc_shape":
                    assert int.from_bytes(raw, "little") == [B, T, H * D][p["dim"]], p
                elif p["role"] == "desc_stride":
                    assert int.from_bytes(raw, "little") == [T * H * D, H * D, 1][p["dim"]], p
                elif p["role"] == "scalar" and p["arg"] in ("T_K", "kv_group"):
                    want = T if p["arg"] == "T_K" else 1
                    assert int.from_bytes(raw, "little") == want, p
                elif p["role"] == "hidden_ptr":
                    assert raw == b"\0" * 8
        enc = [c for c in drv.calls if c[0] == "encode"][-4:]
        print(f"{rec['name']}: {len(rec['params'])} params OK; grid {run.grid} x "
              f"{rec['threads']} threads, {rec['shared']} B smem; descriptors "
              + "; ".join(f"dims={c[2]} strides={c[3]} box={c[4]} swz={c[5]}" for c in enc[:2]))
    print("dry run OK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", type=Path, default=HERE / "build")
    ap.add_argument("--only", default="", help="substring of variant names")
    ap.add_argument("--quick", action="store_true", help="fewer shapes and repetitions")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--stress", type=int, default=100,
                    help="repeat the main hd128 kernel N times at B=4 T=4096 checking for NaN")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()

    try:
        meta = json.loads((args.build_dir / "variants.json").read_text())
    except Exception as e:  # noqa: BLE001
        print(f"SETUP ERROR: cannot read {args.build_dir}/variants.json ({e}); run compile.py "
              "and carry benchmarks/gluon_fwd/build", flush=True)
        return 2
    recs = [r for r in meta["variants"] if args.only in r["name"]]
    if not recs:
        print("SETUP ERROR: no variants selected", flush=True)
        return 2
    if args.dry_run:
        dry_run(recs, args.build_dir)
        return 0

    result = RESULT
    result.update({"compiled_with_triton": meta["triton"], "checks": [], "bench": [],
                   "stress": None})
    try:
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        torch.cuda.init()
        torch.empty(1, device=DEVICE)  # makes torch's primary context current
        drv = CudaDriver()
        drv.ensure_context()
        dev = torch.cuda.get_device_name()
        result["device"] = dev
        result["torch"] = torch.__version__
        print(f"device {dev}, torch {torch.__version__}, kernels compiled with Triton "
              f"{meta['triton']}", flush=True)
        kernels = []
        for rec in recs:
            kern = Kernel(drv, rec, args.build_dir)
            print(f"  loaded {kern.name}: {kern.attrs}, dyn smem {kern.smem}", flush=True)
            kernels.append(kern)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        print(f"SETUP ERROR: {type(e).__name__}: {e}", flush=True)
        return 2

    tdt = {"bf16": torch.bfloat16, "fp16": torch.float16}
    n_fail = 0
    # 1. correctness: main variants on every shape, the others on a short list
    print("\n== correctness (vs float64; output poisoned with NaN, guard zones around it) ==",
          flush=True)
    for kern in kernels:
        r = kern.rec
        main_cfg = r["name"].endswith("_m128_n128_s2_ov")
        shapes = [(2, 128, 8), (2, 1000, 8), (2, 4096, 8)] if (main_cfg and not args.quick) \
            else [(2, 128, 8), (2, 1000, 8)]
        for (B, T, H) in shapes:
            try:
                c = check_one(torch, kern, B, T, H, r["head_dim"], tdt[r["dtype"]])
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                c = {"variant": kern.name, "B": B, "T": T, "H": H, "ok": False,
                     "error": f"{type(e).__name__}: {e}"}
            result["checks"].append(c)
            n_fail += not c["ok"]
            if "error" in c:
                print(f"  FAIL {kern.name} B={B} T={T} H={H}: {c['error']}", flush=True)
                if not context_alive(torch):
                    print("  (the CUDA context is unusable after this error: stopping)")
                    return finish(result, 1)
            else:
                print(f"  {'ok  ' if c['ok'] else 'FAIL'} {kern.name} B={B} T={T} H={H}: "
                      f"rel_l2={c['rel_l2']:.2e} max_abs={c['max_abs']:.2e} "
                      f"(ref max {c['ref_max_abs']:.2e}) non_finite={c['non_finite']} "
                      f"guards_untouched={c['guards_untouched']}", flush=True)

    # 2. repeated calls of the main kernel, looking for NaN (the WS race lesson)
    main_k = [k for k in kernels if k.name == "gfwd_bf16_d128_m128_n128_s2_ov"]
    if args.stress and main_k:
        kern = main_k[0]
        B, T, H, D = 4, 4096, 8, 128
        g = torch.Generator(device=DEVICE).manual_seed(7)
        q, k, v = (torch.randn(B, T, H, D, device=DEVICE, generator=g).mul(0.5)
                   .to(torch.bfloat16) for _ in range(3))
        o = torch.empty_like(q)
        run = kern.prepare(q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), B, T, H, D,
                           1 / math.sqrt(D), -math.log(T))
        stream = torch.cuda.current_stream().cuda_stream
        bad = torch.zeros((), dtype=torch.int64, device=DEVICE)
        first = None
        for i in range(args.stress):
            o.fill_(float("nan"))
            run(stream)
            bad += (~torch.isfinite(o)).any().to(torch.int64)
            if i == 0:
                wait_or_die(torch, "stress first call")
                first = o.clone()
        wait_or_die(torch, "stress loop")
        same = bool(torch.equal(first, o))
        result["stress"] = {"calls": args.stress, "calls_with_non_finite": int(bad),
                            "last_equals_first": same}
        print(f"\n== stress: {args.stress} calls, {int(bad)} with non-finite output, "
              f"deterministic={same} ==", flush=True)
        n_fail += int(bad) > 0 or not same

    # 3. timing vs SDPA cuDNN
    if not args.no_bench:
        print("\n== timing (median of CUDA-event times; TFLOPS = 4*B*H*T^2*D / t) ==", flush=True)
        reps = 10 if args.quick else 30
        cases = [(16, 1024, 16, 128), (4, 4096, 16, 128), (1, 16384, 16, 128),
                 (4, 4096, 32, 64)]
        for dt_name in ("bf16", "fp16"):
            for (B, T, H, D) in cases:
                if dt_name == "fp16" and (T != 4096 or args.quick):
                    continue
                ks = [k for k in kernels if k.rec["head_dim"] == D and k.rec["dtype"] == dt_name]
                if not ks:
                    continue
                try:
                    row = bench_case(torch, ks, B, T, H, D, tdt[dt_name], reps)
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    print(f"  BENCH ABORTED: {e}", flush=True)
                    return finish(result, 1)
                result["bench"].append(row)
                peer = row["cudnn"].get("tflops")
                print(f"  {dt_name} B={B} T={T} H={H} D={D}: cuDNN "
                      + (f"{peer:.0f} TFLOPS" if peer else row["cudnn"]["error"]), flush=True)
                for name, g in row["gluon"].items():
                    if "error" in g:
                        print(f"    {name}: ERROR {g['error']}", flush=True)
                    else:
                        ratio = f" ({g['tflops'] / peer:.2f}x cuDNN)" if peer else ""
                        print(f"    {name}: {g['ms']:.3f} ms {g['tflops']:.0f} TFLOPS{ratio}",
                              flush=True)
    return finish(result, 1 if n_fail else 0)


def finish(result, rc):
    result["rc"] = rc
    out = os.environ.get("OUT")
    if out:
        p = Path(out) / "gluon_fwd.json"
        p.write_text(json.dumps(result, indent=1))
        print(f"wrote {p}")
    print("RESULT:", "all checks passed" if rc == 0 else "SOME CHECKS FAILED", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
