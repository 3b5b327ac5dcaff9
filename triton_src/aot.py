"""Compile every entry of the variant table to a cubin for sm_90 and emit the C++ that embeds them.

    python triton_src/aot.py all --out-dir BUILD/generated [--jobs N] [--arch 90]
        [--head-dims 64,128] [--dtypes bf16] [--causal-lpt N]

CMake runs the same steps apart: `constants`, one `compile --module M` per kernel source (so an
edit to one source recompiles its kernels only; a depfile names what it read), then `link`.
No GPU is needed: triton.compile runs against an explicit GPUTarget. Outputs, all in --out-dir:
  cubins/<variant>.cubin      the machine code
  parts/<module>.json         one compile step's records
  kernels_generated.cpp       the cubins (.incbin) and one KernelSpec per variant
  kernel_args.h               one argument struct per kernel kind, and its packer
  sigmoid_attn_constants.h    kinds, dtypes, bias modes, dispatch capacities (from variants.py)
  catalog.json                the same metadata, for people and tests

The launcher must not assume a Triton version's kernel ABI, so for every kernel we read the
parameter list of its PTX entry: our own parameters must match variants.PARAMS[kind] exactly, and
whatever this Triton appends after them (global/profile scratch pointers in 3.6-3.8) is
recorded as hidden pointer parameters, with the scratch sizes the metadata asks for.

The Gluon forward (kind fwd_gluon) takes host TMA descriptors: each "desc" argument is a by-value
128-byte CUtensorMap (64-byte aligned) plus its shape and strides as scalars. Its KernelSpec
records where each CUtensorMap sits in the parameter list and how the host must encode it (box,
swizzle, element type and size: Triton's tensordesc metadata, what its own launcher passes to
cuTensorMapEncodeTiled), so the C++ launcher mirrors nothing by hand.
"""

import argparse
import concurrent.futures
import json
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import variants as V  # noqa: E402

PTX_BYTES = {"u64": 8, "s64": 8, "b64": 8, "f64": 8, "u32": 4, "s32": 4, "b32": 4, "f32": 4,
             "b8": 1}
TYPE_BYTES = {"i64": 8, "i32": 4, "fp32": 4}
# A TMA descriptor argument in the PTX entry: the CUtensorMap (bytes, alignment), then
# variants.DESC_RANK shape scalars (u32) and as many strides (u64).
TENSOR_MAP = (128, 64)
# Triton's device-side TMA element-type enum -> the host CUtensorMapDataType (Triton's
# backends/nvidia/driver.py applies the same mapping before cuTensorMapEncodeTiled), and the
# host type each tensor dtype must come out as.
TMA_DTYPE_DEVICE_TO_HOST = {i: i for i in range(16)} | {8: 10, 9: 8, 10: 9}
# CU_TENSOR_MAP_DATA_TYPE_FLOAT16 / _FLOAT32 / _BFLOAT16
CU_TENSOR_MAP_DATA_TYPE = {"fp16": 6, "fp32": 7, "bf16": 9}
ELEM_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}


def _desc_dtype(t: str, dtype: str) -> str:
    """The tensor dtype a descriptor argument of PARAMS type t describes: "desc" the variant's,
    "desc_fp32" float32."""
    return "fp32" if t == "desc_fp32" else dtype


def _entry_params(ptx: str, entry: str):
    """(bytes, alignment) of each parameter of a PTX entry: `.param .u32 x`,
    `.param .u64 .ptr .global .align 1 x`, `.param .align 64 .b8 x[128]`."""
    m = re.search(r"\.entry\s+" + re.escape(entry) + r"\s*\((.*?)\)", ptx, re.S)
    if m is None:
        raise RuntimeError(f"entry {entry} not found in PTX")
    out = []
    for decl in (d.strip() for d in m.group(1).split(",")):
        pm = re.match(r"\.param\s+(?:\.align\s+(\d+)\s+)?\.(\w+)\s.*?(?:\[(\d+)\])?$", decl)
        if pm is None:
            raise RuntimeError(f"{entry}: cannot read PTX parameter {decl!r}")
        align, ty, count = pm.groups()
        size = PTX_BYTES[ty] * (int(count) if count else 1)
        out.append((size, int(align) if align else size))
    return out


def _expected_params(kind: str, dtype: str):
    """(bytes, alignment) of each of the kernel's own PTX parameters, from variants.PARAMS."""
    out = []
    for _, t in V.PARAMS[kind]:
        if t.startswith("desc"):
            out += [TENSOR_MAP] + [(4, 4)] * V.DESC_RANK + [(8, 8)] * V.DESC_RANK
        else:
            size = 8 if t.startswith("*") else TYPE_BYTES[t]
            out.append((size, size))
    return out


def _check_ptx(var: V.Variant, ptx: str, entry: str):
    """The kernel's own parameters as declared, and the hidden ones this Triton appends
    (pointers only); returns (number of own parameters, number of hidden ones)."""
    params = _entry_params(ptx, entry)
    expect = _expected_params(var.kind, var.dtype)
    n_own = len(expect)
    # (alignment is checked for the descriptors only: scalars are naturally aligned)
    got = [p if p == TENSOR_MAP else (p[0], p[0]) for p in params[:n_own]]
    if got != expect:
        raise RuntimeError(f"{var.name}: PTX parameters {params[:n_own]} != expected {expect}")
    hidden = [size for size, _ in params[n_own:]]
    if any(size != 8 for size in hidden):
        raise RuntimeError(f"{var.name}: non-pointer hidden parameters {hidden}")
    return n_own, len(hidden)


