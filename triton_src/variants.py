"""The variant table: every kernel the build compiles. The single source of truth.

Adding a head dim is one entry per kernel kind in tiles.json (the tuning database).
The C++ dispatcher's lookup table is generated from this list by aot.py.
"""

import json
import os
from dataclasses import dataclass

# Tensor dtypes: name -> (C++ DType enumerator, torch name). The order is the dtype code of
# C++ (DType), of the C API and of the catalog; aot.py emits it into sigmoid_attn_constants.h.
DTYPE_TABLE = {
    "fp16": ("kFloat16", "float16"),
    "bf16": ("kBFloat16", "bfloat16"),
    "fp32": ("kFloat32", "float32"),
}
DTYPES = tuple(DTYPE_TABLE)

# The kernels' BIAS_MODE argument (sigmoid_attn_fwd.py, sigmoid_attn_bwd.py): -log(valid key
# count) per sequence, one float, or a float per sequence. Index = value; C++ BiasMode.
BIAS_MODES = ("default", "scalar", "tensor")

# Capacities of the C++ dispatch table (dispatch.cpp): the largest head dim, distinct head dims
# (each generic kernel's BLOCK_D counts as one more) and length buckets per variant it can hold. A compiled catalog beyond them is a build error
# (static_assert in the generated kernels_generated.cpp).
DISPATCH_MAX_HEAD_DIM = 512
DISPATCH_MAX_HEAD_DIMS = 24
DISPATCH_MAX_BUCKETS = 4

# The fp16/bf16 tiles come from the tuning database tiles.json (written on the GPU by
# benchmarks/tune_forward.py --write / tune_backward.py --write; the sweeps' raw figures are in
# benchmarks/results/<device>/tune_*.json and the reasoning in docs/performance.md).
# FWD_TILES: head_dim -> [(min_T, (BLOCK_M, BLOCK_N, num_warps, num_stages[, "tma"])), ...]; the
# dispatcher takes the entry with the largest min_T <= Tq, so one head dim can use different
# tiles by length. A bucket with min_T = -1 (SMALL) is the latency tile: taken instead when the
# length's tile would launch fewer programs than the GPU has SMs (tiny batches: there the time
# is the length of one program's key loop, not throughput). BWD_*_TILES: head_dim -> (BLOCK_M, BLOCK_N, num_warps, num_stages).
SMALL = -1  # min_T of the small-problem bucket

TILES_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiles.json")


def load_tiles(path: str = TILES_JSON) -> dict:
    with open(path) as f:
        return json.load(f)


