"""Backward sigmoid attention kernels (Triton source; compiled ahead of time by aot.py).

With S = scale * Q Kᵀ + bias + score_mod, P = sigmoid(S), O = P V:
    dV = Pᵀ dO,   dP = dO Vᵀ,   dS = dP * P * (1 - P),   dQ = scale * dS K,   dK = scale * dSᵀ Q,
    d score_mod[b, j] = sum over heads and rows of dS[:, :, j].
Sigmoid needs no row statistics from the forward (unlike softmax), so P is recomputed from Q and
K alone: no O(T²) memory and nothing saved but the inputs.

Two kernels, so that every output element has exactly one writer (no atomics, bitwise
deterministic): dkdv walks query blocks for one key block, summing over the q heads of a GQA
group; dq walks key blocks for one query block. Padding needs few masks: rows past Lq and keys
past Lk are loaded as zeros, which zeroes their dP and dS, and dV of padded keys is cleared at
the store.
"""

import triton
import triton.language as tl

from sigmoid_attn_fwd import _dot, _locate, _longest_first, _runtime_head_dim, _sigmoid


@triton.jit
def _load_rows(base, offs, limit, stride, offs_d, D, PAD_D: tl.constexpr):
    ptrs = base + offs[:, None] * stride + offs_d[None, :]
    mask = offs[:, None] < limit
    if PAD_D:
        mask = mask & (offs_d[None, :] < D)
    return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def _dkdv_block(dk, dv, dmod, k, v, q_base, do_base, m_start, offs_n, offs_d, Lq,
                stride_qt, stride_dot, scale, bias_col,
                D, PAD_D: tl.constexpr, BLOCK_M: tl.constexpr,
                CAUSAL_MASK: tl.constexpr, HAS_SCORE_MOD: tl.constexpr,
                FAST_SIGMOID: tl.constexpr):
    offs_m = m_start + tl.arange(0, BLOCK_M)
    q = _load_rows(q_base, offs_m, Lq, stride_qt, offs_d, D, PAD_D)
    do = _load_rows(do_base, offs_m, Lq, stride_dot, offs_d, D, PAD_D)
    sT = _dot(k, tl.trans(q)) * scale + bias_col  # [BLOCK_N, BLOCK_M]
    pT = _sigmoid(sT, FAST_SIGMOID)
    if CAUSAL_MASK:
        pT = tl.where(offs_m[None, :] >= offs_n[:, None], pT, 0.0)
    dv += _dot(pT.to(do.dtype), do)
    dpT = _dot(v, tl.trans(do))
    dsT = dpT * pT * (1.0 - pT)
    dk += _dot(dsT.to(q.dtype), q)
    if HAS_SCORE_MOD:
        dmod += tl.sum(dsT, 1)
    return dk, dv, dmod