def _tensor_maps(var: V.Variant, md):
    """Where each descriptor's CUtensorMap sits among the PTX parameters, and how to encode it,
    from the compiled tensordesc metadata (one entry per "desc" argument, in order)."""
    meta = [dict(m) for m in (getattr(md, "tensordesc_meta", None) or [])]
    descs = [name for name, t in V.PARAMS[var.kind] if t.startswith("desc")]
    if len(meta) != len(descs):
        raise RuntimeError(f"{var.name}: {len(meta)} tensordesc metadata entries for "
                           f"{len(descs)} descriptors")
    out, pos = [], 0
    for name, t in V.PARAMS[var.kind]:
        if not t.startswith("desc"):
            pos += 1
            continue
        m = meta[len(out)]
        data_type = TMA_DTYPE_DEVICE_TO_HOST[m["elem_type"]]
        dtype = _desc_dtype(t, var.dtype)
        if (m.get("is_im2col") or m.get("fp4_padded") or len(m["block_size"]) != V.DESC_RANK
                or data_type != CU_TENSOR_MAP_DATA_TYPE[dtype]
                or m["elem_size"] != ELEM_BYTES[dtype] or not 0 <= m["swizzle"] <= 3):
            raise RuntimeError(f"{var.name}: descriptor {name} is not a tiled rank-"
                               f"{V.DESC_RANK} {dtype} map: {m}")
        out.append({"arg": name, "param": pos, "box": list(m["block_size"]),
                    "swizzle": m["swizzle"], "elem_bytes": m["elem_size"],
                    "data_type": data_type})
        pos += 1 + 2 * V.DESC_RANK
    return out


_ELEM_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}