def save_tiles(db: dict, path: str = TILES_JSON) -> None:
    """Writes the database with one line per head dim (readable diffs)."""
    lines = ["{"]
    scalars = [k for k in db if k not in ("fwd", "bwd_dkdv", "bwd_dq")]
    for k in scalars:
        lines.append(f" {json.dumps(k)}: {json.dumps(db[k])},")
    for i, kind in enumerate(("fwd", "bwd_dkdv", "bwd_dq")):
        rows = sorted(db[kind].items(), key=lambda kv: int(kv[0]))
        body = ",\n".join(f"  {json.dumps(str(d))}: {json.dumps(t)}" for d, t in rows)
        lines.append(f" {json.dumps(kind)}: {{\n{body}\n }}" + ("," if i < 2 else ""))
    lines.append("}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


_DB = load_tiles()
# A forward tile may carry a 5th element, "tma": K/V of the unmasked blocks through TMA
# descriptors (the sweeps show it pays at long sequences only).
FWD_TILES = {int(d): [(int(m), tuple(t)) for m, t in b] for d, b in _DB["fwd"].items()}
BWD_DKDV_TILES = {int(d): tuple(t) for d, t in _DB["bwd_dkdv"].items()}
BWD_DQ_TILES = {int(d): tuple(t) for d, t in _DB["bwd_dq"].items()}
# The warp-specialized forward (sigmoid_attn_fwd_ws.py; fp16/bf16, head dims that are powers of
# two): [min_T, tiles] buckets per head dim, num_warps 4 (Triton's Hopper pass makes 3
# warpgroups of it). The dispatcher takes it, for the variants compiled, when tiles.json's
# fwd_ws_dispatch is true (SIGMOID_ATTN_WARP_SPECIALIZED=0/1 overrides it per process;
# docs/performance.md, "The warp-specialized forward").
FWD_WS_TILES = {int(d): [(int(m), tuple(t)) for m, t in b]
                for d, b in _DB.get("fwd_ws", {}).items()}
FWD_WS_DISPATCH = bool(_DB.get("fwd_ws_dispatch", False))
# The Gluon forward (sigmoid_attn_fwd_gluon_persistent.py, kind fwd_gluon, and with per-sequence
# lengths kind fwd_gluon_padded, padded and packed; fp16/bf16; dense and causal with T_Q ==
# T_K; any bias; score_mod on dense non-causal calls without lengths, its own variant):
# [BLOCK_M, BLOCK_N, num_warps, num_stages]
# per head dim, num_warps 4 (the default partition, consumer 0; the kernel adds a consumer
# warpgroup per further 64 rows and a producer: 384 threads at BLOCK_M 128, 512 at 192).
# Persistent: one program per SM walks a static tile schedule, always with FA3's
# intra-warpgroup overlap of S_j with P_{j-1}·V_{j-1}. Measured on an H200 (benchmarks/gluon_fwd,
# results/NVIDIA_H200/gluon_fwd_persistent/ and gluon_fwd_wg3/; docs/performance.md, "The
# persistent Gluon forward", "Three consumer warpgroups at hd64"): 128x128 2 stages, hd128
# 1.16-1.17x cuDNN dense and 1.09-1.24x causal at T = 1k-16k; hd64 192x128 3 stages (three
# consumers) 1.14x dense at T = 4k. The dispatcher takes it for the calls it covers when
# tiles.json's fwd_gluon_dispatch is true, as it is (SIGMOID_ATTN_GLUON_FORWARD=0/1 overrides it
# per process): through the library, 1.06-1.34x the Triton forwards at hd128.
FWD_GLUON_TILES = {int(d): tuple(t) for d, t in _DB.get("fwd_gluon", {}).items()}
FWD_GLUON_DISPATCH = bool(_DB.get("fwd_gluon_dispatch", False))
# The Gluon backward (sigmoid_attn_bwd_gluon.py, kind bwd_gluon, and with per-sequence lengths
# kind bwd_gluon_padded, padded and packed; fp16/bf16; causal (top-left, T_Q == T_K) or not; any
# bias; score_mod on calls without lengths, its own variant, which sums score_mod's gradient per
# key): [BLOCK_M, BLOCK_N, num_warps, num_stages, schedule] per head dim.
# One program per 128 keys x KV head x batch walks every query tile of its GQA group (dK, dV: one
# writer each); dQ is summed in an fp32 buffer by TMA reduce-adds, then cast (kind
# dq_cast): not bitwise reproducible, so deterministic mode keeps the two-kernel backward. The
# schedule names the kernel's constexpr flags (GLUON_BWD_SCHEDULES). Measured on an H200
# (benchmarks/gluon_bwd, results/NVIDIA_H200/gluon_bwd/; docs/performance.md, "The Gluon
# backward"): hd128 "dqx_dqd" 0.97-0.99x cuDNN with the zeroing and the cast, hd64 "dqx"
# 0.96-0.99x at T = 4k-16k, where the two-kernel backward is at 0.76-0.83x. The dispatcher
# takes it for the calls it covers when tiles.json's bwd_gluon_dispatch is true, as it is
# (SIGMOID_ATTN_GLUON_BACKWARD=0/1 overrides it per process), unless the caller asks for
# determinism.
BWD_GLUON_TILES = {int(d): tuple(t) for d, t in _DB.get("bwd_gluon", {}).items()}
BWD_GLUON_DISPATCH = bool(_DB.get("bwd_gluon_dispatch", False))
# Head dims without a Gluon kernel of their own (a multiple of 8): the dispatcher takes the Gluon
# kernel of the next power of two, whose descriptors read the columns past D as zeros and whose
# stores drop them, when D is at least this share of its columns (tiles.json's
# fwd_gluon_min_fill / bwd_gluon_min_fill; 1.0: only the compiled head dims). The padded columns
# cost their share of the matmuls: these are where that still beats the Triton kernels.
FWD_GLUON_MIN_FILL = float(_DB.get("fwd_gluon_min_fill", 1.0))
BWD_GLUON_MIN_FILL = float(_DB.get("bwd_gluon_min_fill", 1.0))
# schedule -> the kernel's (DQ_SHARED, DQ_ISSUE): "dqx" exchanges dS between the two consumer
# warpgroups and reduce-adds one dQ tile per query tile; "dqx_dqd" also queues tile i's dQ
# behind tile i + 1's dV, dK (D = 128 only; benchmarks/gluon_bwd/README.md, "Candidates").
GLUON_BWD_SCHEDULES = {"dqx": (True, 0), "dqx_dqd": (True, 2)}
# The dQ cast (sigmoid_attn_bwd_gluon.dq_cast, kind dq_cast): fp32 -> dtype, elements per program
# and warps (16 fp32 per thread: 16-byte loads). Compiled once per bwd_gluon head dim, so the
# dispatcher finds it by the same key as the backward it finishes.
DQ_CAST_TILE = (4096, 1, 8, 1)
# Registers: 384 threads x 168 = 64,512 <= 65,536 at launch (maxnreg); setmaxnreg then moves them
# from the producer (24) to the two consumer warpgroups (240 each): (240 + 240 + 24) x 128 =
# 64,512. ptxas (CUDA 12.9) reports no spills for either tile.
GLUON_MAXNREG = 168
GLUON_CONSUMER_REGS = 240
GLUON_PRODUCER_REGS = 24
# The Gluon forward's consumer warpgroups own 64 query rows each (wgmma M = 64): a 128-row tile
# has two, a 192-row tile three (hd64: with 64-column products a warpgroup's sigmoid is as long
# as its wgmma, and a third warpgroup keeps the tensor pipe fed; benchmarks/gluon_fwd,
# results/NVIDIA_H200/gluon_fwd_wg3/). Three consumers and the producer's warpgroup are 512
# threads: 128 registers at launch, then (160 x 3 + 24) x 128 = 64,512.
GLUON_FWD_ROWS = 64


def gluon_fwd_consumers(block_m: int) -> int:
    return block_m // GLUON_FWD_ROWS


def gluon_fwd_registers(block_m: int) -> tuple:
    """(maxnreg at launch, each consumer's setmaxnreg) of the Gluon forward's tile."""
    return (GLUON_MAXNREG, GLUON_CONSUMER_REGS) if gluon_fwd_consumers(block_m) == 2 else (128, 160)
# GluonASTSource lives in a private Triton module (triton.experimental.gluon._runtime): the kind
# is compiled only with the Triton version it was written and checked against.
GLUON_TRITON = "3.8"
# Whether causal variants of it are compiled (false: causal calls take sigmoid_attn_fwd, whose
# longest-first order and skipped masked blocks win; tune_fwd_ws.json).
FWD_WS_CAUSAL = bool(_DB.get("fwd_ws_causal", True))
# Causal forward (dense and padded): query blocks run longest first, heads in groups of about
# this many programs (sigmoid_attn_fwd._longest_first); 0 keeps the launch order. Per head dim,
# [min_T, programs] buckets like the tiles' (absent: 0). Chosen by benchmarks/tune_forward.py
# --lpt; the CMake option SIGMOID_ATTN_CAUSAL_LPT=N overrides it for every causal kernel (forward
# and backward) of one build (set_lpt_overrides below).
CAUSAL_LPT = {int(d): [(int(m), int(n)) for m, n in b]
              for d, b in _DB.get("fwd_causal_lpt", {}).items()}
# The causal backward kernels, the same way per head dim (their tiles have no length buckets):
# dq walks key blocks 0..m like the forward; dkdv's key block n walks the query blocks from n,
# so its longest programs are the low n. bwd_dkdv_causal_lpt / bwd_dq_causal_lpt, by
# benchmarks/tune_backward.py --lpt.
BWD_CAUSAL_LPT = {kind: {int(d): int(n) for d, n in _DB.get(f"{kind}_causal_lpt", {}).items()}
                  for kind in ("bwd_dkdv", "bwd_dq")}
# Build-time override of them (to time one build against another): the CMake option
# SIGMOID_ATTN_CAUSAL_LPT (every causal kernel, forward and backward), passed to aot.py, which
# calls set_lpt_overrides. None: tiles.json's values.
_LPT_OVERRIDES = {"causal": None}


def set_lpt_overrides(causal=None):
    _LPT_OVERRIDES.update(causal=causal)

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
            "fwd_ws": {} if fp32 else FWD_WS_TILES,
            "fwd_gluon": {} if fp32 else FWD_GLUON_TILES,
            "fwd_gluon_padded": {} if fp32 else FWD_GLUON_TILES,
            "bwd_dkdv": BWD_DKDV_TILES_FP32 if fp32 else BWD_DKDV_TILES,
            "bwd_dq": BWD_DQ_TILES_FP32 if fp32 else BWD_DQ_TILES,
            "bwd_gluon": {} if fp32 else BWD_GLUON_TILES,
            "bwd_gluon_padded": {} if fp32 else BWD_GLUON_TILES,
            # (one cast per power of two: a head dim between two runs over the next one's
            # columns, and its backward takes that one's cast)
            "dq_cast": {} if fp32 else {d: DQ_CAST_TILE for d in BWD_GLUON_TILES
                                        if d & (d - 1) == 0}}[kind]


