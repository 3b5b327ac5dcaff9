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
from sigmoid_attn_fwd_ws import sigmoid_attn_fwd_ws


def _st(t):
    """(batch, row, head) strides: [B, T, H, D] tensors, or packed [total, H, D] ones."""
    return (t.stride(0), t.stride(1), t.stride(2)) if t.dim() == 4 else (0, t.stride(0),
                                                                           t.stride(1))


def _geometry(q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k):
    """(B, Tq, Tk, Hq, Hkv, D, num_seqs, max_q, max_k, varlen) of a dense or packed call."""
    if cu_seqlens_q is None:
        B, Tq, Hq, D = q.shape
        return B, Tq, k.shape[1], Hq, k.shape[2], D, B, Tq, k.shape[1], False
    Tq, Hq, D = q.shape
    n = cu_seqlens_q.shape[0] - 1
    return 1, Tq, k.shape[0], Hq, k.shape[1], D, n, max_seqlen_q, max_seqlen_k, True


def forward(q, k, v, *, seq_lens_q=None, seq_lens_k=None, is_causal=False, scale=None,
            sigmoid_bias=None, score_mod=None, fast_sigmoid=False, tiles=None,
            warp_specialize=False, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=0,
            max_seqlen_k=0, use_tma=False, causal_lpt=0, runtime_head_dim=False,
            split_head_dim=None):
    """Dense [B, T, H, D] call, or packed [total, H, D] with cu_seqlens_q/k (varlen).
    fast_sigmoid: False (exact) or True (tanh.approx, what the build compiles for fp16/bf16).
    runtime_head_dim: the generic kernel (the head dim a run-time value, BLOCK_D a power of
    two; variants.GENERIC_HEAD_DIMS). split_head_dim: the head dim in two power-of-two column
    ranges where it is their sum (variants.split_head_dim; None: as the build compiles it)."""
    B, Tq, Tk, Hq, Hkv, D, n, max_q, max_k, varlen = _geometry(
        q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    tiles = tiles or V.fwd_tiles(D, max_q, _dtype_name(q))
    bm, bn, warps, stages = tiles[:4]
    use_tma = use_tma or "tma" in tiles[4:]
    block_d = 1 << (D - 1).bit_length()
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    if varlen:
        seq_lens_q, seq_lens_k = cu_seqlens_q, cu_seqlens_k
    x = _extras(q, seq_lens_q, seq_lens_k, sigmoid_bias, score_mod)
    if use_tma:
        _descriptor_scratch_from_torch(q.device)
    grid = (Tq // bm + n + 1, Hq, 1) if varlen else (triton.cdiv(Tq, bm), Hq, B)
    if split_head_dim is None:
        split_head_dim = not runtime_head_dim and not use_tma
    d_lo = V.split_head_dim(D) if split_head_dim else 0
    sigmoid_attn_fwd[grid](
        q, k, v, out, x["lq"], x["lk"], x["bias_t"], x["mod"],
        *_st(q), *_st(k), *_st(v), *_st(out), x["smb"], x["smt"],
        Tq, Tk, Hq // Hkv, 1.0 / math.sqrt(D) if scale is None else scale, x["bias_v"],
        x["has_lq"], x["has_lk"], x["bias_mode"], n, max_q, max_k, D,
        HEAD_DIM=block_d if runtime_head_dim else D, BLOCK_D=block_d, BLOCK_M=bm, BLOCK_N=bn,
        IS_CAUSAL=is_causal, HAS_SCORE_MOD=score_mod is not None, FAST_SIGMOID=fast_sigmoid,
        VARLEN=varlen, WARP_SPECIALIZE=warp_specialize, USE_TMA=use_tma, CAUSAL_LPT=causal_lpt,
        RUNTIME_HEAD_DIM=runtime_head_dim, D_LO=d_lo, num_warps=warps, num_stages=stages,
    )
    return out


def forward_ws(q, k, v, *, seq_lens_q=None, seq_lens_k=None, is_causal=False, scale=None,
               sigmoid_bias=None, score_mod=None, cu_seqlens_q=None, cu_seqlens_k=None,
               max_seqlen_q=0, max_seqlen_k=0, tiles=(128, 64, 4, 2), warp_specialize=True,
               return_kernel=False):
    """The warp-specialized forward (sigmoid_attn_fwd_ws): dense/padded [B, T, H, D] inputs,
    or packed [total, H, D] ones with cu_seqlens_q/k (varlen); head dim a power of two.
    score_mod ([B, Tk], or [total_k] packed) is laid out as one float32 row per sequence,
    padded to 16 bytes (the kernel's 1-D descriptors need aligned rows). tiles: (BLOCK_M,
    BLOCK_N, num_warps, num_stages); num_warps 4 is what Triton's Hopper pass specializes (it
    adds two warpgroups). return_kernel: also return Triton's compiled kernel (its
    metadata.num_warps is 12 when specialized)."""
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    kernel = _ws_call(sigmoid_attn_fwd_ws, (q, k, v, out), tiles, is_causal, scale, seq_lens_q,
                      seq_lens_k, sigmoid_bias, score_mod, cu_seqlens_q, cu_seqlens_k,
                      max_seqlen_q, max_seqlen_k, WARP_SPECIALIZE=warp_specialize)
    return (out, kernel) if return_kernel else out


def _descriptor_scratch_from_torch(device):
    """Device-side TMA descriptors live in global scratch, taken from torch's allocator."""
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8,
                                                                device=device))


