"""Compile the Gluon sigmoid-attention backward for sm_90 ahead of time (no GPU needed), for the
standalone runner (run_on_device.py).

    python benchmarks/gluon_bwd/compile.py [--only NAME_SUBSTR] [--out-dir DIR]

Needs Triton 3.8.0 (GluonASTSource is a private module: pinned). The descriptors are rank 4,
[B, T, heads, D] with [1, rows, 1, head_dim] boxes, as the library's (triton_src/variants.py
DESC_RANK); D, the tensors' head dim, is an argument. Writes into build/ next to this file:
<variant>.cubin, .ptx, and variants.json (entry, num_warps, shared memory, the PTX parameter
list with each parameter's role, the tensor-descriptor metadata the host needs to encode the
CUtensorMaps, register and spill counts from ptxas -v), and fails when the PTX lacks an
instruction the schedule is made of.
"""

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRITON_SRC = HERE.parent.parent / "triton_src"
sys.path.insert(0, str(TRITON_SRC))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.experimental.gluon import language as gl  # noqa: E402
from triton.experimental.gluon._runtime import GluonASTSource  # noqa: E402

from sigmoid_attn_bwd_gluon import dq_cast, sigmoid_attn_bwd_gluon  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

# The PTX parameter parser and classifier are the forward probe's (same descriptor ABI).
_spec = importlib.util.spec_from_file_location("gluon_fwd_compile",
                                               HERE.parent / "gluon_fwd" / "compile.py")
_fwd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fwd)
_entry_params, _classify = _fwd._entry_params, _fwd._classify

PINNED = "3.8.0"
DTYPES = {"bf16": gl.bfloat16, "fp16": gl.float16}
CU_DTYPE = {"bf16": 9, "fp16": 6}  # host CUtensorMapDataType
HALF_N = 64  # keys per consumer warpgroup; BLOCK_N = 128 per CTA

# Instructions the schedule is made of; REQUIRED ones missing fail the build (and the test).
# The TMA copies are of rank-4 descriptors: loads (Q, dO, K, V), dK/dV stores, dQ reduce-adds.
TMA_4D = [_fwd.TMA_LOAD_4D, _fwd.TMA_STORE_4D, "cp.reduce.async.bulk.tensor.4d.global.shared"]
CHECKS = ["wgmma.mma_async", "wgmma.wait_group", "cp.async.bulk.tensor",
          "cp.reduce.async.bulk.tensor", "cp.async.bulk.wait_group", "setmaxnreg",
          "mbarrier.try_wait", "mbarrier.arrive", "mbarrier.inval", "ex2.approx",
          "rcp.approx.ftz.f32", "fence.proxy.async", "bar.sync"] + TMA_4D
REQUIRED = ["wgmma.mma_async", "cp.async.bulk.tensor", "cp.reduce.async.bulk.tensor",
            "setmaxnreg", "mbarrier.try_wait", "mbarrier.inval", "ex2.approx",
            "fence.proxy.async"] + TMA_4D


class Variant:
    def __init__(self, dtype, head_dim, block_m=64, stages=2, consumer_regs=240,
                 producer_regs=24, rcp_newton=False, dq_shared=False, dq_issue=0):
        self.dtype, self.head_dim, self.block_m, self.stages = dtype, head_dim, block_m, stages
        self.consumer_regs, self.producer_regs = consumer_regs, producer_regs
        self.rcp_newton, self.dq_shared, self.dq_issue = rcp_newton, dq_shared, dq_issue

    @property
    def required(self):
        # MUFU.RCP only where the reciprocal is not computed on the FMA pipe
        return REQUIRED + ([] if self.rcp_newton else ["rcp.approx.ftz.f32"])

    @property
    def block_n(self):
        return 2 * HALF_N

    @property
    def name(self):
        return (f"gbwd_{self.dtype}_d{self.head_dim}_m{self.block_m}_n{self.block_n}"
                f"_s{self.stages}" + ("_nr" if self.rcp_newton else "")
                + ("_dqx" if self.dq_shared else "") + ("", "_dqo", "_dqd")[self.dq_issue])


# Candidates beside the baseline: _nr computes 1/(1 + e) with Newton steps on the FMA pipe
# (one MUFU op per score instead of two); _dqx exchanges dS between the warpgroups and
# reduce-adds one dQ tile over all 128 keys per query tile (half the dQ traffic).
CANDIDATES = [dict(rcp_newton=True), dict(dq_shared=True), dict(rcp_newton=True, dq_shared=True)]


# On top of _dqx: _dqo queues dQ right behind dV, dK (no wgmma drain between them); _dqd
# (D = 128) queues tile i's dQ behind tile i + 1's Sᵀ, dPᵀ, so P is computed under two wgmmas
# and the partner's dSᵀ is waited for a tile later; _s3 (D = 64) a 3-stage Q/dO ring.
DQX_CANDIDATES = {128: [dict(dq_issue=1), dict(dq_issue=2)],
                  64: [dict(dq_issue=1), dict(stages=3), dict(stages=3, dq_issue=1)]}


