"""Forward sigmoid attention, warp-specialized (kind fwd_ws; docs/performance.md, "The
warp-specialized forward"). Compiled only with Triton >= 3.8
(variants.WS_MIN_TRITON): Triton 3.6's pass left six initialized, never-invalidated mbarriers on
the first bytes of the 256-row tile's Q buffer, and under GPU time-slicing (8 processes on one
H200, benchmarks/stress_contention.py) a preemption wrote their state over Q's row 0: NaN in row
0 of every resident query block, about 1 call in 2,400.

Triton's Hopper warp-specialization pass (nvgpu-warp-specialization, Triton 3.6 and 3.8) turns a
`tl.range(..., warp_specialize=True)` loop into a producer warpgroup (TMA loads) and two consumer
warpgroups that split the 128 query rows between them, with register reallocation (setmaxnreg):
the schedule this kernel family lacks (NOTES: tensor pipe 60-64% against cuDNN's 76-78%). The pass
applies only when, checked by compiling for sm_90 with Triton 3.8:
  - the kernel is written for num_warps=4 (one warpgroup; the pass adds the others: 384 threads);
  - no scf.if in the function has an else region: every run-time choice below is arithmetic
    (tl.where, masked scalar loads), never an if/else on a run-time value;
  - every tensor load is a TMA descriptor load (pointer loads of Q, K or V fail the pass), and no
    second loop follows the specialized one (a masked tail loop fails it too).
So the key tail needs no mask: V's descriptor ends at Lk and TMA fills the rows past it with
zeros, which zeroes their P·V whatever P is; K's zero rows only keep P finite. Causal blocks
apply the j <= i mask in every iteration (one compare and select per score, on the ALU).

Same layout and semantics as sigmoid_attn_fwd: dense and padded batches ([B, T, H, D], any
strides with a contiguous last dim and 16-byte aligned rows, GQA, seq_lens, bias modes) and
packed varlen batches ([total, H, D] with cu_seqlens and sigmoid_attn_fwd's device-side tile
schedule, whose loop runs before the specialized one: the pass allows that). score_mod comes
as one float32 row per sequence, contiguous along keys and 16-byte aligned, read through a 1-D
descriptor (the launcher lays it out so).
"""

import triton
import triton.language as tl

from sigmoid_attn_fwd import _packed_seq, _packed_tile, _sigmoid


@triton.jit
def _ws_locate(pid_m, b_dense, T_Q, T_K, SEQ_LENS_Q, SEQ_LENS_K, BIAS, bias_value,
               HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE, num_seqs, max_seqlen_q, max_seqlen_k,
               BLOCK_M: tl.constexpr, VARLEN: tl.constexpr):
    """Where a query-block program works, as sigmoid_attn_fwd._locate but without run-time
    branches (the pass's condition): (sequence b, first row of its block, q and k token
    offsets, Lq, Lk clamped to [0, T], rows it owns, bias: 0: -log(max(Lk, 1)), 1: bias_value,
    2: BIAS[b])."""
    if VARLEN:  # packed [total, H, D] with cu_seqlens: sigmoid_attn_fwd's device-side schedule
        b, start_m, q_off, Lq, owned = _packed_tile(pid_m, SEQ_LENS_Q, num_seqs, T_Q,
                                                    max_seqlen_q, BLOCK_M)
        k_off, Lk = _packed_seq(b, SEQ_LENS_K, num_seqs, T_K, max_seqlen_k)
        bias_t = tl.load(BIAS + b, mask=(BIAS_MODE == 2) & (b < num_seqs), other=0.0)
    else:
        b = b_dense
        start_m = pid_m * BLOCK_M
        q_off = b * 0
        k_off = b * 0
        owned = T_Q
        Lq = tl.load(SEQ_LENS_Q + b, mask=HAS_SEQ_LENS_Q != 0, other=T_Q)
        Lq = tl.minimum(tl.maximum(Lq, 0), T_Q)
        Lk = tl.load(SEQ_LENS_K + b, mask=HAS_SEQ_LENS_K != 0, other=T_K)
        Lk = tl.minimum(tl.maximum(Lk, 0), T_K)
        bias_t = tl.load(BIAS + b, mask=BIAS_MODE == 2, other=0.0)
    bias = tl.where(BIAS_MODE == 0, -tl.log(tl.maximum(Lk, 1).to(tl.float32)),
                    tl.where(BIAS_MODE == 1, bias_value, bias_t))
    return b, start_m, q_off, k_off, Lq, Lk, owned, bias


