"""Run the ahead-of-time compiled persistent Gluon sigmoid-attention forward on the GPU, without
Triton.

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

DESC_RANK = 4  # the descriptors are [B, T, heads, D] (triton_src/variants.py DESC_RANK)


def desc_layout(B, T, heads, D):
    """A contiguous [B, T, heads, D] tensor as its rank-4 descriptor sees it, outermost first
    (Gluon's order): (shape, strides in elements)."""
    return [B, T, heads, D], [T * heads * D, heads * D, D, 1]


def encode_desc(drv, blob, cu_dtype, elem_bytes, addr, shape, strides, meta):
    """Encodes one descriptor into blob as the driver wants it, innermost first: dims
    {D, heads, T, B}, the 3 outer strides in bytes {D, heads·D, T·heads·D} · elem_bytes, and the
    box of the compiled metadata ([1, rows, 1, columns] outermost first) reversed."""
    if len(shape) != DESC_RANK or len(meta["block_size"]) != DESC_RANK:
        raise RuntimeError(f"rank-{DESC_RANK} descriptor expected: shape {shape}, box "
                           f"{meta['block_size']}")
    dims = list(reversed(shape))
    sbytes = [s * elem_bytes for s in reversed(strides)][1:]
    box = list(reversed(meta["block_size"]))
    drv.encode_tiled(blob, cu_dtype, addr, dims, sbytes, box, meta["swizzle"])

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

    def prepare(self, q, k, v, o, B, T, H, D, scale, bias, h_kv=None, seq_lens_q=0,
                seq_lens_k=0, programs=132):
        """Encodes the four descriptors and packs every parameter; returns a launcher
        closure. q/o: data pointers of contiguous [B, T, H, D] tensors, k/v of [B, T, h_kv, D]
        (h_kv = H unless given; GQA when smaller). seq_lens_q/k: device pointers to int32 [B]
        (0 when the variant has no lengths). The grid is min(programs, tiles)."""
        rec = self.rec
        assert D == rec["head_dim"], (D, rec["head_dim"])
        h_kv = H if h_kv is None else h_kv
        assert H % h_kv == 0
        eb = rec["elem_bytes"]
        layouts = {"q_desc": desc_layout(B, T, H, D), "o_desc": desc_layout(B, T, H, D),
                   "k_desc": desc_layout(B, T, h_kv, D), "v_desc": desc_layout(B, T, h_kv, D)}
        shapes = {n: sh for n, (sh, _) in layouts.items()}
        strides = {n: st for n, (_, st) in layouts.items()}
        keep = []
        values = {}
        for name, ptr in zip(self.descs, (q, k, v, o)):
            blob = AlignedBlob(128, 64)
            encode_desc(self.drv, blob, rec["cu_tensor_dtype"], eb, ptr, shapes[name],
                        strides[name], self.meta[name])
            values[name] = blob
            keep.append(blob)
        scalars = {"T_K": ctypes.c_int32(T), "T_Q": ctypes.c_int32(T), "H": ctypes.c_int32(H),
                   "B": ctypes.c_int32(B), "kv_group": ctypes.c_int32(H // h_kv),
                   "scale": ctypes.c_float(scale), "bias_value": ctypes.c_float(bias),
                   "SEQ_LENS_Q": ctypes.c_uint64(seq_lens_q),
                   "SEQ_LENS_K": ctypes.c_uint64(seq_lens_k),
                   "O": ctypes.c_uint64(0), "stride_ot": ctypes.c_int32(0),  # (packed only)
                   "D": ctypes.c_int32(D),  # the tensors' head dim (the box's: asserted above)
                   # no bias tensor, no score_mod: BIAS_MODE 1 (bias_value; with lengths the
                   # probe's variants take the default, 0, which derives -log(Lk))
                   "BIAS": ctypes.c_uint64(0), "SCORE_MOD": ctypes.c_uint64(0),
                   "stride_smb": ctypes.c_int64(0),
                   "BIAS_MODE": ctypes.c_int32(0 if seq_lens_q else 1),
                   "MAX_Q": ctypes.c_int32(T), "MAX_K": ctypes.c_int32(T),
                   # (the split last wave is the library's: off here)
                   "WS": ctypes.c_uint64(0), "FLAGS": ctypes.c_uint64(0),
                   "SCHEDULE": ctypes.c_int32(0)}
        ptrs = []
        for p in rec["params"]:
            role = p["role"]
            if role == "tensormap":
                blob = values[p["arg"]]
                ptrs.append(blob.addr)
                continue
            if role == "desc_shape":
                obj = ctypes.c_int32(shapes[p["arg"]][p["dim"]])
            elif role == "desc_stride":
                obj = ctypes.c_int64(strides[p["arg"]][p["dim"]])
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
        n_m = -(-T // rec["block_m"])
        grid = (max(1, min(programs, n_m * H * B)), 1, 1)

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
# The JSON finish() writes under $OUT (the backward runner, which shares these helpers, sets its
# own name, watchdog and RESULT here).
JSON_NAME = "gluon_fwd.json"


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


def reference(torch, q, k, v, scale, bias, causal=False, lq=None, lk=None):
    """float64 sigmoid attention, q [B, T, H, D], k/v [B, T, H_KV, D] in, [B, T, H, D] out:
    keys j < lk[b] (and j <= i when causal), rows i >= lq[b] zero; bias: a float or [B]."""
    B, T, H, D = q.shape
    g = H // k.shape[2]
    qq = q.double().permute(0, 2, 1, 3)                                   # B H T D
    kk = k.double().repeat_interleave(g, dim=2).permute(0, 2, 1, 3)
    vv = v.double().repeat_interleave(g, dim=2).permute(0, 2, 1, 3)
    bias = torch.as_tensor(bias, dtype=torch.float64, device=q.device).reshape(-1, 1, 1, 1)
    out = torch.empty(B, H, T, D, dtype=torch.float64, device=q.device)
    idx = torch.arange(T, device=q.device)
    for b in range(B):
        s = qq[b] @ kk[b].transpose(-1, -2) * scale + bias[b if bias.numel() > 1 else 0]
        keep = torch.ones(T, T, dtype=torch.bool, device=q.device)
        if causal:
            keep &= idx[None, :] <= idx[:, None]
        if lk is not None:
            keep &= idx[None, :] < lk[b]
        p = torch.where(keep, torch.sigmoid(s), torch.zeros((), dtype=s.dtype, device=s.device))
        ob = p @ vv[b]
        if lq is not None:
            ob[:, idx >= lq[b]] = 0
        out[b] = ob
    return out.permute(0, 2, 1, 3)


def make_lengths(torch, B, T, gen_seed):
    """Per-sequence lengths in [0, T] for a padded batch: the edges (0, 1, T) and random ones;
    Lq and Lk differ."""
    import random
    r = random.Random(gen_seed)
    lq = [r.randint(0, T) for _ in range(B)]
    lk = [r.randint(1, T) for _ in range(B)]
    lq[0], lk[0] = T, T
    if B > 1:
        lq[1], lk[1] = max(T - 1, 0), max(T // 2, 1)
    if B > 2:
        lq[2], lk[2] = 0, 1
    return lq, lk


def make_inputs(torch, B, T, H, H_KV, D, dtype, seed, std=1.0, lq=None, lk=None):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    q = (torch.randn(B, T, H, D, device=DEVICE, generator=g) * std).to(dtype)
    k = (torch.randn(B, T, H_KV, D, device=DEVICE, generator=g) * std).to(dtype)
    v = torch.randn(B, T, H_KV, D, device=DEVICE, generator=g).to(dtype)
    if lq is not None:
        # Padding: Q and K rows past the lengths are NaN (the masks must drop them); V rows
        # past Lk are large and finite (any P != 0 there would show).
        for b in range(B):
            q[b, lq[b]:] = float("nan")
            k[b, lk[b]:] = float("nan")
            v[b, lk[b]:] = 1000.0
    return q, k, v


def check_one(torch, kern, B, T, H, D, dtype, seed=0, std=1.0, h_kv=None, programs=132):
    rec = kern.rec
    causal, lengths = bool(rec.get("causal")), bool(rec.get("lengths"))
    h_kv = H if h_kv is None else h_kv
    lq = lk = None
    lens_t = None
    if lengths:
        lq, lk = make_lengths(torch, B, T, seed + T)
        lens_t = torch.tensor(lq + lk, dtype=torch.int32, device=DEVICE)
    q, k, v = make_inputs(torch, B, T, H, h_kv, D, dtype, seed, std, lq, lk)
    guard = 4096
    flat = torch.full((B * T * H * D + 2 * guard,), float("nan"), device=DEVICE, dtype=dtype)
    o = flat[guard:guard + B * T * H * D].view(B, T, H, D)
    scale = 1.0 / math.sqrt(D)
    if lengths:
        bias = [-math.log(max(x, 1)) for x in lk]  # the library's default bias per sequence
        run = kern.prepare(q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), B, T, H, D,
                           scale, 0.0, h_kv=h_kv, seq_lens_q=lens_t.data_ptr(),
                           seq_lens_k=lens_t.data_ptr() + 4 * B, programs=programs)
    else:
        bias = -math.log(T)
        run = kern.prepare(q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), B, T, H, D,
                           scale, bias, h_kv=h_kv, programs=programs)
    run(torch.cuda.current_stream().cuda_stream)
    wait_or_die(torch, f"{kern.name} B={B} T={T}")
    ref = reference(torch, q, k, v, scale, bias, causal, lq, lk)
    of = o.double()
    finite = bool(torch.isfinite(of).all())
    n_nan = int((~torch.isfinite(of)).sum())
    guards_ok = bool(torch.isnan(flat[:guard].float()).all() and
                     torch.isnan(flat[-guard:].float()).all())
    err = (of - ref)
    ref_norm = float(ref.norm())
    rel_l2 = (float(err.norm() / ref_norm) if ref_norm > 0 else float(err.norm())) \
        if finite else float("inf")
    max_abs = float(err.abs().max()) if finite else float("inf")
    ref_max = float(ref.abs().max())
    pad_zero = True
    if lengths:  # rows past Lq: exactly zero
        pad_zero = all(bool((o[b, lq[b]:] == 0).all()) for b in range(B))
    ok = finite and guards_ok and pad_zero and rel_l2 < 2e-2 and \
        max_abs <= max(5e-2 * ref_max, 1e-6)
    return {"variant": kern.name, "B": B, "T": T, "H": H, "H_KV": h_kv, "D": D,
            "dtype": str(dtype), "causal": causal, "lengths": [lq, lk] if lengths else None,
            "grid": list(run.grid), "ok": ok, "finite": finite, "non_finite": n_nan,
            "guards_untouched": guards_ok, "pad_rows_zero": pad_zero, "rel_l2": rel_l2,
            "max_abs": max_abs, "ref_max_abs": ref_max}


def stress(torch, kern, calls, programs, T_list=(1000, 4096), B=2, H=16):
    """`calls` calls with fresh random inputs (and lengths); each launched twice on a
    NaN-poisoned output: bitwise equal and finite."""
    rec = kern.rec
    D = rec["head_dim"]
    lengths = bool(rec.get("lengths"))
    stream = torch.cuda.current_stream().cuda_stream
    n_bad = n_diff = 0
    for i in range(calls):
        T = T_list[i % len(T_list)]
        lq = lk = None
        lens_t = None
        if lengths:
            lq, lk = make_lengths(torch, B, T, 1000 + i)
            lens_t = torch.tensor(lq + lk, dtype=torch.int32, device=DEVICE)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[rec["dtype"]]
        q, k, v = make_inputs(torch, B, T, H, H, D, dtype, 100 + i, 0.5, lq, lk)
        o = torch.empty_like(q)
        kw = {"programs": programs}
        if lengths:
            kw.update(seq_lens_q=lens_t.data_ptr(), seq_lens_k=lens_t.data_ptr() + 4 * B)
        run = kern.prepare(q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), B, T, H, D,
                           1 / math.sqrt(D), -math.log(T), **kw)
        o.fill_(float("nan"))
        run(stream)
        first = o.clone()
        o.fill_(float("nan"))
        run(stream)
        wait_or_die(torch, f"stress {kern.name} call {i}")
        n_bad += int(not bool(torch.isfinite(o).all()))
        n_diff += int(not torch.equal(first, o))
    return {"variant": kern.name, "calls": calls, "calls_with_non_finite": n_bad,
            "calls_not_repeatable": n_diff}


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


def bench_case(torch, kernels, B, T, H, D, dtype, reps, causal=False, lens=None, programs=132):
    """Times `kernels` and SDPA cuDNN (causal when `causal`) on one shape. lens: (lq, lk) per
    sequence for the padded rows (cuDNN then runs the dense shape: a reference, not a peer);
    TFLOPS count the useful work only (causal: half; padded: sum Lq*Lk)."""
    g = torch.Generator(device=DEVICE).manual_seed(1)
    q = torch.randn(B, T, H, D, device=DEVICE, generator=g).to(dtype)
    k = torch.randn(B, T, H, D, device=DEVICE, generator=g).to(dtype)
    v = torch.randn(B, T, H, D, device=DEVICE, generator=g).to(dtype)
    o = torch.empty_like(q)
    flops = 4.0 * B * H * T * T * D * (0.5 if causal else 1.0)
    kw = {"programs": programs}
    if lens is not None:
        lq, lk = lens
        lens_t = torch.tensor(lq + lk, dtype=torch.int32, device=DEVICE)
        kw.update(seq_lens_q=lens_t.data_ptr(), seq_lens_k=lens_t.data_ptr() + 4 * B)
        flops = 4.0 * H * D * sum(a * c for a, c in zip(lq, lk))
    stream = torch.cuda.current_stream().cuda_stream
    row = {"B": B, "T": T, "H": H, "D": D, "dtype": str(dtype), "causal": causal,
           "lens": list(lens) if lens else None, "programs": programs, "gluon": {}}
    for kern in kernels:
        try:
            run = kern.prepare(q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), B, T, H,
                               D, 1.0 / math.sqrt(D), -math.log(T), **kw)
            ms = time_fn(torch, lambda: run(stream), reps)
            row["gluon"][kern.name] = {"ms": ms, "tflops": flops / ms / 1e9,
                                       "grid": list(run.grid)}
        except Exception as e:  # noqa: BLE001
            row["gluon"][kern.name] = {"error": f"{type(e).__name__}: {e}"}
            if not context_alive(torch):
                raise RuntimeError(f"CUDA context lost after {kern.name}: {e}") from e
    if lens is not None:
        return row
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, T, D] views
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            f = lambda: torch.nn.functional.scaled_dot_product_attention(  # noqa: E731
                qt, kt, vt, is_causal=causal)
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
                               1 / math.sqrt(D), -math.log(T),
                               seq_lens_q=0x50000 if rec.get("lengths") else 0,
                               seq_lens_k=0x50000 + 4 * B if rec.get("lengths") else 0)
            run(0)
            arr = run.keep[-1]
            # Read every parameter back through the void* array, as cuLaunchKernel will.
            for p, ptr in zip(rec["params"], arr):
                raw = ctypes.string_at(ptr, p["size"])
                if p["role"] == "tensormap":
                    assert ptr % 64 == 0 and raw == b"\xab" * 128, p
                elif p["role"] == "desc_shape":
                    assert int.from_bytes(raw, "little") == [B, T, H, D][p["dim"]], p
                elif p["role"] == "desc_stride":
                    want = [T * H * D, H * D, D, 1][p["dim"]]
                    assert int.from_bytes(raw, "little") == want, p
                elif p["role"] == "scalar" and p["arg"] in ("T_K", "T_Q", "H", "B", "kv_group",
                                                            "D"):
                    want = {"T_K": T, "T_Q": T, "H": H, "B": B, "kv_group": 1, "D": D}[p["arg"]]
                    assert int.from_bytes(raw, "little") == want, p
                elif p["role"] == "scalar" and p["arg"] == "SEQ_LENS_K":
                    want = 0x50000 + 4 * B if rec.get("lengths") else 0
                    assert int.from_bytes(raw, "little") == want, p
                elif p["role"] == "hidden_ptr":
                    assert raw == b"\0" * 8
            # the four descriptors as the driver gets them, innermost first
            eb = rec["elem_bytes"]
            for c, m in zip([c for c in drv.calls if c[0] == "encode"][-4:],
                            rec["tensordesc_meta"]):
                rows, cols = m["block_size"][1], m["block_size"][3]
                assert c[2] == [D, H, T, B], c
                assert c[3] == [D * eb, H * D * eb, T * H * D * eb], c
                assert c[4] == [cols, 1, rows, 1] and m["block_size"] == [1, rows, 1, cols], c
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
    ap.add_argument("--stress", type=int, default=20,
                    help="calls per variant with fresh inputs, each launched twice (bitwise "
                         "equal, finite)")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--programs", type=int, default=0,
                    help="grid size (default: the SM count)")
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
    result.update({"compiled_with_triton": meta["triton"], "checks": [], "bench": []})
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
        programs = args.programs or torch.cuda.get_device_properties(0).multi_processor_count
        result["programs"] = programs
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
    # 1. correctness
    print("\n== correctness (vs float64; output poisoned with NaN, guard zones around it) ==",
          flush=True)
    for kern in kernels:
        r = kern.rec
        # the edges: one row, one partial block, a block + 1, partial and full tiles, many
        # tiles per program; GQA (H_KV = 2) at 1000
        shapes = [(2, T, 8, None) for T in (1, 17, 129, 1000, 1024, 4096)] + [(2, 1000, 8, 2)]
        if args.quick:
            shapes = [(2, 17, 8, None), (2, 1000, 8, None)]
        for (B, T, H, h_kv) in shapes:
            try:
                c = check_one(torch, kern, B, T, H, r["head_dim"], tdt[r["dtype"]], h_kv=h_kv,
                              programs=programs)
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
                print(f"  {'ok  ' if c['ok'] else 'FAIL'} {kern.name} B={B} T={T} H={H} "
                      f"H_KV={c['H_KV']} grid={c['grid']}: "
                      f"rel_l2={c['rel_l2']:.2e} max_abs={c['max_abs']:.2e} "
                      f"(ref max {c['ref_max_abs']:.2e}) non_finite={c['non_finite']} "
                      f"guards_untouched={c['guards_untouched']}"
                      + (f" pad_rows_zero={c['pad_rows_zero']} lens={c['lengths']}"
                         if c["lengths"] else ""), flush=True)

    # 2. repeated calls, looking for NaN and non-repeatable output (the WS race lesson)
    result["stress_persistent"] = []
    if args.stress:
        print(f"\n== stress: {args.stress} calls per variant, fresh inputs, each launched "
              "twice ==", flush=True)
    for kern in kernels if args.stress else []:
        try:
            st = stress(torch, kern, args.stress, programs)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            st = {"variant": kern.name, "error": f"{type(e).__name__}: {e}"}
        result["stress_persistent"].append(st)
        bad = "error" in st or st["calls_with_non_finite"] or st["calls_not_repeatable"]
        n_fail += bool(bad)
        print(f"  {'FAIL' if bad else 'ok  '} {st}", flush=True)
        if "error" in st and not context_alive(torch):
            return finish(result, 1)

    # 3. timing vs SDPA cuDNN
    if not args.no_bench:
        print("\n== timing (median of CUDA-event times; TFLOPS = 4*B*H*T^2*D / t) ==", flush=True)
        reps = 10 if args.quick else 30
        cases = [(16, 1024, 16, 128), (4, 4096, 16, 128), (1, 16384, 16, 128),
                 (16, 1024, 32, 64), (4, 4096, 32, 64), (1, 16384, 32, 64), (4, 4096, 8, 256)]
        rows = []
        for dt_name in ("bf16", "fp16"):
            for (B, T, H, D) in cases:
                if dt_name == "fp16" and (T != 4096 or args.quick):
                    continue
                for causal in (False, True):
                    ks = [k for k in kernels if k.rec["head_dim"] == D and
                          k.rec["dtype"] == dt_name and not k.rec.get("lengths") and
                          bool(k.rec.get("causal")) == causal]
                    if ks:
                        rows.append((dt_name, B, T, H, D, causal, None, ks))
        # padded batch: lengths T, 3T/4, T/2, T/4 (hd128 T=4k), and all lengths = T
        for D in (128, 64):
            H = 2048 // D
            ks = [k for k in kernels if k.rec["head_dim"] == D and k.rec.get("lengths")
                  and not k.rec.get("causal")]
            if ks:
                T = 4096
                rows.append(("bf16", 4, T, H, D, False, ([T] * 4, [T] * 4), ks))
                ls = [T, 3 * T // 4, T // 2, T // 4]
                rows.append(("bf16", 4, T, H, D, False, (ls, ls), ks))
        for (dt_name, B, T, H, D, causal, lens, ks) in rows:
            try:
                row = bench_case(torch, ks, B, T, H, D, tdt[dt_name], reps, causal, lens,
                                 programs)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                print(f"  BENCH ABORTED: {e}", flush=True)
                return finish(result, 1)
            result["bench"].append(row)
            peer = row.get("cudnn", {}).get("tflops")
            what = "causal" if causal else ("lens " + str(lens[0]) if lens else "dense")
            print(f"  {dt_name} B={B} T={T} H={H} D={D} {what}: cuDNN "
                  + (f"{peer:.0f} TFLOPS" if peer else
                     row.get("cudnn", {}).get("error", "n/a (padded)")), flush=True)
            for name, g in row["gluon"].items():
                if "error" in g:
                    print(f"    {name}: ERROR {g['error']}", flush=True)
                else:
                    ratio = f" ({g['tflops'] / peer:.2f}x cuDNN)" if peer else ""
                    print(f"    {name}: {g['ms']:.3f} ms {g['tflops']:.0f} TFLOPS{ratio} "
                          f"grid={g['grid']}", flush=True)
    return finish(result, 1 if n_fail else 0)


def finish(result, rc):
    result["rc"] = rc
    out = os.environ.get("OUT")
    if out:
        p = Path(out) / JSON_NAME
        p.write_text(json.dumps(result, indent=1))
        print(f"wrote {p}")
    print("RESULT:", "all checks passed" if rc == 0 else "SOME CHECKS FAILED", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
