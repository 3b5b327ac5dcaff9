"""The variant table: every kernel the build compiles. The single source of truth.

Adding a variant is one entry in FWD_TILES (a head dim) or one value in the tuples below.
The C++ dispatcher's lookup table is generated from this list by aot.py.
"""

from dataclasses import dataclass

DTYPES = ("fp16", "bf16")

# head_dim -> (BLOCK_M, BLOCK_N, num_warps, num_stages).
# 128x64 tiles with 8 warps keep the fp32 accumulator at 64 registers/thread for hd128;
# hd256 halves BLOCK_M so that the accumulator (64x256 fp32 over 4 warps) still fits.
FWD_TILES = {
    32: (128, 64, 4, 3),
    64: (128, 64, 4, 3),
    96: (128, 64, 8, 2),
    128: (128, 64, 8, 3),
    256: (64, 64, 4, 2),
}

# Kernel ABI of sigmoid_attn_fwd: the non-constexpr parameters in order with their Triton types
# ("*dt" is the tensor dtype). csrc/launch_forward.cpp packs its arguments in exactly this order;
# aot.py checks each compiled kernel's PTX parameter list against it.
FWD_PARAMS = (
    ("Q", "*dt"), ("K", "*dt"), ("V", "*dt"), ("O", "*dt"),
    ("SEQ_LENS_Q", "*i32"), ("SEQ_LENS_K", "*i32"), ("BIAS", "*fp32"), ("SCORE_MOD", "*fp32"),
    ("stride_qb", "i64"), ("stride_qt", "i32"), ("stride_qh", "i64"),
    ("stride_kb", "i64"), ("stride_kt", "i32"), ("stride_kh", "i64"),
    ("stride_vb", "i64"), ("stride_vt", "i32"), ("stride_vh", "i64"),
    ("stride_ob", "i64"), ("stride_ot", "i32"), ("stride_oh", "i64"),
    ("stride_smb", "i64"), ("stride_smt", "i32"),
    ("T_Q", "i32"), ("T_K", "i32"), ("kv_group", "i32"), ("scale", "fp32"), ("bias_value", "fp32"),
    ("HAS_SEQ_LENS_Q", "i32"), ("HAS_SEQ_LENS_K", "i32"), ("BIAS_MODE", "i32"),
)
# Parameters promised divisible by 16 (pointers: 16-byte aligned; integers: multiples of 16
# elements). This lets Triton emit 16-byte vector loads. The C++ side checks the promise on
# every call and copies a misaligned input into an aligned buffer otherwise.
FWD_DIVISIBLE_16 = frozenset({
    "Q", "K", "V", "O",
    "stride_qb", "stride_qt", "stride_qh", "stride_kb", "stride_kt", "stride_kh",
    "stride_vb", "stride_vt", "stride_vh", "stride_ob", "stride_ot", "stride_oh",
})


@dataclass(frozen=True)
class Variant:
    kind: str  # "fwd"
    dtype: str  # "fp16" | "bf16"
    head_dim: int
    causal: bool
    score_mod: bool
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    warp_specialize: bool = False

    @property
    def block_d(self) -> int:
        return 1 << (self.head_dim - 1).bit_length()

    @property
    def name(self) -> str:
        flags = ("_causal" if self.causal else "") + ("_mod" if self.score_mod else "")
        return (f"{self.kind}_{self.dtype}_d{self.head_dim}{flags}_"
                f"m{self.block_m}n{self.block_n}w{self.num_warps}s{self.num_stages}"
                + ("ws" if self.warp_specialize else ""))


def variants():
    out = []
    for dtype in DTYPES:
        for head_dim, (bm, bn, w, s) in FWD_TILES.items():
            for causal in (False, True):
                for score_mod in (False, True):
                    out.append(Variant("fwd", dtype, head_dim, causal, score_mod, bm, bn, w, s))
    return out