def _compile_gluon_kind(var: V.Variant, arch: int, rows: dict, constexprs: dict,
                        maxnreg: int = V.GLUON_MAXNREG):
    """A Gluon kernel of var's kind: each "desc" argument a tensordesc type with a
    [1, rows, 1, block_d] box (rows[name]; block_d the power of two at or above the head dim,
    the columns past it zero-filled by TMA) over a [B, T, H, D] tensor and the default NVMMA
    shared layout of its dtype (128-byte swizzle for the 64-column 16-bit boxes), the
    constexprs checked against the kernel's own argument names, compiled with maxnreg
    GLUON_MAXNREG (the partitions' register split is a constexpr)."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    module, fn_name = V.SOURCES[var.kind]
    fn = getattr(importlib.import_module(module), fn_name)
    gl_dtype = {"fp16": gl.float16, "bf16": gl.bfloat16, "fp32": gl.float32}
    signature = {}
    for name, t in V.PARAMS[var.kind]:
        if t.startswith("desc"):
            dtype = _desc_dtype(t, var.dtype)
            box = [1, rows[name], 1, var.block_d]
            layout = gl.NVMMASharedLayout.get_default_for(box, gl_dtype[dtype])
            signature[name] = f"tensordesc<{dtype}[{','.join(map(str, box))}],{layout!r}>"
        else:
            signature[name] = t.replace("*dt", f"*{var.dtype}")
    names = list(fn.arg_names)
    if names != [n for n, _ in V.PARAMS[var.kind]] + list(constexprs):
        raise RuntimeError(f"variants.PARAMS[{var.kind!r}] is out of date with the kernel: "
                           f"{names}")
    signature.update({n: "constexpr" for n in constexprs})
    # The outputs of the packed kernels' masked stores (O; dK, dV): their descriptors' rules
    # (cuda_common.cpp tma_rows: a 16-byte aligned base, rows and heads a multiple of 16 bytes
    # apart) hold for the pointers, row strides and head dim D the launchers pass beside them,
    # so the stores (at h * D + column) can be 16 bytes wide.
    step = 16 // _ELEM_BYTES[var.dtype]
    # score_mod rows (the Gluon forward's): a multiple of 2 floats apart and 8-byte aligned (the
    # launcher checks it), so a thread's two adjacent columns come in one load.
    aligned = {"O": 16, "stride_ot": step, "DK": 16, "DV": 16, "stride_kt": step, "D": step,
               "SCORE_MOD": 8, "stride_smb": 2, "WS": 16}
    attrs = {(i,): [["tt.divisibility", aligned[n]]] for i, n in enumerate(names) if n in aligned}
    src = GluonASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                        options={"num_warps": var.num_warps, "maxnreg": maxnreg})
    return ck, _tensor_maps(var, ck.metadata)


def compile_gluon(var: V.Variant, arch: int):
    """The persistent Gluon forward: Q and O boxes of one consumer warpgroup's half of the query
    tile, K and V of BLOCK_N keys. HAS_LENGTHS: kind fwd_gluon_padded (the launcher passes the
    lengths); fwd_gluon is compiled without, and its launcher passes null SEQ_LENS_Q/K."""
    consumers = V.gluon_fwd_consumers(var.block_m)
    rows = var.block_m // consumers  # one part of the query tile per consumer warpgroup
    maxnreg, consumer_regs = V.gluon_fwd_registers(var.block_m)
    boxes = {"q_desc": rows, "o_desc": rows, "k_desc": var.block_n, "v_desc": var.block_n}
    constexprs = {"NUM_STAGES": var.num_stages, "CAUSAL": var.causal,
                  "HAS_LENGTHS": var.kind == "fwd_gluon_padded",
                  "CONSUMER_REGS": consumer_regs, "PRODUCER_REGS": V.GLUON_PRODUCER_REGS,
                  "VARLEN": var.varlen, "HAS_MOD": var.score_mod, "CONSUMERS": consumers,
                  "SCORE_DIM": var.head_dim}
    return _compile_gluon_kind(var, arch, boxes, constexprs, maxnreg)


def compile_gluon_bwd(var: V.Variant, arch: int):
    """The Gluon backward (benchmarks/gluon_bwd/compile.py is the probe it was proven with): Q and
    dO boxes of BLOCK_M rows, K, V, dK, dV of the 64 keys of one consumer warpgroup, the fp32 dQ
    accumulator's of BLOCK_M rows; the schedule's constexpr flags from variants.GLUON_BWD_SCHEDULES.
    Compiled with num_warps 4 (the default partition) and maxnreg 168, as the forward."""
    half_n = var.block_n // 2  # keys per consumer warpgroup (wgmma M = 64)
    rows = {"q_desc": var.block_m, "do_desc": var.block_m, "dq_desc": var.block_m,
            "k_desc": half_n, "v_desc": half_n, "dk_desc": half_n, "dv_desc": half_n}
    dq_shared, dq_issue = V.GLUON_BWD_SCHEDULES[var.schedule]
    constexprs = {"NUM_STAGES": var.num_stages, "CONSUMER_REGS": V.GLUON_CONSUMER_REGS,
                  "PRODUCER_REGS": V.GLUON_PRODUCER_REGS, "RCP_NEWTON": False,
                  "DQ_SHARED": dq_shared, "DQ_ISSUE": dq_issue, "CAUSAL": var.causal,
                  "HAS_LENGTHS": var.kind == "bwd_gluon_padded", "VARLEN": var.varlen,
                  "HAS_MOD": var.score_mod, "SCORE_DIM": var.head_dim}
    return _compile_gluon_kind(var, arch, rows, constexprs)


def compile_dq_cast(var: V.Variant, arch: int):
    """The dQ cast: both pointers 16-byte aligned and n a multiple of 16 (n = B*T*H*D with D a
    multiple of 64; the launcher checks it), so Triton emits 16-byte loads."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import importlib

    module, fn_name = V.SOURCES[var.kind]
    fn = getattr(importlib.import_module(module), fn_name)
    own = [n for n, _ in V.PARAMS[var.kind]]
    if list(fn.arg_names) != own + ["BLOCK"]:
        raise RuntimeError(f"variants.PARAMS[{var.kind!r}] is out of date with the kernel: "
                           f"{fn.arg_names}")
    signature = {n: t.replace("dt", var.dtype) for n, t in V.PARAMS[var.kind]}
    signature["BLOCK"] = "constexpr"
    div16 = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=signature, constexprs={(len(own),): var.block_m},
                    attrs={(i,): div16 for i in range(len(own))})
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": var.num_warps, "num_stages": var.num_stages})


def compile_variant(var: V.Variant, arch: int):
    t0 = time.time()
    if var.kind in V.GLUON_FORWARD_KINDS:
        ck, tensor_maps = compile_gluon(var, arch)
    elif var.kind in V.GLUON_BACKWARD_KINDS:
        ck, tensor_maps = compile_gluon_bwd(var, arch)
    elif var.kind == "dq_cast":
        ck, tensor_maps = compile_dq_cast(var, arch), []
    else:
        ck, tensor_maps = compile_triton(var, arch), []
    md = ck.metadata
    entry = md.name
    n_own, n_hidden = _check_ptx(var, ck.asm["ptx"], entry)
    # The argument struct (kernel_args.h) is generated from PARAMS: its slots must be the
    # compiled kernel's parameters, by name and type, in order.
    signature = compiled_signature(ck)
    check_slots(var.kind, var.dtype, signature)
    return {
        "name": var.name,
        "entry": entry,
        "cubin": ck.asm["cubin"],
        "kind": var.kind, "dtype": var.dtype, "head_dim": var.head_dim,
        "causal": var.causal, "score_mod": var.score_mod, "varlen": var.varlen,
        "runtime_head_dim": var.runtime_head_dim, "stride_multiple": var.stride_multiple,
        "block_m": var.block_m, "block_n": var.block_n, "min_t": var.min_t,
        "num_warps": md.num_warps, "num_stages": var.num_stages,
        "shared": md.shared,
        "num_params": n_own, "num_hidden_params": n_hidden,
        "global_scratch_size": int(getattr(md, "global_scratch_size", 0) or 0),
        "global_scratch_align": int(getattr(md, "global_scratch_align", 1) or 1),
        "profile_scratch_size": int(getattr(md, "profile_scratch_size", 0) or 0),
        "profile_scratch_align": int(getattr(md, "profile_scratch_align", 1) or 1),
        "tensor_maps": tensor_maps,
        "signature": signature,
        "ptx_param_bytes": [size for size, _ in _entry_params(ck.asm["ptx"], entry)],
        "compile_s": round(time.time() - t0, 2),
    }


