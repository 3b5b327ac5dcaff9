"""Launch the Triton kernel sources directly through Triton's JIT (for tests and debugging).

With TRITON_INTERPRET=1 this runs on CPU tensors, which is how CI checks the kernel source
itself (the compiled cubins need a GPU). Not used by the package: production goes through
the AOT cubins and the C++ launcher.
"""

import math

import torch
import triton

import variants as V
from sigmoid_attn_bwd import sigmoid_attn_bwd_dkdv, sigmoid_attn_bwd_dq
from sigmoid_attn_fwd import BIAS_DEFAULT, BIAS_SCALAR, BIAS_TENSOR, sigmoid_attn_fwd


def forward(q, k, v, *, seq_lens_q=None, seq_lens_k=None, is_causal=False, scale=None,
            sigmoid_bias=None, score_mod=None, fast_sigmoid=False, tiles=None,
            warp_specialize=False, software_pipeline=False):
    B, Tq, Hq, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    bm, bn, warps, stages = tiles or V.fwd_tiles(D, Tq)
    block_d = 1 << (D - 1).bit_length()
    out = torch.empty(B, Tq, Hq, D, dtype=q.dtype, device=q.device)
    x = _extras(q, seq_lens_q, seq_lens_k, sigmoid_bias, score_mod)
    grid = (triton.cdiv(Tq, bm), Hq, B)
    sigmoid_attn_fwd[grid](
        q, k, v, out, x["lq"], x["lk"], x["bias_t"], x["mod"],
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        x["smb"], x["smt"],
        Tq, Tk, Hq // Hkv, 1.0 / math.sqrt(D) if scale is None else scale, x["bias_v"],
        x["has_lq"], x["has_lk"], x["bias_mode"],
        HEAD_DIM=D, BLOCK_D=block_d, BLOCK_M=bm, BLOCK_N=bn,
        IS_CAUSAL=is_causal, HAS_SCORE_MOD=score_mod is not None, FAST_SIGMOID=fast_sigmoid,
        WARP_SPECIALIZE=warp_specialize, SOFTWARE_PIPELINE=software_pipeline,
        num_warps=warps, num_stages=stages,
    )
    return out


def _extras(q, seq_lens_q, seq_lens_k, sigmoid_bias, score_mod):
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
    return {"lq": seq_lens_q if seq_lens_q is not None else dummy_i,
            "lk": seq_lens_k if seq_lens_k is not None else dummy_i,
            "bias_t": bias_t, "bias_v": bias_v, "bias_mode": bias_mode, "mod": mod,
            "smb": smb, "smt": smt,
            "has_lq": int(seq_lens_q is not None), "has_lk": int(seq_lens_k is not None)}


def backward(grad, q, k, v, *, seq_lens_q=None, seq_lens_k=None, is_causal=False, scale=None,
             sigmoid_bias=None, score_mod=None, fast_sigmoid=False, tiles=None, tiles_dq=None,
             parts=("dkdv", "dq")):
    """Returns (dq, dk, dv, dscore_mod or None), like torch.ops.sigmoid_attn.backward.
    tiles / tiles_dq: (BLOCK_M, BLOCK_N, warps, stages) of the dkdv / dq kernels (tiles_dq
    defaults to tiles); parts: which kernels to run (for timing them apart)."""
    B, Tq, Hq, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    explicit = tiles is not None
    tiles = tiles or V.BWD_DKDV_TILES.get(D, (64, 64, 4, 2))
    tiles_dq = tiles_dq or (tiles if explicit else V.BWD_DQ_TILES.get(D, (64, 64, 4, 2)))
    block_d = 1 << (D - 1).bit_length()
    x = _extras(q, seq_lens_q, seq_lens_k, sigmoid_bias, score_mod)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    has_mod = score_mod is not None
    dmod = torch.empty(B if has_mod else 1, Hkv, Tk, dtype=torch.float32, device=q.device)
    sc = 1.0 / math.sqrt(D) if scale is None else scale
    def meta(t):
        return dict(HEAD_DIM=D, BLOCK_D=block_d, BLOCK_M=t[0], BLOCK_N=t[1], IS_CAUSAL=is_causal,
                    HAS_SCORE_MOD=has_mod, FAST_SIGMOID=fast_sigmoid, num_warps=t[2],
                    num_stages=t[3])

    tail = (Tq, Tk, Hq // Hkv, sc, x["bias_v"], x["has_lq"], x["has_lk"], x["bias_mode"])
    st = lambda t: (t.stride(0), t.stride(1), t.stride(2))
    if "dkdv" in parts:
        sigmoid_attn_bwd_dkdv[(triton.cdiv(Tk, tiles[1]), Hkv, B)](
            q, k, v, grad, dk, dv, dmod, x["lq"], x["lk"], x["bias_t"], x["mod"],
            *st(q), *st(k), *st(v), *st(grad), *st(dk), *st(dv),
            dmod.stride(0), dmod.stride(1), x["smb"], x["smt"], *tail, **meta(tiles))
    if "dq" in parts:
        sigmoid_attn_bwd_dq[(triton.cdiv(Tq, tiles_dq[0]), Hq, B)](
            q, k, v, grad, dq, x["lq"], x["lk"], x["bias_t"], x["mod"],
            *st(q), *st(k), *st(v), *st(grad), *st(dq), x["smb"], x["smt"], *tail,
            **meta(tiles_dq))
    return dq, dk, dv, dmod.sum(1) if has_mod else None