@triton.jit
def sigmoid_attn_bwd_dkdv(
    Q, K, V, DO, DK, DV, DMOD, SEQ_LENS_Q, SEQ_LENS_K, BIAS, SCORE_MOD,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_dob, stride_dot, stride_doh,
    stride_dkb, stride_dkt, stride_dkh,
    stride_dvb, stride_dvt, stride_dvh,
    stride_dmb, stride_dmh, stride_smb, stride_smt,
    T_Q, T_K, kv_group, scale, bias_value,
    HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE, num_seqs, max_seqlen_q, max_seqlen_k, head_dim,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_SCORE_MOD: tl.constexpr, FAST_SIGMOID: tl.constexpr,
    VARLEN: tl.constexpr, CAUSAL_LPT: tl.constexpr = 0,
    RUNTIME_HEAD_DIM: tl.constexpr = False,
):
    """One key block's dK, dV (and d score_mod) over the q heads of its GQA group.
    grid: (cdiv(T_K, BLOCK_N), Hkv, B), or (T_K // BLOCK_N + num_seqs + 1, Hkv, 1) when VARLEN."""
    pid_n = tl.program_id(0)
    hk = tl.program_id(1)
    b_dense = tl.program_id(2)
    if CAUSAL_LPT > 0 and IS_CAUSAL and not VARLEN:
        # key block n walks the query blocks from n on: the low n are the longest
        pid_n, hk, b_dense = _longest_first(pid_n, hk, b_dense, CAUSAL_LPT, False)
    b, start_n, q_off, k_off, Lq, Lk, owned, bias = _locate(
        pid_n, b_dense, T_Q, T_K, SEQ_LENS_Q, SEQ_LENS_K, BIAS, bias_value,
        num_seqs, max_seqlen_q, max_seqlen_k, HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE, BLOCK_N, True, VARLEN)
    b64 = b.to(tl.int64)
    hk64 = hk.to(tl.int64)
    q_off64 = q_off.to(tl.int64)
    k_off64 = k_off.to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    # D bounds every access along the head dim, masked where BLOCK_D is wider (PAD_D):
    # a compiled head dim (a constant), or the generic kernels' run-time one.
    PAD_D: tl.constexpr = RUNTIME_HEAD_DIM or BLOCK_D != HEAD_DIM
    if RUNTIME_HEAD_DIM:
        D = _runtime_head_dim(head_dim)
    else:
        D = HEAD_DIM
    k = _load_rows(K + b64 * stride_kb + k_off64 * stride_kt + hk64 * stride_kh, offs_n, Lk,
                   stride_kt, offs_d, D, PAD_D)
    v = _load_rows(V + b64 * stride_vb + k_off64 * stride_vt + hk64 * stride_vh, offs_n, Lk,
                   stride_vt, offs_d, D, PAD_D)
    bias_col = tl.zeros([BLOCK_N, 1], dtype=tl.float32) + bias
    if HAS_SCORE_MOD:
        mod = tl.load(SCORE_MOD + b64 * stride_smb + (k_off64 + offs_n) * stride_smt,
                      mask=offs_n < Lk,
                      other=0.0)
        bias_col += mod[:, None]

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dmod = tl.zeros([BLOCK_N], dtype=tl.float32)
    # Query blocks that see this key block: all of [0, Lq), or from the diagonal when causal.
    m_lo = 0
    m_diag_end = 0
    if IS_CAUSAL:
        m_lo = (start_n // BLOCK_M) * BLOCK_M
        m_diag_end = m_lo + tl.cdiv(start_n + BLOCK_N - m_lo, BLOCK_M) * BLOCK_M
    if start_n >= Lk:
        Lq = 0  # key block wholly past the sequence: its gradients are zero
    for g in range(0, kv_group):
        h64 = hk64 * kv_group + g
        q_base = Q + b64 * stride_qb + q_off64 * stride_qt + h64 * stride_qh
        do_base = DO + b64 * stride_dob + q_off64 * stride_dot + h64 * stride_doh
        if IS_CAUSAL:
            for m_start in range(m_lo, tl.minimum(m_diag_end, Lq), BLOCK_M):
                dk, dv, dmod = _dkdv_block(dk, dv, dmod, k, v, q_base, do_base, m_start, offs_n,
                                           offs_d, Lq, stride_qt, stride_dot, scale, bias_col, D,
                                           PAD_D, BLOCK_M, True, HAS_SCORE_MOD, FAST_SIGMOID)
        for m_start in range(m_diag_end, Lq, BLOCK_M):
            dk, dv, dmod = _dkdv_block(dk, dv, dmod, k, v, q_base, do_base, m_start, offs_n,
                                       offs_d, Lq, stride_qt, stride_dot, scale, bias_col, D,
                                       PAD_D, BLOCK_M, False, HAS_SCORE_MOD, FAST_SIGMOID)

    key_ok = offs_n < Lk
    dv = tl.where(key_ok[:, None], dv, 0.0)
    dk = dk * scale
    out_mask = offs_n[:, None] < owned
    if PAD_D:
        out_mask = out_mask & (offs_d[None, :] < D)
    rows = k_off64 + offs_n
    dk_ptrs = DK + b64 * stride_dkb + hk64 * stride_dkh + rows[:, None] * stride_dkt + offs_d[None, :]
    dv_ptrs = DV + b64 * stride_dvb + hk64 * stride_dvh + rows[:, None] * stride_dvt + offs_d[None, :]
    tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=out_mask)
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=out_mask)
    if HAS_SCORE_MOD:
        dmod = tl.where(key_ok, dmod, 0.0)
        tl.store(DMOD + b64 * stride_dmb + hk64 * stride_dmh + rows, dmod, mask=offs_n < owned)


@triton.jit
def _dq_block(dq, q, do, k_base, v_base, sm_base, n_start, offs_m, offs_d, Lk,
              stride_kt, stride_vt, stride_smt, scale, bias,
              D, PAD_D: tl.constexpr, BLOCK_N: tl.constexpr,
              CAUSAL_MASK: tl.constexpr, HAS_SCORE_MOD: tl.constexpr,
              FAST_SIGMOID: tl.constexpr):
    offs_n = n_start + tl.arange(0, BLOCK_N)
    k = _load_rows(k_base, offs_n, Lk, stride_kt, offs_d, D, PAD_D)
    v = _load_rows(v_base, offs_n, Lk, stride_vt, offs_d, D, PAD_D)
    s = _dot(q, tl.trans(k)) * scale + bias
    if HAS_SCORE_MOD:
        s += tl.load(sm_base + offs_n * stride_smt, mask=offs_n < Lk, other=0.0)[None, :]
    p = _sigmoid(s, FAST_SIGMOID)
    dp = _dot(do, tl.trans(v))
    ds = dp * p * (1.0 - p)  # keys past Lk have v = 0, so dp = 0 and ds = 0 there
    if CAUSAL_MASK:
        ds = tl.where(offs_n[None, :] <= offs_m[:, None], ds, 0.0)
    return dq + _dot(ds.to(k.dtype), k)


