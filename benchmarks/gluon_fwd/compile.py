"""Compile the persistent Gluon sigmoid-attention forward for sm_90 ahead of time (no GPU
needed), for the standalone runner (run_on_device.py).

    python benchmarks/gluon_fwd/compile.py [--only NAME_SUBSTR]

The kernel: triton_src/sigmoid_attn_fwd_gluon_persistent.py (the library's kind fwd_gluon, which
triton_src/aot.py builds into the library); this script compiles more head dims and flag
combinations (lengths) than the library ships. Needs Triton 3.8.0 (GluonASTSource is a
private module: pinned). The descriptors are rank 4, [B, T, H, D] with a [1, rows, 1, head_dim]
box, as the library's (triton_src/variants.py DESC_RANK). Writes into build/ next to this file:
<variant>.cubin, .ptx, .ttgir, and variants.json (entry, num_warps, shared memory, the PTX
parameter list, the tensor-descriptor metadata the host needs to encode the CUtensorMaps,
hidden scratch parameters), and checks the PTX for the schedule's instructions.
"""

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRITON_SRC = HERE.parent.parent / "triton_src"
sys.path.insert(0, str(TRITON_SRC))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.experimental.gluon import language as gl  # noqa: E402
from triton.experimental.gluon._runtime import GluonASTSource  # noqa: E402

from sigmoid_attn_fwd_gluon_persistent import sigmoid_attn_fwd_gluon_persistent  # noqa: E402

PINNED = "3.8.0"
# The descriptors' rank: [B, T, H, D] (the library's variants.DESC_RANK)
DESC_RANK = 4
DTYPES = {"bf16": gl.bfloat16, "fp16": gl.float16}
# host CUtensorMapDataType
CU_DTYPE = {"bf16": 9, "fp16": 6}
ELEM_BYTES = {"bf16": 2, "fp16": 2}


class Variant:
    """sigmoid_attn_fwd_gluon_persistent (grid (programs,)), named
    pfwd_<dtype>_d<D>_m<BLOCK_M>_n<BLOCK_N>_s<stages>_{dense,causal,lens,causal_lens}."""

    def __init__(self, dtype, head_dim, block_m, block_n, stages, consumer_regs=240,
                 producer_regs=24, causal=False, lengths=False, consumers=2):
        self.consumers = consumers
        self.dtype, self.head_dim = dtype, head_dim
        self.block_m, self.block_n, self.stages = block_m, block_n, stages
        self.consumer_regs, self.producer_regs = consumer_regs, producer_regs
        self.causal, self.lengths = causal, lengths

    @property
    def split(self):
        """Whether the kernel compiles the split last wave (its SPLIT constexpr)."""
        return (not self.causal and not self.lengths and self.consumers == 2
                and self.head_dim <= 128)

    @property
    def name(self):
        base = f"{self.dtype}_d{self.head_dim}_m{self.block_m}_n{self.block_n}_s{self.stages}"
        mode = "_".join([w for w, on in (("causal", self.causal), ("lens", self.lengths))
                         if on]) or "dense"
        return f"pfwd_{base}_{mode}" + (f"_wg{self.consumers}" if self.consumers != 2 else "")


def variants():
    out = []
    # bf16: dense, causal, padded (seq lens), both
    for d in (128, 64):
        for causal, lengths in ((False, False), (True, False), (False, True), (True, True)):
            out.append(Variant("bf16", d, 128, 128, 2, causal=causal, lengths=lengths))
    # fp16: what the library ships (hd128, dense and causal)
    for causal in (False, True):
        out.append(Variant("fp16", 128, 128, 128, 2, causal=causal))
    # hd64 with three consumer warpgroups (192-row tiles), 2 and 3 K/V stages, beside the
    # two-warpgroup kernel with 3 stages; hd256 (64-key blocks) dense and causal
    for stages in (2, 3):
        for lengths in (False, True):
            out.append(Variant("bf16", 64, 192, 128, stages, consumer_regs=160, consumers=3,
                               lengths=lengths))
    out.append(Variant("bf16", 64, 128, 128, 3))
    for causal, lengths in ((False, False), (True, False), (True, True)):
        out.append(Variant("bf16", 256, 128, 64, 2, causal=causal, lengths=lengths))
    return out