def _strides(prefix, dims="bth"):
    return tuple((f"stride_{prefix}{d}", "i32" if d == "t" else "i64") for d in dims)


_TAIL = (
    ("T_Q", "i32"), ("T_K", "i32"), ("kv_group", "i32"), ("scale", "fp32"), ("bias_value", "fp32"),
    ("HAS_SEQ_LENS_Q", "i32"), ("HAS_SEQ_LENS_K", "i32"), ("BIAS_MODE", "i32"),
    ("num_seqs", "i32"), ("max_seqlen_q", "i32"), ("max_seqlen_k", "i32"),
)
# The run-time head dim of the plain forward and the backward kernels: the bound of their D masks
# in the generic kernels (Variant.runtime_head_dim); a compiled head dim ignores it.
_HEAD_DIM = (("head_dim", "i32"),)
_LENS_BIAS_MOD = (("SEQ_LENS_Q", "*i32"), ("SEQ_LENS_K", "*i32"), ("BIAS", "*fp32"),
                  ("SCORE_MOD", "*fp32"))

# Kernel ABIs: per kind, the non-constexpr parameters in order with their Triton types ("*dt" is
# the tensor dtype). aot.py generates each kind's C++ argument struct and packer from them
# (kernel_args.h; csrc/ops_cuda*.cpp fill the structs by name) and checks every compiled kernel's
# signature (names, types) and PTX parameter list against them.
PARAMS = {
    "fwd": (("Q", "*dt"), ("K", "*dt"), ("V", "*dt"), ("O", "*dt")) + _LENS_BIAS_MOD
    + _strides("q") + _strides("k") + _strides("v") + _strides("o")
    + (("stride_smb", "i64"), ("stride_smt", "i32")) + _TAIL + _HEAD_DIM,
    "fwd_ws": (("Q", "*dt"), ("K", "*dt"), ("V", "*dt"), ("O", "*dt")) + _LENS_BIAS_MOD
    + _strides("q") + _strides("k") + _strides("v") + _strides("o")
    + (("stride_smb", "i64"),) + _TAIL,
    "bwd_dkdv": (("Q", "*dt"), ("K", "*dt"), ("V", "*dt"), ("DO", "*dt"), ("DK", "*dt"),
                 ("DV", "*dt"), ("DMOD", "*fp32")) + _LENS_BIAS_MOD
    + _strides("q") + _strides("k") + _strides("v") + _strides("do") + _strides("dk")
    + _strides("dv") + (("stride_dmb", "i64"), ("stride_dmh", "i64"), ("stride_smb", "i64"),
                        ("stride_smt", "i32")) + _TAIL + _HEAD_DIM,
    "bwd_dq": (("Q", "*dt"), ("K", "*dt"), ("V", "*dt"), ("DO", "*dt"), ("DQ", "*dt"))
    + _LENS_BIAS_MOD + _strides("q") + _strides("k") + _strides("v") + _strides("do")
    + _strides("dq") + (("stride_smb", "i64"), ("stride_smt", "i32")) + _TAIL + _HEAD_DIM,
}

