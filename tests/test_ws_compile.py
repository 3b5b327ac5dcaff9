"""The warp-specialized kernels (triton_src/sigmoid_attn_fwd_ws.py, and the dQ kernel of
sigmoid_attn_bwd_ws.py) stay specialized:
compiled for sm_90 with the installed Triton (no GPU needed), Triton's Hopper pass must split it
into a producer and two consumer warpgroups (384 threads, setmaxnreg) with no local memory. The
pass skips a kernel silently when its conditions break (benchmarks/NOTES.md, "Warp
specialization on Hopper"), so an edit that adds a run-time if/else would otherwise go unseen."""

import sys

import pytest

from conftest import TRITON_SRC

triton = pytest.importorskip("triton")


def compile_ws(head_dim, block_n, causal, score_mod, varlen, kernel="fwd"):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sys.path.insert(0, TRITON_SRC)
    try:
        from sigmoid_attn_bwd_ws import sigmoid_attn_bwd_dq_ws
        from sigmoid_attn_fwd_ws import sigmoid_attn_fwd_ws
    finally:
        sys.path.remove(TRITON_SRC)
    fn = sigmoid_attn_fwd_ws if kernel == "fwd" else sigmoid_attn_bwd_dq_ws
    constexprs = {"HEAD_DIM": head_dim, "BLOCK_M": 128, "BLOCK_N": block_n, "IS_CAUSAL": causal,
                  "HAS_SCORE_MOD": score_mod, "FAST_SIGMOID": True, "VARLEN": varlen,
                  "WARP_SPECIALIZE": True}
    pointers = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "O": "*bf16", "DO": "*bf16",
                "DQ": "*bf16", "SEQ_LENS_Q": "*i32", "SEQ_LENS_K": "*i32", "BIAS": "*fp32",
                "SCORE_MOD": "*fp32"}
    signature, consts, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name], consts[(i,)] = "constexpr", constexprs[name]
        elif name in pointers:
            signature[name] = pointers[name]
        else:
            signature[name] = "fp32" if name in ("scale", "bias_value") else "i32"
        if signature[name] == "*bf16" or name.startswith("stride_"):
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=signature, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": 4, "num_stages": 2})


@pytest.mark.parametrize("head_dim,block_n,causal,score_mod,varlen,kernel",
                         [(128, 64, False, False, False, "fwd"), (64, 128, True, True, True, "fwd"),
                          (128, 64, True, True, False, "dq")])
def test_candidate_is_warp_specialized(head_dim, block_n, causal, score_mod, varlen, kernel):
    kernel = compile_ws(head_dim, block_n, causal, score_mod, varlen, kernel)
    assert kernel.metadata.num_warps * 32 == 384, (
        f"expected a producer and two consumer warpgroups (384 threads), got "
        f"{kernel.metadata.num_warps * 32}: Triton's Hopper pass did not specialize the loop")
    ptx = kernel.asm["ptx"]
    assert "setmaxnreg" in ptx, "no register reallocation between the warpgroups"
    assert "cp.async.bulk.tensor" in ptx, "Q/K/V are not loaded through TMA"
    assert ".local" not in ptx, "local memory (register spills) in the specialized kernel"