def _entry_params(ptx, entry):
    m = re.search(r"\.entry\s+" + re.escape(entry) + r"\s*\((.*?)\)", ptx, re.S)
    if m is None:
        raise RuntimeError(f"entry {entry} not found in PTX")
    params = []
    for line in m.group(1).split(","):
        line = line.strip()
        if not line:
            continue
        # e.g. ".param .align 64 .b8 NAME[128]", ".param .u32 NAME",
        #      ".param .u64 .ptr .global .align 1 NAME"
        pm = re.match(r"\.param\s+(?:\.align\s+(\d+)\s+)?\.(\w+)\s+(?:\.ptr\s+(?:\.\w+\s+)?"
                      r"(?:\.align\s+\d+\s+)?)?(\w+)(?:\[(\d+)\])?$", line)
        if pm is None:
            raise RuntimeError(f"cannot parse PTX parameter {line!r}")
        align, ty, name, count = pm.groups()
        size = {"b8": 1, "u8": 1, "s8": 1, "b16": 2, "u16": 2, "s16": 2, "b32": 4, "u32": 4,
                "s32": 4, "f32": 4, "b64": 8, "u64": 8, "s64": 8, "f64": 8}[ty]
        size *= int(count) if count else 1
        params.append({"name": name, "ptx_type": ty, "size": size,
                       "align": int(align) if align else size})
    return params


def _classify(params, sig_names, tensordesc_rank):
    """Names each PTX parameter after the kernel argument it comes from: a tensordesc
    argument becomes the by-value CUtensorMap (128 bytes, align 64) followed by its shape
    (i32 x rank) and strides (i64 x rank); anything after the kernel's own arguments is a
    hidden pointer (global scratch, profile scratch)."""
    out, i = [], 0
    for name, ty in sig_names:
        if ty.startswith("tensordesc"):
            p = params[i]
            if not (p["size"] == 128 and p["align"] == 64):
                raise RuntimeError(f"{name}: expected a 128-byte align-64 CUtensorMap, got {p}")
            out.append(dict(p, role="tensormap", arg=name))
            i += 1
            for d in range(tensordesc_rank):
                p = params[i]
                if p["size"] != 4:
                    raise RuntimeError(f"{name}: expected an i32 shape[{d}], got {p}")
                out.append(dict(p, role="desc_shape", arg=name, dim=d))
                i += 1
            for d in range(tensordesc_rank):
                p = params[i]
                if p["size"] != 8:
                    raise RuntimeError(f"{name}: expected an i64 stride[{d}], got {p}")
                out.append(dict(p, role="desc_stride", arg=name, dim=d))
                i += 1
        else:
            p = params[i]
            want = 8 if ty.startswith("*") else {"i32": 4, "fp32": 4, "i64": 8}[ty]
            if p["size"] != want:
                raise RuntimeError(f"{name}: expected {want} bytes, got {p}")
            out.append(dict(p, role="scalar", arg=name, type=ty))
            i += 1
    for p in params[i:]:
        if p["size"] != 8:
            raise RuntimeError(f"unexpected hidden parameter {p}")
        out.append(dict(p, role="hidden_ptr"))
    return out


# TMA loads and O stores of the rank-4 descriptors
TMA_LOAD_4D = "cp.async.bulk.tensor.4d.shared::cta.global"
TMA_STORE_4D = "cp.async.bulk.tensor.4d.global.shared"
CHECKS = ["wgmma.mma_async", "wgmma.wait_group", "cp.async.bulk.tensor", TMA_LOAD_4D,
          TMA_STORE_4D, "setmaxnreg", "mbarrier.inval", "mbarrier.try_wait", "mbarrier.arrive",
          "tanh.approx.f32", "bar.sync", "bar.arrive"]
REQUIRED = ["wgmma.mma_async", "cp.async.bulk.tensor", TMA_LOAD_4D, TMA_STORE_4D, "setmaxnreg",
            "mbarrier.inval", "tanh.approx.f32"]


def desc_type(dtype, gl_type, box):
    """The signature type of a descriptor with this box (outermost first) and the default NVMMA
    shared layout of its dtype, as triton_src/aot.py declares the library's."""
    assert len(box) == DESC_RANK, box
    layout = gl.NVMMASharedLayout.get_default_for(box, gl_type)
    return f"tensordesc<{dtype}[{','.join(map(str, box))}],{layout!r}>"