# The Gluon forward's arguments: "desc" is a rank-4 TMA descriptor [B, T, H, D] of the tensor
# dtype, which the PTX entry takes as a by-value 128-byte CUtensorMap followed by the
# descriptor's 4 shape (u32) and 4 stride (u64, elements) scalars; aot.py records where each
# one sits and how to encode it (box, swizzle, element type) in the KernelSpec. The box is
# [1, rows, 1, HEAD_DIM] with HEAD_DIM the compiled head dim: a tensor's D may be smaller (a
# multiple of 8), its columns past D read as zeros and stored nowhere; D is the tensors' own
# head dim, for the packed kernels' masked stores.
PARAMS["fwd_gluon"] = (("q_desc", "desc"), ("k_desc", "desc"), ("v_desc", "desc"),
                       ("o_desc", "desc"), ("SEQ_LENS_Q", "*i32"), ("SEQ_LENS_K", "*i32"),
                       ("O", "*dt"), ("stride_ot", "i32"), ("D", "i32"),
                       ("BIAS", "*fp32"), ("SCORE_MOD", "*fp32"), ("stride_smb", "i64"),
                       ("BIAS_MODE", "i32"),
                       ("T_Q", "i32"), ("T_K", "i32"), ("H", "i32"), ("B", "i32"),
                       ("kv_group", "i32"), ("scale", "fp32"), ("bias_value", "fp32"),
                       ("MAX_Q", "i32"), ("MAX_K", "i32"),
                       ("WS", "*fp32"), ("FLAGS", "*i32"), ("SCHEDULE", "i32"))
