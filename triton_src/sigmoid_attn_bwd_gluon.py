"""Backward sigmoid attention as a hand-scheduled, warp-specialized Gluon kernel for dense calls,
causal (top-left, T_Q == T_K) or not, on Hopper (sm_90). With S = scale·Q·Kᵀ + bias and
P = sigmoid(S):

    dV = Pᵀ·dO,  dP = dO·Vᵀ,  dS = scale·dP·P·(1 − P),  dK = dSᵀ·Q,  dQ = dS·K

Sigmoid has no row statistics, so P is recomputed from Q and K alone (no log-sum-exp, no
Delta = rowsum(dO∘O) as softmax needs).

Layout: Q, dO are [B, T_Q, H, D], K, V, dK, dV [B, T_K, H_KV, D], dQ_acc fp32 [B, T_Q, H, D]
(zeroed by the caller, cast to the output dtype afterwards). Each is seen by a host TMA
descriptor as rank 3 [B, T, heads·D] with a [1, rows, D] box at (b, row, head·D): TMA fills rows
past T with zeros on loads and drops them on stores and reductions.

Schedule: one CTA per BLOCK_N = 128 keys × KV head × batch, grid (cdiv(T_K, 128), H_KV, B).
The K and V block stays in shared memory; the CTA walks every query block of every query head
of its GQA group, so dK and dV are complete sums with one writer each (no atomics for them).
  * "producer" (1 warp, 24 registers): K and V halves once (kv_bar), then Q and dO tiles of
    BLOCK_M = 64 rows into a NUM_STAGES ring (ready[s]: TMA bytes; empty[s]: count 2, one
    arrive per consumer warpgroup once its last wgmma reading the slot has retired).
  * "consumer 0" (default partition) and "consumer 1" (worker), one warpgroup each, own keys
    [w·64, (w+1)·64) of the block, so every wgmma has M = 64 and dK, dV stay in registers
    (64 + 64 fp32 per thread at D = 128). Per query tile:
        Sᵀ = K_w·Qᵀ and dPᵀ = V_w·dOᵀ (both issued async; P is computed while dPᵀ runs),
        Pᵀ = sigmoid(·) via exp2, dSᵀ = scale·dPᵀ·Pᵀ(1 − Pᵀ),
        dV_w += Pᵀ·dO and dK_w += dSᵀ·Q (A from registers),
        dQ_w = dS·K_w with dS read back transposed from shared memory (ds_smem[w]),
    then hands dQ_w (fp32) to the writer through dq_smem[w] (dq_full[w] / dq_free[w]).
  * "dQ writer" (1 warp, 24 registers): TMA reduce-add (cp.reduce.async.bulk.tensor .add.f32)
    of each warpgroup's tile into dQ_acc; it releases a buffer once TMA has read it.
  * epilogue: each consumer writes dK_w, dV_w over its own K_w, V_w shared tiles (no other
    partition reads them) and stores them with TMA.

Causal: a key block's CTA walks only the query tiles from the one holding its first key on (the
tiles above see none of its keys), and masks P (hence dS) to 0 where a query precedes a key, in
a branch taken only by the tiles that cross the diagonal.

Lengths (HAS_LENGTHS, padded batches): per sequence Lq, Lk = clamp(SEQ_LENS_Q/K[b], 0, T) and
the default bias -log(max(Lk, 1)); the walk stops at the query tile holding Lq, a key block past
Lk walks nothing (its dK, dV are stored as zeros), and the masks use Lq, Lk. Nothing past the
lengths may reach a result even if it is NaN (0·NaN is NaN in a wgmma): each consumer zeroes the
rows past Lq of the tail tile's Q and dO, and its own K half's rows past Lk, in shared memory
before a wgmma reads them (the partner warpgroup reads that K half for dQ only after the dS
exchange's barrier, which orders it after the zeroing), and its own V half's: with every input
past the lengths zero, dPᵀ and dSᵀ there are 0 and Pᵀ·dO adds nothing to a key below Lk, so no
per-tile mask is needed (Pᵀ itself is sigmoid(bias) past Lk: the dV rows of those keys are
zeroed once, before the store).

Padding: keys ≥ T_K and queries ≥ T_Q read zeros (Q, dO, K, V rows), so their dP, hence dS,
is 0, and P only reaches dV through dO (the dense hd128 variant without score_mod also masks P
there, in a branch taken only by tail tiles: without it ptxas spills).

Barriers (kv_bar, ready/empty[NUM_STAGES], dq_full/dq_free[2]) have their own allocations and
are invalidated after the warp_specialize region joins. T_Q ≥ 1 and T_K ≥ 1 are preconditions.
"""

import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    tma, mbarrier, fence_async_shared, warpgroup_mma, warpgroup_mma_wait)

from sigmoid_attn_fwd_gluon_persistent import (_packed_span, _scores, _store_layout,
                                               _zero_rows_from)

LOG2E = gl.constexpr(1.4426950408889634)


@gluon.jit
def _rcp_approx(x):
    # MUFU.RCP: sigmoid needs 1/(1 + e); IEEE division would cost a Newton loop per element.
    return gl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=gl.float32,
                                     is_pure=True, pack=1)


@gluon.jit
def _rcp_newton(x):
    # 1/x for x >= 1 on the FMA pipe: an integer-subtract first guess (within ~12%) and two
    # Newton steps (error squares each step: ~2e-4 relative, below half an fp16 ulp). Frees
    # the MUFU unit, which ex2 + rcp per score element would otherwise saturate.
    y = gl.inline_asm_elementwise("sub.s32 $0, 0x7EF311C7, $1;", "=r,r", [x], dtype=gl.float32,
                                  is_pure=True, pack=1)
    y = gl.fma(y, gl.fma(-x, y, 1.0), y)
    return gl.fma(y, gl.fma(-x, y, 1.0), y)


@gluon.jit
def _sigmoid_t(st, neg_scale_log2e, neg_bias_log2e, RCP_NEWTON: gl.constexpr):
    """Pᵀ = sigmoid(scale·Sᵀ + bias) = 1 / (1 + 2^(−(scale·Sᵀ + bias)·log2 e))."""
    if RCP_NEWTON:
        # 2^100 caps the denominator so the integer guess stays a positive normal float;
        # P = 2^-100 instead of 0 is far below any rounding.
        e = gl.exp2(gl.minimum(st * neg_scale_log2e + neg_bias_log2e, 100.0))
        return _rcp_newton(1.0 + e)
    else:
        # 2^(+big) = inf gives exactly 0.
        return _rcp_approx(1.0 + gl.exp2(st * neg_scale_log2e + neg_bias_log2e))


@gluon.jit
def _tile_coords(it, n_m, m0, h_kv, kv_group, BLOCK_M: gl.constexpr):
    """Iteration `it` walks query head hq (of the GQA group of h_kv), query block m0 + (it mod
    n_m): the n_m query blocks from m0 on. Returns its first row and hq."""
    hq = h_kv * kv_group + it // n_m
    m = m0 + it % n_m
    return m * BLOCK_M, hq


