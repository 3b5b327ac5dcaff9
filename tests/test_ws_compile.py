"""The warp-specialized forward (triton_src/sigmoid_attn_fwd_ws.py) stays specialized:
compiled for sm_90 with the installed Triton (no GPU needed), Triton's Hopper pass must split it
into a producer and two consumer warpgroups (384 threads, setmaxnreg) with no local memory. The
pass skips a kernel silently when its conditions break (docs/performance.md, "The
warp-specialized forward"), so an edit that adds a run-time if/else would otherwise go unseen."""

import sys

import pytest

from conftest import TRITON_SRC

triton = pytest.importorskip("triton")


def compile_ws(head_dim, block_n, causal, score_mod, varlen, block_m=128):
    sys.path.insert(0, TRITON_SRC)
    try:
        from sigmoid_attn_fwd_ws import sigmoid_attn_fwd_ws as fn
    finally:
        sys.path.remove(TRITON_SRC)
    constexprs = {"HEAD_DIM": head_dim, "BLOCK_M": block_m, "BLOCK_N": block_n, "IS_CAUSAL": causal,
                  "HAS_SCORE_MOD": score_mod, "FAST_SIGMOID": True, "VARLEN": varlen,
                  "WARP_SPECIALIZE": True}
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


@pytest.mark.parametrize("head_dim,block_n,causal,score_mod,varlen,block_m",
                         [(128, 64, False, False, False, 128),
                          (64, 128, True, True, True, 128),
                          (128, 64, False, True, True, 256)])  # the shipped hd128 tile
def test_kernel_is_warp_specialized(head_dim, block_n, causal, score_mod, varlen, block_m):
    kernel = compile_ws(head_dim, block_n, causal, score_mod, varlen, block_m)
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