# The Gluon forward of padded batches: the same kernel compiled with HAS_LENGTHS, so the same
# arguments, SEQ_LENS_Q/K read.
PARAMS["fwd_gluon_padded"] = PARAMS["fwd_gluon"]
DESC_RANK = 4
# The Gluon backward's: "desc_fp32" is a descriptor of an fp32 tensor whatever the variant's dtype
# (the dQ accumulator [B, T_Q, H, D] that the kernel reduce-adds into).
PARAMS["bwd_gluon"] = (("q_desc", "desc"), ("k_desc", "desc"), ("v_desc", "desc"),
                       ("do_desc", "desc"), ("dq_desc", "desc_fp32"), ("dk_desc", "desc"),
                       ("dv_desc", "desc"), ("SEQ_LENS_Q", "*i32"), ("SEQ_LENS_K", "*i32"),
                       ("T_Q", "i32"), ("T_K", "i32"), ("kv_group", "i32"),
                       ("scale", "fp32"), ("bias_value", "fp32"),
                       ("DK", "*dt"), ("DV", "*dt"), ("stride_kt", "i32"), ("D", "i32"),
                       ("BIAS", "*fp32"), ("SCORE_MOD", "*fp32"), ("stride_smb", "i64"),
                       ("DMOD", "*fp32"), ("stride_dmb", "i64"), ("stride_dmh", "i64"),
                       ("BIAS_MODE", "i32"), ("MAX_Q", "i32"), ("MAX_K", "i32"))
# ... and of padded batches: the same kernel compiled with HAS_LENGTHS (the lengths read).
PARAMS["bwd_gluon_padded"] = PARAMS["bwd_gluon"]
PARAMS["dq_cast"] = (("src", "*fp32"), ("dst", "*dt"), ("n", "i32"))