def compile_variant(v: Variant, out_dir: Path):
    ty = DTYPES[v.dtype]
    rows = v.block_m // v.consumers
    q_t = desc_type(v.dtype, ty, [1, rows, 1, v.head_dim])
    kv_t = desc_type(v.dtype, ty, [1, v.block_n, 1, v.head_dim])
    sig = {
        "q_desc": q_t,
        "k_desc": kv_t,
        "v_desc": kv_t,
        "o_desc": q_t,
        "SEQ_LENS_Q": "*i32",
        "SEQ_LENS_K": "*i32",
        "O": f"*{v.dtype}",
        "stride_ot": "i32",
        "D": "i32",
        "BIAS": "*fp32",
        "SCORE_MOD": "*fp32",
        "stride_smb": "i64",
        "BIAS_MODE": "i32",
        "T_Q": "i32",
        "T_K": "i32",
        "H": "i32",
        "B": "i32",
        "kv_group": "i32",
        "scale": "fp32",
        "bias_value": "fp32",
        "MAX_Q": "i32",
        "MAX_K": "i32",
        "WS": "*fp32",
        "FLAGS": "*i32",
        "SCHEDULE": "i32",
        "NUM_STAGES": "constexpr",
        "CAUSAL": "constexpr",
        "HAS_LENGTHS": "constexpr",
        "CONSUMER_REGS": "constexpr",
        "PRODUCER_REGS": "constexpr",
        "VARLEN": "constexpr",
        "HAS_MOD": "constexpr",
        "CONSUMERS": "constexpr",
        "SCORE_DIM": "constexpr",
    }
    constexprs = {"NUM_STAGES": v.stages, "CAUSAL": v.causal, "HAS_LENGTHS": v.lengths,
                  "CONSUMER_REGS": v.consumer_regs, "PRODUCER_REGS": v.producer_regs,
                  "VARLEN": False, "HAS_MOD": False, "CONSUMERS": v.consumers, "SCORE_DIM": 0}
    src = GluonASTSource(fn=sigmoid_attn_fwd_gluon_persistent, signature=sig,
                         constexprs=constexprs)
    return _build(v, out_dir, src, sig)


def _key_loop_spills(cubin_path):
    """Local memory instructions (STL/LDL) inside the innermost wgmma loops of a cubin (the key
    loops), by benchmarks/sass_loops.py's reading of Triton's nvdisasm."""
    import importlib.util
    import subprocess
    spec = importlib.util.spec_from_file_location(
        "sass_loops", Path(__file__).resolve().parents[1] / "sass_loops.py")
    sl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sl)
    sass = subprocess.run([str(sl.nvdisasm()), "-c", str(cubin_path)], capture_output=True,
                          text=True, check=True).stdout
    loops = sl.wgmma_loops(sass)
    inner = [(a, b, c) for a, b, c in loops
             if not any(a2 > a and b2 < b for a2, b2, _ in loops)]  # (holding no other loop)
    return sum(c["STL"] + c["LDL"] for _, _, c in inner)


def _ptxas_v(ptx_path):
    """Triton's bundled ptxas -v on the PTX: (registers, stack frame, spill stores, spill loads)."""
    import subprocess
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    r = subprocess.run([str(ptxas), "-v", "--gpu-name", "sm_90a", str(ptx_path), "-o",
                        os.devnull], capture_output=True, text=True)
    txt = r.stdout + r.stderr
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                  txt)
    regs = re.search(r"Used (\d+) registers", txt)
    if r.returncode or not m or not regs:
        raise RuntimeError(f"ptxas -v failed on {ptx_path}: {txt[-500:]}")
    return {"registers": int(regs.group(1)), "stack_frame": int(m.group(1)),
            "spill_stores": int(m.group(2)), "spill_loads": int(m.group(3))}