def compile_triton(var: V.Variant, arch: int):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import importlib

    module, fn_name = V.SOURCES[var.kind]
    fn = getattr(importlib.import_module(module), fn_name)
    constexprs = {
        "HEAD_DIM": var.head_dim, "BLOCK_D": var.block_d, "BLOCK_M": var.block_m,
        "BLOCK_N": var.block_n, "IS_CAUSAL": var.causal, "HAS_SCORE_MOD": var.score_mod,
        "FAST_SIGMOID": var.fast_sigmoid, "VARLEN": var.varlen,
    }
    if var.kind == "fwd_ws":  # no BLOCK_D (head dims are powers of two); always specialized
        if var.block_d != var.head_dim:
            raise RuntimeError(f"{var.name}: the warp-specialized forward needs a power-of-two "
                               f"head dim")
        del constexprs["BLOCK_D"]
        constexprs["WARP_SPECIALIZE"] = True
    elif var.kind == "fwd":
        constexprs["WARP_SPECIALIZE"] = var.warp_specialize
        constexprs["USE_TMA"] = var.tma
        constexprs["CAUSAL_LPT"] = var.causal_lpt
    else:
        constexprs["CAUSAL_LPT"] = var.causal_lpt
    if var.runtime_head_dim and var.kind not in V.GENERIC_KINDS:
        raise RuntimeError(f"{var.name}: only {V.GENERIC_KINDS} have generic kernels")
    if var.kind != "fwd_ws":
        constexprs["RUNTIME_HEAD_DIM"] = var.runtime_head_dim
    if var.kind == "fwd":  # (80, 96, 160, 192, 48: two power-of-two column ranges)
        split = not var.runtime_head_dim and not var.tma
        constexprs["D_LO"] = V.split_head_dim(var.head_dim) if split else 0
    params = V.PARAMS[var.kind]
    divisible = V.divisible_16(var.kind)
    own = dict(params)
    if list(own) + list(constexprs) != list(fn.arg_names):
        raise RuntimeError(f"variants.PARAMS[{var.kind!r}] is out of date with the kernel: "
                           f"{fn.arg_names}")
    signature, consts, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
            consts[(i,)] = constexprs[name]
        else:
            signature[name] = own[name].replace("dt", var.dtype)
            if name in divisible:  # pointers: 16 bytes; strides: the variant's multiple
                attrs[(i,)] = [["tt.divisibility",
                                16 if own[name].startswith("*") else var.stride_multiple]]
    src = ASTSource(fn=fn, signature=signature, constexprs=consts, attrs=attrs)
    options = {"num_warps": var.num_warps, "num_stages": var.num_stages}
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


# --- the kernel ABI: argument slots per kind, checked against the compiled kernel --------------

TTIR_DTYPE = {"fp16": "f16", "bf16": "bf16", "fp32": "f32", "i32": "i32", "i64": "i64"}
C_TYPE = {"i32": "int32_t", "i64": "int64_t", "fp32": "float"}
# The hidden parameters by position, as Triton's own launcher names them (3.6-3.8).
HIDDEN_NAMES = ("global_scratch", "profile_scratch")


def slots(kind: str, dtype: str):
    """The kernel's own parameters as the PTX entry takes them, in order: (name as the compiled
    signature spells it, its TTIR type, the C++ field it comes from, the C++ expression of its
    address in the argument struct). A "desc" argument is a CUtensorMap and its shape and
    strides, one struct field (TensorMapArg)."""
    out = []
    for name, t in V.PARAMS[kind]:
        if t.startswith("desc"):
            out.append((name, "!tt.tensordesc", name, f"&{name}.value.map"))
            out += [(f"{name}.shape.{d}", "i32", name, f"&{name}.value.shape[{d}]")
                    for d in range(V.DESC_RANK)]
            out += [(f"{name}.stride.{d}", "i64", name, f"&{name}.value.stride[{d}]")
                    for d in range(V.DESC_RANK)]
        elif t.startswith("*"):
            pointee = dtype if t == "*dt" else t[1:]
            out.append((name, f"!tt.ptr<{TTIR_DTYPE[pointee]}>", name, f"&{name}.value"))
        else:
            out.append((name, TTIR_DTYPE.get(t, t.replace("fp", "f")), name, f"&{name}.value"))
    return out


def compiled_signature(ck):
    """[(name, type)] of the compiled kernel's parameters, from its TTIR (TTGIR for Gluon):
    what Triton actually compiled, independent of variants.PARAMS."""
    ir = ck.asm.get("ttir") or ck.asm["ttgir"]
    m = re.search(r"tt\.func public @\w+\((.*?)\) attributes", ir, re.S)
    if m is None:
        raise RuntimeError("no public tt.func in the compiled kernel's IR")
    return [(name, ty) for name, ty in
            re.findall(r"%([\w.]+): (.+?)(?: \{[^{}]*\})? loc\(\"[\w.]+\"", m.group(1))]