# Every kernel kind, written once: name -> (C++ KernelKind enumerator, module, function). The
# order is the kind code of C++ (KernelKind), of the catalog and of the build order; aot.py emits
# the enum and the names into sigmoid_attn_constants.h and one argument struct per kind
# (kernel_args.h, from PARAMS). kForwardWS: the warp-specialized forward; kForwardGluon: the
# Gluon forward (persistent, host TMA descriptors; dense calls, causal ones with T_Q == T_K);
# kBackwardGluon:
# the Gluon backward (host TMA descriptors, dQ into an fp32 buffer) and kDqCast its dQ cast;
# kForwardGluonPadded / kBackwardGluonPadded: the Gluon kernels with per-sequence lengths
# (padded batches, the default bias), with the tiles of the ones without.
KIND_TABLE = {
    "fwd": ("kForward", "sigmoid_attn_fwd", "sigmoid_attn_fwd"),
    "fwd_ws": ("kForwardWS", "sigmoid_attn_fwd_ws", "sigmoid_attn_fwd_ws"),
    "fwd_gluon": ("kForwardGluon", "sigmoid_attn_fwd_gluon_persistent",
                  "sigmoid_attn_fwd_gluon_persistent"),
    "bwd_dkdv": ("kBackwardDkDv", "sigmoid_attn_bwd", "sigmoid_attn_bwd_dkdv"),
    "bwd_dq": ("kBackwardDq", "sigmoid_attn_bwd", "sigmoid_attn_bwd_dq"),
    "bwd_gluon": ("kBackwardGluon", "sigmoid_attn_bwd_gluon", "sigmoid_attn_bwd_gluon"),
    "dq_cast": ("kDqCast", "sigmoid_attn_bwd_gluon", "dq_cast"),
    "fwd_gluon_padded": ("kForwardGluonPadded", "sigmoid_attn_fwd_gluon_persistent",
                         "sigmoid_attn_fwd_gluon_persistent"),
    "bwd_gluon_padded": ("kBackwardGluonPadded", "sigmoid_attn_bwd_gluon",
                         "sigmoid_attn_bwd_gluon"),
}
# The kinds of the Gluon forward and backward (one kernel source each, lengths off and on).
GLUON_FORWARD_KINDS = ("fwd_gluon", "fwd_gluon_padded")
GLUON_BACKWARD_KINDS = ("bwd_gluon", "bwd_gluon_padded")
KINDS = tuple(KIND_TABLE)
# (module, function) of each kind's kernel.
SOURCES = {kind: (module, fn) for kind, (_, module, fn) in KIND_TABLE.items()}
assert set(PARAMS) == set(KINDS), "every kind has its ABI in PARAMS"


def divisible_16(kind):
    """Parameters promised divisible by 16 (pointers: 16-byte aligned; integers: multiples of
    16 elements), so Triton can emit 16-byte vector loads. The C++ side checks the promise on
    every call and copies a misaligned input into an aligned buffer otherwise. Lengths, bias,
    score_mod and the dmod scratch carry no promise."""
    return frozenset(n for n, t in PARAMS[kind]
                     if (t == "*dt") or (n.startswith("stride_") and not n.startswith(("stride_sm", "stride_dm"))))


@dataclass(frozen=True)
class Variant:
    kind: str  # one of KINDS
    dtype: str  # one of DTYPES
    head_dim: int
    causal: bool
    score_mod: bool
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    warp_specialize: bool = False
    tma: bool = False  # forward only: K/V through TMA descriptors (tiles.json's "tma" flag)
    schedule: str = ""  # bwd_gluon only: a key of GLUON_BWD_SCHEDULES (tiles.json's 5th element)
    min_t: int = 0  # smallest sequence length this tile is dispatched for; SMALL: see above
    varlen: bool = False  # packed [total, H, D] tensors with cu_seqlens
    # A generic kernel: head_dim is its BLOCK_D, and it serves any multiple of 8 up to it that no
    # kernel is compiled for, taking the head dim at run time (GENERIC_HEAD_DIMS).
    runtime_head_dim: bool = False

    @property
    def fast_sigmoid(self) -> bool:
        return self.dtype != "fp32"

    @property
    def causal_lpt(self) -> int:
        # (the warp-specialized and Gluon kernels have no program order: not measured there)
        if (not self.causal or self.varlen or self.dtype == "fp32"
                or self.kind in ("fwd_ws",) + GLUON_FORWARD_KINDS + GLUON_BACKWARD_KINDS):
            return 0
        if _LPT_OVERRIDES["causal"] is not None:
            return int(_LPT_OVERRIDES["causal"])
        if self.kind != "fwd":
            return BWD_CAUSAL_LPT[self.kind].get(self.head_dim, 0)
        return next((n for m, n in reversed(CAUSAL_LPT.get(self.head_dim, []))
                     if m <= self.min_t), 0)

    @property
    def block_d(self) -> int:
        return 1 << (self.head_dim - 1).bit_length()

    @property
    def stride_multiple(self) -> int:
        """What the kernel assumes of every stride but the last (in elements): 16 where the head
        dim is a multiple of 16, so contiguous tensors qualify; 8 for the others (40, and the
        generic kernels), which still keeps 16-byte vectors for 16-bit dtypes. The C++ launcher
        checks it (KernelSpec::stride_multiple) and copies a tensor that breaks it."""
        return 16 if self.head_dim % 16 == 0 and not self.runtime_head_dim else 8

    @property
    def name(self) -> str:
        flags = (("_varlen" if self.varlen else "") + ("_causal" if self.causal else "")
                 + ("_mod" if self.score_mod else ""))
        dim = f"dmax{self.head_dim}" if self.runtime_head_dim else f"d{self.head_dim}"
        return (f"{self.kind}_{self.dtype}_{dim}{flags}_"
                f"m{self.block_m}n{self.block_n}w{self.num_warps}s{self.num_stages}"
                + ("ws" if self.warp_specialize else "")
                + ("tma" if self.tma else "") + (f"_{self.schedule}" if self.schedule else "")
                + ("_small" if self.min_t == SMALL else f"_t{self.min_t}" if self.min_t else ""))


