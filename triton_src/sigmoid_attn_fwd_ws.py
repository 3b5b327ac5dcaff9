"""Forward sigmoid attention, warp-specialized candidate (experimental: JIT only, not compiled
into the library until measured; see benchmarks/NOTES.md, "Warp specialization on Hopper").

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

Same layout and semantics as sigmoid_attn_fwd for dense and padded batches ([B, T, H, D], any
strides with a contiguous last dim and 16-byte aligned rows, GQA, seq_lens, bias modes), and
score_mod [B, Tk] (float32, contiguous along keys, 16-byte aligned rows: read through a 1-D
descriptor); no packed varlen yet.
"""

import triton
import triton.language as tl

from sigmoid_attn_fwd import _sigmoid


@triton.jit
def sigmoid_attn_fwd_ws(
    Q, K, V, O, SEQ_LENS_Q, SEQ_LENS_K, BIAS, SCORE_MOD,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_ob, stride_ot, stride_oh,
    stride_smb,
    T_Q, T_K, kv_group, scale, bias_value,
    HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_SCORE_MOD: tl.constexpr = False,
    FAST_SIGMOID: tl.constexpr = True,
    WARP_SPECIALIZE: tl.constexpr = True,
):
    # grid: (cdiv(T_Q, BLOCK_M), H, B)
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    # Lengths clamped to [0, T] and the bias (0: -log(max(Lk, 1)), 1: bias_value, 2: BIAS[b]),
    # all without branches (see the module docstring).
    Lq = tl.load(SEQ_LENS_Q + b, mask=HAS_SEQ_LENS_Q != 0, other=T_Q)
    Lq = tl.minimum(tl.maximum(Lq, 0), T_Q)
    Lk = tl.load(SEQ_LENS_K + b, mask=HAS_SEQ_LENS_K != 0, other=T_K)
    Lk = tl.minimum(tl.maximum(Lk, 0), T_K)
    bias_t = tl.load(BIAS + b, mask=BIAS_MODE == 2, other=0.0)
    bias = tl.where(BIAS_MODE == 0, -tl.log(tl.maximum(Lk, 1).to(tl.float32)),
                    tl.where(BIAS_MODE == 1, bias_value, bias_t))

    b64 = b.to(tl.int64)
    h_kv = (h // kv_group).to(tl.int64)
    q_base = Q + b64 * stride_qb + h.to(tl.int64) * stride_qh
    k_base = K + b64 * stride_kb + h_kv * stride_kh
    v_base = V + b64 * stride_vb + h_kv * stride_vh
    start_m = pid_m * BLOCK_M
    # Descriptors end at the valid lengths (at least one row: a zero-row descriptor is not
    # valid); rows past them read as zeros.
    q_desc = tl.make_tensor_descriptor(q_base, shape=[tl.maximum(Lq, 1), HEAD_DIM],
                                       strides=[stride_qt, 1], block_shape=[BLOCK_M, HEAD_DIM])
    k_desc = tl.make_tensor_descriptor(k_base, shape=[tl.maximum(Lk, 1), HEAD_DIM],
                                       strides=[stride_kt, 1], block_shape=[BLOCK_N, HEAD_DIM])
    v_desc = tl.make_tensor_descriptor(v_base, shape=[tl.maximum(Lk, 1), HEAD_DIM],
                                       strides=[stride_vt, 1], block_shape=[BLOCK_N, HEAD_DIM])

    if HAS_SCORE_MOD:  # [B, Tk] float32, contiguous along keys: a 1-D descriptor per sequence
        sm_desc = tl.make_tensor_descriptor(SCORE_MOD + b64 * stride_smb,
                                            shape=[tl.maximum(Lk, 1)], strides=[1],
                                            block_shape=[BLOCK_N])

    hi = Lk
    if IS_CAUSAL:  # a compile-time branch: no scf.if
        hi = tl.minimum(hi, start_m + BLOCK_M)
    hi = tl.where(start_m >= Lq, 0, hi)  # a query block past the sequence: zeros only
    offs_m = start_m + tl.arange(0, BLOCK_M)

    q = q_desc.load([start_m, 0])
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for n_start in tl.range(0, hi, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
        k = k_desc.load([n_start, 0])
        v = v_desc.load([n_start, 0])
        s = tl.dot(q, tl.trans(k)) * scale + bias
        if HAS_SCORE_MOD:
            s += sm_desc.load([n_start])[None, :]
        p = _sigmoid(s, FAST_SIGMOID)
        if IS_CAUSAL:
            offs_n = n_start + tl.arange(0, BLOCK_N)
            p = tl.where(offs_n[None, :] <= offs_m[:, None], p, 0.0)
        acc = tl.dot(p.to(v.dtype), v, acc)

    acc = tl.where((offs_m < Lq)[:, None], acc, 0.0)
    offs_d = tl.arange(0, HEAD_DIM)
    o_ptrs = (O + b64 * stride_ob + h.to(tl.int64) * stride_oh + offs_m[:, None] * stride_ot
              + offs_d[None, :])
    tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=(offs_m < T_Q)[:, None])
