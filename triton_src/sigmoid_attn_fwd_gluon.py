"""Forward sigmoid attention as a hand-scheduled, warp-specialized Gluon kernel for dense,
non-causal calls on Hopper (sm_90). The library builds its persistent variant
(sigmoid_attn_fwd_gluon_persistent.py, kind fwd_gluon), which imports _tanh_approx from here; this
one is the probe's baseline (benchmarks/gluon_fwd):

    O[b, t, h, :] = sum_j sigmoid(scale * <Q[b,t,h,:], K[b,j,g,:]> + bias) * V[b, j, g, :]
    with g = h // kv_group (GQA/MQA: kv_group query heads per K/V head)

Gluon is Triton's explicit dialect: layouts, shared memory, barriers and the warp partitions
are written out, where sigmoid_attn_fwd_ws leaves them to Triton's Hopper pass. Compiled with
GluonASTSource, a private Triton module: aot.py builds this kind only with the Triton version it
is pinned to (variants.GLUON_TRITON).

Layout: Q, O are [B, T_Q, H, D] and K, V [B, T_K, H_KV, D], each seen by a host TMA descriptor
as a rank-3 tensor [B, T, H*D] (heads packed along each row: head stride D, last dim
contiguous; any 16-byte multiple row and batch strides), with a [1, rows, D] box at
(b, row, h*D): TMA fills the rows past T of each sequence with zeros (loads) and drops them
(stores), so no masks are needed (K's zero rows give P = sigmoid(bias), finite; V's zero rows
zero their P·V contribution). The descriptors end at T, not at a per-sequence length: padded
batches (seq_lens), causal masks and score_mod take the other forwards (csrc/dispatch.cpp).

Schedule (one CTA per BLOCK_M query rows x head x batch; grid (cdiv(T_Q, BLOCK_M), H, B)):
  * partition "producer" (1 warp, few registers): loads the two Q halves once (q_bar), then
    K and V blocks into a NUM_STAGES ring, K and V with their own ready/empty mbarriers so that
    Q·Kᵀ of a block can start before its V has landed;
  * partitions "consumer 0" (the default partition, 4 warps) and "consumer 1" (a 4-warp worker),
    one warpgroup each, own rows [wg*ROWS, (wg+1)*ROWS) of the tile (ROWS = BLOCK_M/2):
    S = Q·Kᵀ by wgmma (both operands in shared memory), P = sigmoid(S*scale + bias) through
    tanh.approx.f32 (sigmoid(x) = 0.5*tanh(0.5x) + 0.5), O += P·V by wgmma with P in registers.
    With OVERLAP (FA3's intra-warpgroup overlap) iteration j issues S_j = Q·K_jᵀ and
    O += P_{j-1}·V_{j-1} back to back, waits for S_j only, computes P_j while the P·V wgmma runs,
    then waits for that one. Each consumer releases a K (V) slot by one arrive on its empty
    barrier (count 2: one per consumer warpgroup) once the wgmma that read it has completed;
  * epilogue: each consumer writes its O rows (bf16/fp16) to its own shared buffer and stores
    them with one TMA store (rows past T_Q are clipped by the descriptor).

Barriers: q_bar[1], k_ready/k_empty/v_ready/v_empty[NUM_STAGES] live in their own shared
allocations, never aliased by a data buffer; all are invalidated at the end of the kernel after
every partition has finished (the warp_specialize region joins first), so their memory is never
reused while initialized.

T_K >= 1 is a precondition (the launcher never sends T_K = 0): with no key block the overlapped
prologue would wait for a K block that never comes.
"""

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    tma, mbarrier, fence_async_shared, warpgroup_mma, warpgroup_mma_wait)


@gluon.jit
def _tanh_approx(x):
    return gl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=r,r", [x], dtype=gl.float32,
                                     is_pure=True, pack=1)


