"""Forward sigmoid attention kernel (Triton source; compiled ahead of time by aot.py).

    O[b, i, h] = sum_j sigmoid(scale * q_i . k_j + bias_b + score_mod[b, j]) * v_j

over valid keys j < Lk[b] (and j <= i when causal); rows i >= Lq[b] are written as zeros.

Layout: q/o are [B, Tq, H, D], k/v are [B, Tk, Hkv, D] addressed through strides (last dim
contiguous), so [B, H, T, D] views work without copies. The grid is (cdiv(Tq, BLOCK_M), H, B):
m-blocks of one (b, h) are adjacent so they share K/V through L2.

Packed variable-length batches (VARLEN, FlashAttention's cu_seqlens convention): q/o are
[total_q, H, D], k/v [total_k, Hkv, D], and SEQ_LENS_Q / SEQ_LENS_K hold the int32 cumulative
lengths (num_seqs + 1 entries). The grid's first axis then enumerates tiles of the packed tokens,
not of B * max_seqlen: see _packed_tile.

Addressing (the rule for every kernel of the package): batch, head and packed-sequence offsets,
and the rows a program stores or loads once (its query block here; its key block in the
backward), are computed in 64 bits. Offsets inside one sequence that the key loops advance
(k/v/score_mod rows) are 32-bit, and the host proves they fit: csrc/cuda_common.cpp bounds
(longest sequence + 256) x row stride below 2^31 for every operand and for score_mod, and copies
a strided view that breaks the bound into a contiguous buffer first. The packed tail (rows after
cu_seqlens[B], zeroed by the forward) is not bounded by any sequence length, hence 64 bits.

Run-time integer flags (HAS_SEQ_LENS_*, BIAS_MODE) are scalar branches outside the key loop and
cost nothing measurable; only what changes the loop body or its bounds is a constexpr (and so a
compiled variant): head dim, causal, score_mod, tiles.
"""

import triton
import triton.language as tl