# Triton's Hopper warp-specialization pass before 3.8 initializes mbarriers it never uses nor
# invalidates, and the shared-memory allocator then places live buffers on them (the 256-row
# forward's Q tile at offset 0). PTX leaves that undefined; on an H200 a preemption (GPU
# time-slicing) wrote the barriers' state over Q's first row: NaN in row 0 of every resident
# block (benchmarks/stress_contention.py; fixed upstream by triton-lang/triton#9592, in 3.8).
# Kernels that the pass specializes are compiled only with a Triton that has the fix.
WS_MIN_TRITON = (3, 8)


def warp_specialization_safe(triton_version: str) -> bool:
    major, minor = (int(x) for x in triton_version.split(".")[:2])
    return (major, minor) >= WS_MIN_TRITON


def gluon_supported(triton_version: str) -> bool:
    return triton_version.split(".")[:2] == GLUON_TRITON.split(".")



# The generic kernels: one per BLOCK_D here (and kind, dtype and flags), with the head dim as a
# run-time value (Variant.runtime_head_dim), for the plain forward and the backward. The
# dispatcher takes one only where no kernel is compiled for the head dim: any multiple of 8 up to
# the largest of these is served, the compiled ones by their own kernels (a constant head dim,
# unchanged). Their tiles are the BLOCK_D head dim's, without TMA (GENERIC_KINDS' tile tables).
GENERIC_HEAD_DIMS = (32, 64, 128, 256)


def split_head_dim(head_dim: int) -> int:
    """D_LO of the forward's split head dim (sigmoid_attn_fwd, _attend_split): the larger of
    two powers of two that sum to head_dim, the smaller at least 16 (a tl.dot's inner size);
    0 where there is none (powers of two, 40, 112, ...: one padded BLOCK_D range)."""
    lo = 1 << (head_dim.bit_length() - 1)
    hi = head_dim - lo
    return lo if hi >= 16 and hi & (hi - 1) == 0 else 0


GENERIC_KINDS = ("fwd", "bwd_dkdv", "bwd_dq")
# Run-time head dims are multiples of this (the kernels' D masks rely on it: _head_dim).
HEAD_DIM_MULTIPLE = 8


def generic_tiles(kind: str, dtype: str):
    """BLOCK_D -> the generic kernels' tiles (or tile buckets), from the compiled head dims'."""
    table = tile_table(kind, dtype)
    out = {}
    for d in GENERIC_HEAD_DIMS:
        if d not in table:
            continue
        entry = table[d]
        if isinstance(entry, list):
            out[d] = [(m, tuple(t[:4])) for m, t in entry if "tma" not in t[4:]]
        else:
            out[d] = tuple(entry[:4])
    return out


