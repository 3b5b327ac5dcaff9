"""The warp-specialized kernels (triton_src/sigmoid_attn_fwd_ws.py and its persistent candidate)
stay specialized:
compiled for sm_90 with the installed Triton (no GPU needed), Triton's Hopper pass must split it
into a producer and two consumer warpgroups (384 threads, setmaxnreg) with no local memory. The
pass skips a kernel silently when its conditions break (docs/performance.md, "The
warp-specialized forward"), so an edit that adds a run-time if/else would otherwise go unseen."""

import sys

import pytest

from conftest import TRITON_SRC

triton = pytest.importorskip("triton")


def compile_ws(head_dim, block_n, causal, score_mod, varlen, kernel="fwd", block_m=128):
    sys.path.insert(0, TRITON_SRC)
    try:
        from sigmoid_attn_fwd_ws import sigmoid_attn_fwd_ws, sigmoid_attn_fwd_ws_persistent
    finally:
        sys.path.remove(TRITON_SRC)
    fn = {"fwd": sigmoid_attn_fwd_ws, "persistent": sigmoid_attn_fwd_ws_persistent,
          "persistent_inner": sigmoid_attn_fwd_ws_persistent}[kernel]
    constexprs = {"HEAD_DIM": head_dim, "BLOCK_M": block_m, "BLOCK_N": block_n, "IS_CAUSAL": causal,
                  "HAS_SCORE_MOD": score_mod, "FAST_SIGMOID": True, "VARLEN": varlen,
                  "WARP_SPECIALIZE": True}
    if kernel.startswith("persistent"):  # the tile loop specialized, or the key loop
        constexprs["SPECIALIZE_OUTER"] = kernel == "persistent"
    pointers = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "O": "*bf16", "SEQ_LENS_Q": "*i32",
                "SEQ_LENS_K": "*i32", "BIAS": "*fp32", "SCORE_MOD": "*fp32"}
    return compile_sm90(fn, constexprs, pointers, num_warps=4, num_stages=2)


