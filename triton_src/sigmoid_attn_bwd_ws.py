"""The backward's dQ kernel, warp-specialized (a JIT candidate, not in the library:
measured 3-4% faster than the dq kernel at hd128 16k, equal at 4k, slower at hd64;
tune_bwd_ws.json and benchmarks/NOTES.md, "The one-pass backward measured").

Written to the same conditions as sigmoid_attn_fwd_ws (num_warps 4, TMA descriptor loads only,
no run-time if/else, a single key loop), so that Triton's Hopper pass makes a TMA producer and
two consumer warpgroups of it. Per query block it walks the key blocks as sigmoid_attn_bwd_dq
does: P = sigmoid(S), dP = dO·Vᵀ, dS = dP·P·(1 − P), dQ += dS·K, dQ *= scale at the end.
No masks for the key tail: K and V's descriptors end at Lk, so V's zero rows give dP = 0 and
hence dS = 0 there; rows past Lq read Q and dO as zeros, so their dQ is zero too. Causal blocks
zero P, hence dS, above the diagonal in every iteration. score_mod: one 16-byte aligned float32
row per sequence, as the forward. Descriptors, key range and P come from the forward's helpers.
"""

import triton
import triton.language as tl

from sigmoid_attn_fwd_ws import (_ws_key_descriptors, _ws_key_end, _ws_locate,
                                 _ws_probabilities, _ws_rows, _ws_store_rows)


@triton.jit
def sigmoid_attn_bwd_dq_ws(
    Q, K, V, DO, DQ, SEQ_LENS_Q, SEQ_LENS_K, BIAS, SCORE_MOD,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_dob, stride_dot, stride_doh,
    stride_dqb, stride_dqt, stride_dqh,
    stride_smb,
    T_Q, T_K, kv_group, scale, bias_value,
    HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE, num_seqs, max_seqlen_q, max_seqlen_k,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_SCORE_MOD: tl.constexpr = False,
    FAST_SIGMOID: tl.constexpr = True, VARLEN: tl.constexpr = False,
    WARP_SPECIALIZE: tl.constexpr = True,
):
    # grid: (cdiv(T_Q, BLOCK_M), Hq, B), or (T_Q // BLOCK_M + num_seqs + 1, Hq, 1) when VARLEN
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    b, start_m, q_off, k_off, Lq, Lk, owned, bias = _ws_locate(
        pid_m, tl.program_id(2), T_Q, T_K, SEQ_LENS_Q, SEQ_LENS_K, BIAS, bias_value,
        HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE, num_seqs, max_seqlen_q, max_seqlen_k, BLOCK_M,
        VARLEN)
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    q_desc = _ws_rows(Q + b64 * stride_qb + q_off.to(tl.int64) * stride_qt + h64 * stride_qh,
                      Lq, stride_qt, BLOCK_M, HEAD_DIM)
    do_desc = _ws_rows(DO + b64 * stride_dob + q_off.to(tl.int64) * stride_dot
                       + h64 * stride_doh, Lq, stride_dot, BLOCK_M, HEAD_DIM)
    k_desc, v_desc, sm_desc = _ws_key_descriptors(
        K, V, SCORE_MOD, b64, k_off, (h // kv_group).to(tl.int64), stride_kb, stride_kt,
        stride_kh, stride_vb, stride_vt, stride_vh, stride_smb, Lk, num_seqs, HEAD_DIM, BLOCK_N,
        HAS_SCORE_MOD)
    hi = _ws_key_end(start_m, Lq, Lk, BLOCK_M, IS_CAUSAL)

    q = q_desc.load([start_m, 0])
    do = do_desc.load([start_m, 0])
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for n_start in tl.range(0, hi, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
        k = k_desc.load([n_start, 0])
        v = v_desc.load([n_start, 0])
        # P is zero above the diagonal when causal, and so is dS
        p = _ws_probabilities(q, k, sm_desc, n_start, start_m, scale, bias, BLOCK_M, BLOCK_N,
                              IS_CAUSAL, HAS_SCORE_MOD, FAST_SIGMOID)
        ds = tl.dot(do, tl.trans(v)) * p * (1.0 - p)
        dq = tl.dot(ds.to(k.dtype), k, dq)

    # rows past Lq: their dO rows read as zeros, so dS and dQ are zero there already
    _ws_store_rows(DQ + b64 * stride_dqb + q_off.to(tl.int64) * stride_dqt + h64 * stride_dqh,
                   stride_dqt, dq * scale, start_m, Lq, owned, BLOCK_M, HEAD_DIM)
