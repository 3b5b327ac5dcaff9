"""Launch the Triton kernel sources directly through Triton's JIT (for tests and debugging).

With TRITON_INTERPRET=1 this runs on CPU tensors, which is how CI checks the kernel source
itself (the compiled cubins need a GPU). Not used by the package: production goes through
the AOT cubins and the C++ launcher.
"""

import math

import torch
import triton

import variants as V
from sigmoid_attn_fwd import BIAS_DEFAULT, BIAS_SCALAR, BIAS_TENSOR, sigmoid_attn_fwd


def forward(q, k, v, *, seq_lens_q=None, seq_lens_k=None, is_causal=False, scale=None,
            sigmoid_bias=None, score_mod=None, fast_sigmoid=False, tiles=None,
            warp_specialize=False):
    B, Tq, Hq, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    bm, bn, warps, stages = tiles or V.FWD_TILES.get(D, (64, 64, 4, 2))
    block_d = 1 << (D - 1).bit_length()
    out = torch.empty(B, Tq, Hq, D, dtype=q.dtype, device=q.device)
    dummy_i = torch.zeros(1, dtype=torch.int32, device=q.device)
    dummy_f = torch.zeros(1, dtype=torch.float32, device=q.device)
    if isinstance(sigmoid_bias, torch.Tensor):
        bias_mode, bias_t, bias_v = BIAS_TENSOR, sigmoid_bias.float().contiguous(), 0.0
    elif sigmoid_bias is not None:
        bias_mode, bias_t, bias_v = BIAS_SCALAR, dummy_f, float(sigmoid_bias)
    else:
        bias_mode, bias_t, bias_v = BIAS_DEFAULT, dummy_f, 0.0
    mod = score_mod.float() if score_mod is not None else dummy_f
    smb, smt = (mod.stride(0), mod.stride(1)) if score_mod is not None else (0, 0)
    grid = (triton.cdiv(Tq, bm), Hq, B)
    sigmoid_attn_fwd[grid](
        q, k, v, out,
        seq_lens_q if seq_lens_q is not None else dummy_i,
        seq_lens_k if seq_lens_k is not None else dummy_i,
        bias_t, mod,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        smb, smt,
        Tq, Tk, Hq // Hkv, 1.0 / math.sqrt(D) if scale is None else scale, bias_v,
        int(seq_lens_q is not None), int(seq_lens_k is not None), bias_mode,
        HEAD_DIM=D, BLOCK_D=block_d, BLOCK_M=bm, BLOCK_N=bn,
        IS_CAUSAL=is_causal, HAS_SCORE_MOD=score_mod is not None, FAST_SIGMOID=fast_sigmoid,
        WARP_SPECIALIZE=warp_specialize,
        num_warps=warps, num_stages=stages,
    )
    return out