def compile_sm90(fn, constexprs, pointers, num_warps, num_stages):
    """Compiles a kernel for sm_90 with no GPU: the given constexprs and pointer types, scale
    and bias_value float32, other parameters int32; bf16 pointers, DQ_ACC and the strides
    (but score_mod's and dmod's) promised divisible by 16, as the build does."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, consts, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name], consts[(i,)] = "constexpr", constexprs[name]
        elif name in pointers:
            signature[name] = pointers[name]
        else:
            signature[name] = "fp32" if name in ("scale", "bias_value") else "i32"
        if signature[name] == "*bf16" or name == "DQ_ACC" or (
                name.startswith("stride_") and not name.startswith(("stride_sm", "stride_dm"))):
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=signature, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": num_warps, "num_stages": num_stages})


@pytest.mark.parametrize("head_dim,block_n,causal,score_mod,varlen,kernel,block_m",
                         [(128, 64, False, False, False, "fwd", 128),
                          (64, 128, True, True, True, "fwd", 128),
                          (128, 64, False, True, True, "fwd", 256),  # the shipped hd128 tile
                          (128, 64, False, False, False, "persistent", 256),
                          (128, 64, True, True, False, "persistent_inner", 256)])
def test_candidate_is_warp_specialized(head_dim, block_n, causal, score_mod, varlen, kernel,
                                       block_m):
    kernel = compile_ws(head_dim, block_n, causal, score_mod, varlen, kernel, block_m)
    assert kernel.metadata.num_warps * 32 == 384, (
        f"expected a producer and two consumer warpgroups (384 threads), got "
        f"{kernel.metadata.num_warps * 32}: Triton's Hopper pass did not specialize the loop")
    ptx = kernel.asm["ptx"]
    assert "setmaxnreg" in ptx, "no register reallocation between the warpgroups"
    assert "cp.async.bulk.tensor" in ptx, "Q/K/V are not loaded through TMA"
    assert ".local" not in ptx, "local memory (register spills) in the specialized kernel"


def test_row_offsets_are_block_local():
    """Triton 3.6's Hopper pass gives the second consumer warpgroup its half of the block by
    shifting both a `tl.arange` (to 64..127) and the splat of the block's first row when they
    are added as tensors (`start_m + tl.arange(...)`), which put that warpgroup's output rows 64
    too far (found on the H100: rows 64..127 of every block unwritten; docs/performance.md,
    "The warp-specialized forward"). The kernels build row offsets as block-local aranges
    against a scalar; this keeps the pattern out of them."""
    import io
    import re
    import tokenize

    name = "sigmoid_attn_fwd_ws.py"
    with open(f"{TRITON_SRC}/{name}") as f:  # the code's tokens: no strings, no comments
        code = " ".join(t.string for t in tokenize.generate_tokens(io.StringIO(f.read()).readline)
                        if t.type in (tokenize.NAME, tokenize.OP, tokenize.NUMBER))
    bad = re.findall(r"start_m \+ tl \. arange|tl \. arange \( [^)]* \) \+ start_m|offs_m",
                     code)
    assert not bad, f"{name}: row offsets built as start_m + arange: {bad}"


def test_atomic_dq_candidate_uses_tma_reductions():
    """The one-pass backward candidate (sigmoid_attn_bwd_dkdv_dq, ATOMIC_DQ=2) compiles for
    sm_90 and adds dQ tiles with TMA reductions (cp.reduce.async.bulk.tensor), not element
    atomics; with ATOMIC_DQ=1 it uses element atomics (red/atom). Its math runs under the
    interpreter (test_triton_interpret.py, ATOMIC_DQ=1)."""
    sys.path.insert(0, TRITON_SRC)
    try:
        from sigmoid_attn_bwd import sigmoid_attn_bwd_dkdv_dq
    finally:
        sys.path.remove(TRITON_SRC)
    fn = sigmoid_attn_bwd_dkdv_dq
    pointers = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "DO": "*bf16", "DK": "*bf16",
                "DV": "*bf16", "DMOD": "*fp32", "DQ_ACC": "*fp32", "SEQ_LENS_Q": "*i32",
                "SEQ_LENS_K": "*i32", "BIAS": "*fp32", "SCORE_MOD": "*fp32"}
    import re

    element_atomics = re.compile(r"\b(red|atom)\.global")
    for mode in (2, 1):
        constexprs = {"HEAD_DIM": 128, "BLOCK_D": 128, "BLOCK_M": 64, "BLOCK_N": 128,
                      "IS_CAUSAL": True, "HAS_SCORE_MOD": False, "FAST_SIGMOID": True,
                      "VARLEN": False, "CAUSAL_LPT": 0, "ATOMIC_DQ": mode,
                      "RUNTIME_HEAD_DIM": False}
        kernel = compile_sm90(fn, constexprs, pointers, num_warps=8, num_stages=2)
        ptx = kernel.asm["ptx"]
        tma = "cp.reduce.async.bulk.tensor" in ptx
        assert tma == (mode == 2), f"ATOMIC_DQ={mode}: TMA reductions {tma}"
        assert bool(element_atomics.search(ptx)) == (mode == 1), f"ATOMIC_DQ={mode}: atomics"


def test_mixed_sigmoid_candidate_moves_a_quarter_off_mufu():
    """The mixed sigmoid (sigmoid_attn_fwd._sigmoid with FAST=2, a JIT candidate) compiles for
    sm_90 into 3 tanh.approx per 4 scores where the shipped kernel has 4, spills nothing, and
    leaves the shipped kernel (FAST=True) alone."""
    import re

    sys.path.insert(0, TRITON_SRC)
    try:
        from sigmoid_attn_fwd import sigmoid_attn_fwd as fn
    finally:
        sys.path.remove(TRITON_SRC)
    pointers = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "O": "*bf16", "SEQ_LENS_Q": "*i32",
                "SEQ_LENS_K": "*i32", "BIAS": "*fp32", "SCORE_MOD": "*fp32"}
    counts = {}
    for fast in (True, 2):
        constexprs = {"HEAD_DIM": 64, "BLOCK_D": 64, "BLOCK_M": 128, "BLOCK_N": 32,
                      "IS_CAUSAL": False, "HAS_SCORE_MOD": False, "FAST_SIGMOID": fast,
                      "VARLEN": False, "WARP_SPECIALIZE": False, "SOFTWARE_PIPELINE": False,
                      "USE_TMA": False, "CAUSAL_LPT": 0, "LENGTH_LPT": 0,
                      "RUNTIME_HEAD_DIM": False}
        ptx = compile_sm90(fn, constexprs, pointers, num_warps=4, num_stages=4).asm["ptx"]
        assert ".local" not in ptx, f"FAST_SIGMOID={fast}: local memory"
        counts[fast] = (len(re.findall(r"tanh\.approx\.f32", ptx)),
                        len(re.findall(r"sub\.s32\s+\S+, 2129859011", ptx))
                        + len(re.findall(r"sub\.s32\s+\S+, 0x7EF311C3", ptx)))
    (tanh_fast, poly_fast), (tanh_mixed, poly_mixed) = counts[True], counts[2]
    assert tanh_fast > 0 and poly_fast == 0, counts
    assert tanh_mixed * 4 == tanh_fast * 3, counts
    assert poly_mixed * 4 == tanh_fast, counts


def test_mixed_sigmoid_arithmetic_within_tolerance():
    """The FMA-pipe quarter of the mixed sigmoid, replayed in float32 NumPy step by step from the
    constants in its PTX (the polynomial's, the clamp's, the reciprocal's magic number): within
    1e-4 relative of the float64 sigmoid where that exceeds 1e-30, 5e-5 absolute everywhere,
    exactly 0 at -inf and for x <= -87.4 (as tanh.approx gives)."""
    import re

    np = pytest.importorskip("numpy")
    with open(f"{TRITON_SRC}/sigmoid_attn_fwd.py") as f:
        src = f.read()
    asm = src[src.index("_SIGMOID_MIXED_ASM"):]
    asm = asm[:asm.index('}""")')]
    const = lambda h: np.array([int(h, 16)], dtype=np.uint32).view(np.float32)[0]
    (c3, c2), = re.findall(r"fma\.rn\.f32 p, t, 0f(\w{8}), 0f(\w{8});", asm)
    c1, c0 = re.findall(r"fma\.rn\.f32 p, p, t, 0f(\w{8});", asm)
    magic = np.int32(int(re.search(r"sub\.s32 bi, (0x\w+), bi;", asm).group(1), 16))
    f32 = np.float32
    x = np.concatenate([np.linspace(-200, 200, 400_001), [-np.inf, np.inf, 0.0]]).astype(f32)
    with np.errstate(over="ignore", invalid="ignore"):
        y = x * f32(-1.4426950408889634)
        big = y >= f32(126)
        y = np.minimum(np.maximum(y, f32(-126)), f32(126))
        r = (y + f32(12582912.0)).astype(f32)
        t = (y - (r - f32(12582912.0))).astype(f32)
        p = (t * const(c3) + const(c2)).astype(f32)
        p = (p * t + const(c1)).astype(f32)
        p = (p * t + const(c0)).astype(f32)
        e = (p.view(np.int32) + (r.view(np.int32) << 23)).view(f32)
        d, nd = (e + f32(1)).astype(f32), (f32(-1) - e).astype(f32)
        q = (magic - d.view(np.int32)).view(f32)
        for _ in range(2):
            q = (q * (nd * q + f32(2))).astype(f32)
        got = np.where(big, f32(0), q)
        want = 1 / (1 + np.exp(-x.astype(np.float64)))
    err = np.abs(got - want)
    assert err.max() < 5e-5, err.max()
    keep = want > 1e-30
    assert (err[keep] / want[keep]).max() < 1e-4, (err[keep] / want[keep]).max()
    assert got[-3] == 0 and (got[x <= -87.4] == 0).all()