@gluon.jit
def _producer(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty,
              v_ready, v_empty, T_K, kv_group, ROWS: gl.constexpr, BLOCK_N: gl.constexpr,
              HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr):
    pid_m = gl.program_id(0)
    h = gl.program_id(1)
    b = gl.program_id(2)
    row0 = pid_m * (2 * ROWS)
    # Q: both warpgroups' halves on one barrier.
    mbarrier.expect(q_bar, 2 * q_desc.block_type.nbytes)
    tma.async_load(q_desc, [b, row0, h * HEAD_DIM], q_bar, q_smem.index(0))
    tma.async_load(q_desc, [b, row0 + ROWS, h * HEAD_DIM], q_bar, q_smem.index(1))
    # GQA / MQA: query heads [g*kv_group, (g+1)*kv_group) share K/V head g.
    col = (h // kv_group) * HEAD_DIM
    n_blocks = gl.cdiv(T_K, BLOCK_N)
    for j in range(n_blocks):
        s = j % NUM_STAGES
        ph = (j // NUM_STAGES) & 1
        mbarrier.wait(k_empty.index(s), ph ^ 1)
        mbarrier.expect(k_ready.index(s), k_desc.block_type.nbytes)
        tma.async_load(k_desc, [b, j * BLOCK_N, col], k_ready.index(s), k_smem.index(s))
        mbarrier.wait(v_empty.index(s), ph ^ 1)
        mbarrier.expect(v_ready.index(s), v_desc.block_type.nbytes)
        tma.async_load(v_desc, [b, j * BLOCK_N, col], v_ready.index(s), v_smem.index(s))


@gluon.jit
def _probabilities(s, qk_scale_half, bias_half, p_layout: gl.constexpr, dtype: gl.constexpr):
    # sigmoid(x) = 0.5 * tanh(0.5 * x) + 0.5 with x = s*scale + bias.
    t = _tanh_approx(s * qk_scale_half + bias_half)
    p = t * 0.5 + 0.5
    return gl.convert_layout(p.to(dtype), p_layout)


@gluon.jit
def _consumer(o_desc, q_smem, k_smem, v_smem, o_smem, q_bar, k_ready, k_empty, v_ready, v_empty,
              T_K, qk_scale_half, bias_half, WG: gl.constexpr, ROWS: gl.constexpr,
              BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr,
              OVERLAP: gl.constexpr):
    dtype: gl.constexpr = o_desc.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)

    q = q_smem.index(WG).reshape([ROWS, HEAD_DIM])
    n_blocks = gl.cdiv(T_K, BLOCK_N)
    o = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
    s_zero = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
    mbarrier.wait(q_bar, 0)

    if OVERLAP:
        # Prologue: P_0.
        mbarrier.wait(k_ready.index(0), 0)
        k0 = k_smem.index(0).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0))
        s = warpgroup_mma(q, k0, s_zero, use_acc=False, is_async=True)
        s = warpgroup_mma_wait(0, deps=(s, ))
        mbarrier.arrive(k_empty.index(0), count=1)
        p = _probabilities(s, qk_scale_half, bias_half, p_layout, dtype)
        for j in range(1, n_blocks):
            sk = j % NUM_STAGES
            pk = (j // NUM_STAGES) & 1
            sv = (j - 1) % NUM_STAGES
            pv = ((j - 1) // NUM_STAGES) & 1
            mbarrier.wait(k_ready.index(sk), pk)
            kj = k_smem.index(sk).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0))
            s = warpgroup_mma(q, kj, s_zero, use_acc=False, is_async=True)
            mbarrier.wait(v_ready.index(sv), pv)
            vj = v_smem.index(sv).reshape([BLOCK_N, HEAD_DIM])
            o = warpgroup_mma(p, vj, o, is_async=True)
            # wgmma groups retire in order: at most one outstanding means S_j is done.
            s = warpgroup_mma_wait(1, deps=(s, ))
            mbarrier.arrive(k_empty.index(sk), count=1)
            p_next = _probabilities(s, qk_scale_half, bias_half, p_layout, dtype)
            o, p = warpgroup_mma_wait(0, deps=(o, p))
            mbarrier.arrive(v_empty.index(sv), count=1)
            p = p_next
        sv = (n_blocks - 1) % NUM_STAGES
        pv = ((n_blocks - 1) // NUM_STAGES) & 1
        mbarrier.wait(v_ready.index(sv), pv)
        vj = v_smem.index(sv).reshape([BLOCK_N, HEAD_DIM])
        o = warpgroup_mma(p, vj, o, is_async=True)
        o, p = warpgroup_mma_wait(0, deps=(o, p))
        mbarrier.arrive(v_empty.index(sv), count=1)
    else:
        for j in range(n_blocks):
            st = j % NUM_STAGES
            ph = (j // NUM_STAGES) & 1
            mbarrier.wait(k_ready.index(st), ph)
            kj = k_smem.index(st).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0))
            s = warpgroup_mma(q, kj, s_zero, use_acc=False, is_async=True)
            s = warpgroup_mma_wait(0, deps=(s, ))
            mbarrier.arrive(k_empty.index(st), count=1)
            p = _probabilities(s, qk_scale_half, bias_half, p_layout, dtype)
            mbarrier.wait(v_ready.index(st), ph)
            vj = v_smem.index(st).reshape([BLOCK_N, HEAD_DIM])
            o = warpgroup_mma(p, vj, o, is_async=True)
            o, p = warpgroup_mma_wait(0, deps=(o, p))
            mbarrier.arrive(v_empty.index(st), count=1)

    # Epilogue: registers -> own shared buffer -> TMA store (rows past T_Q are clipped).
    pid_m = gl.program_id(0)
    h = gl.program_id(1)
    b = gl.program_id(2)
    o_buf = o_smem.index(WG)
    o_buf.reshape([ROWS, HEAD_DIM]).store(o.to(dtype))
    fence_async_shared()
    tma.async_store(o_desc, [b, pid_m * (2 * ROWS) + WG * ROWS, h * HEAD_DIM], o_buf)
    tma.store_wait(0)