@triton.jit
def sigmoid_attn_bwd_dq(
    Q, K, V, DO, DQ, SEQ_LENS_Q, SEQ_LENS_K, BIAS, SCORE_MOD,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_dob, stride_dot, stride_doh,
    stride_dqb, stride_dqt, stride_dqh,
    stride_smb, stride_smt,
    T_Q, T_K, kv_group, scale, bias_value,
    HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE, num_seqs, max_seqlen_q, max_seqlen_k, head_dim,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_SCORE_MOD: tl.constexpr, FAST_SIGMOID: tl.constexpr,
    VARLEN: tl.constexpr, CAUSAL_LPT: tl.constexpr = 0,
    RUNTIME_HEAD_DIM: tl.constexpr = False,
):
    # grid: (cdiv(T_Q, BLOCK_M), Hq, B), or (T_Q // BLOCK_M + num_seqs + 1, Hq, 1) when VARLEN
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    b_dense = tl.program_id(2)
    if CAUSAL_LPT > 0 and IS_CAUSAL and not VARLEN:  # as the forward: high query blocks first
        pid_m, h, b_dense = _longest_first(pid_m, h, b_dense, CAUSAL_LPT)
    b, start_m, q_off, k_off, Lq, Lk, owned, bias = _locate(
        pid_m, b_dense, T_Q, T_K, SEQ_LENS_Q, SEQ_LENS_K, BIAS, bias_value,
        num_seqs, max_seqlen_q, max_seqlen_k, HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE, BLOCK_M, False, VARLEN)
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    hk64 = (h // kv_group).to(tl.int64)
    q_off64 = q_off.to(tl.int64)
    k_off64 = k_off.to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    # D bounds every access along the head dim, masked where BLOCK_D is wider (PAD_D):
    # a compiled head dim (a constant), or the generic kernels' run-time one.
    PAD_D: tl.constexpr = RUNTIME_HEAD_DIM or BLOCK_D != HEAD_DIM
    if RUNTIME_HEAD_DIM:
        D = _runtime_head_dim(head_dim)
    else:
        D = HEAD_DIM
    q = _load_rows(Q + b64 * stride_qb + q_off64 * stride_qt + h64 * stride_qh, offs_m, Lq,
                   stride_qt, offs_d, D, PAD_D)
    do = _load_rows(DO + b64 * stride_dob + q_off64 * stride_dot + h64 * stride_doh, offs_m, Lq,
                    stride_dot, offs_d, D, PAD_D)
    k_base = K + b64 * stride_kb + k_off64 * stride_kt + hk64 * stride_kh
    v_base = V + b64 * stride_vb + k_off64 * stride_vt + hk64 * stride_vh
    sm_base = SCORE_MOD + b64 * stride_smb + k_off64 * stride_smt

    hi = Lk
    n_full = Lk
    if IS_CAUSAL:
        hi = tl.minimum(Lk, start_m + BLOCK_M)
        n_full = tl.minimum(hi, ((start_m + 1) // BLOCK_N) * BLOCK_N)
    if start_m >= Lq:
        hi = 0
        n_full = 0
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for n_start in range(0, n_full, BLOCK_N):
        dq = _dq_block(dq, q, do, k_base, v_base, sm_base, n_start, offs_m, offs_d, Lk,
                       stride_kt, stride_vt, stride_smt, scale, bias,
                       D, PAD_D, BLOCK_N, False, HAS_SCORE_MOD, FAST_SIGMOID)
    for n_start in range(n_full, hi, BLOCK_N):
        dq = _dq_block(dq, q, do, k_base, v_base, sm_base, n_start, offs_m, offs_d, Lk,
                       stride_kt, stride_vt, stride_smt, scale, bias,
                       D, PAD_D, BLOCK_N, IS_CAUSAL, HAS_SCORE_MOD, FAST_SIGMOID)
    dq = dq * scale
    out_mask = offs_m[:, None] < owned
    if PAD_D:
        out_mask = out_mask & (offs_d[None, :] < D)
    rows = q_off64 + offs_m
    dq_ptrs = DQ + b64 * stride_dqb + h64 * stride_dqh + rows[:, None] * stride_dqt + offs_d[None, :]
    tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=out_mask)