def check_slots(kind: str, dtype: str, signature):
    """Raises unless the argument slots generated from PARAMS are the compiled signature."""
    want = [(name, ty) for name, ty, _, _ in slots(kind, dtype)]
    got = [(name, ty.split("<")[0] if ty.startswith("!tt.tensordesc") else ty)
           for name, ty in signature]
    if got != want:
        diff = next(i for i, (a, b) in enumerate(zip(got + [None] * len(want),
                                                      want + [None] * len(got))) if a != b)
        raise RuntimeError(
            f"kernel ABI of {kind!r}: parameter {diff} of the compiled kernel is "
            f"{got[diff] if diff < len(got) else None}, variants.PARAMS gives "
            f"{want[diff] if diff < len(want) else None} (compiled: {got})")


def _cpp_name(kind: str) -> str:
    return V.KIND_TABLE[kind][0][1:] + "Args"  # kForwardWS -> ForwardWSArgs


GEN_NOTE = "// Generated by triton_src/aot.py from triton_src/variants.py. Do not edit.\n"


def constants_header() -> str:
    """sigmoid_attn_constants.h: the facts C++ shares with variants.py."""
    kinds = ",\n".join(f"  {cpp} = {i}" for i, (cpp, _, _) in enumerate(V.KIND_TABLE.values()))
    dtypes = ",\n".join(f"  {cpp} = {i}" for i, (cpp, _) in enumerate(V.DTYPE_TABLE.values()))
    bias = ", ".join(f"kBias{m.capitalize()} = {i}" for i, m in enumerate(V.BIAS_MODES))
    q = lambda xs: ", ".join(f'"{x}"' for x in xs)  # noqa: E731
    max_maps = max(sum(t.startswith("desc") for _, t in p) for p in V.PARAMS.values())
    return (
        f"{GEN_NOTE}#pragma once\n\nnamespace sigmoid_attn {{\n\n"
        f"// Kernel kinds (variants.KIND_TABLE), their names in variant names and the catalog.\n"
        f"enum class KernelKind : int {{\n{kinds},\n}};\n"
        f"constexpr int kNumKinds = {len(V.KINDS)};\n"
        f"constexpr const char* kKindNames[kNumKinds] = {{{q(V.KINDS)}}};\n\n"
        f"// Tensor dtypes (variants.DTYPE_TABLE): the dtype code of the catalog and the C API.\n"
        f"enum class DType : int {{\n{dtypes},\n}};\n"
        f"constexpr int kNumDTypes = {len(V.DTYPES)};\n"
        f"constexpr const char* kDTypeNames[kNumDTypes] = "
        f"{{{q(t for _, t in V.DTYPE_TABLE.values())}}};\n"
        f"constexpr const char* kDTypeShortNames[kNumDTypes] = {{{q(V.DTYPES)}}};\n\n"
        f"// The kernels' BIAS_MODE argument (variants.BIAS_MODES).\n"
        f"enum BiasMode : int {{ {bias} }};\n\n"
        f"// KernelSpec::min_t of the small-problem bucket (variants.SMALL).\n"
        f"constexpr int kSmallProblem = {V.SMALL};\n"
        f"// Rank of the Gluon kernels' TMA descriptors (variants.DESC_RANK), and the most\n"
        f"// descriptor arguments of one kind (variants.PARAMS).\n"
        f"constexpr int kTensorMapRank = {V.DESC_RANK};\n"
        f"constexpr int kMaxTensorMaps = {max_maps};\n\n"
        f"// Dispatch-table capacities (variants.DISPATCH_*): the largest head dim, distinct head\n"
        f"// dims, length buckets per variant. kernels_generated.cpp static_asserts the catalog.\n"
        f"constexpr int kMaxHeadDim = {V.DISPATCH_MAX_HEAD_DIM};\n"
        f"constexpr int kMaxHeadDims = {V.DISPATCH_MAX_HEAD_DIMS};\n"
        f"constexpr int kMaxBuckets = {V.DISPATCH_MAX_BUCKETS};\n\n"
        f"}}  // namespace sigmoid_attn\n")


ARGS_HEAD = GEN_NOTE + """\
// One argument struct per kernel kind: the kernel's parameters in variants.PARAMS order, typed,
// then the hidden ones this Triton version appends. Launch sites fill one with designated
// initializers: a field out of order, misspelt or left out does not compile (Param has no
// default), nor does a value of another type (no narrowing, no conversion). pack() gives
// cuLaunchKernel's parameter array in the kernel's order; aot.py checked that order against each
// compiled kernel's own signature (names and types) and its PTX entry (sizes).
#pragma once

#include <array>
#include <cstdint>
#include <type_traits>

#include <cuda.h>

#include "sigmoid_attn_constants.h"

namespace sigmoid_attn {

// A kernel parameter that must be given, as exactly its type.
template <typename T>
struct Param {
  T value;
  Param() = delete;
  template <typename U, typename = std::enable_if_t<std::is_same_v<U, T>>>
  constexpr Param(const U& v) : value(v) {}  // NOLINT: implicit, for designated initializers
};

// A TMA descriptor argument: the by-value CUtensorMap, then its shape (u32) and strides (u64,
// elements), outermost first.
struct TensorMapArg {
  CUtensorMap map;
  uint32_t shape[kTensorMapRank];
  uint64_t stride[kTensorMapRank];
};
"""