@gluon.jit
def _consumer1(o_desc, q_smem, k_smem, v_smem, o_smem, q_bar, k_ready, k_empty, v_ready, v_empty,
               T_K, qk_scale_half, bias_half, ROWS: gl.constexpr, BLOCK_N: gl.constexpr,
               HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, OVERLAP: gl.constexpr):
    _consumer(o_desc, q_smem, k_smem, v_smem, o_smem, q_bar, k_ready, k_empty, v_ready, v_empty,
              T_K, qk_scale_half, bias_half, 1, ROWS, BLOCK_N, HEAD_DIM, NUM_STAGES, OVERLAP)


@gluon.jit
def _consumer0(o_desc, q_smem, k_smem, v_smem, o_smem, q_bar, k_ready, k_empty, v_ready, v_empty,
               T_K, qk_scale_half, bias_half, ROWS: gl.constexpr, BLOCK_N: gl.constexpr,
               HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, OVERLAP: gl.constexpr):
    _consumer(o_desc, q_smem, k_smem, v_smem, o_smem, q_bar, k_ready, k_empty, v_ready, v_empty,
              T_K, qk_scale_half, bias_half, 0, ROWS, BLOCK_N, HEAD_DIM, NUM_STAGES, OVERLAP)


@gluon.jit
def sigmoid_attn_fwd_gluon(q_desc, k_desc, v_desc, o_desc, T_K, kv_group, scale, bias_value,
                           NUM_STAGES: gl.constexpr, OVERLAP: gl.constexpr,
                           CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr):
    """grid (cdiv(T_Q, BLOCK_M), H, B), num_warps=4 (the default partition is consumer 0);
    BLOCK_M = 2 * q_desc.block_type.shape[1]. q/o descriptors: rank 3 [B, T_Q, H*D], box
    [1, ROWS, D]; k/v: [B, T_K, H_KV*D], box [1, BLOCK_N, D]. kv_group = H / H_KV."""
    ROWS: gl.constexpr = q_desc.block_type.shape[1]
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[2]
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[1]
    dtype: gl.constexpr = q_desc.dtype

    q_smem = gl.allocate_shared_memory(dtype, [2] + q_desc.block_type.shape, q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES] + k_desc.block_type.shape,
                                       k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES] + v_desc.block_type.shape,
                                       v_desc.layout)
    o_smem = gl.allocate_shared_memory(dtype, [2] + o_desc.block_type.shape, o_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)  # one arrive per consumer warpgroup
        mbarrier.init(v_empty.index(i), count=2)
    fence_async_shared()  # barrier inits visible to the async proxy (TMA) before any use

    # 0.5 folded in: sigmoid(x) = 0.5 * tanh(0.5 * x) + 0.5.
    qk_scale_half = scale * 0.5
    bias_half = bias_value * 0.5

    gl.warp_specialize([
        (_consumer0, (o_desc, q_smem, k_smem, v_smem, o_smem, q_bar, k_ready, k_empty, v_ready,
                      v_empty, T_K, qk_scale_half, bias_half, ROWS, BLOCK_N, HEAD_DIM, NUM_STAGES,
                      OVERLAP)),
        (_consumer1, (o_desc, q_smem, k_smem, v_smem, o_smem, q_bar, k_ready, k_empty, v_ready,
                      v_empty, T_K, qk_scale_half, bias_half, ROWS, BLOCK_N, HEAD_DIM, NUM_STAGES,
                      OVERLAP)),
        (_producer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty,
                     v_ready, v_empty, T_K, kv_group, ROWS, BLOCK_N, HEAD_DIM, NUM_STAGES)),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])

    # Every partition has joined: no TMA, wgmma or arrive is in flight on these barriers.
    mbarrier.invalidate(q_bar)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.invalidate(k_ready.index(i))
        mbarrier.invalidate(v_ready.index(i))
        mbarrier.invalidate(k_empty.index(i))
        mbarrier.invalidate(v_empty.index(i))