def variants():
    # _nr_dqx at D = 128 spills (40 B: the Newton temporaries beside dK, dV, dPᵀ in flight).
    out = [Variant(dt, d, **kw) for dt in ("bf16", "fp16") for d in (128, 64)
           for kw in [{}] + CANDIDATES if d == 64 or kw != CANDIDATES[-1]]
    return out + [Variant(dt, d, dq_shared=True, **kw) for dt in ("bf16", "fp16")
                  for d in (128, 64) for kw in DQX_CANDIDATES[d]]


def signature(v: Variant):
    """Rank-4 descriptors [B, T, heads, D] with [1, rows, 1, head_dim] boxes (the forward
    probe's desc_type), then the scalars; D is the tensors' head dim (the packed kernels'
    masked stores)."""
    ty = DTYPES[v.dtype]
    q_t = _fwd.desc_type(v.dtype, ty, [1, v.block_m, 1, v.head_dim])
    kv_t = _fwd.desc_type(v.dtype, ty, [1, HALF_N, 1, v.head_dim])
    dq_t = _fwd.desc_type("fp32", gl.float32, [1, v.block_m, 1, v.head_dim])
    sig = {"q_desc": q_t, "k_desc": kv_t, "v_desc": kv_t, "do_desc": q_t, "dq_desc": dq_t,
           "dk_desc": kv_t, "dv_desc": kv_t, "SEQ_LENS_Q": "*i32", "SEQ_LENS_K": "*i32",
           "T_Q": "i32", "T_K": "i32", "kv_group": "i32",
           "scale": "fp32", "bias_value": "fp32", "DK": f"*{v.dtype}", "DV": f"*{v.dtype}",
           "stride_kt": "i32", "D": "i32", "BIAS": "*fp32", "SCORE_MOD": "*fp32",
           "stride_smb": "i64", "DMOD": "*fp32", "stride_dmb": "i64", "stride_dmh": "i64",
           "BIAS_MODE": "i32", "MAX_Q": "i32", "MAX_K": "i32",
           "NUM_STAGES": "constexpr",
           "CONSUMER_REGS": "constexpr", "PRODUCER_REGS": "constexpr",
           "RCP_NEWTON": "constexpr", "DQ_SHARED": "constexpr", "DQ_ISSUE": "constexpr",
           "CAUSAL": "constexpr", "HAS_LENGTHS": "constexpr", "VARLEN": "constexpr",
           "HAS_MOD": "constexpr", "SCORE_DIM": "constexpr"}
    constexprs = {"NUM_STAGES": v.stages, "CONSUMER_REGS": v.consumer_regs,
                  "PRODUCER_REGS": v.producer_regs, "RCP_NEWTON": v.rcp_newton,
                  "DQ_SHARED": v.dq_shared, "DQ_ISSUE": v.dq_issue, "CAUSAL": False,
                  "HAS_LENGTHS": False, "VARLEN": False, "HAS_MOD": False, "SCORE_DIM": 0}
    return sig, constexprs


def ptxas_usage(ptx: str):
    """Registers, spills and stack of the entry from ptxas -v (Triton's bundled ptxas)."""
    from triton.backends.nvidia.compiler import get_ptxas
    ptxas = get_ptxas(90).path
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "k.ptx"
        p.write_text(ptx)
        r = subprocess.run([ptxas, "-arch=sm_90a", "-v", str(p), "-o", str(Path(d) / "k.o")],
                           capture_output=True, text=True)
    text = r.stdout + r.stderr
    if r.returncode != 0:
        raise RuntimeError(f"ptxas -v failed: {text[-2000:]}")
    regs = re.search(r"Used (\d+) registers", text)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    stack = re.search(r"(\d+) bytes stack frame", text)
    return {"n_regs": int(regs.group(1)) if regs else None,
            "spill_store_bytes": int(spill.group(1)) if spill else None,
            "spill_load_bytes": int(spill.group(2)) if spill else None,
            "stack_frame_bytes": int(stack.group(1)) if stack else None,
            "ptxas_v": text.strip()[-600:]}