def variants(triton_version: str = None, head_dims=None, dtypes=None, kinds=None, generic=None):
    """Every variant the build compiles; with triton_version, those that Triton may compile
    (no warp-specialized kernels before WS_MIN_TRITON, Gluon ones only with GLUON_TRITON).
    head_dims, dtypes, kinds: a partial build's subset (None: all; the CMake options
    SIGMOID_ATTN_HEAD_DIMS and SIGMOID_ATTN_DTYPES). generic: whether the generic kernels are
    compiled (None: when head_dims is None; a partial build names them "generic")."""
    if generic is None:
        generic = head_dims is None
    ws_ok = triton_version is None or warp_specialization_safe(triton_version)
    gluon_ok = triton_version is None or gluon_supported(triton_version)
    out = []
    for kind in KINDS if kinds is None else [k for k in KINDS if k in kinds]:
        if (kind == "fwd_ws" and not ws_ok
                or kind in GLUON_FORWARD_KINDS + GLUON_BACKWARD_KINDS + ("dq_cast",)
                and not gluon_ok):
            continue
        for dtype in DTYPES if dtypes is None else [d for d in DTYPES if d in dtypes]:
            tables = [(False, tile_table(kind, dtype))]
            if generic and kind in GENERIC_KINDS:
                tables.append((True, generic_tiles(kind, dtype)))
            for runtime_head_dim, head_dim, entry in [(r, d, e) for r, t in tables
                                                      for d, e in t.items()]:
                if head_dims is not None and head_dim not in head_dims and not runtime_head_dim:
                    continue
                buckets = entry if isinstance(entry, list) else [(0, entry)]
                for min_t, tiles in buckets:
                    bm, bn, w, s = tiles[:4]
                    tma = "tma" in tiles[4:]
                    schedule = next((f for f in tiles[4:] if f in GLUON_BWD_SCHEDULES), "")
                    for varlen in (False, True):
                        for causal in (False, True):
                            for score_mod in (False, True):
                                # (packed calls through the kind with lengths: cu_seqlens
                                # read in the kernel; no score_mod in the kernel)
                                # (score_mod: the kind without lengths, not causal: with
                                # the causal masks it spills)
                                if kind == "fwd_gluon" and varlen or (
                                        kind in GLUON_FORWARD_KINDS and score_mod and (
                                            causal or kind == "fwd_gluon_padded")):
                                    continue
                                # (causal and score_mod: the masks spill at three consumers'
                                # registers; score_mod 720 bytes)
                                if (kind in GLUON_FORWARD_KINDS and (causal or score_mod)
                                        and gluon_fwd_consumers(bm) != 2):
                                    continue
                                # (dense, causal or not: the Gluon backward takes no lengths
                                # and no score_mod; one cast serves both)
                                # (packed calls through the kind with lengths, as the
                                # forward)
                                # (score_mod: the kind without lengths)
                                if kind in GLUON_BACKWARD_KINDS and (
                                        score_mod and kind == "bwd_gluon_padded"
                                        or varlen and kind == "bwd_gluon"):
                                    continue
                                if kind == "dq_cast" and (varlen or causal or score_mod):
                                    continue
                                if kind == "fwd_ws" and varlen and score_mod:
                                    continue  # packed score_mod: the other forward (dispatch.cpp)
                                if kind == "fwd_ws" and causal and not FWD_WS_CAUSAL:
                                    continue
                                out.append(Variant(kind, dtype, head_dim, causal, score_mod, bm,
                                                   bn, w, s, tma=tma, min_t=min_t,
                                                   varlen=varlen, schedule=schedule,
                                                   runtime_head_dim=runtime_head_dim))
    return out


def fwd_tiles(head_dim: int, T: int, dtype: str = "bf16"):
    """The forward tiles the dispatcher would pick (for the JIT launcher and sweeps):
    (BLOCK_M, BLOCK_N, num_warps, num_stages[, "tma"])."""
    entry = tile_table("fwd", dtype).get(head_dim, (64, 64, 4, 2))
    buckets = entry if isinstance(entry, list) else [(0, entry)]
    return [t for min_t, t in buckets if 0 <= min_t <= T][-1]

