"""The variant table: every kernel the build compiles. The single source of truth.

Adding a variant is one entry in FWD_TILES (a head dim) or one value in the tuples below.
The C++ dispatcher's lookup table is generated from this list by aot.py.
"""

from dataclasses import dataclass

DTYPES = ("fp16", "bf16", "fp32")

# head_dim -> [(min_T, (BLOCK_M, BLOCK_N, num_warps, num_stages)), ...]: the dispatcher takes the
# entry with the largest min_T <= Tq, so one head dim can use different tiles by length.
# From the H100 sweeps (benchmarks/results/.../tune_fwd*.json, bf16, B*T=16k). The lean sweep
# (tune_fwd_lean.json, after ncu showed the hd128 64x64x3 tile held to 2 CTAs/SM by shared
# memory) found 32-key tiles best below 8k: hd128 128x32 with two warpgroups 492/559 TFLOPS at
# T=1k/4k vs 449/526 for 64x64 (+10%/+6%), causal 4k 483 vs 470; 128x64x8 stays best at 16k
# (559 vs 550). hd64 128x32x4: 4 stages 447/501 at 1k/4k vs 429/487 for 128x64, 3 stages 503
# vs 489 at 16k.
FWD_TILES = {
    32: [(0, (128, 64, 4, 3))],
    64: [(0, (128, 32, 4, 4)), (8192, (128, 32, 4, 3))],
    96: [(0, (128, 64, 8, 2))],
    128: [(0, (128, 32, 8, 3)), (8192, (128, 64, 8, 3))],
    256: [(0, (64, 64, 4, 2))],
}

# Backward tiles: head_dim -> (BLOCK_M, BLOCK_N, warps, stages), one table per kernel.
# Swept on the H100 (benchmarks/tune_backward.py, results/.../tune_bwd.json, bf16 T=4k): one
# warpgroup per 64-row tile wins; 8 warps on 64x64 tiles split each wgmma below its 64-row
# minimum and ran 2x slower at hd128 (dkdv 4.08 -> 2.03 ms, dq 2.74 -> 1.56 ms).
# dkdv keeps two [BLOCK_N, D] fp32 accumulators (dK, dV) live, so hd256 halves BLOCK_N.
BWD_DKDV_TILES = {
    32: (64, 64, 4, 3),
    64: (64, 64, 4, 3),
    96: (64, 64, 4, 2),
    128: (64, 64, 4, 2),
    256: (64, 32, 8, 1),
}
# dq, from the lean sweep (tune_bwd_lean_T*.json): 128-row tiles with two warpgroups, 3 stages,
# hd128 1.44 vs 1.59 ms at T=4k and 5.47 vs 6.16 ms at 16k; hd64 6.21 vs 6.59 ms at 16k. dkdv
# keeps its tiles (every lean candidate was slower).
BWD_DQ_TILES = {
    32: (64, 64, 4, 2),
    64: (128, 64, 8, 3),
    96: (64, 64, 4, 2),
    128: (128, 64, 8, 3),
    256: (64, 32, 8, 1),
}


# float32: full-precision (IEEE) dot products on the CUDA cores, for validation and fp32 models;
# no tensor cores, so the tiles are small enough to keep register and shared memory use in
# bounds. The sigmoid is exact (no tanh.approx) in float32.
FWD_TILES_FP32 = {32: (64, 32, 4, 2), 64: (64, 32, 4, 2), 96: (32, 32, 4, 2),
                  128: (32, 32, 4, 2), 256: (32, 32, 4, 1)}
BWD_DKDV_TILES_FP32 = {32: (32, 32, 4, 1), 64: (32, 32, 4, 1), 96: (32, 32, 4, 1),
                       128: (32, 32, 4, 1), 256: (32, 32, 8, 1)}
BWD_DQ_TILES_FP32 = {32: (32, 32, 4, 1), 64: (32, 32, 4, 1), 96: (32, 32, 4, 1),
                     128: (32, 32, 4, 1), 256: (32, 16, 4, 1)}


def tile_table(kind: str, dtype: str):
    """head_dim -> tiles (or tile buckets) of one kernel kind and dtype."""
    fp32 = dtype == "fp32"
    return {"fwd": FWD_TILES_FP32 if fp32 else FWD_TILES,
            "bwd_dkdv": BWD_DKDV_TILES_FP32 if fp32 else BWD_DKDV_TILES,
            "bwd_dq": BWD_DQ_TILES_FP32 if fp32 else BWD_DQ_TILES}[kind]


def _strides(prefix, dims="bth"):
    return tuple((f"stride_{prefix}{d}", "i32" if d == "t" else "i64") for d in dims)


_TAIL = (
    ("T_Q", "i32"), ("T_K", "i32"), ("kv_group", "i32"), ("scale", "fp32"), ("bias_value", "fp32"),
    ("HAS_SEQ_LENS_Q", "i32"), ("HAS_SEQ_LENS_K", "i32"), ("BIAS_MODE", "i32"),
    ("num_seqs", "i32"), ("max_seqlen_q", "i32"), ("max_seqlen_k", "i32"),
)
_LENS_BIAS_MOD = (("SEQ_LENS_Q", "*i32"), ("SEQ_LENS_K", "*i32"), ("BIAS", "*fp32"),
                  ("SCORE_MOD", "*fp32"))

