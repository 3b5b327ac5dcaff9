"""Forward sigmoid attention kernel (Triton source; compiled ahead of time by aot.py).

    O[b, i, h] = sum_j sigmoid(scale * q_i . k_j + bias_b + score_mod[b, j]) * v_j

over valid keys j < Lk[b] (and j <= i when causal); rows i >= Lq[b] are written as zeros.

Layout: q/o are [B, Tq, H, D], k/v are [B, Tk, Hkv, D] addressed through strides (last dim
contiguous), so [B, H, T, D] views work without copies. The grid is (cdiv(Tq, BLOCK_M), H, B):
m-blocks of one (b, h) are adjacent so they share K/V through L2.

Run-time integer flags (HAS_SEQ_LENS_*, BIAS_MODE) are scalar branches outside the key loop and
cost nothing measurable; only what changes the loop body or its bounds is a constexpr (and so a
compiled variant): head dim, causal, score_mod, tiles.
"""

import triton
import triton.language as tl

# BIAS_MODE values, mirrored in csrc/kernel_spec.h.
BIAS_DEFAULT = 0  # -log(max(Lk, 1)) per sequence
BIAS_SCALAR = 1  # bias_value
BIAS_TENSOR = 2  # BIAS[b], float32


@triton.jit
def _sigmoid(x, FAST: tl.constexpr):
    if FAST:
        # sigmoid(x) = 0.5 * tanh(x / 2) + 0.5: one MUFU op instead of ex2 + rcp.
        t = tl.inline_asm_elementwise(
            "tanh.approx.f32 $0, $1;", "=r,r", [x * 0.5], dtype=tl.float32, is_pure=True, pack=1
        )
        return 0.5 * t + 0.5
    else:
        return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _bias_and_lengths(b, T_Q, T_K, SEQ_LENS_Q, SEQ_LENS_K, BIAS, bias_value,
                      HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE):
    """Sequence b's lengths, clamped to [0, T] so that no lengths tensor can cause an
    out-of-bounds access, and its bias (BIAS_MODE: default -log(max(Lk, 1)), scalar, tensor)."""
    Lq = T_Q
    if HAS_SEQ_LENS_Q != 0:
        Lq = tl.minimum(tl.maximum(tl.load(SEQ_LENS_Q + b), 0), T_Q)
    Lk = T_K
    if HAS_SEQ_LENS_K != 0:
        Lk = tl.minimum(tl.maximum(tl.load(SEQ_LENS_K + b), 0), T_K)
    if BIAS_MODE == 0:
        bias = -tl.log(tl.maximum(Lk, 1).to(tl.float32))
    elif BIAS_MODE == 1:
        bias = bias_value
    else:
        bias = tl.load(BIAS + b)
    return Lq, Lk, bias