def _build(v, out_dir, src, sig):
    rows = v.block_m // v.consumers
    t0 = time.time()
    # 4 warps in the default partition; consumers + 1 warpgroups in all (384 or 512 threads)
    # -> at most 168 or 128 registers per thread at launch; setmaxnreg moves them to the
    # consumers.
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": 4, "maxnreg": 65536 // (128 * (v.consumers + 1))
                                // 8 * 8})
    dt = time.time() - t0
    md = k.metadata
    ptx = k.asm["ptx"]
    entry = md.name
    params = _entry_params(ptx, entry)
    sig_args = [(n, t) for n, t in sig.items() if t != "constexpr"]
    layout = _classify(params, sig_args, DESC_RANK)
    counts = {c: ptx.count(c) for c in CHECKS}
    missing = [c for c in REQUIRED if counts[c] == 0]
    maxnreg = re.findall(r"setmaxnreg\.(inc|dec)\.sync\.aligned\.u32\s+(\d+)", ptx)
    tdm = getattr(md, "tensordesc_meta", None)
    tdm = [dict(m) for m in tdm] if tdm else None
    (out_dir / f"{v.name}.cubin").write_bytes(k.asm["cubin"])
    (out_dir / f"{v.name}.ptx").write_text(ptx)
    (out_dir / f"{v.name}.ttgir").write_text(k.asm["ttgir"])
    ptxas = _ptxas_v(out_dir / f"{v.name}.ptx")
    if ptxas["spill_stores"] or ptxas["spill_loads"] or ptxas["stack_frame"]:
        # A few scalars spilled around a tile (the split last wave's item loop) cost nothing
        # measurable; local memory traffic inside a key loop does: that fails.
        in_loops = _key_loop_spills(out_dir / f"{v.name}.cubin")
        if in_loops or not v.split:
            missing = missing + [f"no spills{' in the key loops' if v.split else ''} "
                                 f"({ptxas}; key loops: {in_loops})"]
    rec = {
        "name": v.name, "entry": entry, "cubin": f"{v.name}.cubin",
        "dtype": v.dtype, "cu_tensor_dtype": CU_DTYPE[v.dtype], "elem_bytes": ELEM_BYTES[v.dtype],
        "head_dim": v.head_dim, "block_m": v.block_m, "rows_per_warpgroup": rows,
        "block_n": v.block_n, "num_stages": v.stages,
        "consumer_regs": v.consumer_regs, "producer_regs": v.producer_regs,
        "causal": v.causal, "lengths": v.lengths,
        "num_warps": md.num_warps, "threads": 32 * md.num_warps,
        "shared": md.shared,
        "params": layout,
        "tensordesc_meta": tdm,
        "global_scratch_size": int(getattr(md, "global_scratch_size", 0) or 0),
        "global_scratch_align": int(getattr(md, "global_scratch_align", 1) or 1),
        "profile_scratch_size": int(getattr(md, "profile_scratch_size", 0) or 0),
        "profile_scratch_align": int(getattr(md, "profile_scratch_align", 1) or 1),
        "ptx_counts": counts, "setmaxnreg": [f"{a} {n}" for a, n in maxnreg],
        "ptx_reqntid": re.findall(r"\.reqntid\s+([\d, ]+)", ptx),
        "ptx_maxnreg": re.findall(r"\.maxnreg\s+(\d+)", ptx),
        "ptxas": ptxas,
        "compile_s": round(dt, 2), "triton": triton.__version__,
    }
    return rec, missing


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("--out-dir", type=Path, default=HERE / "build")
    args = ap.parse_args()
    if triton.__version__ != PINNED:
        print(f"WARNING: Triton {triton.__version__}, compiled and checked with {PINNED} "
              "(GluonASTSource is private API)", file=sys.stderr)
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    recs, bad = [], []
    for v in variants():
        if args.only and args.only not in v.name:
            continue
        try:
            rec, missing = compile_variant(v, out_dir)
        except Exception as e:  # noqa: BLE001
            print(f"FAIL {v.name}: {type(e).__name__}: {e}", file=sys.stderr)
            bad.append(v.name)
            continue
        recs.append(rec)
        c = rec["ptx_counts"]
        print(f"{v.name}: {rec['compile_s']}s shared={rec['shared']} warps={rec['num_warps']} "
              f"setmaxnreg={rec['setmaxnreg']} wgmma={c['wgmma.mma_async']} "
              f"tma={c['cp.async.bulk.tensor']} inval={c['mbarrier.inval']} "
              f"tanh={c['tanh.approx.f32']} bar.sync={c['bar.sync']} ptxas={rec['ptxas']}"
              + (f"  MISSING {missing}" if missing else ""))
        if missing:
            bad.append(v.name)
    (out_dir / "variants.json").write_text(json.dumps(
        {"triton": triton.__version__, "arch": 90, "variants": recs}, indent=1))
    (out_dir / ".gitignore").write_text("*\n")
    print(f"wrote {len(recs)} variants to {out_dir}/variants.json")
    if bad:
        print(f"FAILED/INCOMPLETE: {bad}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