@triton.jit
def _ws_rows(base, rows, row_stride, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """A [rows, HEAD_DIM] descriptor that ends at the valid rows (at least one: a zero-row
    descriptor is not valid); rows past it read as zeros."""
    return tl.make_tensor_descriptor(base, shape=[tl.maximum(rows, 1), HEAD_DIM],
                                     strides=[row_stride, 1], block_shape=[BLOCK, HEAD_DIM])


@triton.jit
def _ws_key_descriptors(K, V, SCORE_MOD, b64, k_off, h_kv, stride_kb, stride_kt, stride_kh,
                        stride_vb, stride_vt, stride_vh, stride_smb, Lk, num_seqs,
                        HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
                        HAS_SCORE_MOD: tl.constexpr):
    """K, V and score_mod of one sequence (and kv head), each ending at Lk. score_mod comes as
    [B, Tk] float32 rows, contiguous along keys and 16-byte aligned (packed batches too: the
    launcher lays a varlen score_mod out as [num_seqs, padded max_seqlen_k] rows), read through
    a 1-D descriptor; without one, K's descriptor stands in (never read)."""
    k_desc = _ws_rows(K + b64 * stride_kb + k_off.to(tl.int64) * stride_kt + h_kv * stride_kh,
                      Lk, stride_kt, BLOCK_N, HEAD_DIM)
    v_desc = _ws_rows(V + b64 * stride_vb + k_off.to(tl.int64) * stride_vt + h_kv * stride_vh,
                      Lk, stride_vt, BLOCK_N, HEAD_DIM)
    if HAS_SCORE_MOD:
        sm_row = SCORE_MOD + tl.minimum(b64, tl.maximum(num_seqs - 1, 0)) * stride_smb
        sm_desc = tl.make_tensor_descriptor(sm_row, shape=[tl.maximum(Lk, 1)], strides=[1],
                                            block_shape=[BLOCK_N])
    else:  # a compile-time branch: no scf.if
        sm_desc = k_desc
    return k_desc, v_desc, sm_desc


@triton.jit
def _ws_key_end(start_m, Lq, Lk, BLOCK_M: tl.constexpr, IS_CAUSAL: tl.constexpr):
    """End of a query block's key range: Lk, the diagonal when causal, 0 for a block past the
    sequence (zeros only)."""
    hi = Lk
    if IS_CAUSAL:  # a compile-time branch: no scf.if
        hi = tl.minimum(hi, start_m + BLOCK_M)
    return tl.where(start_m >= Lq, 0, hi)


@triton.jit
def _ws_probabilities(q, k, sm_desc, n_start, start_m, scale, bias, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr, IS_CAUSAL: tl.constexpr,
                      HAS_SCORE_MOD: tl.constexpr, FAST_SIGMOID: tl.constexpr):
    """P = sigmoid(q·kᵀ·scale + bias + score_mod) of one key block, zero above the diagonal
    when causal (every block: the specialized loop has no separate masked tail). The diagonal
    test compares block-local aranges with one scalar (see _ws_store_rows for why)."""
    s = tl.dot(q, tl.trans(k)) * scale + bias
    if HAS_SCORE_MOD:
        s += sm_desc.load([n_start])[None, :]
    p = _sigmoid(s, FAST_SIGMOID)
    if IS_CAUSAL:
        rows = tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_N)
        p = tl.where(cols[None, :] - rows[:, None] <= start_m - n_start, p, 0.0)
    return p


@triton.jit
def _ws_store_rows(base, row_stride, acc, start_m, valid, owned, BLOCK_M: tl.constexpr,
                   HEAD_DIM: tl.constexpr):
    """Stores a [BLOCK_M, HEAD_DIM] block at rows start_m.. of base: rows past `valid` as
    zeros, none past `owned`. Row offsets are block-local aranges plus a scalar base, never
    `start_m + tl.arange(...)`: Triton 3.6's Hopper pass splits the block between its two
    consumer warpgroups and, for the second one, shifts both the arange (to 64..127) and the
    splat of start_m (to start_m + 64, the offset it gives that warpgroup's Q load), which puts
    its rows 64 too far (measured on the H100: rows 64..127 of every block unwritten, the next
    block's 0..63 overwritten)."""
    rows = tl.arange(0, BLOCK_M)
    acc = tl.where((rows < valid - start_m)[:, None], acc, 0.0)
    offs_d = tl.arange(0, HEAD_DIM)
    ptrs = base + start_m.to(tl.int64) * row_stride + rows[:, None] * row_stride + offs_d[None, :]
    tl.store(ptrs, acc.to(base.dtype.element_ty), mask=(rows < owned - start_m)[:, None])