def _ws_call(kernel, tensors, tiles, is_causal, scale, seq_lens_q, seq_lens_k, sigmoid_bias,
             score_mod, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, **meta):
    """Launches the warp-specialized forward (sigmoid_attn_fwd_ws): the tensors (q, k, v, out),
    lengths, bias, score_mod, the tensors' strides, then the problem's sizes. Returns Triton's
    compiled kernel."""
    q, k = tensors[0], tensors[1]
    B, Tq, Tk, Hq, Hkv, D, n, max_q, max_k, varlen = _geometry(
        q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    assert D & (D - 1) == 0, f"{kernel.__name__}: head dim {D} is not a power of two"
    bm, bn, warps, stages = tiles
    score_mod = _ws_score_mod(score_mod, q, B, Tk, varlen, cu_seqlens_k, n, max_k)
    if varlen:
        seq_lens_q, seq_lens_k = cu_seqlens_q, cu_seqlens_k
    x = _extras(q, seq_lens_q, seq_lens_k, sigmoid_bias, score_mod)
    _descriptor_scratch_from_torch(q.device)
    grid = (Tq // bm + n + 1, Hq, 1) if varlen else (triton.cdiv(Tq, bm), Hq, B)
    strides = [st for t in tensors for st in _st(t)]
    return kernel[grid](
        *tensors, x["lq"], x["lk"], x["bias_t"], x["mod"], *strides, x["smb"], Tq, Tk,
        Hq // Hkv, 1.0 / math.sqrt(D) if scale is None else scale, x["bias_v"],
        0 if varlen else x["has_lq"], 0 if varlen else x["has_lk"], x["bias_mode"], n, max_q,
        max_k, HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn, IS_CAUSAL=is_causal,
        HAS_SCORE_MOD=score_mod is not None, FAST_SIGMOID=q.dtype != torch.float32,
        VARLEN=varlen, num_warps=warps, num_stages=stages, **meta)


def _ws_score_mod(score_mod, q, B, Tk, varlen, cu_seqlens_k, n, max_k):
    """score_mod ([B, Tk], or [total_k] packed) as one float32 row per sequence, padded to 16
    bytes: what the warp-specialized forward's 1-D descriptors read."""
    if score_mod is None:
        return None
    if varlen:  # [total_k] -> [num_seqs, max_seqlen_k], on the device
        keys = torch.arange(Tk, device=q.device)
        seq = torch.searchsorted(cu_seqlens_k[1:].long(), keys, right=True).clamp_max(n - 1)
        col = keys - cu_seqlens_k.long()[seq]
        keep = col < max_k
        padded = torch.zeros(n, (max_k + 3) // 4 * 4, dtype=torch.float32, device=q.device)
        padded[seq[keep], col[keep]] = score_mod.float()[keep]
    else:
        padded = torch.zeros(B, (Tk + 3) // 4 * 4, dtype=torch.float32, device=q.device)
        padded[:, :Tk] = score_mod
    return padded


def _dtype_name(t):
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(t.dtype, "fp32")


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
    smb, smt = 0, 0
    if score_mod is not None:  # [B, Tk], or [total_k] when packed
        smb, smt = (mod.stride(0), mod.stride(1)) if mod.dim() == 2 else (0, mod.stride(0))
    return {"lq": seq_lens_q if seq_lens_q is not None else dummy_i,
            "lk": seq_lens_k if seq_lens_k is not None else dummy_i,
            "bias_t": bias_t, "bias_v": bias_v, "bias_mode": bias_mode, "mod": mod,
            "smb": smb, "smt": smt,
            "has_lq": int(seq_lens_q is not None), "has_lk": int(seq_lens_k is not None)}


def backward(grad, q, k, v, *, seq_lens_q=None, seq_lens_k=None, is_causal=False, scale=None,
             sigmoid_bias=None, score_mod=None, fast_sigmoid=False, tiles=None, tiles_dq=None,
             parts=("dkdv", "dq"), cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=0,
             max_seqlen_k=0, causal_lpt=(0, 0), runtime_head_dim=False):
    """Returns (dq, dk, dv, dscore_mod or None), like torch.ops.sigmoid_attn.backward.
    tiles / tiles_dq: (BLOCK_M, BLOCK_N, warps, stages) of the dkdv / dq kernels (tiles_dq
    defaults to tiles); parts: which kernels to run (for timing them apart); causal_lpt: the
    CAUSAL_LPT program order of (dkdv, dq). runtime_head_dim: the generic kernels (as
    forward's)."""
    B, Tq, Tk, Hq, Hkv, D, n, max_q, max_k, varlen = _geometry(
        q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    explicit = tiles is not None
    dt = _dtype_name(q)
    tiles = tiles or V.tile_table("bwd_dkdv", dt).get(D, (64, 64, 4, 2))
    tiles_dq = tiles_dq or (tiles if explicit else V.tile_table("bwd_dq", dt).get(D, (64, 64, 4, 2)))
    block_d = 1 << (D - 1).bit_length()
    if varlen:
        seq_lens_q, seq_lens_k = cu_seqlens_q, cu_seqlens_k
    x = _extras(q, seq_lens_q, seq_lens_k, sigmoid_bias, score_mod)
    dq, dk, dv = (torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))
    has_mod = score_mod is not None
    dmod = torch.empty(B if has_mod else 1, Hkv, Tk, dtype=torch.float32, device=q.device)
    sc = 1.0 / math.sqrt(D) if scale is None else scale
    def meta(t, lpt):
        return dict(HEAD_DIM=block_d if runtime_head_dim else D, BLOCK_D=block_d, BLOCK_M=t[0],
                    BLOCK_N=t[1], IS_CAUSAL=is_causal, HAS_SCORE_MOD=has_mod,
                    FAST_SIGMOID=fast_sigmoid, VARLEN=varlen, CAUSAL_LPT=lpt,
                    RUNTIME_HEAD_DIM=runtime_head_dim, num_warps=t[2], num_stages=t[3])

    tail = (Tq, Tk, Hq // Hkv, sc, x["bias_v"], x["has_lq"], x["has_lk"], x["bias_mode"], n,
            max_q, max_k, D)
    dmb = 0 if varlen else dmod.stride(0)
    grid_kv = (Tk // tiles[1] + n + 1, Hkv, 1) if varlen else (triton.cdiv(Tk, tiles[1]), Hkv, B)
    if "dkdv" in parts:
        sigmoid_attn_bwd_dkdv[grid_kv](
            q, k, v, grad, dk, dv, dmod, x["lq"], x["lk"], x["bias_t"], x["mod"],
            *_st(q), *_st(k), *_st(v), *_st(grad), *_st(dk), *_st(dv),
            dmb, dmod.stride(1), x["smb"], x["smt"], *tail, **meta(tiles, causal_lpt[0]))
    if "dq" in parts:
        grid = (Tq // tiles_dq[0] + n + 1, Hq, 1) if varlen else (triton.cdiv(Tq, tiles_dq[0]), Hq, B)
        sigmoid_attn_bwd_dq[grid](
            q, k, v, grad, dq, x["lq"], x["lk"], x["bias_t"], x["mod"],
            *_st(q), *_st(k), *_st(v), *_st(grad), *_st(dq), x["smb"], x["smt"], *tail,
            **meta(tiles_dq, causal_lpt[1]))
    dmod_sum = None
    if has_mod:
        dmod_sum = dmod.sum(1)[0] if varlen else dmod.sum(1)
    return dq, dk, dv, dmod_sum
