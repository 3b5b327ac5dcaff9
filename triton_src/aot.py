"""Compile every entry of the variant table to a cubin for sm_90 and emit the C++ that embeds them.

    python triton_src/aot.py --out-dir BUILD/generated [--jobs N] [--arch 90]

No GPU is needed: triton.compile runs against an explicit GPUTarget. Outputs, all in --out-dir:
  cubins/<variant>.cubin      the machine code
  kernels_generated.cpp       the cubins (.incbin) and one KernelSpec per variant
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
CU_TENSOR_MAP_DATA_TYPE = {"fp16": 6, "bf16": 9}  # CU_TENSOR_MAP_DATA_TYPE_FLOAT16 / _BFLOAT16


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
        if t == "desc":
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
    descs = [name for name, t in V.PARAMS[var.kind] if t == "desc"]
    if len(meta) != len(descs):
        raise RuntimeError(f"{var.name}: {len(meta)} tensordesc metadata entries for "
                           f"{len(descs)} descriptors")
    out, pos = [], 0
    for name, t in V.PARAMS[var.kind]:
        if t != "desc":
            pos += 1
            continue
        m = meta[len(out)]
        data_type = TMA_DTYPE_DEVICE_TO_HOST[m["elem_type"]]
        if (m.get("is_im2col") or m.get("fp4_padded") or len(m["block_size"]) != V.DESC_RANK
                or data_type != CU_TENSOR_MAP_DATA_TYPE[var.dtype] or m["elem_size"] != 2
                or not 0 <= m["swizzle"] <= 3):
            raise RuntimeError(f"{var.name}: descriptor {name} is not a tiled rank-"
                               f"{V.DESC_RANK} {var.dtype} map: {m}")
        out.append({"arg": name, "param": pos, "box": list(m["block_size"]),
                    "swizzle": m["swizzle"], "elem_bytes": m["elem_size"],
                    "data_type": data_type})
        pos += 1 + 2 * V.DESC_RANK
    return out


def compile_gluon(var: V.Variant, arch: int):
    """The Gluon forward: descriptor types carry the box and the shared-memory layout (128-byte
    swizzle for the 64-column boxes of bf16/fp16), and the warp partitions' register split."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    import importlib

    module, fn_name = V.SOURCES[var.kind]
    fn = getattr(importlib.import_module(module), fn_name)
    ty = {"fp16": gl.float16, "bf16": gl.bfloat16}[var.dtype]
    rows = var.block_m // 2  # one half of the query tile per consumer warpgroup
    boxes = {"q_desc": rows, "o_desc": rows, "k_desc": var.block_n, "v_desc": var.block_n}
    signature = {}
    for name, t in V.PARAMS[var.kind]:
        if t == "desc":
            box = [1, boxes[name], var.head_dim]
            layout = gl.NVMMASharedLayout.get_default_for(box, ty)
            signature[name] = f"tensordesc<{var.dtype}[{','.join(map(str, box))}],{layout!r}>"
        else:
            signature[name] = t
    constexprs = {"NUM_STAGES": var.num_stages, "OVERLAP": var.overlap,
                  "CONSUMER_REGS": V.GLUON_CONSUMER_REGS, "PRODUCER_REGS": V.GLUON_PRODUCER_REGS}
    names = list(fn.arg_names)
    if names != [n for n, _ in V.PARAMS[var.kind]] + list(constexprs):
        raise RuntimeError(f"variants.PARAMS[{var.kind!r}] is out of date with the kernel: "
                           f"{names}")
    signature.update({n: "constexpr" for n in constexprs})
    src = GluonASTSource(fn=fn, signature=signature, constexprs=constexprs)
    ck = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                        options={"num_warps": var.num_warps, "maxnreg": V.GLUON_MAXNREG})
    return ck, _tensor_maps(var, ck.metadata)


def compile_variant(var: V.Variant, arch: int):
    t0 = time.time()
    if var.kind == "fwd_gluon":
        ck, tensor_maps = compile_gluon(var, arch)
    else:
        ck, tensor_maps = compile_triton(var, arch), []
    md = ck.metadata
    entry = md.name
    n_own, n_hidden = _check_ptx(var, ck.asm["ptx"], entry)
    return {
        "name": var.name,
        "entry": entry,
        "cubin": ck.asm["cubin"],
        "kind": var.kind, "dtype": var.dtype, "head_dim": var.head_dim,
        "causal": var.causal, "score_mod": var.score_mod, "varlen": var.varlen,
        "block_m": var.block_m, "block_n": var.block_n, "min_t": var.min_t,
        "num_warps": md.num_warps, "num_stages": var.num_stages,
        "shared": md.shared,
        "num_params": n_own, "num_hidden_params": n_hidden,
        "global_scratch_size": int(getattr(md, "global_scratch_size", 0) or 0),
        "global_scratch_align": int(getattr(md, "global_scratch_align", 1) or 1),
        "profile_scratch_size": int(getattr(md, "profile_scratch_size", 0) or 0),
        "profile_scratch_align": int(getattr(md, "profile_scratch_align", 1) or 1),
        "tensor_maps": tensor_maps,
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
        constexprs["SOFTWARE_PIPELINE"] = var.software_pipeline
        constexprs["USE_TMA"] = var.tma
        constexprs["CAUSAL_LPT"] = var.causal_lpt
        constexprs["LENGTH_LPT"] = var.length_lpt
    else:
        constexprs["CAUSAL_LPT"] = var.causal_lpt
        if var.kind == "bwd_dkdv_dq":  # dQ by TMA tile reductions: a power-of-two head dim
            if var.block_d != var.head_dim:
                raise RuntimeError(f"{var.name}: the one-pass backward needs a power-of-two "
                                   f"head dim")
            constexprs["ATOMIC_DQ"] = 2
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
            if name in divisible:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=signature, constexprs=consts, attrs=attrs)
    options = {"num_warps": var.num_warps, "num_stages": var.num_stages}
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