@gluon.jit
def _sequence(SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q, MAX_K, HAS_LENGTHS: gl.constexpr,
              VARLEN: gl.constexpr):
    """(descriptor batch entry, first query row, Lq, first key row, Lk, key rows owned) of this
    CTA's sequence:
    dense, batch entry program_id(2) and T_Q, T_K; with lengths, SEQ_LENS_Q/K[b] clamped to
    [0, T]; packed (VARLEN, SEQ_LENS_Q/K = cu_seqlens, T_Q/T_K the token totals, one descriptor
    entry), sequence b's rows [cu[b], cu[b+1]) clamped to [0, total] and its lengths cut to
    MAX_Q/MAX_K (the caller's max_seqlen, as in the forward: the key rows past it are owned and
    get zero dK, dV), and b == B (the grid's last z) the tail [cu_k[B], total_k): no queries,
    keys whose dK, dV are written as zeros."""
    b = gl.program_id(2)
    bd = b
    q_off = 0
    k_off = 0
    Lq = T_Q
    Lk = T_K
    if VARLEN:
        B = gl.num_programs(2) - 1
        bd = 0
        q_off, q_end = _packed_span(SEQ_LENS_Q, b, B, T_Q)
        k_off, k_end = _packed_span(SEQ_LENS_K, b, B, T_K)
        if b >= B:
            q_end = q_off
        Lq = gl.minimum(q_end - q_off, MAX_Q)
        Lk = k_end - k_off
    elif HAS_LENGTHS:
        Lq = gl.minimum(gl.maximum(gl.load(SEQ_LENS_Q + b), 0), T_Q)
        Lk = gl.minimum(gl.maximum(gl.load(SEQ_LENS_K + b), 0), T_K)
    owned_k = Lk
    if VARLEN:
        if b < gl.num_programs(2) - 1:
            Lk = gl.minimum(Lk, MAX_K)
    return bd, q_off, Lq, k_off, Lk, owned_k


@gluon.jit
def _query_tiles(Lq, Lk, BLOCK_M: gl.constexpr, HALF_N: gl.constexpr, CAUSAL: gl.constexpr,
                 HAS_LENGTHS: gl.constexpr):
    """(first query block, number of query blocks) this CTA's key block walks: those below Lq,
    under CAUSAL from the block holding its first key on; none for a key block past Lk (every
    partition derives the same)."""
    n0 = gl.program_id(0) * (2 * HALF_N)
    m0 = 0
    if CAUSAL:
        m0 = n0 // BLOCK_M
    n_m = gl.maximum(gl.cdiv(Lq, BLOCK_M) - m0, 0)
    if HAS_LENGTHS:
        if n0 >= Lk:
            n_m = 0
    return m0, n_m