def args_header(hidden: dict, triton_version: str) -> str:
    """kernel_args.h; hidden: kind -> number of hidden pointer parameters."""
    out = [ARGS_HEAD]
    for kind in V.KINDS:
        cpp, module, fn = V.KIND_TABLE[kind]
        fields = []
        for name, t in V.PARAMS[kind]:
            ty = ("TensorMapArg" if t.startswith("desc") else "CUdeviceptr" if t.startswith("*")
                  else C_TYPE[t])
            fields.append(f"  Param<{ty}> {name};\n")
        n_hidden = hidden[kind]
        names = [HIDDEN_NAMES[h] if h < len(HIDDEN_NAMES) else f"hidden_{h}"
                 for h in range(n_hidden)]
        fields += [f"  CUdeviceptr {n} = 0;  // hidden: launch_kernel fills it\n" for n in names]
        own = [addr for _, _, _, addr in slots(kind, "fp16")]
        ptrs = own + [f"&{n}" for n in names]
        body = ",\n            ".join(", ".join(ptrs[i:i + 3]) for i in range(0, len(ptrs), 3))
        out.append(
            f"\n// variants.PARAMS[\"{kind}\"]: {module}.{fn}\n"
            f"struct {_cpp_name(kind)} {{\n"
            f"  static constexpr KernelKind kKind = KernelKind::{cpp};\n"
            f"  static constexpr int kNumParams = {len(own)};  // PTX parameters of its own\n"
            f"  static constexpr int kNumHidden = {n_hidden};  // appended by Triton "
            f"{triton_version}\n"
            + "".join(fields)
            + f"  std::array<void*, kNumParams + kNumHidden> pack() {{\n"
            f"    return {{{body}}};\n  }}\n}};\n")
    out.append("\n}  // namespace sigmoid_attn\n")
    return "".join(out)