def compile_variant(v: Variant, out_dir: Path, with_ptxas=True):
    sig, constexprs = signature(v)
    src = GluonASTSource(fn=sigmoid_attn_bwd_gluon, signature=sig, constexprs=constexprs)
    t0 = time.time()
    # 4 warps in the default partition + 4 + 1 + 1 worker warps, padded to 3 warpgroups (384
    # threads): at most 168 registers per thread at launch; setmaxnreg moves them to the
    # consumers.
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": 4, "maxnreg": 168})
    dt = time.time() - t0
    md = k.metadata
    ptx = k.asm["ptx"]
    params = _entry_params(ptx, md.name)
    layout = _classify(params, [(n, t) for n, t in sig.items() if t != "constexpr"],
                       _fwd.DESC_RANK)
    counts = {c: ptx.count(c) for c in CHECKS}
    missing = [c for c in v.required if counts[c] == 0]
    tdm = getattr(md, "tensordesc_meta", None)
    tdm = [dict(m) for m in tdm] if tdm else None
    (out_dir / f"{v.name}.cubin").write_bytes(k.asm["cubin"])
    (out_dir / f"{v.name}.ptx").write_text(ptx)
    rec = {
        "name": v.name, "entry": md.name, "cubin": f"{v.name}.cubin",
        "dtype": v.dtype, "cu_tensor_dtype": CU_DTYPE[v.dtype], "elem_bytes": 2,
        "head_dim": v.head_dim, "block_m": v.block_m, "block_n": v.block_n,
        "num_stages": v.stages, "consumer_regs": v.consumer_regs,
        "producer_regs": v.producer_regs, "rcp_newton": v.rcp_newton,
        "dq_shared": v.dq_shared, "dq_issue": v.dq_issue, "num_warps": md.num_warps,
        "threads": 32 * md.num_warps, "shared": md.shared,
        "descs": [n for n, t in sig.items() if t.startswith("tensordesc")],
        "params": layout, "tensordesc_meta": tdm,
        "global_scratch_size": int(getattr(md, "global_scratch_size", 0) or 0),
        "profile_scratch_size": int(getattr(md, "profile_scratch_size", 0) or 0),
        "ptx_counts": counts,
        "setmaxnreg": [f"{a} {n}" for a, n in
                       re.findall(r"setmaxnreg\.(inc|dec)\.sync\.aligned\.u32\s+(\d+)", ptx)],
        "ptx_reqntid": re.findall(r"\.reqntid\s+([\d, ]+)", ptx),
        "ptx_maxnreg": re.findall(r"\.maxnreg\s+(\d+)", ptx),
        "compile_s": round(dt, 2), "triton": triton.__version__,
    }
    if with_ptxas:
        rec.update(ptxas_usage(ptx))
    return rec, missing


CAST_BLOCK = 4096  # elements per program of dq_cast (8 warps: 16 fp32 per thread)


def compile_cast(dtype: str, out_dir: Path):
    """The fp32 -> dtype cast of the dQ accumulator, as the library would launch it."""
    name = f"dq_cast_{dtype}"
    sig = {"src": "*fp32", "dst": f"*{dtype}", "n": "i32", "BLOCK": "constexpr"}
    # Both pointers 16-byte aligned and n a multiple of 16 (n = B·T·H·D, D >= 64): 16-byte
    # vector loads and 8-byte stores.
    div16 = [["tt.divisibility", 16]]
    src = ASTSource(fn=dq_cast, signature=sig, constexprs={"BLOCK": CAST_BLOCK},
                    attrs={(0, ): div16, (1, ): div16, (2, ): div16})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
    ptx = k.asm["ptx"]
    (out_dir / f"{name}.cubin").write_bytes(k.asm["cubin"])
    (out_dir / f"{name}.ptx").write_text(ptx)
    n_params = len(_entry_params(ptx, k.metadata.name))
    if n_params < 3:
        raise RuntimeError(f"{name}: {n_params} PTX parameters, expected src, dst, n (+hidden)")
    return {"name": name, "entry": k.metadata.name, "cubin": f"{name}.cubin", "dtype": dtype,
            "num_warps": k.metadata.num_warps, "threads": 32 * k.metadata.num_warps,
            "shared": k.metadata.shared, "block": CAST_BLOCK, "n_params": n_params,
            "global_scratch_size": int(getattr(k.metadata, "global_scratch_size", 0) or 0),
            "profile_scratch_size": int(getattr(k.metadata, "profile_scratch_size", 0) or 0)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="",
                    help="comma-separated substrings of variant names (any matches)")
    ap.add_argument("--out-dir", type=Path, default=HERE / "build")
    args = ap.parse_args()
    if triton.__version__ != PINNED:
        print(f"WARNING: Triton {triton.__version__}, compiled and checked with {PINNED} "
              "(GluonASTSource is private API)", file=sys.stderr)
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    recs, bad = [], []
    subs = [x for x in args.only.split(",") if x] or [""]
    for v in variants():
        if not any(x in v.name for x in subs):
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
              f"regs={rec.get('n_regs')} spill={rec.get('spill_store_bytes')}/"
              f"{rec.get('spill_load_bytes')} setmaxnreg={rec['setmaxnreg']} "
              f"wgmma={c['wgmma.mma_async']} tma={c['cp.async.bulk.tensor']} "
              f"reduce={c['cp.reduce.async.bulk.tensor']} inval={c['mbarrier.inval']}"
              + (f"  MISSING {missing}" if missing else ""))
        if missing or rec.get("spill_store_bytes"):
            bad.append(v.name)
    casts = [compile_cast(dt, out_dir) for dt in sorted({r["dtype"] for r in recs})]
    (out_dir / "variants.json").write_text(json.dumps(
        {"triton": triton.__version__, "arch": 90, "variants": recs, "casts": casts}, indent=1))
    print(f"wrote {len(recs)} variants to {out_dir}/variants.json")
    if bad:
        print(f"FAILED/INCOMPLETE: {bad}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