CPP_HEAD = """// Generated by triton_src/aot.py from triton_src/variants.py. Do not edit.
#include "kernel_spec.h"

"""


def write_cpp(out_dir: Path, results, triton_version: str, arch: int):
    cubin_dir = out_dir / "cubins"
    lines = [CPP_HEAD]
    # .incbin keeps multi-megabyte cubins out of the C++ parser; symbols are hidden so that
    # two copies of the library never interpose each other's images.
    for i, r in enumerate(results):
        path = str((cubin_dir / f"{r['name']}.cubin").resolve()).replace("\\", "/")
        lines.append(
            "__asm__(\".section .rodata\\n.balign 16\\n"
            f".hidden sigmoid_attn_cubin_{i}\\n.globl sigmoid_attn_cubin_{i}\\n"
            f"sigmoid_attn_cubin_{i}:\\n.incbin \\\"{path}\\\"\\n.previous\\n\");\n"
            f"extern \"C\" const unsigned char sigmoid_attn_cubin_{i}[];\n")
    lines.append("\nnamespace sigmoid_attn {\n\nconst KernelSpec kKernels[] = {\n")
    dt = {"fp16": "DType::kFloat16", "bf16": "DType::kBFloat16", "fp32": "DType::kFloat32"}
    kinds = {"fwd": "KernelKind::kForward", "bwd_dkdv": "KernelKind::kBackwardDkDv",
             "bwd_dq": "KernelKind::kBackwardDq", "fwd_ws": "KernelKind::kForwardWS",
             "bwd_dkdv_dq": "KernelKind::kBackwardDkDvDq",
             "fwd_gluon": "KernelKind::kForwardGluon"}
    for i, r in enumerate(results):
        maps = ", ".join(
            f"{{{m['param']}, {{{', '.join(f'{b}u' for b in m['box'])}}}, {m['swizzle']}, "
            f"{m['elem_bytes']}, {m['data_type']}}}" for m in r["tensor_maps"])
        lines.append(
            f"    {{\"{r['name']}\", \"{r['entry']}\", sigmoid_attn_cubin_{i}, "
            f"{len(r['cubin'])}u, {kinds[r['kind']]}, {dt[r['dtype']]}, {r['head_dim']}, "
            f"{str(r['causal']).lower()}, {str(r['score_mod']).lower()}, "
            f"{str(r['varlen']).lower()}, "
            f"{r['block_m']}, {r['block_n']}, {r['num_warps']}, {r['num_stages']}, {r['min_t']}, "
            f"{r['shared']}, {r['num_params']}, {r['num_hidden_params']}, "
            f"{r['global_scratch_size']}, {r['global_scratch_align']}, "
            f"{r['profile_scratch_size']}, {r['profile_scratch_align']}, "
            f"{len(r['tensor_maps'])}, {{{maps}}}}},\n")
    lines.append("};\n\n")
    lines.append(f"const int kNumKernels = {len(results)};\n")
    lines.append(f"const char* const kTritonVersion = \"{triton_version}\";\n")
    lines.append(f"const int kCompiledArch = {arch};\n")
    lines.append(f"const bool kWarpSpecializedDispatch = {str(V.FWD_WS_DISPATCH).lower()};\n")
    lines.append(f"const bool kGluonForwardDispatch = {str(V.FWD_GLUON_DISPATCH).lower()};\n")
    lines.append(f"const bool kAtomicDqDispatch = {str(V.BWD_ATOMIC_DQ_DISPATCH).lower()};\n\n"
                 "}  // namespace sigmoid_attn\n")
    text = "".join(lines)
    target = out_dir / "kernels_generated.cpp"
    # Rewrite only on change so that an unchanged table does not recompile the library.
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", required=True, type=Path)
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", default="", help="comma-separated substrings of variant names")
    args = ap.parse_args(argv)

    import triton

    todo = V.variants(triton.__version__)
    if not V.gluon_supported(triton.__version__):
        print(f"aot: Triton {triton.__version__}: the Gluon forward (fwd_gluon) is written for "
              f"Triton {V.GLUON_TRITON} (GluonASTSource is private API); not compiled, its calls "
              f"take the other forwards")
    if args.only:
        keys = args.only.split(",")
        todo = [v for v in todo if any(k in v.name for k in keys)]
    out_dir = args.out_dir
    (out_dir / "cubins").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    jobs = max(1, min(args.jobs, len(todo)))
    if jobs == 1:
        results = [compile_variant(v, args.arch) for v in todo]
    else:
        with concurrent.futures.ProcessPoolExecutor(jobs) as ex:
            results = list(ex.map(compile_variant, todo, [args.arch] * len(todo)))
    for r in results:
        p = out_dir / "cubins" / f"{r['name']}.cubin"
        if not p.exists() or p.read_bytes() != r["cubin"]:
            p.write_bytes(r["cubin"])
    write_cpp(out_dir, results, triton.__version__, args.arch)
    catalog = [{k: v for k, v in r.items() if k != "cubin"} | {"cubin_bytes": len(r["cubin"])}
               for r in results]
    (out_dir / "catalog.json").write_text(json.dumps(
        {"triton": triton.__version__, "arch": args.arch, "kernels": catalog}, indent=1))
    print(f"aot: {len(results)} kernels for sm_{args.arch} with Triton {triton.__version__} "
          f"in {time.time() - t0:.1f} s ({jobs} jobs)")


if __name__ == "__main__":
    main()