@gluon.jit
def _producer(q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, kv_bar, ready,
              empty, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q, MAX_K, kv_group,
              NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr, HAS_LENGTHS: gl.constexpr,
              VARLEN: gl.constexpr):
    BLOCK_M: gl.constexpr = q_desc.block_type.shape[1]
    HALF_N: gl.constexpr = k_desc.block_type.shape[1]
    pid_n = gl.program_id(0)
    h_kv = gl.program_id(1)
    n0 = pid_n * (2 * HALF_N)
    b, q_off, Lq, k_off, Lk, owned_k = _sequence(SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q, MAX_K,
                                                 HAS_LENGTHS, VARLEN)
    mbarrier.expect(kv_bar, 2 * k_desc.block_type.nbytes + 2 * v_desc.block_type.nbytes)
    for w in gl.static_range(2):
        tma.async_load(k_desc, [b, k_off + n0 + w * HALF_N, h_kv, 0], kv_bar, k_smem.index(w))
        tma.async_load(v_desc, [b, k_off + n0 + w * HALF_N, h_kv, 0], kv_bar, v_smem.index(w))
    m0, n_m = _query_tiles(Lq, Lk, BLOCK_M, HALF_N, CAUSAL, HAS_LENGTHS)
    for it in range(kv_group * n_m):
        s = it % NUM_STAGES
        ph = (it // NUM_STAGES) & 1
        row, hq = _tile_coords(it, n_m, m0, h_kv, kv_group, BLOCK_M)
        mbarrier.wait(empty.index(s), ph ^ 1)
        mbarrier.expect(ready.index(s), q_desc.block_type.nbytes + do_desc.block_type.nbytes)
        tma.async_load(q_desc, [b, q_off + row, hq, 0], ready.index(s), q_smem.index(s))
        tma.async_load(do_desc, [b, q_off + row, hq, 0], ready.index(s), do_smem.index(s))


@gluon.jit
def _dq_writer(dq_desc, dq_smem, dq_full, dq_free, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q, MAX_K,
               kv_group, HALF_N: gl.constexpr, DQ_SHARED: gl.constexpr, CAUSAL: gl.constexpr,
               HAS_LENGTHS: gl.constexpr, VARLEN: gl.constexpr):
    BLOCK_M: gl.constexpr = dq_desc.block_type.shape[1]
    h_kv = gl.program_id(1)
    b, q_off, Lq, k_off, Lk, owned_k = _sequence(SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q, MAX_K,
                                                 HAS_LENGTHS, VARLEN)
    m0, n_m = _query_tiles(Lq, Lk, BLOCK_M, HALF_N, CAUSAL, HAS_LENGTHS)
    for it in range(kv_group * n_m):
        row, hq = _tile_coords(it, n_m, m0, h_kv, kv_group, BLOCK_M)
        # (packed: the tail tile's rows past Lq are the next sequence's, and their dQ here is
        # exactly zero: P and dS masked, dO rows zeroed, K rows past Lk zeroed, so adding it
        # changes nothing)
        row = q_off + row
        if DQ_SHARED:
            # One tile over all 128 keys per query tile, in buffer it % 2.
            p = it % 2
            mbarrier.wait(dq_full.index(p), (it // 2) & 1)
            tma.async_atomic_add(dq_desc, [b, row, hq, 0], dq_smem.index(p))
            tma.store_wait(0)
            mbarrier.arrive(dq_free.index(p), count=1)
        else:
            mbarrier.wait(dq_full.index(0), it & 1)
            tma.async_atomic_add(dq_desc, [b, row, hq, 0], dq_smem.index(0))
            mbarrier.wait(dq_full.index(1), it & 1)
            tma.async_atomic_add(dq_desc, [b, row, hq, 0], dq_smem.index(1))
            # Bulk groups retire in order: <= 1 pending means buffer 0 has been read.
            tma.store_wait(1)
            mbarrier.arrive(dq_free.index(0), count=1)
            tma.store_wait(0)
            mbarrier.arrive(dq_free.index(1), count=1)


@gluon.jit
def _dq_issue_split(ds_smem, k0, k1, ds_full, dq_zero, j, WG: gl.constexpr,
                    DQ_CHUNK: gl.constexpr):
    """D = 128 with dS exchanged: waits for both warpgroups' dSᵀ of query tile j and issues this
    warpgroup's 64 columns of dQ = dS_0·K_0 + dS_1·K_1 (two async wgmma groups)."""
    p = j % 2
    mbarrier.wait(ds_full.index(p), (j // 2) & 1)
    c0: gl.constexpr = WG * DQ_CHUNK
    dq = warpgroup_mma(ds_smem.index(2 * p).permute((1, 0)), k0.slice(c0, DQ_CHUNK, dim=1),
                       dq_zero, use_acc=False, is_async=True)
    return warpgroup_mma(ds_smem.index(2 * p + 1).permute((1, 0)),
                         k1.slice(c0, DQ_CHUNK, dim=1), dq, is_async=True)


@gluon.jit
def _dq_store_split(dq, dq_smem, ds_free, dq_free, dq_full, j, WG: gl.constexpr,
                    DQ_CHUNK: gl.constexpr):
    """dQ of tile j has retired: release the dSᵀ pair, stage the columns for the writer."""
    p = j % 2
    pph = (j // 2) & 1
    mbarrier.arrive(ds_free.index(p), count=1)
    BLOCK_M: gl.constexpr = dq_smem.shape[2]
    HEAD_DIM: gl.constexpr = dq_smem.shape[4]
    mbarrier.wait(dq_free.index(p), pph ^ 1)
    dq_smem.index(p).reshape([BLOCK_M, HEAD_DIM]).slice(WG * DQ_CHUNK, DQ_CHUNK,
                                                        dim=1).store(dq)
    fence_async_shared()
    mbarrier.arrive(dq_full.index(p), count=1)


@gluon.jit
def _query_row(it, n_m, m0, BLOCK_M: gl.constexpr):
    """First query row of a consumer's tile it: (m0 + it % n_m) * BLOCK_M, the division only
    past the first query head of a GQA group (with lengths the row decides the Q/dO zeroing
    ahead of the tile's first wgmma, where a division every tile sat on the critical path)."""
    m = it
    if it >= n_m:
        m = it % n_m
    return (m0 + m) * BLOCK_M


@gluon.jit
def _zero_query_tail(q_smem, do_smem, s, row, Lq, BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr):
    """The tail tile's Q and dO rows past Lq, in ring slot s, set to zero by this warpgroup
    before its wgmmas read them (both warpgroups write the same zeros; the producer refills the
    slot only after both released it)."""
    if row + BLOCK_M > Lq:
        # (8 rows at a time: dK, dV and the tile's Sᵀ, dPᵀ leave few registers free)
        _zero_rows_from(q_smem.index(s).reshape([BLOCK_M, HEAD_DIM]), Lq - row, BLOCK_M, HEAD_DIM,
                        8)
        _zero_rows_from(do_smem.index(s).reshape([BLOCK_M, HEAD_DIM]), Lq - row, BLOCK_M,
                        HEAD_DIM, 8)
        fence_async_shared()
        gl.barrier()


@gluon.jit
def _causal_mask(pt, row, key0, s_layout: gl.constexpr):
    """Pᵀ [keys, queries] with 0 where a query precedes a key, for a tile that crosses the
    diagonal (queries row.. and keys key0.. overlap); others come back untouched."""
    HALF_N: gl.constexpr = pt.shape[0]
    BLOCK_M: gl.constexpr = pt.shape[1]
    if row < key0 + HALF_N:
        qs = row + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, s_layout))
        keys = key0 + gl.arange(0, HALF_N, layout=gl.SliceLayout(1, s_layout))
        pt = gl.where(gl.expand_dims(qs, 0) >= gl.expand_dims(keys, 1), pt, 0.0)
    return pt


@gluon.jit
def _tile_deferred(it, dk, dv, dm, q_smem, do_smem, k_w, v_w, k0, k1, ds_smem, dq_smem, ready,
                   empty, dq_full, dq_free, ds_full, ds_free, Lq, n_m, m0, key0, key_ok, key_tail,
                   scale, neg_scale_log2e, neg_bias_log2e, s_zero, dq_zero, WG: gl.constexpr,
                   NUM_STAGES: gl.constexpr, RCP_NEWTON: gl.constexpr, WITH_PREV: gl.constexpr,
                   CAUSAL: gl.constexpr, HAS_LENGTHS: gl.constexpr, HAS_MOD: gl.constexpr,
                   MASK_PT: gl.constexpr, SCORE_DIM: gl.constexpr):
    """One query tile with the previous tile's dQ queued once this tile's dSᵀ is computed
    (DQ_ISSUE = 2, D = 128): the partner warpgroup's dSᵀ of tile it - 1 is waited for a whole
    tile after it was written, so the two warpgroups may drift apart by up to a tile (one's P
    under the other's wgmmas) instead of meeting at every tile. Queuing dQ behind Sᵀ, dPᵀ
    instead (P computed under two wgmmas) needs 224 accumulator registers: ptxas serializes
    every wgmma and spills 392 B."""
    BLOCK_M: gl.constexpr = q_smem.shape[2]
    HEAD_DIM: gl.constexpr = q_smem.shape[4]
    DQ_CHUNK: gl.constexpr = dq_zero.shape[1]
    s_layout: gl.constexpr = s_zero.type.layout
    acc_layout: gl.constexpr = dk.type.layout
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)
    dtype: gl.constexpr = q_smem.dtype
    s = it % NUM_STAGES
    ph = (it // NUM_STAGES) & 1
    row = _query_row(it, n_m, m0, BLOCK_M)
    mbarrier.wait(ready.index(s), ph)
    if HAS_LENGTHS:
        _zero_query_tail(q_smem, do_smem, s, row, Lq, BLOCK_M, HEAD_DIM)
    q = q_smem.index(s).reshape([BLOCK_M, HEAD_DIM])
    do = do_smem.index(s).reshape([BLOCK_M, HEAD_DIM])
    st = _scores(k_w, q.permute((1, 0)), s_zero, SCORE_DIM)
    dpt = _scores(v_w, do.permute((1, 0)), s_zero, SCORE_DIM)
    st = warpgroup_mma_wait(1, deps=(st, ))
    pt = _sigmoid_t(st, neg_scale_log2e, neg_bias_log2e, RCP_NEWTON)
    if MASK_PT:
        if key_tail or row + BLOCK_M > Lq:
            qs = row + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, s_layout))
            pt = gl.where(key_ok & gl.expand_dims(qs < Lq, 0), pt, 0.0)
    if CAUSAL:
        pt = _causal_mask(pt, row, key0, s_layout)
    dpt = warpgroup_mma_wait(0, deps=(dpt, ))
    # (keys past Lk: their V rows are zeroed once per program, so dPᵀ and dSᵀ are 0 there)
    dst = dpt * (pt - pt * pt) * scale
    if HAS_MOD:  # dS summed over this tile's queries, per key (score_mod's gradient, ·scale)
        dm += gl.sum(dst, axis=1)
    dst = dst.to(dtype)
    pt = pt.to(dtype)
    # dSᵀ pair p was last read by both warpgroups' dQ of tile it - 2 (issued in tile it - 1).
    p = it % 2
    mbarrier.wait(ds_free.index(p), ((it // 2) & 1) ^ 1)
    ds_smem.index(2 * p + WG).store(dst)
    fence_async_shared()
    mbarrier.arrive(ds_full.index(p), count=1)
    dv = warpgroup_mma(gl.convert_layout(pt, a_layout), do, dv, is_async=True)
    dk = warpgroup_mma(gl.convert_layout(dst, a_layout), q, dk, is_async=True)
    if WITH_PREV:
        # Sᵀ, dPᵀ are dead: dQ's 32 accumulator registers fit beside dK, dV (queued ahead of
        # them, or with Sᵀ, dPᵀ live, ptxas spills 212 B and more).
        dq = _dq_issue_split(ds_smem, k0, k1, ds_full, dq_zero, it - 1, WG, DQ_CHUNK)
        dv, dk = warpgroup_mma_wait(2, deps=(dv, dk))
        mbarrier.arrive(empty.index(s), count=1)  # Q and dO of this slot are no longer read
        dq = warpgroup_mma_wait(0, deps=(dq, ))
        _dq_store_split(dq, dq_smem, ds_free, dq_free, dq_full, it - 1, WG, DQ_CHUNK)
    else:
        dv, dk = warpgroup_mma_wait(0, deps=(dv, dk))
        mbarrier.arrive(empty.index(s), count=1)
    return dk, dv, dm


@gluon.jit
def _consumer(dk_desc, dv_desc, q_smem, do_smem, k_smem, v_smem, ds_smem, dq_smem, kv_bar, ready,
              empty, dq_full, dq_free, ds_full, ds_free, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q,
              MAX_K, kv_group, scale, neg_scale_log2e, neg_bias_log2e, WG: gl.constexpr,
              NUM_STAGES: gl.constexpr, RCP_NEWTON: gl.constexpr, DQ_SHARED: gl.constexpr,
              DQ_ISSUE: gl.constexpr, CAUSAL: gl.constexpr, HAS_LENGTHS: gl.constexpr,
              VARLEN: gl.constexpr, DK, DV, stride_kt, D, BIAS, SCORE_MOD, stride_smb, DMOD,
              stride_dmb, stride_dmh, BIAS_MODE, HAS_MOD: gl.constexpr, SCORE_DIM: gl.constexpr):
    BLOCK_M: gl.constexpr = q_smem.shape[2]
    HEAD_DIM: gl.constexpr = q_smem.shape[4]
    HALF_N: gl.constexpr = k_smem.shape[2]
    dtype: gl.constexpr = dk_desc.dtype
    # Pᵀ of queries past Lq and keys past Lk set to 0 on the tiles that hold them: not needed
    # for the result.
    # Past T_Q / T_K, Q, dO, K and V rows are TMA's zeros; past the lengths, the tail tile's Q
    # and dO rows and the key block's K and V rows are zeroed in shared memory (below). So Sᵀ
    # is 0 there (Pᵀ = sigmoid(bias), finite), dPᵀ and dSᵀ are 0, and Pᵀ·dO adds 0 to every dV
    # row of a key below Lk (the rows past Lk are zeroed once, before the store). Dropping it
    # takes the join's 64 selects a tile out of the loop (hd64: 519 -> 407 instructions; padded
    # hd128's deferred-dQ loop 3,173 -> 3,058, local accesses 16 -> 4: 1.03-1.04x), kept only
    # where ptxas then spills (hd128 dense without score_mod: 0 -> 52-108 bytes; ptxas's
    # allocation at this register budget varies from run to run), and in the packed variants:
    # without it their loop trades 128 selects for 186 more PRMT and the packed hd128 backward
    # read 0.93x (465-478 against 497-517 useful TFLOPS, the same draws).
    MASK_PT: gl.constexpr = VARLEN or (HEAD_DIM == 128 and not CAUSAL and not HAS_MOD
                                       and not HAS_LENGTHS)
    # Sᵀ, dPᵀ: [HALF_N keys, BLOCK_M queries]; dK, dV, dQ: [64 rows, HEAD_DIM].
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_M, 16])
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, HEAD_DIM, 16])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)

    pid_n = gl.program_id(0)
    h_kv = gl.program_id(1)
    key0 = pid_n * (2 * HALF_N) + WG * HALF_N
    k_w = k_smem.index(WG).reshape([HALF_N, HEAD_DIM])
    v_w = v_smem.index(WG).reshape([HALF_N, HEAD_DIM])
    ds_w = ds_smem.index(WG)
    k0 = k_smem.index(0).reshape([HALF_N, HEAD_DIM])
    k1 = k_smem.index(1).reshape([HALF_N, HEAD_DIM])
    dk = gl.zeros([HALF_N, HEAD_DIM], gl.float32, acc_layout)
    dv = gl.zeros([HALF_N, HEAD_DIM], gl.float32, acc_layout)
    DQ_CHUNK: gl.constexpr = 64
    dq_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, DQ_CHUNK, 16])
    dq_zero = gl.zeros([BLOCK_M, DQ_CHUNK], gl.float32, dq_layout)
    s_zero = gl.zeros([HALF_N, BLOCK_M], gl.float32, s_layout)
    b, q_off, Lq, k_off, Lk, owned_k = _sequence(SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q, MAX_K,
                                                 HAS_LENGTHS, VARLEN)
    # (variants.BIAS_MODES: 0 the default -log(valid keys), 1 bias_value, 2 BIAS[b])
    if HAS_LENGTHS:
        if BIAS_MODE == 0:  # the default bias of the sequence, -log(max(Lk, 1))
            neg_bias_log2e = gl.log2(gl.maximum(Lk, 1).to(gl.float32))
    if BIAS_MODE == 2:
        has_sequence = True
        if VARLEN:  # (the last program along z walks a packed batch's tail: no sequence)
            has_sequence = b < gl.num_programs(2) - 1
        if has_sequence:
            neg_bias_log2e = -gl.load(BIAS + b) * LOG2E
    keys = key0 + gl.arange(0, HALF_N, layout=gl.SliceLayout(1, s_layout))
    dm = gl.zeros([HALF_N], gl.float32, gl.SliceLayout(1, s_layout))
    if HAS_MOD:
        # score_mod of this warpgroup's keys, one column per key of Sᵀ for the whole walk
        mod = gl.load(SCORE_MOD + b.to(gl.int64) * stride_smb + k_off + keys, mask=keys < Lk,
                      other=0.0)
        neg_bias_log2e = gl.expand_dims(neg_bias_log2e - mod * LOG2E, 1)
    key_ok = gl.expand_dims(keys < Lk, 1)
    key_tail = key0 + HALF_N > Lk
    m0, n_m = _query_tiles(Lq, Lk, BLOCK_M, HALF_N, CAUSAL, HAS_LENGTHS)
    DQ_SPLIT_COLS: gl.constexpr = HEAD_DIM == 2 * DQ_CHUNK
    mbarrier.wait(kv_bar, 0)
    n_it = kv_group * n_m
    if HAS_LENGTHS:
        if key_tail:
            # This warpgroup's K rows past Lk (read by both warpgroups' dQ) and V rows (its
            # dPᵀ's): memory past the sequence, which may hold NaN. Zero rows make Sᵀ and dPᵀ
            # exactly 0 there, so no per-tile select of dSᵀ or Pᵀ is needed.
            _zero_rows_from(k_w, Lk - key0, HALF_N, HEAD_DIM, 8)
            _zero_rows_from(v_w, Lk - key0, HALF_N, HEAD_DIM, 8)
            fence_async_shared()
            gl.barrier()
    if DQ_ISSUE == 2:
        gl.static_assert(DQ_SHARED and DQ_SPLIT_COLS, "deferred dQ needs the D = 128 exchange")
        if n_it > 0:  # (none: a key block past Lk)
            # tile 0 is peeled (no previous dQ); the last tile's dQ runs after the loop
            dk, dv, dm = _tile_deferred(0, dk, dv, dm, q_smem, do_smem, k_w, v_w, k0, k1, ds_smem,
                                        dq_smem, ready, empty, dq_full, dq_free, ds_full, ds_free,
                                        Lq, n_m, m0, key0, key_ok, key_tail, scale, neg_scale_log2e,
                                        neg_bias_log2e, s_zero, dq_zero, WG, NUM_STAGES, RCP_NEWTON,
                                        False, CAUSAL, HAS_LENGTHS, HAS_MOD, MASK_PT, SCORE_DIM)
            for it in range(1, n_it):
                dk, dv, dm = _tile_deferred(it, dk, dv, dm, q_smem, do_smem, k_w, v_w, k0, k1,
                                            ds_smem, dq_smem, ready, empty, dq_full, dq_free,
                                            ds_full, ds_free, Lq, n_m, m0, key0, key_ok, key_tail,
                                            scale, neg_scale_log2e, neg_bias_log2e, s_zero, dq_zero,
                                            WG, NUM_STAGES, RCP_NEWTON, True, CAUSAL, HAS_LENGTHS,
                                            HAS_MOD, MASK_PT, SCORE_DIM)
            dq = _dq_issue_split(ds_smem, k0, k1, ds_full, dq_zero, n_it - 1, WG, DQ_CHUNK)
            dq = warpgroup_mma_wait(0, deps=(dq, ))
            _dq_store_split(dq, dq_smem, ds_free, dq_free, dq_full, n_it - 1, WG, DQ_CHUNK)
    for it in range(n_it if DQ_ISSUE != 2 else 0):
        s = it % NUM_STAGES
        ph = (it // NUM_STAGES) & 1
        row = _query_row(it, n_m, m0, BLOCK_M)
        mbarrier.wait(ready.index(s), ph)
        if HAS_LENGTHS:
            _zero_query_tail(q_smem, do_smem, s, row, Lq, BLOCK_M, HEAD_DIM)
        q = q_smem.index(s).reshape([BLOCK_M, HEAD_DIM])
        do = do_smem.index(s).reshape([BLOCK_M, HEAD_DIM])
        st = _scores(k_w, q.permute((1, 0)), s_zero, SCORE_DIM)
        dpt = _scores(v_w, do.permute((1, 0)), s_zero, SCORE_DIM)
        # wgmma groups retire in order: <= 1 outstanding means Sᵀ is done; P overlaps dPᵀ.
        st = warpgroup_mma_wait(1, deps=(st, ))
        pt = _sigmoid_t(st, neg_scale_log2e, neg_bias_log2e, RCP_NEWTON)
        if MASK_PT:
            if key_tail or row + BLOCK_M > Lq:
                qs = row + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, s_layout))
                pt = gl.where(key_ok & gl.expand_dims(qs < Lq, 0), pt, 0.0)
        if CAUSAL:
            pt = _causal_mask(pt, row, key0, s_layout)
        dpt = warpgroup_mma_wait(0, deps=(dpt, ))
        dst = dpt * (pt - pt * pt) * scale  # (0 past Lk: V's rows there are zeroed)
        if HAS_MOD:  # dS summed over this tile's queries, per key (score_mod's gradient, ·scale)
            dm += gl.sum(dst, axis=1)
        dst = dst.to(dtype)
        # dS for dQ = dS·K: the A operand must be [queries, keys], so it goes through shared
        # memory and is read back transposed.
        if DQ_SHARED:
            # Buffer pair p = it % 2 was last read by both warpgroups' dQ of tile it - 2.
            p = it % 2
            pph = (it // 2) & 1
            mbarrier.wait(ds_free.index(p), pph ^ 1)
            ds_smem.index(2 * p + WG).store(dst)
            fence_async_shared()
            mbarrier.arrive(ds_full.index(p), count=1)
        else:
            # The previous tile's dQ wgmma has retired (waited below), so ds_w is free.
            ds_w.store(dst)
            fence_async_shared()
        dv = warpgroup_mma(gl.convert_layout(pt.to(dtype), a_layout), do, dv, is_async=True)
        dk = warpgroup_mma(gl.convert_layout(dst, a_layout), q, dk, is_async=True)
        if DQ_ISSUE == 1 and DQ_SPLIT_COLS:
            # dQ queued right behind dV and dK: no drain of the wgmma pipe between them
            dq = _dq_issue_split(ds_smem, k0, k1, ds_full, dq_zero, it, WG, DQ_CHUNK)
            dv, dk = warpgroup_mma_wait(2, deps=(dv, dk))
            mbarrier.arrive(empty.index(s), count=1)
            dq = warpgroup_mma_wait(0, deps=(dq, ))
            _dq_store_split(dq, dq_smem, ds_free, dq_free, dq_full, it, WG, DQ_CHUNK)
        elif DQ_ISSUE == 1:
            # D = 64: warpgroup p computes the whole tile, queued behind its dV and dK. Only it
            # waits for the partner's dSᵀ: the other one reads no dSᵀ of this tile, so its
            # ds_free arrive may come early (the phase completes with the reader's).
            if p == WG:
                mbarrier.wait(ds_full.index(p), pph)
                dq_buf = dq_smem.index(p).reshape([BLOCK_M, HEAD_DIM])
                dq = warpgroup_mma(ds_smem.index(2 * p).permute((1, 0)), k0, dq_zero,
                                   use_acc=False, is_async=True)
                dq = warpgroup_mma(ds_smem.index(2 * p + 1).permute((1, 0)), k1, dq,
                                   is_async=True)
                mbarrier.wait(dq_free.index(p), pph ^ 1)
                dq = warpgroup_mma_wait(0, deps=(dq, ))
                dq_buf.store(dq)
                fence_async_shared()
                mbarrier.arrive(dq_full.index(p), count=1)
            dv, dk = warpgroup_mma_wait(0, deps=(dv, dk))
            mbarrier.arrive(empty.index(s), count=1)
            mbarrier.arrive(ds_free.index(p), count=1)
        else:
            dv, dk = warpgroup_mma_wait(0, deps=(dv, dk))
            mbarrier.arrive(empty.index(s), count=1)  # Q and dO of this slot are no longer read
        if DQ_SHARED and DQ_ISSUE == 0:
            # One dQ tile over all 128 keys: dQ = dS_0·K_0 + dS_1·K_1, then one reduce-add.
            mbarrier.wait(ds_full.index(p), pph)
            ds0_t = ds_smem.index(2 * p).permute((1, 0))
            ds1_t = ds_smem.index(2 * p + 1).permute((1, 0))
            dq_buf = dq_smem.index(p).reshape([BLOCK_M, HEAD_DIM])
            if DQ_SPLIT_COLS:
                # Each warpgroup computes half of dQ's columns (64 at D = 128).
                c0: gl.constexpr = WG * DQ_CHUNK
                dq = warpgroup_mma(ds0_t, k0.slice(c0, DQ_CHUNK, dim=1), dq_zero,
                                   use_acc=False, is_async=True)
                dq = warpgroup_mma(ds1_t, k1.slice(c0, DQ_CHUNK, dim=1), dq, is_async=True)
                dq = warpgroup_mma_wait(0, deps=(dq, ))
                mbarrier.arrive(ds_free.index(p), count=1)
                mbarrier.wait(dq_free.index(p), pph ^ 1)
                dq_buf.slice(c0, DQ_CHUNK, dim=1).store(dq)
                fence_async_shared()
                mbarrier.arrive(dq_full.index(p), count=1)
            else:
                # D = 64 has no column half that a 128-byte-swizzled K tile can give wgmma:
                # warpgroup p computes the whole tile, so the two alternate tiles.
                if p == WG:
                    mbarrier.wait(dq_free.index(p), pph ^ 1)
                    for c in gl.static_range(HEAD_DIM // DQ_CHUNK):
                        dq = warpgroup_mma(ds0_t, k0.slice(c * DQ_CHUNK, DQ_CHUNK, dim=1),
                                           dq_zero, use_acc=False, is_async=True)
                        dq = warpgroup_mma(ds1_t, k1.slice(c * DQ_CHUNK, DQ_CHUNK, dim=1), dq,
                                           is_async=True)
                        dq = warpgroup_mma_wait(0, deps=(dq, ))
                        dq_buf.slice(c * DQ_CHUNK, DQ_CHUNK, dim=1).store(dq)
                    fence_async_shared()
                    mbarrier.arrive(dq_full.index(p), count=1)
                mbarrier.arrive(ds_free.index(p), count=1)
        elif not DQ_SHARED:
            # dQ_w = dS·K_w in column chunks of 64 (32 fp32 registers each, not 64 at D = 128):
            # with dK and dV (128 registers) always live, more in flight makes ptxas serialize
            # every wgmma of the kernel.
            ds_t = ds_w.permute((1, 0))
            dq_buf = dq_smem.index(WG).reshape([BLOCK_M, HEAD_DIM])
            # dq_buf is free once the writer's TMA has read the previous tile out of it.
            mbarrier.wait(dq_free.index(WG), (it & 1) ^ 1)
            for c in gl.static_range(HEAD_DIM // DQ_CHUNK):
                dq = warpgroup_mma(ds_t, k_w.slice(c * DQ_CHUNK, DQ_CHUNK, dim=1), dq_zero,
                                   use_acc=False, is_async=True)
                dq = warpgroup_mma_wait(0, deps=(dq, ))
                dq_buf.slice(c * DQ_CHUNK, DQ_CHUNK, dim=1).store(dq)
            fence_async_shared()
            mbarrier.arrive(dq_full.index(WG), count=1)

    if DQ_SHARED:
        # The other warpgroup reads K_w for dQ: its last ds_free arrive says it no longer does.
        if n_it > 0:
            mbarrier.wait(ds_free.index((n_it - 1) % 2), ((n_it - 1) // 2) & 1)
    if HAS_MOD:
        # dS summed over every query of every head of the group: this KV head's partial of
        # score_mod's gradient (the launcher sums the heads)
        gl.store(DMOD + b.to(gl.int64) * stride_dmb + h_kv.to(gl.int64) * stride_dmh + k_off
                 + keys, dm * (1.0 / scale), mask=keys < Lk)
    if HAS_LENGTHS and not MASK_PT:
        if key_tail:
            # Keys past Lk: their K rows are zeroed, not their scores masked, so Pᵀ there is
            # sigmoid(bias) and Pᵀ·dO fills those dV rows; they are stored as zeros.
            kr = key0 + gl.arange(0, HALF_N, layout=gl.SliceLayout(1, acc_layout))
            dv = gl.where(gl.expand_dims(kr < Lk, 1), dv, 0.0)
    # Epilogue: only this warpgroup ever read K_w, V_w, and all its wgmmas have retired.
    k_buf = k_smem.index(WG)
    v_buf = v_smem.index(WG)
    if VARLEN:
        if gl.program_id(2) == gl.num_programs(2) - 1:
            # The tail [cu_k[B], total_k): no sequence's keys; the tail programs write its dK,
            # dV rows as zeros, key blocks pid_n, pid_n + grid x, ...
            _zero_tail(DK, DV, stride_kt, D, k_off, Lk, h_kv, WG, HALF_N, HEAD_DIM, dtype)
        else:
            if key0 + HALF_N <= Lk:
                _store_rows(dk, dv, k_buf, v_buf, dk_desc, dv_desc, k_off + key0, h_kv, HALF_N,
                            HEAD_DIM, dtype)
            elif key0 < Lk:
                # The sequence ends inside these keys and the next one's begin there, which
                # another CTA writes: a TMA box cannot stop at the end, so a masked store.
                _store_rows_masked(dk, dv, k_buf, v_buf, DK, DV, stride_kt, D, k_off + key0,
                                   Lk - key0, h_kv, HALF_N, HEAD_DIM, dtype)
            # Keys past max_seqlen_k (a longer sequence is cut to it): zero dK, dV, as the
            # tail's (no rows unless the caller's max_seqlen_k understates a length).
            _zero_tail(DK, DV, stride_kt, D, k_off + Lk, owned_k - Lk, h_kv, WG, HALF_N, HEAD_DIM,
                       dtype)
    else:
        _store_rows(dk, dv, k_buf, v_buf, dk_desc, dv_desc, key0, h_kv, HALF_N, HEAD_DIM,
                    dtype, b)


@gluon.jit
def _store_rows(dk, dv, k_buf, v_buf, dk_desc, dv_desc, row, h_kv, HALF_N: gl.constexpr,
                HEAD_DIM: gl.constexpr, dtype: gl.constexpr, b=0):
    """dK_w, dV_w through this warpgroup's K, V shared tiles and TMA at (b, row)."""
    k_buf.reshape([HALF_N, HEAD_DIM]).store(dk.to(dtype))
    v_buf.reshape([HALF_N, HEAD_DIM]).store(dv.to(dtype))
    fence_async_shared()
    tma.async_store(dk_desc, [b, row, h_kv, 0], k_buf)
    tma.async_store(dv_desc, [b, row, h_kv, 0], v_buf)
    tma.store_wait(0)


@gluon.jit
def _store_rows_masked(dk, dv, k_buf, v_buf, DK, DV, stride_kt, D, row, n_rows, h_kv,
                       HALF_N: gl.constexpr, HEAD_DIM: gl.constexpr, dtype: gl.constexpr):
    """The first n_rows of dK_w, dV_w at packed row `row` on: through shared memory into
    16-byte row segments, masked."""
    layout: gl.constexpr = _store_layout(HEAD_DIM)
    k_tile = k_buf.reshape([HALF_N, HEAD_DIM])
    v_tile = v_buf.reshape([HALF_N, HEAD_DIM])
    k_tile.store(dk.to(dtype))
    v_tile.store(dv.to(dtype))
    rows = gl.arange(0, HALF_N, layout=gl.SliceLayout(1, layout))
    cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, layout))
    offs = (gl.expand_dims((row + rows).to(gl.int64) * stride_kt, 1)
            + gl.expand_dims(h_kv * D + cols, 0))
    keep = gl.expand_dims(rows < n_rows, 1) & gl.expand_dims(cols < D, 0)
    gl.store(DK + offs, k_tile.load(layout), mask=keep)
    gl.store(DV + offs, v_tile.load(layout), mask=keep)


@gluon.jit
def _zero_tail(DK, DV, stride_kt, D, k_off, n_tail, h_kv, WG: gl.constexpr, HALF_N: gl.constexpr,
               HEAD_DIM: gl.constexpr, dtype: gl.constexpr):
    """Zeros into dK, dV rows [k_off, k_off + n_tail) of head h_kv: this warpgroup's half of
    key blocks pid_n, pid_n + grid x, ... of those rows."""
    layout: gl.constexpr = _store_layout(HEAD_DIM)
    rows = gl.arange(0, HALF_N, layout=gl.SliceLayout(1, layout))
    cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, layout))
    zeros = gl.zeros([HALF_N, HEAD_DIM], dtype, layout)
    step = gl.num_programs(0) * (2 * HALF_N)
    for r0 in range(gl.program_id(0) * (2 * HALF_N) + WG * HALF_N, n_tail, step):
        offs = (gl.expand_dims((k_off + r0 + rows).to(gl.int64) * stride_kt, 1)
                + gl.expand_dims(h_kv * D + cols, 0))
        keep = gl.expand_dims(r0 + rows < n_tail, 1) & gl.expand_dims(cols < D, 0)
        gl.store(DK + offs, zeros, mask=keep)
        gl.store(DV + offs, zeros, mask=keep)


@gluon.jit
def _consumer0(dk_desc, dv_desc, q_smem, do_smem, k_smem, v_smem, ds_smem, dq_smem, kv_bar, ready,
               empty, dq_full, dq_free, ds_full, ds_free, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q,
               MAX_K, kv_group, scale, neg_scale_log2e, neg_bias_log2e, DK, DV, stride_kt, D, BIAS,
               SCORE_MOD, stride_smb, DMOD, stride_dmb, stride_dmh, BIAS_MODE,
               NUM_STAGES: gl.constexpr, RCP_NEWTON: gl.constexpr, DQ_SHARED: gl.constexpr,
               DQ_ISSUE: gl.constexpr, CAUSAL: gl.constexpr, HAS_LENGTHS: gl.constexpr,
               VARLEN: gl.constexpr, HAS_MOD: gl.constexpr, SCORE_DIM: gl.constexpr):
    _consumer(dk_desc, dv_desc, q_smem, do_smem, k_smem, v_smem, ds_smem, dq_smem, kv_bar, ready,
              empty, dq_full, dq_free, ds_full, ds_free, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q,
              MAX_K, kv_group, scale, neg_scale_log2e, neg_bias_log2e, 0, NUM_STAGES, RCP_NEWTON,
              DQ_SHARED, DQ_ISSUE, CAUSAL, HAS_LENGTHS, VARLEN, DK, DV, stride_kt, D, BIAS,
              SCORE_MOD, stride_smb, DMOD, stride_dmb, stride_dmh, BIAS_MODE, HAS_MOD, SCORE_DIM)


@gluon.jit
def _consumer1(dk_desc, dv_desc, q_smem, do_smem, k_smem, v_smem, ds_smem, dq_smem, kv_bar, ready,
               empty, dq_full, dq_free, ds_full, ds_free, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q,
               MAX_K, kv_group, scale, neg_scale_log2e, neg_bias_log2e, DK, DV, stride_kt, D, BIAS,
               SCORE_MOD, stride_smb, DMOD, stride_dmb, stride_dmh, BIAS_MODE,
               NUM_STAGES: gl.constexpr, RCP_NEWTON: gl.constexpr, DQ_SHARED: gl.constexpr,
               DQ_ISSUE: gl.constexpr, CAUSAL: gl.constexpr, HAS_LENGTHS: gl.constexpr,
               VARLEN: gl.constexpr, HAS_MOD: gl.constexpr, SCORE_DIM: gl.constexpr):
    _consumer(dk_desc, dv_desc, q_smem, do_smem, k_smem, v_smem, ds_smem, dq_smem, kv_bar, ready,
              empty, dq_full, dq_free, ds_full, ds_free, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q,
              MAX_K, kv_group, scale, neg_scale_log2e, neg_bias_log2e, 1, NUM_STAGES, RCP_NEWTON,
              DQ_SHARED, DQ_ISSUE, CAUSAL, HAS_LENGTHS, VARLEN, DK, DV, stride_kt, D, BIAS,
              SCORE_MOD, stride_smb, DMOD, stride_dmb, stride_dmh, BIAS_MODE, HAS_MOD, SCORE_DIM)


@gluon.jit
def sigmoid_attn_bwd_gluon(q_desc, k_desc, v_desc, do_desc, dq_desc, dk_desc, dv_desc, SEQ_LENS_Q,
                           SEQ_LENS_K, T_Q, T_K, kv_group, scale, bias_value, DK, DV, stride_kt, D,
                           BIAS, SCORE_MOD, stride_smb, DMOD, stride_dmb, stride_dmh, BIAS_MODE,
                           MAX_Q, MAX_K, NUM_STAGES: gl.constexpr, CONSUMER_REGS: gl.constexpr,
                           PRODUCER_REGS: gl.constexpr, RCP_NEWTON: gl.constexpr = False,
                           DQ_SHARED: gl.constexpr = False, DQ_ISSUE: gl.constexpr = 0,
                           CAUSAL: gl.constexpr = False, HAS_LENGTHS: gl.constexpr = False,
                           VARLEN: gl.constexpr = False, HAS_MOD: gl.constexpr = False,
                           SCORE_DIM: gl.constexpr = 0):
    """grid (cdiv(T_K, 2 * k_desc.block_type.shape[1]), H_KV, B), num_warps=4 (consumer 0).
    q/do: rank 4 [B, T_Q, H, D], box [1, BLOCK_M, 1, HEAD_DIM]; dq: the same in fp32 (reduce-add
    target, zeroed); k/v/dk/dv: [B, T_K, H_KV, D], box [1, 64, 1, HEAD_DIM]. D <= HEAD_DIM (a
    multiple of 8): the columns past D load as zeros and are stored and reduced nowhere; D, the
    tensors' head dim, also places the packed masked stores. kv_group = H / H_KV.
    RCP_NEWTON: 1/(1 + e) on the FMA pipe instead of MUFU.RCP. DQ_SHARED: the warpgroups
    exchange dS (double-buffered ds_smem[parity, warpgroup], ds_full/ds_free) and reduce-add
    one dQ tile over all 128 keys per query tile instead of one per warpgroup. DQ_ISSUE (with
    DQ_SHARED): 0 dQ after dV, dK retire; 1 dQ queued right behind dV, dK; 2 (D = 128) dQ of
    tile i queued ahead of dV, dK of tile i + 1. CAUSAL: top-left causal mask (T_Q == T_K), the
    query tiles above a key block skipped. HAS_LENGTHS: SEQ_LENS_Q/K int32 [B] (read only then).
    BIAS_MODE (variants.BIAS_MODES): 0 the default bias (with HAS_LENGTHS -log(Lk) per
    sequence, else bias_value = -log(T_K) from the launcher), 1 bias_value, 2 BIAS[b] (float32,
    one per sequence). HAS_MOD (dense, no lengths): SCORE_MOD [B, T_K] (rows stride_smb apart,
    contiguous along keys) added to each key's scores, and score_mod's gradient summed over
    the group's heads and queries into DMOD[b, h_kv, key] (strides stride_dmb, stride_dmh,
    contiguous along keys; the launcher sums the KV heads). VARLEN (with HAS_LENGTHS): a packed
    batch of B sequences, SEQ_LENS_Q/K int32 cu_seqlens [B + 1], T_Q/T_K the token totals,
    descriptors [1, total, heads, D]; grid (cdiv(max_seqlen_k, 128), H_KV, B + 1), z = B the
    tail past cu_seqlens_k[B]; DK, DV (row stride stride_kt) take the masked stores where a
    sequence ends inside a warpgroup's 64 keys and the tail's zeros (null otherwise)."""
    BLOCK_M: gl.constexpr = q_desc.block_type.shape[1]
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[3]
    HALF_N: gl.constexpr = k_desc.block_type.shape[1]
    dtype: gl.constexpr = q_desc.dtype
    gl.static_assert(HALF_N == 64, "each consumer warpgroup owns 64 keys (wgmma M = 64)")
    gl.static_assert(dk_desc.block_type.shape[1] == HALF_N)

    q_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES] + q_desc.block_type.shape,
                                       q_desc.layout)
    do_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES] + do_desc.block_type.shape,
                                        do_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [2] + k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [2] + v_desc.block_type.shape, v_desc.layout)
    ds_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16,
                                                   rank=2)
    ds_smem = gl.allocate_shared_memory(dtype, [4 if DQ_SHARED else 2, HALF_N, BLOCK_M],
                                        ds_layout)
    dq_smem = gl.allocate_shared_memory(gl.float32, [2] + dq_desc.block_type.shape,
                                        dq_desc.layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    dq_full = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    dq_free = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    if DQ_SHARED:
        ds_full = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        ds_free = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    else:  # unused placeholders
        ds_full = dq_full
        ds_free = dq_free
    mbarrier.init(kv_bar, count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)  # one arrive per consumer warpgroup
    # DQ_SHARED at D = 128: both warpgroups write half of each dQ tile's columns.
    DQ_WRITERS: gl.constexpr = 2 if DQ_SHARED and HEAD_DIM == 128 else 1
    for i in gl.static_range(2):
        mbarrier.init(dq_full.index(i), count=DQ_WRITERS)
        mbarrier.init(dq_free.index(i), count=1)
        if DQ_SHARED:
            mbarrier.init(ds_full.index(i), count=2)
            mbarrier.init(ds_free.index(i), count=2)
    fence_async_shared()  # barrier inits visible to the async proxy (TMA) before any use

    neg_scale_log2e = -scale * LOG2E
    neg_bias_log2e = -bias_value * LOG2E
    gl.warp_specialize([
        (_consumer0, (dk_desc, dv_desc, q_smem, do_smem, k_smem, v_smem, ds_smem, dq_smem, kv_bar,
                      ready, empty, dq_full, dq_free, ds_full, ds_free, SEQ_LENS_Q, SEQ_LENS_K, T_Q,
                      T_K, MAX_Q, MAX_K, kv_group, scale, neg_scale_log2e, neg_bias_log2e, DK, DV,
                      stride_kt, D, BIAS, SCORE_MOD, stride_smb, DMOD, stride_dmb, stride_dmh,
                      BIAS_MODE, NUM_STAGES, RCP_NEWTON, DQ_SHARED, DQ_ISSUE, CAUSAL, HAS_LENGTHS,
                      VARLEN, HAS_MOD, SCORE_DIM)),
        (_consumer1, (dk_desc, dv_desc, q_smem, do_smem, k_smem, v_smem, ds_smem, dq_smem, kv_bar,
                      ready, empty, dq_full, dq_free, ds_full, ds_free, SEQ_LENS_Q, SEQ_LENS_K, T_Q,
                      T_K, MAX_Q, MAX_K, kv_group, scale, neg_scale_log2e, neg_bias_log2e, DK, DV,
                      stride_kt, D, BIAS, SCORE_MOD, stride_smb, DMOD, stride_dmb, stride_dmh,
                      BIAS_MODE, NUM_STAGES, RCP_NEWTON, DQ_SHARED, DQ_ISSUE, CAUSAL, HAS_LENGTHS,
                      VARLEN, HAS_MOD, SCORE_DIM)),
        (_producer, (q_desc, do_desc, k_desc, v_desc, q_smem, do_smem, k_smem, v_smem, kv_bar,
                     ready, empty, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q, MAX_K, kv_group,
                     NUM_STAGES, CAUSAL, HAS_LENGTHS, VARLEN)),
        (_dq_writer, (dq_desc, dq_smem, dq_full, dq_free, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q,
                      MAX_K, kv_group, HALF_N, DQ_SHARED, CAUSAL, HAS_LENGTHS, VARLEN)),
    ], [4, 1, 1], [CONSUMER_REGS, PRODUCER_REGS, PRODUCER_REGS])

    # Every partition has joined: no TMA, wgmma or arrive is in flight on these barriers.
    mbarrier.invalidate(kv_bar)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.invalidate(ready.index(i))
        mbarrier.invalidate(empty.index(i))
    for i in gl.static_range(2):
        mbarrier.invalidate(dq_full.index(i))
        mbarrier.invalidate(dq_free.index(i))
        if DQ_SHARED:
            mbarrier.invalidate(ds_full.index(i))
            mbarrier.invalidate(ds_free.index(i))


@triton.jit
def dq_cast(src, dst, n, BLOCK: tl.constexpr):
    """dQ = dQ_acc cast to the output dtype (round to nearest even, as torch's .to()): one
    launch of cdiv(n, BLOCK) programs, 16-byte fp32 loads. n < 2^31 (checked by the caller)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(src + offs, mask=mask, eviction_policy="evict_first")
    tl.store(dst + offs, x.to(dst.dtype.element_ty), mask=mask)