# Kernel ABIs: per kind, the non-constexpr parameters in order with their Triton types ("*dt" is
# the tensor dtype). csrc/ops_cuda.cpp and csrc/ops_cuda_bwd.cpp pack their arguments in exactly
# this order; aot.py checks each compiled kernel's PTX parameter list against it.
PARAMS = {
    "fwd": (("Q", "*dt"), ("K", "*dt"), ("V", "*dt"), ("O", "*dt")) + _LENS_BIAS_MOD
    + _strides("q") + _strides("k") + _strides("v") + _strides("o")
    + (("stride_smb", "i64"), ("stride_smt", "i32")) + _TAIL,
    "bwd_dkdv": (("Q", "*dt"), ("K", "*dt"), ("V", "*dt"), ("DO", "*dt"), ("DK", "*dt"),
                 ("DV", "*dt"), ("DMOD", "*fp32")) + _LENS_BIAS_MOD
    + _strides("q") + _strides("k") + _strides("v") + _strides("do") + _strides("dk")
    + _strides("dv") + (("stride_dmb", "i64"), ("stride_dmh", "i64"), ("stride_smb", "i64"),
                        ("stride_smt", "i32")) + _TAIL,
    "bwd_dq": (("Q", "*dt"), ("K", "*dt"), ("V", "*dt"), ("DO", "*dt"), ("DQ", "*dt"))
    + _LENS_BIAS_MOD + _strides("q") + _strides("k") + _strides("v") + _strides("do")
    + _strides("dq") + (("stride_smb", "i64"), ("stride_smt", "i32")) + _TAIL,
}

# (module, function) of each kind's kernel.
SOURCES = {
    "fwd": ("sigmoid_attn_fwd", "sigmoid_attn_fwd"),
    "bwd_dkdv": ("sigmoid_attn_bwd", "sigmoid_attn_bwd_dkdv"),
    "bwd_dq": ("sigmoid_attn_bwd", "sigmoid_attn_bwd_dq"),
}


def divisible_16(kind):
    """Parameters promised divisible by 16 (pointers: 16-byte aligned; integers: multiples of
    16 elements), so Triton can emit 16-byte vector loads. The C++ side checks the promise on
    every call and copies a misaligned input into an aligned buffer otherwise. Lengths, bias,
    score_mod and the dmod scratch carry no promise."""
    return frozenset(n for n, t in PARAMS[kind]
                     if (t == "*dt") or (n.startswith("stride_") and not n.startswith(("stride_sm", "stride_dm"))))


@dataclass(frozen=True)
class Variant:
    kind: str  # "fwd" | "bwd_dkdv" | "bwd_dq"
    dtype: str  # "fp16" | "bf16" | "fp32"
    head_dim: int
    causal: bool
    score_mod: bool
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    warp_specialize: bool = False
    software_pipeline: bool = False
    min_t: int = 0  # smallest sequence length this tile is dispatched for
    varlen: bool = False  # packed [total, H, D] tensors with cu_seqlens

    @property
    def fast_sigmoid(self) -> bool:
        return self.dtype != "fp32"

    @property
    def block_d(self) -> int:
        return 1 << (self.head_dim - 1).bit_length()

    @property
    def name(self) -> str:
        flags = (("_varlen" if self.varlen else "") + ("_causal" if self.causal else "")
                 + ("_mod" if self.score_mod else ""))
        return (f"{self.kind}_{self.dtype}_d{self.head_dim}{flags}_"
                f"m{self.block_m}n{self.block_n}w{self.num_warps}s{self.num_stages}"
                + ("ws" if self.warp_specialize else "") + ("p" if self.software_pipeline else "")
                + (f"_t{self.min_t}" if self.min_t else ""))


def variants():
    out = []
    for kind in ("fwd", "bwd_dkdv", "bwd_dq"):
        for dtype in DTYPES:
            for head_dim, entry in tile_table(kind, dtype).items():
                buckets = entry if isinstance(entry, list) else [(0, entry)]
                for min_t, (bm, bn, w, s) in buckets:
                    for varlen in (False, True):
                        for causal in (False, True):
                            for score_mod in (False, True):
                                out.append(Variant(kind, dtype, head_dim, causal, score_mod, bm,
                                                   bn, w, s, min_t=min_t, varlen=varlen))
    return out


def fwd_tiles(head_dim: int, T: int, dtype: str = "bf16"):
    """The forward tiles the dispatcher would pick (for the JIT launcher and sweeps)."""
    entry = tile_table("fwd", dtype).get(head_dim, (64, 64, 4, 2))
    buckets = entry if isinstance(entry, list) else [(0, entry)]
    return [t for min_t, t in buckets if min_t <= T][-1]