@triton.jit
def _attend(
    acc, q, k_base, v_base, sm_base, offs_m, offs_d, n_start, Lk,
    stride_kt, stride_vt, stride_smt, scale, bias,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_SCORE_MOD: tl.constexpr,
    FAST_SIGMOID: tl.constexpr,
):
    offs_n = n_start + tl.arange(0, BLOCK_N)
    k_ptrs = k_base + offs_n[None, :] * stride_kt + offs_d[:, None]
    v_ptrs = v_base + offs_n[:, None] * stride_vt + offs_d[None, :]
    if MASKED:
        key_ok = offs_n < Lk
        if BLOCK_D != HEAD_DIM:
            kT = tl.load(k_ptrs, mask=key_ok[None, :] & (offs_d[:, None] < HEAD_DIM), other=0.0)
            v = tl.load(v_ptrs, mask=key_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
        else:
            kT = tl.load(k_ptrs, mask=key_ok[None, :], other=0.0)
            v = tl.load(v_ptrs, mask=key_ok[:, None], other=0.0)
    else:
        if BLOCK_D != HEAD_DIM:
            kT = tl.load(k_ptrs, mask=offs_d[:, None] < HEAD_DIM, other=0.0)
            v = tl.load(v_ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
        else:
            kT = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
    s = tl.dot(q, kT) * scale + bias
    if HAS_SCORE_MOD:
        if MASKED:
            mod = tl.load(sm_base + offs_n * stride_smt, mask=offs_n < Lk, other=0.0)
        else:
            mod = tl.load(sm_base + offs_n * stride_smt)
        s += mod[None, :]
    p = _sigmoid(s, FAST_SIGMOID)
    if MASKED:
        keep = (offs_n < Lk)[None, :]
        if IS_CAUSAL:
            keep = keep & (offs_n[None, :] <= offs_m[:, None])
        p = tl.where(keep, p, 0.0)
    return acc + tl.dot(p.to(v.dtype), v)


@triton.jit
def _qk(q, k_base, offs_d, n_start, stride_kt, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
        BLOCK_N: tl.constexpr):
    offs_n = n_start + tl.arange(0, BLOCK_N)
    k_ptrs = k_base + offs_n[None, :] * stride_kt + offs_d[:, None]
    if BLOCK_D != HEAD_DIM:
        kT = tl.load(k_ptrs, mask=offs_d[:, None] < HEAD_DIM, other=0.0)
    else:
        kT = tl.load(k_ptrs)
    return tl.dot(q, kT)


@triton.jit
def _pv(acc, qk, v_base, sm_base, offs_d, n_start, stride_vt, stride_smt, scale, bias,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
        HAS_SCORE_MOD: tl.constexpr, FAST_SIGMOID: tl.constexpr):
    offs_n = n_start + tl.arange(0, BLOCK_N)
    v_ptrs = v_base + offs_n[:, None] * stride_vt + offs_d[None, :]
    if BLOCK_D != HEAD_DIM:
        v = tl.load(v_ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
    else:
        v = tl.load(v_ptrs)
    s = qk * scale + bias
    if HAS_SCORE_MOD:
        s += tl.load(sm_base + offs_n * stride_smt)[None, :]
    p = _sigmoid(s, FAST_SIGMOID)
    return acc + tl.dot(p.to(v.dtype), v)


@triton.jit
def sigmoid_attn_fwd(
    Q, K, V, O, SEQ_LENS_Q, SEQ_LENS_K, BIAS, SCORE_MOD,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_ob, stride_ot, stride_oh,
    stride_smb, stride_smt,
    T_Q, T_K, kv_group, scale, bias_value,
    HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_SCORE_MOD: tl.constexpr, FAST_SIGMOID: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr, SOFTWARE_PIPELINE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    start_m = pid_m * BLOCK_M

    # Lengths are clamped to [0, T] so that no lengths tensor can cause an out-of-bounds access.
    Lq, Lk, bias = _bias_and_lengths(b, T_Q, T_K, SEQ_LENS_Q, SEQ_LENS_K, BIAS, bias_value,
                                     HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE)

    b64 = b.to(tl.int64)
    h_kv = (h // kv_group).to(tl.int64)
    q_base = Q + b64 * stride_qb + h.to(tl.int64) * stride_qh
    k_base = K + b64 * stride_kb + h_kv * stride_kh
    v_base = V + b64 * stride_vb + h_kv * stride_vh
    o_base = O + b64 * stride_ob + h.to(tl.int64) * stride_oh
    sm_base = SCORE_MOD + b64 * stride_smb

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Lq

    # Key range: [0, hi). Blocks below n_full need no mask: every key is valid for every row.
    hi = Lk
    n_full = (Lk // BLOCK_N) * BLOCK_N
    if IS_CAUSAL:
        hi = tl.minimum(hi, start_m + BLOCK_M)
        n_full = tl.minimum(n_full, ((start_m + 1) // BLOCK_N) * BLOCK_N)
    if start_m >= Lq:  # query block wholly past the sequence: only zeros are stored
        hi = 0
        n_full = 0

    q_ptrs = q_base + offs_m[:, None] * stride_qt + offs_d[None, :]
    if BLOCK_D != HEAD_DIM:
        q = tl.load(q_ptrs, mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    else:
        q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if SOFTWARE_PIPELINE:
        # Q·Kᵀ of block j+1 is issued before the sigmoid of block j, so that the tensor cores
        # work while the MUFU unit computes tanh (the two are comparable in cost at hd<=128).
        if n_full > 0:
            qk = _qk(q, k_base, offs_d, 0, stride_kt, HEAD_DIM, BLOCK_D, BLOCK_N)
            for n_start in range(BLOCK_N, n_full, BLOCK_N):
                qk_next = _qk(q, k_base, offs_d, n_start, stride_kt, HEAD_DIM, BLOCK_D, BLOCK_N)
                acc = _pv(acc, qk, v_base, sm_base, offs_d, n_start - BLOCK_N, stride_vt,
                          stride_smt, scale, bias, HEAD_DIM, BLOCK_D, BLOCK_N, HAS_SCORE_MOD,
                          FAST_SIGMOID)
                qk = qk_next
            acc = _pv(acc, qk, v_base, sm_base, offs_d, n_full - BLOCK_N, stride_vt,
                      stride_smt, scale, bias, HEAD_DIM, BLOCK_D, BLOCK_N, HAS_SCORE_MOD,
                      FAST_SIGMOID)
    else:
        for n_start in tl.range(0, n_full, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
            acc = _attend(
                acc, q, k_base, v_base, sm_base, offs_m, offs_d, n_start, Lk,
                stride_kt, stride_vt, stride_smt, scale, bias,
                HEAD_DIM, BLOCK_D, BLOCK_N, False, IS_CAUSAL, HAS_SCORE_MOD, FAST_SIGMOID,
            )
    for n_start in range(n_full, hi, BLOCK_N):
        acc = _attend(
            acc, q, k_base, v_base, sm_base, offs_m, offs_d, n_start, Lk,
            stride_kt, stride_vt, stride_smt, scale, bias,
            HEAD_DIM, BLOCK_D, BLOCK_N, True, IS_CAUSAL, HAS_SCORE_MOD, FAST_SIGMOID,
        )

    acc = tl.where(row_ok[:, None], acc, 0.0)
    o_ptrs = o_base + offs_m[:, None] * stride_ot + offs_d[None, :]
    out_mask = offs_m[:, None] < T_Q
    if BLOCK_D != HEAD_DIM:
        out_mask = out_mask & (offs_d[None, :] < HEAD_DIM)
    tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=out_mask)