# BIAS_MODE values: the positions in variants.BIAS_MODES (C++ has them from it, generated;
# tests/test_kernel_abi.py checks these).
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
def _dot(a, b):
    """a @ b with fp32 accumulation. fp32 operands multiply in full precision (IEEE FMAs): Triton
    would otherwise use TF32 tensor cores, and its default_dot_input_precision compile option does
    not reach tl.dot calls (checked on Triton 3.6 and 3.8), so the precision is spelled here."""
    if a.dtype == tl.float32:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


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
def _packed_tile(pid, CU, num_seqs, total, max_len, BLOCK: tl.constexpr,
                 CHUNK: tl.constexpr = 256):
    """Program pid of a packed grid -> (segment s, first row of its tile inside the segment,
    the segment's token offset, valid rows, rows owned).

    Segment s < num_seqs is sequence s, [cu[s], cu[s+1]); segment num_seqs is the tail
    [cu[num_seqs], total), which holds no sequence: its rows are owned (written as zeros) but
    not valid. Segment s's tiles are numbered from first(s) = cu[s] // BLOCK + s. Because
    cu[s+1] // BLOCK >= cu[s] // BLOCK + L // BLOCK >= cu[s] // BLOCK + cdiv(L, BLOCK) - 1, the
    segments' ranges never overlap, and all of them fit in total // BLOCK + num_seqs + 1
    programs: at most one idle program per sequence, and the schedule is computed from cu alone,
    on the device, with no host synchronization. s = #{j : first(j) <= pid} - 1 (first is
    increasing), counted CHUNK entries per vector load. Offsets are clamped to [0, total] and
    lengths to max_len (the caller's max_seqlen, which bounds the 32-bit row offsets), so that no
    cu_seqlens tensor can cause an out-of-bounds access; ill-formed ones (decreasing, or with a
    sequence longer than max_seqlen) give wrong but memory-safe results, and strict mode rejects
    them on the host.
    """
    count = 0
    for c in range(0, num_seqs + 1, CHUNK):
        idx = c + tl.arange(0, CHUNK)
        ok = idx <= num_seqs
        start = tl.minimum(tl.maximum(tl.load(CU + idx, mask=ok, other=0), 0), total)
        count += tl.sum((ok & (start // BLOCK + idx <= pid)).to(tl.int32), axis=0)
    s = count - 1
    sc = tl.maximum(s, 0)
    start = tl.minimum(tl.maximum(tl.load(CU + sc), 0), total)
    end = tl.minimum(tl.maximum(tl.load(CU + tl.minimum(sc + 1, num_seqs)), start), total)
    # The tail is not a sequence: all of it is zeroed, however long (max_len bounds sequences).
    owned = tl.where(s < num_seqs, tl.minimum(end - start, max_len), total - start)
    owned = tl.where(s < 0, 0, owned)
    valid = tl.where(s < num_seqs, owned, 0)
    # pid before segment 0 (cu[0] > 0): a row past every length, so the program does nothing.
    row0 = tl.where(s < 0, total, (pid - (start // BLOCK + sc)) * BLOCK)
    return sc, row0, start, valid, owned


@triton.jit
def _packed_seq(s, CU, num_seqs, total, max_len):
    """Token offset and length of segment s on the other side (0 for the tail segment)."""
    start = tl.minimum(tl.maximum(tl.load(CU + s), 0), total)
    end = tl.minimum(tl.maximum(tl.load(CU + tl.minimum(s + 1, num_seqs)), start), total)
    return start, tl.where(s < num_seqs, tl.minimum(end - start, max_len), 0)


@triton.jit
def _packed_bias(s, Lk, BIAS, bias_value, num_seqs, BIAS_MODE):
    if BIAS_MODE == 0:
        bias = -tl.log(tl.maximum(Lk, 1).to(tl.float32))
    elif BIAS_MODE == 1:
        bias = bias_value
    else:
        bias = tl.load(BIAS + s, mask=s < num_seqs, other=0.0)
    return bias


@triton.jit
def _locate(pid, b_dense, T_Q, T_K, SEQ_LENS_Q, SEQ_LENS_K, BIAS, bias_value, num_seqs,
            max_seqlen_q, max_seqlen_k, HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE, BLOCK: tl.constexpr,
            TILE_KEYS: tl.constexpr, VARLEN: tl.constexpr):
    """Where program pid works: (sequence b, first row of its tile, q token offset, k token
    offset, Lq, Lk, rows of the tiled side it owns, bias). The tiled side is the queries
    (forward, dq) or the keys (dkdv, TILE_KEYS). Dense batches: b is the grid's z index, token
    offsets are 0 and the tiled side owns all T rows (padding rows are written as zeros)."""
    if VARLEN:
        if TILE_KEYS:
            b, row0, k_off, Lk, owned = _packed_tile(pid, SEQ_LENS_K, num_seqs, T_K,
                                                     max_seqlen_k, BLOCK)
            q_off, Lq = _packed_seq(b, SEQ_LENS_Q, num_seqs, T_Q, max_seqlen_q)
        else:
            b, row0, q_off, Lq, owned = _packed_tile(pid, SEQ_LENS_Q, num_seqs, T_Q,
                                                     max_seqlen_q, BLOCK)
            k_off, Lk = _packed_seq(b, SEQ_LENS_K, num_seqs, T_K, max_seqlen_k)
        bias = _packed_bias(b, Lk, BIAS, bias_value, num_seqs, BIAS_MODE)
    else:
        b = b_dense
        row0 = pid * BLOCK
        q_off = b * 0
        k_off = b * 0
        Lq, Lk, bias = _bias_and_lengths(b, T_Q, T_K, SEQ_LENS_Q, SEQ_LENS_K, BIAS, bias_value,
                                         HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE)
        if TILE_KEYS:
            owned = T_K
        else:
            owned = T_Q
    return b, row0, q_off, k_off, Lq, Lk, owned, bias


@triton.jit
def _runtime_head_dim(head_dim):
    """The generic kernels' head dim: any multiple of 8 up to BLOCK_D (the host checks it).
    Written as a product by 8 so that Triton knows its divisibility (a hint on a scalar argument
    does not reach the masks): the D masks then stay constant over 8 elements, and loads keep
    their 16-byte vectors."""
    return (head_dim // 8) * 8


@triton.jit
def _attend(
    acc, q, k_base, v_base, sm_base, offs_m, offs_d, n_start, Lk,
    stride_kt, stride_vt, stride_smt, scale, bias,
    D, PAD_D: tl.constexpr, BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_SCORE_MOD: tl.constexpr,
    FAST_SIGMOID: tl.constexpr,
):
    offs_n = n_start + tl.arange(0, BLOCK_N)
    k_ptrs = k_base + offs_n[None, :] * stride_kt + offs_d[:, None]
    v_ptrs = v_base + offs_n[:, None] * stride_vt + offs_d[None, :]
    if MASKED:
        key_ok = offs_n < Lk
        if PAD_D:
            kT = tl.load(k_ptrs, mask=key_ok[None, :] & (offs_d[:, None] < D), other=0.0)
            v = tl.load(v_ptrs, mask=key_ok[:, None] & (offs_d[None, :] < D), other=0.0)
        else:
            kT = tl.load(k_ptrs, mask=key_ok[None, :], other=0.0)
            v = tl.load(v_ptrs, mask=key_ok[:, None], other=0.0)
    else:
        if PAD_D:
            kT = tl.load(k_ptrs, mask=offs_d[:, None] < D, other=0.0)
            v = tl.load(v_ptrs, mask=offs_d[None, :] < D, other=0.0)
        else:
            kT = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
    s = _dot(q, kT) * scale + bias
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
    return acc + _dot(p.to(v.dtype), v)


@triton.jit
def _attend_split(
    acc_lo, acc_hi, q_lo, q_hi, k_base, v_base, sm_base, offs_m, n_start, Lk,
    stride_kt, stride_vt, stride_smt, scale, bias,
    D_LO: tl.constexpr, D_HI: tl.constexpr, BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_SCORE_MOD: tl.constexpr,
    FAST_SIGMOID: tl.constexpr,
):
    """_attend for a head dim that is the sum of two powers of two, D_LO + D_HI (80 = 64 + 16,
    96 = 64 + 32, 160 = 128 + 32, 192 = 128 + 64, 48 = 32 + 16): Q·Kᵀ as two products over the
    two column ranges, P·V into two accumulators, so no product multiplies the zero columns a
    BLOCK_D rounded up to the next power of two would carry (25-37% of the work there)."""
    offs_n = n_start + tl.arange(0, BLOCK_N)
    offs_lo = tl.arange(0, D_LO)
    offs_hi = D_LO + tl.arange(0, D_HI)
    key_ok = offs_n < Lk
    kT_lo = tl.load(k_base + offs_n[None, :] * stride_kt + offs_lo[:, None],
                    mask=key_ok[None, :] if MASKED else None, other=0.0 if MASKED else None)
    kT_hi = tl.load(k_base + offs_n[None, :] * stride_kt + offs_hi[:, None],
                    mask=key_ok[None, :] if MASKED else None, other=0.0 if MASKED else None)
    s = (_dot(q_lo, kT_lo) + _dot(q_hi, kT_hi)) * scale + bias
    if HAS_SCORE_MOD:
        if MASKED:
            mod = tl.load(sm_base + offs_n * stride_smt, mask=key_ok, other=0.0)
        else:
            mod = tl.load(sm_base + offs_n * stride_smt)
        s += mod[None, :]
    p = _sigmoid(s, FAST_SIGMOID)
    if MASKED:
        keep = key_ok[None, :]
        if IS_CAUSAL:
            keep = keep & (offs_n[None, :] <= offs_m[:, None])
        p = tl.where(keep, p, 0.0)
    v_lo = tl.load(v_base + offs_n[:, None] * stride_vt + offs_lo[None, :],
                   mask=key_ok[:, None] if MASKED else None, other=0.0 if MASKED else None)
    v_hi = tl.load(v_base + offs_n[:, None] * stride_vt + offs_hi[None, :],
                   mask=key_ok[:, None] if MASKED else None, other=0.0 if MASKED else None)
    p = p.to(v_lo.dtype)
    return acc_lo + _dot(p, v_lo), acc_hi + _dot(p, v_hi)


@triton.jit
def _sigmoid_pv(acc, qk, v, sm_base, offs_n, stride_smt, scale, bias,
                HAS_SCORE_MOD: tl.constexpr, FAST_SIGMOID: tl.constexpr):
    """acc + sigmoid(qk * scale + bias + score_mod) @ v for a block of valid keys (no mask)."""
    s = qk * scale + bias
    if HAS_SCORE_MOD:
        s += tl.load(sm_base + offs_n * stride_smt)[None, :]
    p = _sigmoid(s, FAST_SIGMOID)
    return acc + _dot(p.to(v.dtype), v)


@triton.jit
def _attend_tma(acc, q, k_desc, v_desc, sm_base, n_start, stride_smt, scale, bias,
                BLOCK_N: tl.constexpr, HAS_SCORE_MOD: tl.constexpr, FAST_SIGMOID: tl.constexpr):
    """_attend for a block of valid keys (no mask), K and V read through TMA descriptors."""
    k = k_desc.load([n_start, 0])
    v = v_desc.load([n_start, 0])
    return _sigmoid_pv(acc, _dot(q, tl.trans(k)), v, sm_base, n_start + tl.arange(0, BLOCK_N),
                       stride_smt, scale, bias, HAS_SCORE_MOD, FAST_SIGMOID)


@triton.jit
def _longest_first(pid_m, h, b, GROUP_PROGRAMS: tl.constexpr, DESCENDING: tl.constexpr = True):
    """Causal schedule: (block, head, batch) for launch slot (pid_m, h, b), longest first.

    A causal query block m walks m + 1 key blocks, so in launch order (pid_m fastest) the
    longest programs of the last heads start last and the SMs idle while they finish. Here the
    heads are taken in groups of G = cdiv(GROUP_PROGRAMS, number of blocks) and, inside a
    group, the blocks in descending order (DESCENDING; ascending for the backward's key blocks,
    where block n walks the query blocks from n on), the group's heads interleaved: the last
    wave holds the shortest programs. Groups keep the K/V that runs concurrently to G heads (L2);
    GROUP_PROGRAMS is chosen per head dim and length bucket by the sweep (tiles.json
    fwd_causal_lpt: one wave, 264 programs, at T >= 8k). A bijection of the grid."""
    n_m = tl.num_programs(0)
    n_h = tl.num_programs(1)
    heads = n_h * tl.num_programs(2)
    lin = (b * n_h + h) * n_m + pid_m  # the hardware's launch order: x fastest, then y, z
    group = tl.minimum(tl.maximum(tl.cdiv(GROUP_PROGRAMS, n_m), 1), heads)
    # The remainder group (heads % group of them) goes first: the last group, whose order sets
    # the grid's last wave, is a full one.
    rem = heads % group
    first = rem + ((lin - rem * n_m) // (group * n_m)) * group  # first head of the group
    size = group
    if lin < rem * n_m:
        first = 0
        size = rem
    r = lin - first * n_m
    head = first + r % size
    m = r // size
    if DESCENDING:
        m = n_m - 1 - m
    return m, head % n_h, head // n_h


@triton.jit
def sigmoid_attn_fwd(
    Q, K, V, O, SEQ_LENS_Q, SEQ_LENS_K, BIAS, SCORE_MOD,
    stride_qb, stride_qt, stride_qh,
    stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh,
    stride_ob, stride_ot, stride_oh,
    stride_smb, stride_smt,
    T_Q, T_K, kv_group, scale, bias_value,
    HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE, num_seqs, max_seqlen_q, max_seqlen_k, head_dim,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_SCORE_MOD: tl.constexpr, FAST_SIGMOID: tl.constexpr,
    VARLEN: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
    USE_TMA: tl.constexpr = False,
    CAUSAL_LPT: tl.constexpr = 0,
    RUNTIME_HEAD_DIM: tl.constexpr = False,
    D_LO: tl.constexpr = 0,
):
    # grid: (cdiv(T_Q, BLOCK_M), H, B), or (T_Q // BLOCK_M + num_seqs + 1, H, 1) when VARLEN
    # D_LO > 0: the head dim HEAD_DIM = D_LO + (HEAD_DIM - D_LO), both powers of two, in two
    # column ranges (_attend_split) instead of one BLOCK_D-wide padded one; no TMA then.
    tl.static_assert(D_LO == 0 or (not USE_TMA and not RUNTIME_HEAD_DIM))
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    b_dense = tl.program_id(2)
    if CAUSAL_LPT > 0 and IS_CAUSAL and not VARLEN:
        pid_m, h, b_dense = _longest_first(pid_m, h, b_dense, CAUSAL_LPT)
    # Lengths are clamped to [0, T] so that no lengths tensor can cause an out-of-bounds access.
    b, start_m, q_off, k_off, Lq, Lk, owned, bias = _locate(
        pid_m, b_dense, T_Q, T_K, SEQ_LENS_Q, SEQ_LENS_K, BIAS, bias_value,
        num_seqs, max_seqlen_q, max_seqlen_k, HAS_SEQ_LENS_Q, HAS_SEQ_LENS_K, BIAS_MODE, BLOCK_M, False, VARLEN)

    b64 = b.to(tl.int64)
    h_kv = (h // kv_group).to(tl.int64)
    q_base = Q + b64 * stride_qb + q_off.to(tl.int64) * stride_qt + h.to(tl.int64) * stride_qh
    k_base = K + b64 * stride_kb + k_off.to(tl.int64) * stride_kt + h_kv * stride_kh
    v_base = V + b64 * stride_vb + k_off.to(tl.int64) * stride_vt + h_kv * stride_vh
    o_base = O + b64 * stride_ob + q_off.to(tl.int64) * stride_ot + h.to(tl.int64) * stride_oh
    sm_base = SCORE_MOD + b64 * stride_smb + k_off.to(tl.int64) * stride_smt

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Lq
    # D bounds every access along the head dim, masked where BLOCK_D is wider (PAD_D):
    # a compiled head dim (a constant), or the generic kernels' run-time one.
    PAD_D: tl.constexpr = RUNTIME_HEAD_DIM or BLOCK_D != HEAD_DIM
    if RUNTIME_HEAD_DIM:
        D = _runtime_head_dim(head_dim)
    else:
        D = HEAD_DIM

    # Key range: [0, hi). Blocks below n_full need no mask: every key is valid for every row.
    hi = Lk
    n_full = (Lk // BLOCK_N) * BLOCK_N
    if IS_CAUSAL:
        hi = tl.minimum(hi, start_m + BLOCK_M)
        n_full = tl.minimum(n_full, ((start_m + 1) // BLOCK_N) * BLOCK_N)
    if start_m >= Lq:  # query block wholly past the sequence: only zeros are stored
        hi = 0
        n_full = 0

    # 64-bit rows: a packed batch's tail program stores rows up to the buffer's end, past any
    # sequence length the host bounds (a CUDA-graph buffer far larger than its batch).
    rows64 = offs_m.to(tl.int64)
    if D_LO > 0:
        D_HI: tl.constexpr = HEAD_DIM - D_LO
        offs_lo = tl.arange(0, D_LO)
        offs_hi = D_LO + tl.arange(0, D_HI)
        q_lo = tl.load(q_base + rows64[:, None] * stride_qt + offs_lo[None, :],
                       mask=row_ok[:, None], other=0.0)
        q_hi = tl.load(q_base + rows64[:, None] * stride_qt + offs_hi[None, :],
                       mask=row_ok[:, None], other=0.0)
        acc_lo = tl.zeros([BLOCK_M, D_LO], dtype=tl.float32)
        acc_hi = tl.zeros([BLOCK_M, D_HI], dtype=tl.float32)
        for n_start in tl.range(0, n_full, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
            acc_lo, acc_hi = _attend_split(
                acc_lo, acc_hi, q_lo, q_hi, k_base, v_base, sm_base, offs_m, n_start, Lk,
                stride_kt, stride_vt, stride_smt, scale, bias,
                D_LO, D_HI, BLOCK_N, False, IS_CAUSAL, HAS_SCORE_MOD, FAST_SIGMOID)
        for n_start in range(n_full, hi, BLOCK_N):
            acc_lo, acc_hi = _attend_split(
                acc_lo, acc_hi, q_lo, q_hi, k_base, v_base, sm_base, offs_m, n_start, Lk,
                stride_kt, stride_vt, stride_smt, scale, bias,
                D_LO, D_HI, BLOCK_N, True, IS_CAUSAL, HAS_SCORE_MOD, FAST_SIGMOID)
        out_mask = (offs_m < owned)[:, None]
        o_rows = o_base + rows64[:, None] * stride_ot
        tl.store(o_rows + offs_lo[None, :],
                 tl.where(row_ok[:, None], acc_lo, 0.0).to(O.dtype.element_ty), mask=out_mask)
        tl.store(o_rows + offs_hi[None, :],
                 tl.where(row_ok[:, None], acc_hi, 0.0).to(O.dtype.element_ty), mask=out_mask)
        return
    q_ptrs = q_base + rows64[:, None] * stride_qt + offs_d[None, :]
    if PAD_D:
        q = tl.load(q_ptrs, mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    else:
        q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if USE_TMA:
        # K and V of the unmasked blocks through TMA tensor descriptors (tiles.json's "tma"
        # flag: the long-sequence buckets of hd64/hd128, +4-9% there in the sweeps). Rows past
        # Lk and columns past HEAD_DIM arrive as zeros. The descriptors live in the kernel's
        # global scratch (allocated by the launcher from torch's allocator).
        k_desc = tl.make_tensor_descriptor(k_base, shape=[Lk, D], strides=[stride_kt, 1],
                                           block_shape=[BLOCK_N, BLOCK_D])
        v_desc = tl.make_tensor_descriptor(v_base, shape=[Lk, D], strides=[stride_vt, 1],
                                           block_shape=[BLOCK_N, BLOCK_D])
        for n_start in tl.range(0, n_full, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
            acc = _attend_tma(acc, q, k_desc, v_desc, sm_base, n_start, stride_smt, scale, bias,
                              BLOCK_N, HAS_SCORE_MOD, FAST_SIGMOID)
    else:
        for n_start in tl.range(0, n_full, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
            acc = _attend(
                acc, q, k_base, v_base, sm_base, offs_m, offs_d, n_start, Lk,
                stride_kt, stride_vt, stride_smt, scale, bias,
                D, PAD_D, BLOCK_N, False, IS_CAUSAL, HAS_SCORE_MOD, FAST_SIGMOID,
            )
    for n_start in range(n_full, hi, BLOCK_N):
        acc = _attend(
            acc, q, k_base, v_base, sm_base, offs_m, offs_d, n_start, Lk,
            stride_kt, stride_vt, stride_smt, scale, bias,
            D, PAD_D, BLOCK_N, True, IS_CAUSAL, HAS_SCORE_MOD, FAST_SIGMOID,
        )

    acc = tl.where(row_ok[:, None], acc, 0.0)
    o_ptrs = o_base + rows64[:, None] * stride_ot + offs_d[None, :]
    out_mask = offs_m[:, None] < owned
    if PAD_D:
        out_mask = out_mask & (offs_d[None, :] < D)
    tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=out_mask)