def _write_if_changed(path: Path, text: str):
    """Unchanged outputs keep their time stamp, so that nothing downstream rebuilds."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def kernels_cpp(results, triton_version: str, arch: int, subset: str) -> str:
    lines = [GEN_NOTE, '#include "kernel_spec.h"\n\n']
    # .incbin keeps multi-megabyte cubins out of the C++ parser; symbols are hidden so that
    # two copies of the library never interpose each other's images.
    for i, r in enumerate(results):
        path = str(Path(r["cubin_path"]).resolve()).replace("\\", "/")
        lines.append(
            "__asm__(\".section .rodata\\n.balign 16\\n"
            f".hidden sigmoid_attn_cubin_{i}\\n.globl sigmoid_attn_cubin_{i}\\n"
            f"sigmoid_attn_cubin_{i}:\\n.incbin \\\"{path}\\\"\\n.previous\\n\");\n"
            f"extern \"C\" const unsigned char sigmoid_attn_cubin_{i}[];\n")
    lines.append("\nnamespace sigmoid_attn {\n\n")
    # (constexpr: the static_asserts below read it; an empty build keeps one unused entry)
    lines.append(f"constexpr KernelSpec kKernels[{max(1, len(results))}] = {{\n")
    for i, r in enumerate(results):
        maps = ", ".join(
            f"{{{m['param']}, {{{', '.join(f'{b}u' for b in m['box'])}}}, {m['swizzle']}, "
            f"{m['elem_bytes']}, {m['data_type']}}}" for m in r["tensor_maps"])
        lines.append(
            f"    {{\"{r['name']}\", \"{r['entry']}\", sigmoid_attn_cubin_{i}, "
            f"{r['cubin_bytes']}u, KernelKind::{V.KIND_TABLE[r['kind']][0]}, "
            f"DType::{V.DTYPE_TABLE[r['dtype']][0]}, {r['head_dim']}, "
            f"{str(r['causal']).lower()}, {str(r['score_mod']).lower()}, "
            f"{str(r['varlen']).lower()}, {str(r['runtime_head_dim']).lower()}, "
            f"{r['stride_multiple']}, "
            f"{r['block_m']}, {r['block_n']}, {r['num_warps']}, {r['num_stages']}, {r['min_t']}, "
            f"{r['shared']}, {r['num_params']}, {r['num_hidden_params']}, "
            f"{r['global_scratch_size']}, {r['global_scratch_align']}, "
            f"{r['profile_scratch_size']}, {r['profile_scratch_align']}, "
            f"{len(r['tensor_maps'])}, {{{maps}}}}},\n")
    lines.append("};\n\n")
    lines.append(
        f"const int kNumKernels = {len(results)};\n"
        "// A catalog the dispatch table cannot hold is a build error, not an unreachable kernel.\n"
        "static_assert(catalog_max_head_dim(kKernels, kNumKernels) <= kMaxHeadDim,\n"
        "              \"a compiled head dim exceeds the dispatch table's kMaxHeadDim \"\n"
        "              \"(variants.DISPATCH_MAX_HEAD_DIM)\");\n"
        "static_assert(catalog_head_dims(kKernels, kNumKernels) <= kMaxHeadDims,\n"
        "              \"more distinct head dims are compiled than the dispatch table's \"\n"
        "              \"kMaxHeadDims (variants.DISPATCH_MAX_HEAD_DIMS)\");\n"
        "static_assert(catalog_max_buckets(kKernels, kNumKernels) <= kMaxBuckets,\n"
        "              \"a variant has more length buckets than the dispatch table's \"\n"
        "              \"kMaxBuckets (variants.DISPATCH_MAX_BUCKETS)\");\n")
    lines.append(f"const char* const kTritonVersion = \"{triton_version}\";\n")
    lines.append(f"const int kCompiledArch = {arch};\n")
    lines.append(f"const char* const kBuildSubset = \"{subset}\";\n")
    lines.append(f"const bool kWarpSpecializedDispatch = {str(V.FWD_WS_DISPATCH).lower()};\n")
    lines.append(f"const bool kGluonForwardDispatch = {str(V.FWD_GLUON_DISPATCH).lower()};\n")
    lines.append(f"const bool kGluonBackwardDispatch = {str(V.BWD_GLUON_DISPATCH).lower()};\n")
    lines.append(f"const double kGluonForwardMinFill = {V.FWD_GLUON_MIN_FILL!r};\n")
    lines.append(f"const double kGluonBackwardMinFill = {V.BWD_GLUON_MIN_FILL!r};\n\n"
                 "}  // namespace sigmoid_attn\n")
    return "".join(lines)


# --- the command line: one compile step per kernel source, then one link step -----------------

def _subset_args(ap):
    ap.add_argument("--head-dims", default="",
                    help="comma-separated head dims, \"generic\" for the generic kernels "
                         "(default: all)")
    ap.add_argument("--dtypes", default="", help="comma-separated of fp16,bf16,fp32 (default: all)")
    ap.add_argument("--causal-lpt", default="", help="override of every causal kernel's CAUSAL_LPT")


def _subset(args):
    """(head dims, dtypes, generic) of a partial build; None: all of them."""
    names = [d for d in args.head_dims.split(",") if d]
    generic = "generic" in names if names else None
    head_dims = {int(d) for d in names if d != "generic" and d.isdigit()} or None
    if names and head_dims is None:
        head_dims = set()  # the generic kernels only
    dtypes = {d for d in args.dtypes.split(",") if d} or None
    bad = sorted((dtypes or set()) - set(V.DTYPES))
    known = {d for kind in V.KINDS for dt in V.DTYPES for d in V.tile_table(kind, dt)}
    bad += sorted((head_dims or set()) - known)
    bad += [d for d in names if d != "generic" and not d.isdigit()]
    if bad:
        raise SystemExit(f"aot: unknown head dims or dtypes {bad}; known: head dims "
                         f"{sorted(known)} and generic, dtypes {list(V.DTYPES)}")
    return head_dims, dtypes, generic


def _lpt(value):
    return int(value) if value != "" else None


def _todo(args, triton_version, kinds=None):
    head_dims, dtypes, generic = _subset(args)
    return V.variants(triton_version, head_dims=head_dims, dtypes=dtypes, kinds=kinds,
                      generic=generic)


def _compile(todo, arch, jobs, causal_lpt):
    jobs = max(1, min(jobs, len(todo)))
    V.set_lpt_overrides(causal_lpt)
    if jobs == 1:
        return [compile_variant(v, arch) for v in todo]
    with concurrent.futures.ProcessPoolExecutor(jobs, initializer=V.set_lpt_overrides,
                                                initargs=(causal_lpt,)) as ex:
        return list(ex.map(compile_variant, todo, [arch] * len(todo)))


def _store(out_dir: Path, results):
    """Cubins to out_dir/cubins; the records (without the bytes) for the link step."""
    (out_dir / "cubins").mkdir(parents=True, exist_ok=True)
    records = []
    for r in results:
        p = out_dir / "cubins" / f"{r['name']}.cubin"
        if not p.exists() or p.read_bytes() != r["cubin"]:
            p.write_bytes(r["cubin"])
        records.append({k: v for k, v in r.items() if k != "cubin"}
                       | {"cubin_bytes": len(r["cubin"]), "cubin_path": str(p)})
    return records


def _write_depfile(path: Path, target: Path, module: str):
    """The triton_src files that compiling `module` reads (the kernel source and what it
    imports), as a Makefile rule for the build system: an edit to any other file (the JIT
    launcher, another kind's source) rebuilds nothing here."""
    try:
        __import__(module)  # (also when it compiled nothing: what it imports)
    except ImportError:  # (a kind this Triton does not build: its source alone)
        pass
    deps = {str(HERE / f"{module}.py")} | {
        str(Path(m.__file__).resolve()) for m in list(sys.modules.values())
        if getattr(m, "__file__", None) and Path(m.__file__).resolve().parent == HERE}
    deps = sorted(deps)
    path.write_text(f"{target}: " + " \\\n  ".join(deps) + "\n")


def cmd_sources(args):
    """The kernel source modules, one per line (CMake makes one compile step of each)."""
    print("\n".join(dict.fromkeys(module for module, _ in V.SOURCES.values())))


def cmd_compile(args):
    import triton

    kinds = [k for k, (module, _) in V.SOURCES.items() if module == args.module]
    if not kinds:
        raise SystemExit(f"aot: {args.module} is not a kernel source of variants.SOURCES")
    if "fwd_gluon" in kinds and not V.gluon_supported(triton.__version__):
        print(f"aot: Triton {triton.__version__}: the Gluon forward (fwd_gluon, "
              f"fwd_gluon_padded) is written for Triton {V.GLUON_TRITON} (GluonASTSource is "
              f"private API); not compiled, its calls take the other forwards")
    if "bwd_gluon" in kinds and not V.gluon_supported(triton.__version__):
        print(f"aot: Triton {triton.__version__}: the Gluon backward (bwd_gluon, dq_cast) is "
              f"written for Triton {V.GLUON_TRITON}; not compiled, its calls take the two-kernel "
              f"backward")
    todo = _todo(args, triton.__version__, kinds)
    t0 = time.time()
    records = _store(args.out_dir, _compile(todo, args.arch, args.jobs, _lpt(args.causal_lpt)))
    part = args.out_dir / "parts" / f"{args.module}.json"
    part.parent.mkdir(parents=True, exist_ok=True)
    _write_if_changed(part, json.dumps({"triton": triton.__version__, "arch": args.arch,
                                        "kernels": records}, indent=1))
    if args.depfile:
        _write_depfile(args.depfile, part, args.module)
    print(f"aot: {args.module}: {len(records)} kernels for sm_{args.arch} with Triton "
          f"{triton.__version__} in {time.time() - t0:.1f} s")


def cmd_link(args):
    """kernels_generated.cpp, kernel_args.h and catalog.json from the compile steps' records."""
    import triton

    parts = [json.loads(Path(p).read_text()) for p in args.parts]
    by_name = {r["name"]: r for part in parts for r in part["kernels"]}
    order = [v.name for v in _todo(args, triton.__version__)]  # the table's order
    if set(by_name) != set(order):
        raise SystemExit(f"aot: the compile steps' kernels are not the variant table's: "
                         f"{sorted(set(by_name) ^ set(order))[:8]}")
    results = [by_name[n] for n in order]
    hidden = {}
    for r in results:  # one ABI per kind: every kernel of it takes the same parameters
        key = (r["num_params"], r["num_hidden_params"])
        if hidden.setdefault(r["kind"], key) != key:
            raise SystemExit(f"aot: {r['name']}: {key} parameters (own, hidden), other "
                             f"{r['kind']} kernels {hidden[r['kind']]}")
    # (a kind this build has no kernel of keeps a struct: the other kinds' hidden count)
    default = max((h for _, h in hidden.values()), default=0)
    hidden = {k: hidden.get(k, (0, default))[1] for k in V.KINDS}
    head_dims, dtypes, generic = _subset(args)
    dims = [str(d) for d in sorted(head_dims or ())] + ["generic"] * bool(generic)
    subset = " ".join(
        ([f"SIGMOID_ATTN_HEAD_DIMS={';'.join(dims)}"] if head_dims is not None else [])
        + ([f"SIGMOID_ATTN_DTYPES={';'.join(d for d in V.DTYPES if d in dtypes)}"]
           if dtypes else []))
    out = args.out_dir
    _write_if_changed(out / "kernel_args.h", args_header(hidden, triton.__version__))
    _write_if_changed(out / "kernels_generated.cpp",
                      kernels_cpp(results, triton.__version__, args.arch, subset))
    catalog = [{k: v for k, v in r.items() if k not in ("cubin_path", "ptx_param_bytes",
                                                        "signature")}
               for r in results]
    _write_if_changed(out / "catalog.json", json.dumps(
        {"triton": triton.__version__, "arch": args.arch, "subset": subset,
         "kinds": list(V.KINDS), "dtypes": list(V.DTYPES), "kernels": catalog}, indent=1))
    print(f"aot: {len(results)} kernels in the table" + (f" ({subset})" if subset else ""))


def cmd_constants(args):
    args.out_dir.mkdir(parents=True, exist_ok=True)
    _write_if_changed(args.out_dir / "sigmoid_attn_constants.h", constants_header())


def cmd_all(args):
    """Every step in one process (no build system): what CMake runs, in order."""
    cmd_constants(args)
    args.parts = []
    for module in dict.fromkeys(m for m, _ in V.SOURCES.values()):
        args.module, args.depfile = module, None
        cmd_compile(args)
        args.parts.append(args.out_dir / "parts" / f"{module}.json")
    cmd_link(args)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sources", help=cmd_sources.__doc__.splitlines()[0])
    for name in ("compile", "link", "constants", "all"):
        p = sub.add_parser(name)
        p.add_argument("--out-dir", required=True, type=Path)
        if name == "constants":
            continue
        p.add_argument("--arch", type=int, default=90)
        _subset_args(p)
        if name in ("compile", "all"):
            p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
        if name == "compile":
            p.add_argument("--module", required=True)
            p.add_argument("--depfile", type=Path)
        if name == "link":
            p.add_argument("parts", nargs="*")
    args = ap.parse_args(argv)
    {"sources": cmd_sources, "compile": cmd_compile, "link": cmd_link,
     "constants": cmd_constants, "all": cmd_all}[args.cmd](args)


if __name__ == "__main__":
    main()