@triton.jit
def _ws_tile(Q, K, V, O, SEQ_LENS_Q, SEQ_LENS_K, BIAS, SCORE_MOD, pid_m, h, b_dense,
             stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh,
             stride_vb, stride_vt, stride_vh, stride_ob, stride_ot, stride_oh, stride_smb,
             T_Q, T_K, kv_group, scale, bias_value,
             HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE, num_seqs, max_seqlen_q, max_seqlen_k,
             HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
             IS_CAUSAL: tl.constexpr, HAS_SCORE_MOD: tl.constexpr, FAST_SIGMOID: tl.constexpr,
             VARLEN: tl.constexpr, SPECIALIZE_KEYS: tl.constexpr):
    """One (query block, head, sequence) tile: its output rows, from its Q block and every key
    block up to _ws_key_end. SPECIALIZE_KEYS: the key loop is the one Triton's pass splits."""
    b, start_m, q_off, k_off, Lq, Lk, owned, bias = _ws_locate(
        pid_m, b_dense, T_Q, T_K, SEQ_LENS_Q, SEQ_LENS_K, BIAS, bias_value, HAS_SEQ_LENS_Q,
        HAS_SEQ_LENS_K, BIAS_MODE, num_seqs, max_seqlen_q, max_seqlen_k, BLOCK_M, VARLEN)

    b64 = b.to(tl.int64)
    h_kv = (h // kv_group).to(tl.int64)
    q_desc = _ws_rows(Q + b64 * stride_qb + q_off.to(tl.int64) * stride_qt
                      + h.to(tl.int64) * stride_qh, Lq, stride_qt, BLOCK_M, HEAD_DIM)
    k_desc, v_desc, sm_desc = _ws_key_descriptors(
        K, V, SCORE_MOD, b64, k_off, h_kv, stride_kb, stride_kt, stride_kh, stride_vb,
        stride_vt, stride_vh, stride_smb, Lk, num_seqs, HEAD_DIM, BLOCK_N, HAS_SCORE_MOD)
    hi = _ws_key_end(start_m, Lq, Lk, BLOCK_M, IS_CAUSAL)

    q = q_desc.load([start_m, 0])
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for n_start in tl.range(0, hi, BLOCK_N, warp_specialize=SPECIALIZE_KEYS):
        k = k_desc.load([n_start, 0])
        v = v_desc.load([n_start, 0])
        p = _ws_probabilities(q, k, sm_desc, n_start, start_m, scale, bias, BLOCK_M, BLOCK_N,
                              IS_CAUSAL, HAS_SCORE_MOD, FAST_SIGMOID)
        acc = tl.dot(p.to(v.dtype), v, acc)

    _ws_store_rows(O + b64 * stride_ob + q_off.to(tl.int64) * stride_ot
                   + h.to(tl.int64) * stride_oh, stride_ot, acc, start_m, Lq, owned, BLOCK_M,
                   HEAD_DIM)


@triton.jit
def sigmoid_attn_fwd_ws(
    Q, K, V, O, SEQ_LENS_Q, SEQ_LENS_K, BIAS, SCORE_MOD,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_ob, stride_ot, stride_oh,
    stride_smb,
    T_Q, T_K, kv_group, scale, bias_value,
    HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE, num_seqs, max_seqlen_q, max_seqlen_k,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_SCORE_MOD: tl.constexpr = False,
    FAST_SIGMOID: tl.constexpr = True, VARLEN: tl.constexpr = False,
    WARP_SPECIALIZE: tl.constexpr = True,
):
    # grid: (cdiv(T_Q, BLOCK_M), H, B), or (T_Q // BLOCK_M + num_seqs + 1, H, 1) when VARLEN
    _ws_tile(Q, K, V, O, SEQ_LENS_Q, SEQ_LENS_K, BIAS, SCORE_MOD, tl.program_id(0),
             tl.program_id(1), tl.program_id(2), stride_qb, stride_qt, stride_qh, stride_kb,
             stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_ob, stride_ot,
             stride_oh, stride_smb, T_Q, T_K, kv_group, scale, bias_value, HAS_SEQ_LENS_Q,
             HAS_SEQ_LENS_K, BIAS_MODE, num_seqs, max_seqlen_q, max_seqlen_k, HEAD_DIM, BLOCK_M,
             BLOCK_N, IS_CAUSAL, HAS_SCORE_MOD, FAST_SIGMOID, VARLEN, WARP_SPECIALIZE)
