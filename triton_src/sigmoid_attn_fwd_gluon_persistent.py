"""Forward sigmoid attention as a persistent, hand-scheduled, warp-specialized Gluon kernel for
Hopper (sm_90), with causal masking and per-sequence lengths: the library's kinds fwd_gluon
(HAS_LENGTHS off) and fwd_gluon_padded (on), each dense and causal (triton_src/aot.py), and the
probe's (benchmarks/gluon_fwd) with every flag.

    O[b, i, h, :] = sum_j sigmoid(scale * <Q[b,i,h,:], K[b,j,g,:]> + bias) * V[b, j, g, :]
    over keys j < Lk[b] (and j <= i when CAUSAL); rows i >= Lq[b] are written as zeros;
    g = h // kv_group (GQA/MQA: kv_group query heads per K/V head). With HAS_LENGTHS,
    Lq/Lk = clamp(SEQ_LENS_Q/K[b], 0, T_Q/T_K) and the bias is the library's default
    -log(max(Lk, 1)) per sequence; without, Lq = T_Q, Lk = T_K and the bias is bias_value.

Gluon is Triton's explicit dialect: layouts, shared memory, barriers and the warp partitions
are written out, where sigmoid_attn_fwd_ws leaves them to Triton's Hopper pass. Compiled with
GluonASTSource, a private Triton module: aot.py builds this kind only with the Triton version it
is pinned to (variants.GLUON_TRITON).

Layout: Q, O are [B, T_Q, H, D] and K, V [B, T_K, H_KV, D], each seen by a host TMA descriptor
as a rank-3 tensor [B, T, H*D] (heads packed along each row: head stride D, last dim
contiguous; any 16-byte multiple row and batch strides), with a [1, rows, D] box at
(b, row, h*D): TMA fills the rows past T of each sequence with zeros (loads) and drops them
(stores).

Per tile (BLOCK_M query rows x head x batch), three or four partitions:
  * "producer" (1 warp, few registers): loads the tile's Q parts, then K and V blocks into
    a NUM_STAGES ring, K and V with their own ready/empty mbarriers so that Q·Kᵀ of a block can
    start before its V has landed;
  * "consumer 0" (the default partition, 4 warps) and "consumer 1" (a 4-warp worker), and
    with CONSUMERS = 3 "consumer 2" (hd64: there a warpgroup's sigmoid takes as long as its
    wgmma, and a third keeps the tensor pipe fed), one warpgroup each, own rows
    [wg*ROWS, (wg+1)*ROWS) of the tile (ROWS = BLOCK_M / CONSUMERS):
    S = Q·Kᵀ by wgmma (both operands in shared memory), P = sigmoid(S*scale + bias) through
    tanh.approx.f32 (sigmoid(x) = 0.5*tanh(0.5x) + 0.5), O += P·V by wgmma with P in registers,
    with FA3's intra-warpgroup overlap: iteration j issues S_j = Q·K_jᵀ and
    O += P_{j-1}·V_{j-1} back to back, waits for S_j only, computes P_j while the P·V wgmma
    runs, then waits for that one. Each consumer releases a K (V) slot by one arrive on its
    empty barrier (count CONSUMERS: one per consumer warpgroup) once the wgmma that read it has
    completed.
Across tiles (the persistent schedule):
  * Grid = (number of programs,), normally the SM count. Program pid walks the tiles
    t = pid, pid + P, pid + 2P, ... of a static schedule over (q-block, head, batch):
      - dense: q-block fastest, then head, then batch (the programs running at one time share
        the K/V of few heads: L2);
      - with lengths (not causal): the same order over the tiles holding rows below their
        sequence's length first, then the tiles past it, which only store zeros (_segment);
      - packed: sequence by sequence in the same order, the tail past cu_seqlens[B] last;
        causal: by q-block levels over every sequence, the highest (heaviest) first (_segment);
      - with lengths or packed, a program finds its tiles' sequences with a cursor that only
        moves forward (_advance): O(B) per program, not per tile;
      - causal: longest first: buckets of 8 consecutive q-blocks, the heaviest bucket first,
        inside a bucket head by head with the q-blocks descending; program pid takes slot pid
        of even waves and slot P-1-pid of odd ones (a snake), which evens out the programs'
        sums (a Python model: within 3% of the mean at 1k/4k/16k) while the programs running
        at one time share the K/V of about 17 heads or fewer (L2).
    Without lengths, producer and consumers evaluate the same schedule (pure integer
    arithmetic); with lengths the producer walks it (statically, or taking each tile from a
    queue: SCHEDULE) and posts each tile's description to the consumers in shared memory.
  * Q is double-buffered (q_ready/q_empty[2]): the producer loads tile i+1's Q as soon as it
    has queued tile i's last K/V blocks, i.e. while the consumers finish tile i. The K/V ring
    and its phases continue across tiles (one running block counter on each side).
  * Output: each consumer stages its rows in its own shared buffer and issues a TMA store that
    is waited for only before the buffer is written again (next tile's epilogue), so the store
    overlaps the next tile's main loop.
  * Key blocks: n_blocks = cdiv(hi, BLOCK_N) with hi = min(Lk, row0 + BLOCK_M) when causal;
    the first n_full blocks (every key valid for every row of the tile) run without a mask;
    the remaining ones (the diagonal block, the block holding Lk) set the masked scores to
    -inf before the sigmoid when causal: tanh.approx(-inf) = -1, so P = 0 exactly, also where
    the score is NaN (garbage K rows past Lk); not causal, the block holding Lk has its K and V
    rows past Lk zeroed in shared memory instead and runs unmasked (_zero_keys_past); there,
    a tile's last block of two or more that holds at most BLOCK_N / 2 keys runs over its first
    half only (_half_tail: S of 64 keys, half the sigmoids, P·V over half of V). Blocks past
    the diagonal or past Lk are not loaded.
    A tile whose first row is at or past Lq loads its Q (keeps the Q phases uniform), no K/V,
    and stores zeros.

Preconditions: T_Q == T_K when CAUSAL (top-left diagonal, as the library's forward); T_K >= 1.
With HAS_LENGTHS, nothing past a sequence's lengths reaches its output: causal, K rows past Lk
give masked scores (P = 0 exactly, NaN included); not causal, they are zeroed in shared memory
before that block's Q·Kᵀ (finite scores); either way V rows past Lk in the last key block are
zeroed before that block's P·V, so those keys add exactly 0.

Barriers: q_ready/q_empty[2], k_ready/k_empty/v_ready/v_empty[NUM_STAGES], own allocations,
invalidated after the warp_specialize region joins.
"""

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    tma, mbarrier, fence_async_shared, warpgroup_mma, warpgroup_mma_wait)


# The packed causal order by levels (_segment): levels per bucket. Over lengths uniform in
# [T/2, T] at T = 1k / 4k / 16k, a Python model of the static snake puts the busiest program's
# work at 1.00-1.09x the mean with 2, 1.03-1.29x with 8 (sequence by sequence: 1.15-1.48x);
# fewer would spread the programs running at one time over more heads' K/V (L2).
LEVEL_BUCKET = gl.constexpr(2)


@gluon.jit
def _tanh_approx(x):
    return gl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=r,r", [x], dtype=gl.float32,
                                     is_pure=True, pack=1)


@gluon.jit
def _tile(i, pid, n_prog, CAUSAL: gl.constexpr):
    """Index of program pid's i-th tile: pid + i*P; causal: odd waves reversed (a snake over
    the descending work of _schedule, which balances the programs' sums)."""
    slot = pid
    if CAUSAL:
        if i % 2 == 1:
            slot = n_prog - 1 - pid
    return i * n_prog + slot


@gluon.jit
def _schedule(t, n_m, H, heads, CAUSAL: gl.constexpr, BUCKET: gl.constexpr):
    """(q-block, head, batch) of tile t; a bijection of [0, n_m * heads)."""
    if CAUSAL:
        # Buckets of BUCKET consecutive q-blocks, the heaviest first; inside a bucket, head by
        # head, q-blocks descending (the last bucket may hold fewer q-blocks).
        bi = t // (BUCKET * heads)
        r = t - bi * (BUCKET * heads)
        top = n_m - 1 - bi * BUCKET
        size = gl.minimum(top + 1, BUCKET)
        head = r // size
        m = top - r % size
    else:
        m = t % n_m
        head = t // n_m
    return m, head % H, head // H


@gluon.jit
def _segment(s, LENS, T_Q, n_m, B, top, n_buckets, BLOCK_M: gl.constexpr, VARLEN: gl.constexpr,
             BUCKET: gl.constexpr):
    """(sequence, first q-block, q-blocks per head) of segment s of a length-aware order. The
    tiles go segment by segment, head by head inside a segment, q-blocks fastest (the programs
    running at one time share the K/V of few heads).
    Packed (VARLEN, LENS = cu_seqlens, T_Q the token total): segment s < B is sequence s, and
    segment B the tail [cu[B], total) (its rows are written as zeros).
    Padded (LENS = lengths): segments s < B are each sequence's tiles holding a row below its
    length, then segments B + b its tiles past the length, which only store zeros. With lengths
    uniform in [T/2, T], the dense order leaves those cheap tiles spread over every wave and the
    last wave full of full tiles; here the last waves are the cheap ones (a Python model of the
    static round-robin walk: 0.82 -> 0.90 of the SMs' time useful at T = 4k).
    Packed causal by levels (n_buckets > 0, _levels): a tile's work grows with its q-block index
    inside its sequence, so the q-blocks go by levels, the highest first, over every sequence:
    segment s < n_buckets * B is sequence b = s % B's q-blocks in bucket k = s // B, levels
    [top - (k+1) * BUCKET, top - k * BUCKET) (bucket 0 also takes every level above top: the
    blocks of a sequence longer than max_seqlen, which store zeros), and segment n_buckets * B
    the tail. Sequence by sequence, a late long sequence's heavy tiles would end the schedule."""
    if VARLEN:
        b = s
        first = 0
        if n_buckets > 0:
            b = s % B
            k = s // B
            n_b = _packed_blocks(LENS, b, B, T_Q, BLOCK_M)
            hi = top - k * BUCKET
            if k == 0:
                hi = gl.maximum(hi, n_b)
            first = gl.maximum(top - (k + 1) * BUCKET, 0)
            cnt = gl.maximum(gl.minimum(hi, n_b) - first, 0)
            if k >= n_buckets:
                b = B
                first = 0
                cnt = _packed_blocks(LENS, B, B, T_Q, BLOCK_M)
        else:
            cnt = _packed_blocks(LENS, s, B, T_Q, BLOCK_M)
    else:
        b = s % B
        n_b = gl.cdiv(gl.minimum(gl.maximum(gl.load(LENS + b), 0), T_Q), BLOCK_M)
        first = 0
        cnt = n_b
        if s >= B:
            first = n_b
            cnt = n_m - n_b
    return b, first, cnt


@gluon.jit
def _packed_span(CU, b, B, total):
    """Rows [cu[b], cu[b+1]) of packed sequence b clamped to [0, total] (an ill-formed
    cu_seqlens gives wrong rows, never rows out of bounds); b == B: the tail [cu[B], total)."""
    off = gl.minimum(gl.maximum(gl.load(CU + b), 0), total)
    end = gl.minimum(gl.maximum(gl.load(CU + gl.minimum(b + 1, B)), off), total)
    if b >= B:
        end = total
    return off, end


@gluon.jit
def _sequence(b, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q, MAX_K, B, HAS_LENGTHS: gl.constexpr,
              VARLEN: gl.constexpr):
    """(first query row, Lq, rows owned, first key row, Lk) of sequence b. Dense: rows of batch
    entry b, the whole T_Q/T_K; with lengths: Lq/Lk = SEQ_LENS_Q/K[b] clamped to [0, T]; packed
    (VARLEN, SEQ_LENS_Q/K are cu_seqlens, T_Q/T_K the token totals): [cu[b], cu[b+1]) clamped
    to [0, total], its lengths cut to MAX_Q/MAX_K (the caller's max_seqlen: the rows past it
    are owned, written as zeros, where the Triton kernels leave them unwritten; an ill-formed
    cu_seqlens gives wrong rows, never an access out of bounds), and b == B is the tail
    [cu[B], total): rows of no sequence, no keys, written as zeros. The rows a tile may store:
    [0, owned)."""
    q_off = 0
    k_off = 0
    Lq = T_Q
    Lk = T_K
    if VARLEN:
        q_off, q_end = _packed_span(SEQ_LENS_Q, b, B, T_Q)
        k_off, k_end = _packed_span(SEQ_LENS_K, b, B, T_K)
        if b >= B:
            k_end = k_off
        Lq = q_end - q_off
        Lk = gl.minimum(k_end - k_off, MAX_K)
    elif HAS_LENGTHS:
        Lq = gl.minimum(gl.maximum(gl.load(SEQ_LENS_Q + b), 0), T_Q)
        Lk = gl.minimum(gl.maximum(gl.load(SEQ_LENS_K + b), 0), T_K)
    owned = Lq
    if VARLEN:
        Lq = gl.minimum(Lq, MAX_Q)
    return q_off, Lq, owned, k_off, Lk


@gluon.jit
def _packed_blocks(CU, bb, B, total, BLOCK_M: gl.constexpr):
    """Row blocks of packed sequence bb, [cu[bb], cu[bb+1]) clamped to [0, total]; bb == B is
    the tail [cu[B], total). (_packed_span's rows, in the form the cursor's loop takes: the
    second load only for a sequence.)"""
    off = gl.minimum(gl.maximum(gl.load(CU + bb), 0), total)
    end = total
    if bb < B:
        end = gl.minimum(gl.maximum(gl.load(CU + bb + 1), off), total)
    return gl.cdiv(end - off, BLOCK_M)


@gluon.jit
def _levels(MAX_Q, T_Q, B, BLOCK_M: gl.constexpr, BUCKET: gl.constexpr, VARLEN: gl.constexpr,
            CAUSAL: gl.constexpr):
    """(top, n_buckets) of the packed causal order by levels (_segment): top = the q-blocks of a
    max_seqlen sequence, n_buckets = its buckets of BUCKET levels; n_buckets = 0 (sequence by
    sequence) where that order is not taken: not packed causal, no sequence (B = 0: only the
    tail, and _segment divides by B), or more than 1,024 segments (a program's cursor visits
    each segment once: with many long-tailed sequences that walk would cost more than the
    balance gains)."""
    top = 0
    n_buckets = 0
    if VARLEN and CAUSAL:
        top = gl.cdiv(gl.maximum(gl.minimum(MAX_Q, T_Q), 1), BLOCK_M)
        n_buckets = gl.cdiv(top, BUCKET)
        if (n_buckets * B > 1024) or (B < 1):
            n_buckets = 0
    return top, n_buckets


@gluon.jit
def _advance(t, cur_s, cur_start, cur_b, cur_first, cur_cnt, LENS, T_Q, n_m, H, B, top,
             n_buckets, BLOCK_M: gl.constexpr, VARLEN: gl.constexpr, DESCENDING: gl.constexpr,
             BUCKET: gl.constexpr):
    """A length-aware order's cursor (segment, its first tile, and _segment's triple) moved to
    the segment holding tile t; returns the cursor, (q-block, head, sequence) of t, and whether
    t exists (the packed loop runs to a bound, not to the count of tiles, which would be a walk
    over the lengths before the first tile). Each program meets its tiles in increasing order
    (t = i * P + slot, the causal snake included), so the cursor only moves forward: 2B + 1
    segments per program in all, not a walk over the B lengths per tile (which cost more than a
    short tile's keys with hundreds of cells). DESCENDING (packed causal): a sequence's
    q-blocks from its last, the heaviest, so that the schedule ends on the light ones."""
    last = 2 * B - 1
    if VARLEN:
        last = B
        if n_buckets > 0:
            last = n_buckets * B
    while (t >= cur_start + cur_cnt * H) & (cur_s < last):
        cur_start += cur_cnt * H
        cur_s += 1
        cur_b, cur_first, cur_cnt = _segment(cur_s, LENS, T_Q, n_m, B, top, n_buckets, BLOCK_M,
                                             VARLEN, BUCKET)
    local = t - cur_start
    cnt = gl.maximum(cur_cnt, 1)
    m = local % cnt
    if DESCENDING:
        m = cnt - 1 - m
    return (cur_s, cur_start, cur_b, cur_first, cur_cnt, cur_first + m, local // cnt, cur_b,
            t < cur_start + cur_cnt * H)


@gluon.jit
def _walk_start(SEQ_LENS_Q, T_Q, n_m, H, B, top, n_buckets, BLOCK_M: gl.constexpr,
                VARLEN: gl.constexpr, BUCKET: gl.constexpr):
    """A program's walk over the tiles: a bound on the tile indices (packed: a bound, not the
    count, which would be a walk over the B lengths before the first tile; _advance says which
    tiles exist) and the length-aware orders' cursor at segment 0 (segment, its first tile,
    _segment(segment))."""
    n_tiles = n_m * (H * B)
    if VARLEN:
        n_tiles = (n_m + B + 1) * H
    cur_b, cur_first, cur_cnt = _segment(0, SEQ_LENS_Q, T_Q, n_m, B, top, n_buckets, BLOCK_M,
                                         VARLEN, BUCKET)
    return n_tiles, 0, 0, cur_b, cur_first, cur_cnt


@gluon.jit
def _tile_at(t, n_tiles, cur_s, cur_start, cur_b, cur_first, cur_cnt, SEQ_LENS_Q, T_Q, n_m, H,
             B, heads, top, n_buckets, BLOCK_M: gl.constexpr, CAUSAL: gl.constexpr,
             HAS_LENGTHS: gl.constexpr, BUCKET: gl.constexpr, VARLEN: gl.constexpr,
             LEVEL_BUCKET: gl.constexpr):
    """(cursor, q-block, head, sequence, whether the tile exists) of tile t: the length-aware
    orders through the cursor (packed, and padded non-causal), _schedule otherwise. The producer
    and both consumers walk the same tiles through this one function."""
    if VARLEN or (HAS_LENGTHS and not CAUSAL):
        cur_s, cur_start, cur_b, cur_first, cur_cnt, m, h, b, valid = _advance(
            t, cur_s, cur_start, cur_b, cur_first, cur_cnt, SEQ_LENS_Q, T_Q, n_m, H, B, top,
            n_buckets, BLOCK_M, VARLEN, CAUSAL, LEVEL_BUCKET)
    else:
        m, h, b = _schedule(t, n_m, H, heads, CAUSAL, BUCKET)
        valid = t < n_tiles
    return cur_s, cur_start, cur_b, cur_first, cur_cnt, m, h, b, valid


@gluon.jit
def _extent(row0, Lq, Lk, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr,
            HAS_LENGTHS: gl.constexpr):
    """Key blocks of a tile: (n_blocks, n_full)."""
    hi = Lk
    if CAUSAL:
        hi = gl.minimum(hi, row0 + BLOCK_M)
    n_blocks = gl.cdiv(hi, BLOCK_N)
    if row0 >= Lq:
        n_blocks = 0
    n_full = n_blocks
    if HAS_LENGTHS:
        n_full = gl.minimum(n_full, Lk // BLOCK_N)
    if CAUSAL:
        n_full = gl.minimum(n_full, (row0 + 1) // BLOCK_N)
    return n_blocks, n_full


@gluon.jit
def _walk_items(n_tiles, n_prog, T_K, BLOCK_N: gl.constexpr, SCHEDULE, SPLIT: gl.constexpr):
    """(whole tiles, items) of a program's walk: items [0, whole) are tiles pid, pid + P, ...
    of every wave; with the split on, only of the full waves, and the items after them are the
    program's pieces of the last wave's tiles, split by key blocks (_split_span)."""
    n_whole = gl.cdiv(n_tiles, n_prog)
    n_items = n_whole
    if SPLIT:
        if SCHEDULE != 0:
            n_whole = n_tiles // n_prog
            u0, u1, pieces = _split_span(gl.program_id(0), n_prog, n_tiles - n_whole * n_prog,
                                         gl.cdiv(T_K, BLOCK_N))
            n_items = n_whole + pieces
    return n_whole, n_items


@gluon.jit
def _walk_item(i, n_whole, n_tiles, pid, n_prog, cur_s, cur_start, cur_b, cur_first, cur_cnt,
               SEQ_LENS_Q, T_Q, T_K, n_m, H, B, heads, top, n_buckets, BLOCK_M: gl.constexpr,
               BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr, HAS_LENGTHS: gl.constexpr,
               BUCKET: gl.constexpr, VARLEN: gl.constexpr, SPLIT: gl.constexpr):
    """Item i of this program's walk, the same for the producer and the consumers: a whole tile
    (t = _tile(i), found by the walk's cursor) or, past n_whole with SPLIT, a piece of the split
    last wave (_split_item). Returns the cursor, (m, h, b), the piece's key blocks [j0, j1)
    (0, 0 for a whole tile), whether it is a piece, and whether it is a tile at all."""
    j0 = i * 0
    j1 = i * 0
    piece = False
    if SPLIT:
        piece = i >= n_whole
    if piece:
        m, h, b, j0, j1, _, _ = _split_item(i, n_whole, n_tiles, n_m, H, heads, T_K, BLOCK_N,
                                            BUCKET)
        valid = i >= 0
    else:
        t = _tile(i, pid, n_prog, CAUSAL)
        cur_s, cur_start, cur_b, cur_first, cur_cnt, m, h, b, valid = _tile_at(
            t, n_tiles, cur_s, cur_start, cur_b, cur_first, cur_cnt, SEQ_LENS_Q, T_Q, n_m, H, B,
            heads, top, n_buckets, BLOCK_M, CAUSAL, HAS_LENGTHS, BUCKET, VARLEN, LEVEL_BUCKET)
    return cur_s, cur_start, cur_b, cur_first, cur_cnt, m, h, b, j0, j1, piece, valid


@gluon.jit
def _split_item(i, n_whole, n_tiles, n_m, H, heads, T_K, BLOCK_N: gl.constexpr,
                BUCKET: gl.constexpr):
    """(q-block, head, batch entry, first block, end block, split tile, owner) of item
    i >= n_whole: the program's piece i - n_whole of the split last wave."""
    n_prog = gl.num_programs(0)
    n_split = n_tiles - n_whole * n_prog
    nb = gl.cdiv(T_K, BLOCK_N)
    u0, u1, pieces = _split_span(gl.program_id(0), n_prog, n_split, nb)
    r, j0, j1, owner = _split_piece(i - n_whole, u0, u1, nb)
    m, h, b = _schedule(n_whole * n_prog + r, n_m, H, heads, False, BUCKET)
    return m, h, b, j0, j1, r, owner


@gluon.jit
def _split_span(pid, n_prog, n_split, nb):
    """Program pid's share of the split last wave: key-block units [u0, u1) of the n_split tiles
    x nb blocks each, spread evenly over the programs (stream-K). Returns (u0, u1, pieces)."""
    units = n_split * nb
    u0 = pid * units // n_prog
    u1 = (pid + 1) * units // n_prog
    pieces = 0
    if u1 > u0:
        pieces = 1
        if u1 > (u0 // nb + 1) * nb:
            pieces = 2
    return u0, u1, pieces


@gluon.jit
def _split_piece(k, u0, u1, nb):
    """Piece k of a program's span [u0, u1) (at most nb units, so at most two tiles): (split
    tile r, first block, end block, whether the piece ends the tile: its owner). A span that
    crosses into the next tile gives that tile's head first: the piece a program does not
    finish is published before the one it owns, so an owner waits only on pieces that wait on
    nothing."""
    ra = u0 // nb
    r = ra
    j0 = u0 - ra * nb
    j1 = gl.minimum(u1, (ra + 1) * nb) - ra * nb
    if u1 > (ra + 1) * nb:
        if k == 0:
            r = ra + 1
            j0 = 0
            j1 = u1 - (ra + 1) * nb
    return r, j0, j1, j1 == nb


@gluon.jit
def _split_first(r, n_prog, n_split, nb):
    """The first program whose span holds a block of split tile r (the program holding unit
    x is ceil((x + 1) * P / units) - 1); the owner of r is the last, and each program between
    whose span is not empty holds one unfinished piece of r."""
    units = n_split * nb
    return ((r * nb + 1) * n_prog + units - 1) // units - 1


@gluon.jit
def _release_add(flag):
    """This thread's release-add of 1 at flag (gpu scope): its earlier stores are visible to
    a thread that acquires the count."""
    return gl.inline_asm_elementwise("red.release.gpu.global.add.s32 [$1], 1;\n\tmov.b32 $0, 0;",
                                     "=r,l", [flag], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _acquire_load(flag):
    return gl.inline_asm_elementwise("ld.acquire.gpu.global.b32 $0, [$1];", "=r,l", [flag],
                                     dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _take_tile(queue):
    """The next tile of the queue (SCHEDULE 2): one lane of the producer's warp adds 1 to the
    counter at queue and every lane gets the count before it."""
    return gl.inline_asm_elementwise(
        "{\n\t.reg .pred p;\n\t.reg .b32 l, r;\n\telect.sync l|p, 0xffffffff;\n\t"
        "@p atom.global.add.u32 r, [$1], 1;\n\tshfl.sync.idx.b32 $0, r, l, 0x1f, 0xffffffff;\n\t}",
        "=r,l", [queue], dtype=gl.int32, is_pure=False, pack=1)


# With lengths (HAS_LENGTHS), the producer alone walks the tiles and posts each one to the
# consumers in shared memory, written before the arrive that completes its Q buffer's ready
# barrier: q-block (-1: the walk has ended), head, sequence, and _sequence's five values.
ITEM_FIELDS = gl.constexpr(8)


@gluon.jit
def _post_item(slot, m, h, b, q_off, Lq, owned, k_off, Lk):
    layout: gl.constexpr = gl.BlockedLayout([ITEM_FIELDS], [32], [1], [0])
    f = gl.arange(0, ITEM_FIELDS, layout=layout)
    v = gl.where(f == 0, m, 0)
    v = gl.where(f == 1, h, v)
    v = gl.where(f == 2, b, v)
    v = gl.where(f == 3, q_off, v)
    v = gl.where(f == 4, Lq, v)
    v = gl.where(f == 5, owned, v)
    v = gl.where(f == 6, k_off, v)
    v = gl.where(f == 7, Lk, v)
    slot.store(v)
    # (whichever lanes stored the fields, their stores are ordered before the one lane's arrive
    # that publishes them)
    gl.inline_asm_elementwise("bar.warp.sync -1;\n\tmov.b32 $0, $1;", "=r,r", [m],
                              dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _field(v, f, k: gl.constexpr):
    return gl.sum(gl.where(f == k, v, 0), axis=0)


@gluon.jit
def _read_item(slot):
    """(m, h, b, q_off, Lq, owned, k_off, Lk) of a posted item: every thread loads the whole
    item (its fields are registers of known index: the selects fold away)."""
    layout: gl.constexpr = gl.BlockedLayout([ITEM_FIELDS], [32], [4], [0])
    f = gl.arange(0, ITEM_FIELDS, layout=layout)
    v = slot.load(layout)
    return (_field(v, f, 0), _field(v, f, 1), _field(v, f, 2), _field(v, f, 3),
            _field(v, f, 4), _field(v, f, 5), _field(v, f, 6), _field(v, f, 7))


@gluon.jit
def _load_kv(k_desc, v_desc, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty, it, bd, k_off,
             h_kv, j0, j1, BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr):
    """Key blocks [j0, j1) of a tile into the K/V ring from position it; returns the position."""
    for j in range(j0, j1):
        s = it % NUM_STAGES
        ph = (it // NUM_STAGES) & 1
        mbarrier.wait(k_empty.index(s), ph ^ 1)
        mbarrier.expect(k_ready.index(s), k_desc.block_type.nbytes)
        tma.async_load(k_desc, [bd, k_off + j * BLOCK_N, h_kv, 0], k_ready.index(s),
                       k_smem.index(s))
        mbarrier.wait(v_empty.index(s), ph ^ 1)
        mbarrier.expect(v_ready.index(s), v_desc.block_type.nbytes)
        tma.async_load(v_desc, [bd, k_off + j * BLOCK_N, h_kv, 0], v_ready.index(s),
                       v_smem.index(s))
        it += 1
    return it


@gluon.jit
def _start_item(q_desc, q_smem, q_ready, q_empty, item_smem, n, m, h, b, SEQ_LENS_Q,
                SEQ_LENS_K, T_Q, T_K, MAX_Q, MAX_K, B, ROWS: gl.constexpr,
                BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr, VARLEN: gl.constexpr,
                Q_BUFFERS: gl.constexpr, CONSUMERS: gl.constexpr):
    """The producer's n-th posted item, tile (m, h, b): its Q buffer once free, the item posted
    there for the consumers, its Q parts loaded. Returns (batch coordinate, first key row, key
    blocks)."""
    BLOCK_M: gl.constexpr = CONSUMERS * ROWS
    bd = b
    if VARLEN:
        bd = 0  # (the descriptors' one batch entry: the packed rows)
    row0 = m * BLOCK_M
    q_off, Lq, owned, k_off, Lk = _sequence(b, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q, MAX_K, B,
                                            True, VARLEN)
    n_blocks, n_full = _extent(row0, Lq, Lk, BLOCK_M, BLOCK_N, CAUSAL, True)
    qs = n % Q_BUFFERS
    mbarrier.wait(q_empty.index(qs), ((n // Q_BUFFERS) & 1) ^ 1)
    _post_item(item_smem.index(qs), m, h, b, q_off, Lq, owned, k_off, Lk)
    mbarrier.expect(q_ready.index(qs), CONSUMERS * q_desc.block_type.nbytes)
    for w in gl.static_range(CONSUMERS):
        tma.async_load(q_desc, [bd, q_off + row0 + w * ROWS, h, 0], q_ready.index(qs),
                       q_smem.index(CONSUMERS * qs + w))
    return bd, k_off, n_blocks


@gluon.jit
def _producer_posts(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready,
                    k_empty, v_ready, v_empty, item_smem, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K,
                    MAX_Q, MAX_K, H, B, kv_group, FLAGS, ROWS: gl.constexpr,
                    BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr,
                    BUCKET: gl.constexpr, VARLEN: gl.constexpr, Q_BUFFERS: gl.constexpr,
                    CONSUMERS: gl.constexpr, SCHEDULE):
    """The producer with lengths: it alone walks the tiles, posting each to the consumers
    (_start_item), then queues its K/V blocks. SCHEDULE 2: each tile taken from the queue at
    FLAGS[0] (the schedule's order, to whichever program asks first); otherwise the static
    walk. A last item of q-block -1 ends the consumers' walk."""
    BLOCK_M: gl.constexpr = CONSUMERS * ROWS
    pid = gl.program_id(0)
    n_prog = gl.num_programs(0)
    n_m = gl.cdiv(T_Q, BLOCK_M)
    heads = H * B
    top, n_buckets = _levels(MAX_Q, T_Q, B, BLOCK_M, LEVEL_BUCKET, VARLEN, CAUSAL)
    n_tiles, cur_s, cur_start, cur_b, cur_first, cur_cnt = _walk_start(
        SEQ_LENS_Q, T_Q, n_m, H, B, top, n_buckets, BLOCK_M, VARLEN, LEVEL_BUCKET)
    it = 0  # K/V blocks queued so far (ring position and phase)
    n = 0  # items posted so far (Q buffer and phase)
    if SCHEDULE == 2:
        t = _take_tile(FLAGS)
        cur_s, cur_start, cur_b, cur_first, cur_cnt, m, h, b, valid = _tile_at(
            t, n_tiles, cur_s, cur_start, cur_b, cur_first, cur_cnt, SEQ_LENS_Q, T_Q, n_m, H, B,
            heads, top, n_buckets, BLOCK_M, CAUSAL, True, BUCKET, VARLEN, LEVEL_BUCKET)
        while valid:
            bd, k_off, n_blocks = _start_item(q_desc, q_smem, q_ready, q_empty, item_smem, n, m,
                                              h, b, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q,
                                              MAX_K, B, ROWS, BLOCK_N, CAUSAL, VARLEN,
                                              Q_BUFFERS, CONSUMERS)
            h_kv = h // kv_group
            # The tile's first blocks, then the next tile taken while the ring is full (the
            # atomic's round trip hides under the waits for a free slot), then the rest.
            first = gl.minimum(n_blocks, NUM_STAGES)
            it = _load_kv(k_desc, v_desc, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty, it,
                          bd, k_off, h_kv, 0, first, BLOCK_N, NUM_STAGES)
            t = _take_tile(FLAGS)
            cur_s, cur_start, cur_b, cur_first, cur_cnt, m, h, b, valid = _tile_at(
                t, n_tiles, cur_s, cur_start, cur_b, cur_first, cur_cnt, SEQ_LENS_Q, T_Q, n_m,
                H, B, heads, top, n_buckets, BLOCK_M, CAUSAL, True, BUCKET, VARLEN,
                LEVEL_BUCKET)
            it = _load_kv(k_desc, v_desc, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty, it,
                          bd, k_off, h_kv, first, n_blocks, BLOCK_N, NUM_STAGES)
            n += 1
    else:
        n_items = gl.cdiv(n_tiles, n_prog)
        # only the last waves can have no tile
        for i in range(n_items):
            t = _tile(i, pid, n_prog, CAUSAL)
            cur_s, cur_start, cur_b, cur_first, cur_cnt, m, h, b, valid = _tile_at(
                t, n_tiles, cur_s, cur_start, cur_b, cur_first, cur_cnt, SEQ_LENS_Q, T_Q, n_m,
                H, B, heads, top, n_buckets, BLOCK_M, CAUSAL, True, BUCKET, VARLEN,
                LEVEL_BUCKET)
            if valid:
                bd, k_off, n_blocks = _start_item(q_desc, q_smem, q_ready, q_empty, item_smem,
                                                  n, m, h, b, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K,
                                                  MAX_Q, MAX_K, B, ROWS, BLOCK_N, CAUSAL,
                                                  VARLEN, Q_BUFFERS, CONSUMERS)
                it = _load_kv(k_desc, v_desc, k_smem, v_smem, k_ready, k_empty, v_ready,
                              v_empty, it, bd, k_off, h // kv_group, 0, n_blocks, BLOCK_N,
                              NUM_STAGES)
                n += 1
    # The end of the walk: an item of q-block -1, its ready barrier completed by a plain arrive
    # (no Q).
    qs = n % Q_BUFFERS
    mbarrier.wait(q_empty.index(qs), ((n // Q_BUFFERS) & 1) ^ 1)
    _post_item(item_smem.index(qs), -1, 0, 0, 0, 0, 0, 0, 0)
    mbarrier.arrive(q_ready.index(qs), count=1)


@gluon.jit
def _producer(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty,
              v_ready, v_empty, item_smem, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q, MAX_K, H, B,
              kv_group, FLAGS, ROWS: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
              NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr, HAS_LENGTHS: gl.constexpr,
              BUCKET: gl.constexpr, VARLEN: gl.constexpr, Q_BUFFERS: gl.constexpr,
              CONSUMERS: gl.constexpr, SCHEDULE, SPLIT: gl.constexpr):
    if HAS_LENGTHS:
        _producer_posts(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty,
                        k_ready, k_empty, v_ready, v_empty, item_smem, SEQ_LENS_Q, SEQ_LENS_K,
                        T_Q, T_K, MAX_Q, MAX_K, H, B, kv_group, FLAGS, ROWS, BLOCK_N, NUM_STAGES,
                        CAUSAL, BUCKET, VARLEN, Q_BUFFERS, CONSUMERS, SCHEDULE)
    else:
        BLOCK_M: gl.constexpr = CONSUMERS * ROWS
        pid = gl.program_id(0)
        n_prog = gl.num_programs(0)
        n_m = gl.cdiv(T_Q, BLOCK_M)
        heads = H * B
        top, n_buckets = _levels(MAX_Q, T_Q, B, BLOCK_M, LEVEL_BUCKET, VARLEN, CAUSAL)
        n_tiles, cur_s, cur_start, cur_b, cur_first, cur_cnt = _walk_start(
            SEQ_LENS_Q, T_Q, n_m, H, B, top, n_buckets, BLOCK_M, VARLEN, LEVEL_BUCKET)
        it = 0  # K/V blocks queued so far (ring position and phase)
        n_whole, n_items = _walk_items(n_tiles, n_prog, T_K, BLOCK_N, SCHEDULE, SPLIT)
        # i: items taken so far (Q buffer and phase); only the last waves can have no tile
        for i in range(n_items):
            cur_s, cur_start, cur_b, cur_first, cur_cnt, m, h, b, j0, j1, piece, valid = _walk_item(
                i, n_whole, n_tiles, pid, n_prog, cur_s, cur_start, cur_b, cur_first, cur_cnt,
                SEQ_LENS_Q, T_Q, T_K, n_m, H, B, heads, top, n_buckets, BLOCK_M, BLOCK_N, CAUSAL,
                HAS_LENGTHS, BUCKET, VARLEN, SPLIT)
            if valid:
                bd = b
                if VARLEN:
                    bd = 0  # (the descriptors' one batch entry: the packed rows)
                row0 = m * BLOCK_M
                q_off, Lq, owned, k_off, Lk = _sequence(b, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q,
                                                        MAX_K, B, HAS_LENGTHS,
                                                 VARLEN)
                n_blocks, n_full = _extent(row0, Lq, Lk, BLOCK_M, BLOCK_N, CAUSAL, HAS_LENGTHS)
                if piece:
                    n_blocks = j1
                qs = i % Q_BUFFERS
                mbarrier.wait(q_empty.index(qs), ((i // Q_BUFFERS) & 1) ^ 1)
                mbarrier.expect(q_ready.index(qs), CONSUMERS * q_desc.block_type.nbytes)
                for w in gl.static_range(CONSUMERS):
                    tma.async_load(q_desc, [bd, q_off + row0 + w * ROWS, h, 0], q_ready.index(qs),
                                   q_smem.index(CONSUMERS * qs + w))
                it = _load_kv(k_desc, v_desc, k_smem, v_smem, k_ready, k_empty, v_ready,
                              v_empty, it, bd, k_off, h // kv_group, j0, n_blocks, BLOCK_N,
                              NUM_STAGES)


@gluon.jit
def _bias_cols(mod_row, key_start, T_K, bias_half, s_layout: gl.constexpr,
               BLOCK_N: gl.constexpr, HAS_MOD: gl.constexpr):
    """Half the additive term of keys [key_start, key_start + BLOCK_N): bias_half, plus half the
    score_mod row's entries with HAS_MOD (contiguous along keys: a vector along the score tile's
    columns, the pairs of columns a thread holds in one 8-byte load; keys past T_K read
    nothing: their K and V rows are the descriptors' zero fill). Issued right after a block's
    QK^T wgmma, so the loads fly under it."""
    if HAS_MOD:
        keys = key_start + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        if key_start + BLOCK_N <= T_K:
            m = gl.load(mod_row + keys)
        else:
            m = gl.load(mod_row + keys, mask=keys < T_K, other=0.0)
        return bias_half + 0.5 * m
    else:
        return bias_half


@gluon.jit
def _probabilities(s, qk_scale_half, bias_cols, row_start, key_start, Lk,
                   p_layout: gl.constexpr, dtype: gl.constexpr, MASKED: gl.constexpr,
                   CAUSAL: gl.constexpr, HAS_MOD: gl.constexpr, PIN_P: gl.constexpr):
    # sigmoid(x) = 0.5 * tanh(0.5 * x) + 0.5 with x = s*scale + bias (+ score_mod's column);
    # masked scores -> -inf.
    if HAS_MOD:
        x = s * qk_scale_half + gl.expand_dims(bias_cols, 0)
    else:
        x = s * qk_scale_half + bias_cols
    if MASKED:
        s_layout: gl.constexpr = s.type.layout
        keys = key_start + gl.arange(0, s.shape[1], layout=gl.SliceLayout(0, s_layout))
        keys2 = gl.expand_dims(keys, 0)
        keep = keys2 < Lk
        if CAUSAL:
            rows = row_start + gl.arange(0, s.shape[0], layout=gl.SliceLayout(1, s_layout))
            keep = keep & (keys2 <= gl.expand_dims(rows, 1))
        x = gl.where(keep, x, float("-inf"))
    t = _tanh_approx(x)
    p = t * 0.5 + 0.5
    p = gl.convert_layout(p.to(dtype), p_layout)
    if PIN_P:
        # An opaque copy of the packed pairs keeps their register permutes here, under the
        # sigmoid: without it, in two of the three dense hd64 consumers, the compiler moved them
        # into the key loop's head, between the V wait and the P·V wgmma (32 PRMT per block).
        p = gl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [p], dtype=p.dtype,
                                      is_pure=True, pack=2)
    return p


@gluon.jit
def _scores(q, kt, s_zero, SCORE_DIM: gl.constexpr):
    """S = Q·Kᵀ issued asynchronously over the first SCORE_DIM columns (0: all) of q ([rows,
    HEAD_DIM] in shared memory) and kt ([HEAD_DIM, keys], a K slot's transposed view; the
    backward's K·Qᵀ and V·dOᵀ the same way). One wgmma over all columns, or, for a head dim
    short of the power of two the descriptors' boxes span (TMA fills the columns past it with
    zeros), wgmma over power-of-two column ranges chained on one accumulator: 80 = 64 + 16,
    96 = 64 + 32, 112 = 64 + 32 + 16, 160 = 128 + 32, 192 = 128 + 64. The ranges split the
    product's K, so each wgmma keeps its full N and the zero columns cost no tensor-core time;
    they are views of the same shared buffers (register tensors stay power-of-two shaped)."""
    HEAD_DIM: gl.constexpr = q.shape[1]
    gl.static_assert((SCORE_DIM == 0) | (SCORE_DIM % 16 == 0) & (SCORE_DIM <= HEAD_DIM)
                     & (2 * SCORE_DIM > HEAD_DIM),
                     "SCORE_DIM: 0 (HEAD_DIM), or a multiple of 16 in (HEAD_DIM / 2, HEAD_DIM]")
    if (SCORE_DIM == 0) | (SCORE_DIM == HEAD_DIM):
        s = warpgroup_mma(q, kt, s_zero, use_acc=False, is_async=True)
    else:
        HALF: gl.constexpr = HEAD_DIM // 2
        REST: gl.constexpr = SCORE_DIM - HALF
        C64: gl.constexpr = HALF + (REST & 64)
        C32: gl.constexpr = C64 + (REST & 32)
        s = warpgroup_mma(q.slice(0, HALF, dim=1), kt.slice(0, HALF, dim=0), s_zero,
                          use_acc=False, is_async=True)
        if (REST & 64) != 0:
            s = warpgroup_mma(q.slice(HALF, 64, dim=1), kt.slice(HALF, 64, dim=0), s,
                              is_async=True)
        if (REST & 32) != 0:
            s = warpgroup_mma(q.slice(C64, 32, dim=1), kt.slice(C64, 32, dim=0), s,
                              is_async=True)
        if (REST & 16) != 0:
            s = warpgroup_mma(q.slice(C32, 16, dim=1), kt.slice(C32, 16, dim=0), s,
                              is_async=True)
    return s


@gluon.jit
def _step(q, p, o, it, j, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty, qk_scale_half,
          bias_half, row_start, Lk, s_zero, mod_row, T_K, p_layout: gl.constexpr,
          BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, SCORE_DIM: gl.constexpr,
          NUM_STAGES: gl.constexpr, MASKED: gl.constexpr, CAUSAL: gl.constexpr,
          HAS_MOD: gl.constexpr, PIN_P: gl.constexpr, ZERO_K: gl.constexpr = False):
    """Block j (ring position it): S_j = Q·K_jᵀ and O += P_{j-1}·V_{j-1} in flight together,
    P_j computed while the P·V wgmma runs. Returns (O, P_j). ZERO_K: the block holds Lk (not
    causal): its K rows past Lk are zeroed before Q·K_jᵀ (_zero_keys_past)."""
    dtype: gl.constexpr = p.dtype
    sk = it % NUM_STAGES
    pk = (it // NUM_STAGES) & 1
    sv = (it - 1) % NUM_STAGES
    pv = ((it - 1) // NUM_STAGES) & 1
    mbarrier.wait(k_ready.index(sk), pk)
    if ZERO_K:
        _zero_keys_past(k_smem.index(sk), Lk - j * BLOCK_N, BLOCK_N, HEAD_DIM)
    kj = k_smem.index(sk).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0))
    s = _scores(q, kj, s_zero, SCORE_DIM)
    bias_cols = _bias_cols(mod_row, j * BLOCK_N, T_K, bias_half, s_zero.type.layout,
                           BLOCK_N, HAS_MOD)
    mbarrier.wait(v_ready.index(sv), pv)
    vj = v_smem.index(sv).reshape([BLOCK_N, HEAD_DIM])
    o = warpgroup_mma(p, vj, o, is_async=True)
    # wgmma groups retire in order: at most one outstanding means S_j is done.
    s = warpgroup_mma_wait(1, deps=(s, ))
    mbarrier.arrive(k_empty.index(sk), count=1)
    p_next = _probabilities(s, qk_scale_half, bias_cols, row_start, j * BLOCK_N, Lk, p_layout,
                            dtype, MASKED, CAUSAL, HAS_MOD, PIN_P)
    o, p = warpgroup_mma_wait(0, deps=(o, p))
    mbarrier.arrive(v_empty.index(sv), count=1)
    return o, p_next


@gluon.jit
def _store_layout(HEAD_DIM: gl.constexpr):
    """A warpgroup's layout for masked global stores: rows of 16-byte segments (8 consecutive
    columns per thread, a row per HEAD_DIM // 8 threads), its 4 warps along the rows."""
    gl.static_assert(HEAD_DIM // 8 <= 32)
    return gl.BlockedLayout([1, 8], [32 // (HEAD_DIM // 8), HEAD_DIM // 8], [4, 1], [1, 0])


@gluon.jit
def _zero_rows_from(buf, first, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                    CHUNK: gl.constexpr):
    """Rows [first, BLOCK_N) of a [BLOCK_N, HEAD_DIM] shared buffer set to zero by this
    warpgroup, CHUNK rows at a time: chunks wholly past first by stores alone, the chunk that
    holds first by a load and a select (so NaN there goes too); CHUNK x HEAD_DIM / 128 values
    per thread in flight."""
    layout: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, 8], threads_per_warp=[2, 16],
                                            warps_per_cta=[4, 1], order=[1, 0])
    for c in gl.static_range(BLOCK_N // CHUNK):
        if (c + 1) * CHUNK > first:
            part = buf.slice(c * CHUNK, CHUNK)
            if c * CHUNK >= first:  # (the whole chunk: stores alone)
                part.store(gl.zeros([CHUNK, HEAD_DIM], buf.dtype, layout))
            else:
                x = part.load(layout)
                rows = c * CHUNK + gl.arange(0, CHUNK, layout=gl.SliceLayout(1, layout))
                x = gl.where(gl.expand_dims(rows >= first, 1), gl.zeros_like(x), x)
                part.store(x)


@gluon.jit
def _zero_keys_past(k_buf, first, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr):
    """K rows [first, BLOCK_N) of the block holding Lk set to zero by this warpgroup before
    its Q·Kᵀ (non-causal calls with lengths). With them and V's rows past Lk zero (before the
    block's P·V), the keys past Lk add exactly nothing: their scores are 0, P = sigmoid(bias)
    is finite, and P·0 = 0, so the block needs no per-element mask (a select per score and
    the key indices of the wgmma layout: ~190 more instructions a thread than a full block).
    Both warpgroups write the same zeros; the producer refills the slot only after both have
    released it."""
    if first < BLOCK_N:
        _zero_rows_from(k_buf.reshape([BLOCK_N, HEAD_DIM]), first, BLOCK_N, HEAD_DIM, 16)
        fence_async_shared()
        gl.barrier()


@gluon.jit
def _attend_blocks(q, o, it, j0, n_loop, n_blocks, n_full, k_smem, v_smem, k_ready, k_empty,
                   v_ready, v_empty, qk_scale_half, bias_half, row_start, Lk, mod_row, T_K,
                   s_layout: gl.constexpr, p_layout: gl.constexpr, dtype: gl.constexpr,
                   ROWS: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                   SCORE_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, MASKABLE: gl.constexpr,
                   CAUSAL: gl.constexpr, HAS_LENGTHS: gl.constexpr, HAS_MOD: gl.constexpr,
                   PIN_P: gl.constexpr, HALF_LAST: gl.constexpr, s_half_layout: gl.constexpr):
    """O over key blocks [j0, n_loop) (n_loop > j0) at full width, then with HALF_LAST and
    n_loop < n_blocks the last block (n_loop = n_blocks - 1) at half width (_half_tail);
    returns (O, it)."""
    KEYS_ZEROED: gl.constexpr = HAS_LENGTHS and not CAUSAL
    s_zero = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
    # Prologue: P_0.
    sk = it % NUM_STAGES
    mbarrier.wait(k_ready.index(sk), (it // NUM_STAGES) & 1)
    if KEYS_ZEROED:
        if n_full == 0:  # (the first block holds Lk)
            _zero_keys_past(k_smem.index(sk), Lk, BLOCK_N, HEAD_DIM)
    k0 = k_smem.index(sk).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0))
    s = _scores(q, k0, s_zero, SCORE_DIM)
    key0 = j0 * BLOCK_N
    bias_cols = _bias_cols(mod_row, key0, T_K, bias_half, s_layout, BLOCK_N, HAS_MOD)
    s = warpgroup_mma_wait(0, deps=(s, ))
    mbarrier.arrive(k_empty.index(sk), count=1)
    if KEYS_ZEROED:
        p = _probabilities(s, qk_scale_half, bias_cols, row_start, key0, Lk, p_layout, dtype,
                           False, CAUSAL, HAS_MOD, PIN_P)
    elif MASKABLE:
        if n_full > 0:
            p = _probabilities(s, qk_scale_half, bias_cols, row_start, key0, Lk, p_layout, dtype,
                               False, CAUSAL, HAS_MOD, PIN_P)
        else:
            p = _probabilities(s, qk_scale_half, bias_cols, row_start, key0, Lk, p_layout, dtype,
                               True, CAUSAL, HAS_MOD, PIN_P)
    else:
        p = _probabilities(s, qk_scale_half, bias_cols, row_start, key0, Lk, p_layout, dtype,
                           False, CAUSAL, HAS_MOD, PIN_P)
    it += 1
    # Unmasked blocks: no select in this loop.
    # (with a half-width last block, n_full == n_loop: the blocks before it are whole)
    for j in range(j0 + 1, n_full):
        o, p = _step(q, p, o, it, j, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty,
                     qk_scale_half, bias_half, row_start, Lk, s_zero, mod_row, T_K, p_layout,
                     BLOCK_N, HEAD_DIM, SCORE_DIM, NUM_STAGES, False, CAUSAL, HAS_MOD, PIN_P)
        it += 1
    if MASKABLE:
        # The diagonal block and the block holding Lk.
        for j in range(gl.maximum(n_full, 1), n_loop):
            o, p = _step(q, p, o, it, j, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty,
                         qk_scale_half, bias_half, row_start, Lk, s_zero, mod_row, T_K, p_layout,
                         BLOCK_N, HEAD_DIM, SCORE_DIM, NUM_STAGES, not KEYS_ZEROED, CAUSAL, HAS_MOD,
                         PIN_P, KEYS_ZEROED)
            it += 1
    if HALF_LAST:
        if n_loop < n_blocks:
            o, it = _half_tail(q, p, o, it, n_loop, k_smem, v_smem, k_ready, k_empty, v_ready,
                               v_empty, qk_scale_half, bias_half, row_start, Lk, p_layout,
                               s_half_layout, dtype, BLOCK_N, HEAD_DIM, SCORE_DIM, NUM_STAGES,
                               CAUSAL, PIN_P)
        else:
            o = _last_pv(p, o, it, n_loop, v_smem, v_ready, v_empty, Lk, BLOCK_N, HEAD_DIM,
                         NUM_STAGES, HAS_LENGTHS)
    else:
        o = _last_pv(p, o, it, n_loop, v_smem, v_ready, v_empty, Lk, BLOCK_N, HEAD_DIM,
                     NUM_STAGES, HAS_LENGTHS)
    return o, it


@gluon.jit
def _last_pv(p, o, it, n_blocks, v_smem, v_ready, v_empty, Lk, BLOCK_N: gl.constexpr,
             HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, HAS_LENGTHS: gl.constexpr):
    """The last block's P·V (ring position it - 1, key block n_blocks - 1); returns O."""
    sv = (it - 1) % NUM_STAGES
    mbarrier.wait(v_ready.index(sv), ((it - 1) // NUM_STAGES) & 1)
    vj = v_smem.index(sv).reshape([BLOCK_N, HEAD_DIM])
    if HAS_LENGTHS:
        # The block holding Lk is the last one. Its V rows past Lk are memory past the
        # sequence (padding up to T_K, or in a packed batch the next sequence's keys and the
        # tail), which may hold NaN: causal tiles have P = 0 there, but 0 * NaN is NaN in the
        # wgmma; the others have P = sigmoid(bias) there (their K rows are zeroed instead of
        # masking the scores), which zero V rows cancel. Each consumer zeroes them before its
        # P·V (both write zeros, so the other's reads see zeros either way; the producer
        # refills the slot only after both have released it).
        first = Lk - (n_blocks - 1) * BLOCK_N
        if first < BLOCK_N:
            _zero_rows_from(vj, first, BLOCK_N, HEAD_DIM, 16)
            fence_async_shared()
            gl.barrier()
    o = warpgroup_mma(p, vj, o, is_async=True)
    o, p = warpgroup_mma_wait(0, deps=(o, p))
    mbarrier.arrive(v_empty.index(sv), count=1)
    return o


@gluon.jit
def _half_keys(buf, first, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr):
    """The first BLOCK_N // 2 rows of a K or V slot, rows [first, BLOCK_N // 2) set to zero
    by this warpgroup (first <= BLOCK_N // 2: the keys past Lk of a half-width block)."""
    HALF: gl.constexpr = BLOCK_N // 2
    half = buf.reshape([BLOCK_N, HEAD_DIM]).slice(0, HALF)
    if first < HALF:
        _zero_rows_from(half, first, HALF, HEAD_DIM, 16)
        fence_async_shared()
        gl.barrier()
    return half


@gluon.jit
def _half_tail(q, p, o, it, j, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty, qk_scale_half,
               bias_half, row_start, Lk, p_layout: gl.constexpr, s_half_layout: gl.constexpr,
               dtype: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
               SCORE_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr,
               PIN_P: gl.constexpr):
    """The last key block j (ring position it) when it holds at most BLOCK_N // 2 keys (with
    lengths, not causal): S over its first half only (K rows past Lk there zeroed), issued with
    the previous block's P·V as _step does, then its P·V over the same half of V (rows past Lk
    zeroed): half the wgmma and half the sigmoids of a full block. Returns (O, it)."""
    HALF: gl.constexpr = BLOCK_N // 2
    sk = it % NUM_STAGES
    pk = (it // NUM_STAGES) & 1
    sv = (it - 1) % NUM_STAGES
    pv = ((it - 1) // NUM_STAGES) & 1
    first = Lk - j * BLOCK_N
    mbarrier.wait(k_ready.index(sk), pk)
    kh = _half_keys(k_smem.index(sk), first, BLOCK_N, HEAD_DIM).permute((1, 0))
    s_zero = gl.zeros([q.shape[0], HALF], gl.float32, s_half_layout)
    s = _scores(q, kh, s_zero, SCORE_DIM)
    mbarrier.wait(v_ready.index(sv), pv)
    vj = v_smem.index(sv).reshape([BLOCK_N, HEAD_DIM])
    o = warpgroup_mma(p, vj, o, is_async=True)
    s = warpgroup_mma_wait(1, deps=(s, ))
    mbarrier.arrive(k_empty.index(sk), count=1)
    ph = _probabilities(s, qk_scale_half, bias_half, row_start, j * BLOCK_N, Lk, p_layout,
                        dtype, False, CAUSAL, False, PIN_P)
    o, p = warpgroup_mma_wait(0, deps=(o, p))
    mbarrier.arrive(v_empty.index(sv), count=1)
    mbarrier.wait(v_ready.index(sk), pk)
    vh = _half_keys(v_smem.index(sk), first, BLOCK_N, HEAD_DIM)
    o = warpgroup_mma(ph, vh, o, is_async=True)
    o, ph = warpgroup_mma_wait(0, deps=(o, ph))
    mbarrier.arrive(v_empty.index(sk), count=1)
    return o, it + 1


@gluon.jit
def _attend_tile(q, o, it, j0, n_blocks, n_full, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty,
                 qk_scale_half, bias_half, row_start, Lk, mod_row, T_K, s_layout: gl.constexpr,
                 p_layout: gl.constexpr, dtype: gl.constexpr, ROWS: gl.constexpr,
                 BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, SCORE_DIM: gl.constexpr,
                 NUM_STAGES: gl.constexpr, MASKABLE: gl.constexpr, CAUSAL: gl.constexpr,
                 HAS_LENGTHS: gl.constexpr, HAS_MOD: gl.constexpr, PIN_P: gl.constexpr,
                 HALF_LAST: gl.constexpr = False, s_half_layout: gl.constexpr = None):
    """O over key blocks [j0, n_blocks) (n_blocks > j0) from ring position it; returns (O, it).
    j0 > 0 only for a split tile's piece (dense, not causal: no masked block).
    With lengths and not causal, the block holding Lk runs unmasked over zeroed K and V rows
    (_zero_keys_past); causal tiles mask their diagonal blocks per score. HALF_LAST (with
    lengths, not causal, from j0 = 0): a tile's last block of two or more holding at most
    BLOCK_N // 2 keys (a ragged end) runs at half width (_half_tail: S in s_half_layout)."""
    n_loop = n_blocks
    if HALF_LAST:
        # (a tile of one key block keeps it whole: for short cells the second path's code cost
        # more than the half block saves)
        if (Lk - (n_blocks - 1) * BLOCK_N <= BLOCK_N // 2) & (n_blocks > 1):
            n_loop = n_blocks - 1
    o, it = _attend_blocks(q, o, it, j0, n_loop, n_blocks, n_full, k_smem, v_smem, k_ready, k_empty,
                           v_ready, v_empty, qk_scale_half, bias_half, row_start, Lk, mod_row, T_K,
                           s_layout, p_layout, dtype, ROWS, BLOCK_N, HEAD_DIM, SCORE_DIM,
                           NUM_STAGES, MASKABLE, CAUSAL, HAS_LENGTHS, HAS_MOD, PIN_P, HALF_LAST,
                           s_half_layout)
    return o, it


@gluon.jit
def _slot(WS, src, o_layout: gl.constexpr, WG: gl.constexpr, ROWS: gl.constexpr,
          HEAD_DIM: gl.constexpr, CONSUMERS: gl.constexpr):
    """Pointers to warpgroup WG's rows of program src's fp32 slot in WS ([P, BLOCK_M,
    HEAD_DIM]), in the accumulator's layout."""
    rows = gl.arange(0, ROWS, layout=gl.SliceLayout(1, o_layout))
    cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    base = WS + (src * (CONSUMERS * ROWS) + WG * ROWS).to(gl.int64) * HEAD_DIM
    return base + (gl.expand_dims(rows, 1) * HEAD_DIM + gl.expand_dims(cols, 0))


@gluon.jit
def _join_piece(o, WS, FLAGS, r, owner, n_split, nb, o_layout: gl.constexpr,
                WG: gl.constexpr, ROWS: gl.constexpr, HEAD_DIM: gl.constexpr,
                CONSUMERS: gl.constexpr):
    """A piece that does not end its split tile: its partial O into this program's slot of WS,
    then counted in FLAGS[r * CONSUMERS + WG] (each thread's release-add follows its own
    stores)."""
    if not owner:
        gl.store(_slot(WS, gl.program_id(0), o_layout, WG, ROWS, HEAD_DIM, CONSUMERS), o)
        _release_add(FLAGS + r * CONSUMERS + WG)


@gluon.jit
def _add_pieces(o, WS, FLAGS, r, n_split, nb, o_layout: gl.constexpr, WG: gl.constexpr,
                ROWS: gl.constexpr, HEAD_DIM: gl.constexpr, CONSUMERS: gl.constexpr):
    """The owner of split tile r: waits until every program before it that holds a piece of r
    has counted its warpgroup's 128 threads, then adds their partials in program order (the
    same order on every run: a reproducible sum). Sigmoid attention joins pieces by a plain
    sum: no row maximum or normalizer to rescale."""
    n_prog = gl.num_programs(0)
    units = n_split * nb
    first = _split_first(r, n_prog, n_split, nb)
    # (with fewer units than programs some spans are empty: those programs hold nothing)
    n_src = 0
    for src in range(first, gl.program_id(0)):
        n_src += ((src + 1) * units // n_prog > src * units // n_prog).to(gl.int32)
    if n_src > 0:
        flag = FLAGS + r * CONSUMERS + WG
        seen = _acquire_load(flag)
        while seen < n_src * 128:
            seen = _acquire_load(flag)
        for src in range(first, gl.program_id(0)):
            if (src + 1) * units // n_prog > src * units // n_prog:
                o += gl.load(_slot(WS, src, o_layout, WG, ROWS, HEAD_DIM, CONSUMERS),
                             cache_modifier=".cg")
    return o


@gluon.jit
def _store_tile(o, o_buf, o_desc, O, stride_ot, D, bd, q_off, row_start, owned, h, whole, qs,
                q_empty, st_layout: gl.constexpr, ROWS: gl.constexpr, HEAD_DIM: gl.constexpr,
                VARLEN: gl.constexpr, Q_BUFFERS: gl.constexpr):
    """A consumer's rows of a tile out: by TMA where whole, else (packed) by a masked store of
    the rows below `owned`; with one Q buffer, that buffer (o_buf) released after."""
    dtype: gl.constexpr = o_desc.dtype
    if whole:
        # Epilogue: the previous tile's store has finished reading o_buf before it is
        # rewritten.
        tma.store_wait(0)
        o_buf.reshape([ROWS, HEAD_DIM]).store(o.to(dtype))
        fence_async_shared()
        tma.async_store(o_desc, [bd, q_off + row_start, h, 0], o_buf)
    elif VARLEN:
        if row_start < owned:
            # The sequence ends inside these rows and the next one's begin there, which
            # another tile writes: a TMA box cannot stop at the end, so a masked store,
            # through shared memory into 16-byte row segments (the wgmma layout's own
            # rows would store 4 bytes per thread into half-used sectors: with short
            # cells, where most tiles end a sequence, that store outweighed the tile).
            tma.store_wait(0)
            o_tile = o_buf.reshape([ROWS, HEAD_DIM])
            o_tile.store(o.to(dtype))
            o_st = o_tile.load(st_layout)
            rows_s = row_start + gl.arange(0, ROWS, layout=gl.SliceLayout(1, st_layout))
            cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, st_layout))
            rows_g = (q_off + rows_s).to(gl.int64) * stride_ot
            ptrs = O + gl.expand_dims(rows_g, 1) + gl.expand_dims(h * D + cols, 0)
            keep = gl.expand_dims(rows_s < owned, 1) & gl.expand_dims(cols < D, 0)
            gl.store(ptrs, o_st, mask=keep)
    if Q_BUFFERS == 1:
        # o_buf is this warpgroup's Q buffer: released once the store has read it (and
        # every thread's reads of a masked store are done)
        tma.store_wait(0)
        gl.barrier()
        mbarrier.arrive(q_empty.index(qs), count=1)


@gluon.jit
def _consume_tile(o_desc, q_smem, k_smem, v_smem, o_buf, q_ready, q_empty, k_ready, k_empty,
                  v_ready, v_empty, O, stride_ot, D, T_K, H, B, qk_scale_half, bias_half, BIAS,
                  SCORE_MOD, stride_smb, BIAS_MODE, i, it, m, h, b, q_off, Lq, owned, k_off, Lk,
                  s_layout: gl.constexpr, s_half_layout: gl.constexpr, o_layout: gl.constexpr,
                  p_layout: gl.constexpr, st_layout: gl.constexpr, WG: gl.constexpr,
                  ROWS: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                  SCORE_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr,
                  HAS_LENGTHS: gl.constexpr, BUCKET: gl.constexpr, VARLEN: gl.constexpr,
                  HAS_MOD: gl.constexpr, Q_BUFFERS: gl.constexpr, CONSUMERS: gl.constexpr):
    """Item i of a consumer's walk with lengths, as the producer posted it (its Q buffer
    ready): tile (m, h, b) of sequence (q_off, Lq, owned, k_off, Lk). Returns the ring
    position."""
    dtype: gl.constexpr = o_desc.dtype
    MASKABLE: gl.constexpr = CAUSAL or HAS_LENGTHS
    # (_probabilities: taking the tiles from shared memory, the compiler moved P's register
    # permutes into the key loop's head, between the V wait and the P·V wgmma: 32 PRMT a block
    # at hd128 and hd64, as in the dense hd64 consumers; pinned there)
    PIN_P: gl.constexpr = True
    # A ragged end's last key block at half width where the keys past Lk are zeroed, not
    # masked (not causal) and a half block is a whole wgmma shape (64 keys).
    HALF_LAST: gl.constexpr = HAS_LENGTHS and not CAUSAL and BLOCK_N == 128
    BLOCK_M: gl.constexpr = CONSUMERS * ROWS
    row0 = m * BLOCK_M
    row_start = row0 + WG * ROWS
    n_blocks, n_full = _extent(row0, Lq, Lk, BLOCK_M, BLOCK_N, CAUSAL, HAS_LENGTHS)
    # (variants.BIAS_MODES: 0 the default -log(valid keys), 1 bias_value, 2 BIAS[b])
    bias_t = bias_half
    if HAS_LENGTHS:
        if BIAS_MODE == 0:
            bias_t = -0.5 * gl.log(gl.maximum(Lk, 1).to(gl.float32))
    if BIAS_MODE == 2:
        if b < B:  # (b == B: a packed batch's tail, no sequence, no keys)
            bias_t = 0.5 * gl.load(BIAS + b)
    mod_row = SCORE_MOD
    if HAS_MOD:
        mod_row = SCORE_MOD + b.to(gl.int64) * stride_smb
    qs = i % Q_BUFFERS
    q = q_smem.index(CONSUMERS * qs + WG).reshape([ROWS, HEAD_DIM])
    o = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
    if n_blocks > 0:
        o, it = _attend_tile(q, o, it, i * 0, n_blocks, n_full, k_smem, v_smem, k_ready, k_empty,
                             v_ready, v_empty, qk_scale_half, bias_t, row_start, Lk, mod_row, T_K,
                             s_layout, p_layout, dtype, ROWS, BLOCK_N, HEAD_DIM, SCORE_DIM,
                             NUM_STAGES, MASKABLE, CAUSAL, HAS_LENGTHS, HAS_MOD, PIN_P, HALF_LAST,
                             s_half_layout)
    if Q_BUFFERS == 2:
        # Every wgmma that read this Q buffer has completed.
        mbarrier.arrive(q_empty.index(qs), count=1)
    if HAS_LENGTHS:
        rows = row_start + gl.arange(0, ROWS, layout=gl.SliceLayout(1, o_layout))
        o = gl.where(gl.expand_dims(rows < Lq, 1), o, 0.0)
    # Whole row blocks by TMA; a packed tile in which a sequence ends otherwise.
    whole = True
    bd = b
    if VARLEN:
        whole = row_start + ROWS <= owned
        bd = 0  # (the descriptors' one batch entry: the packed rows)
    _store_tile(o, o_buf, o_desc, O, stride_ot, D, bd, q_off, row_start, owned, h, whole, qs,
                q_empty, st_layout, ROWS, HEAD_DIM, VARLEN, Q_BUFFERS)
    return it


@gluon.jit
def _consumer_takes(o_desc, q_smem, k_smem, v_smem, o_smem, q_ready, q_empty, k_ready, k_empty,
                    v_ready, v_empty, item_smem, O, stride_ot, D, T_K, H, B, qk_scale_half,
                    bias_half, BIAS, SCORE_MOD, stride_smb, BIAS_MODE, WG: gl.constexpr,
                    ROWS: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                    SCORE_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr,
                    BUCKET: gl.constexpr, VARLEN: gl.constexpr, HAS_MOD: gl.constexpr,
                    Q_BUFFERS: gl.constexpr, CONSUMERS: gl.constexpr):
    """A consumer with lengths: the items as the producer posted them (_producer_posts), each
    read once its Q buffer is ready; an item of q-block -1 ends the walk."""
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    # (a half-width last key block's scores: _half_tail)
    s_half_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N // 2, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    st_layout: gl.constexpr = _store_layout(HEAD_DIM)  # (the masked store's)
    o_buf = o_smem.index(WG)
    it = 0
    i = 0
    mbarrier.wait(q_ready.index(0), 0)
    m, h, b, q_off, Lq, owned, k_off, Lk = _read_item(item_smem.index(0))
    while m >= 0:
        it = _consume_tile(o_desc, q_smem, k_smem, v_smem, o_buf, q_ready, q_empty, k_ready,
                           k_empty, v_ready, v_empty, O, stride_ot, D, T_K, H, B, qk_scale_half,
                           bias_half, BIAS, SCORE_MOD, stride_smb, BIAS_MODE, i, it, m, h, b, q_off,
                           Lq, owned, k_off, Lk, s_layout, s_half_layout, o_layout, p_layout,
                           st_layout, WG, ROWS, BLOCK_N, HEAD_DIM, SCORE_DIM, NUM_STAGES, CAUSAL,
                           True, BUCKET, VARLEN, HAS_MOD, Q_BUFFERS, CONSUMERS)
        i += 1
        qs = i % Q_BUFFERS
        mbarrier.wait(q_ready.index(qs), (i // Q_BUFFERS) & 1)
        m, h, b, q_off, Lq, owned, k_off, Lk = _read_item(item_smem.index(qs))
    tma.store_wait(0)


@gluon.jit
def _consumer(o_desc, q_smem, k_smem, v_smem, o_smem, q_ready, q_empty, k_ready, k_empty, v_ready,
              v_empty, item_smem, SEQ_LENS_Q, SEQ_LENS_K, O, stride_ot, D, T_Q, T_K, MAX_Q, MAX_K,
              H, B, qk_scale_half, bias_half, BIAS, SCORE_MOD, stride_smb, BIAS_MODE,
              WG: gl.constexpr, ROWS: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
              SCORE_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, CAUSAL: gl.constexpr,
              HAS_LENGTHS: gl.constexpr, BUCKET: gl.constexpr, VARLEN: gl.constexpr,
              HAS_MOD: gl.constexpr, Q_BUFFERS: gl.constexpr, CONSUMERS: gl.constexpr, WS, FLAGS,
              SCHEDULE, SPLIT: gl.constexpr):
    if HAS_LENGTHS:
        _consumer_takes(o_desc, q_smem, k_smem, v_smem, o_smem, q_ready, q_empty, k_ready, k_empty,
                        v_ready, v_empty, item_smem, O, stride_ot, D, T_K, H, B, qk_scale_half,
                        bias_half, BIAS, SCORE_MOD, stride_smb, BIAS_MODE, WG, ROWS, BLOCK_N,
                        HEAD_DIM, SCORE_DIM, NUM_STAGES, CAUSAL, BUCKET, VARLEN, HAS_MOD, Q_BUFFERS,
                        CONSUMERS)
    else:
        dtype: gl.constexpr = o_desc.dtype
        MASKABLE: gl.constexpr = CAUSAL or HAS_LENGTHS
        # (_probabilities: where the hd64 consumers' P permutes went astray; with lengths they did
        # not, and the pin costs those variants spills)
        PIN_P: gl.constexpr = CONSUMERS == 3 and not HAS_LENGTHS
        s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                           instr_shape=[16, BLOCK_N, 16])
        o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                           instr_shape=[16, HEAD_DIM, 16])
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
        st_layout: gl.constexpr = _store_layout(HEAD_DIM)  # (the masked store's)

        BLOCK_M: gl.constexpr = CONSUMERS * ROWS
        pid = gl.program_id(0)
        n_prog = gl.num_programs(0)
        n_m = gl.cdiv(T_Q, BLOCK_M)
        heads = H * B
        top, n_buckets = _levels(MAX_Q, T_Q, B, BLOCK_M, LEVEL_BUCKET, VARLEN, CAUSAL)
        n_tiles, cur_s, cur_start, cur_b, cur_first, cur_cnt = _walk_start(
            SEQ_LENS_Q, T_Q, n_m, H, B, top, n_buckets, BLOCK_M, VARLEN, LEVEL_BUCKET)
        o_buf = o_smem.index(WG)
        it = 0
        n_whole, n_items = _walk_items(n_tiles, n_prog, T_K, BLOCK_N, SCHEDULE, SPLIT)
        for i in range(n_items):
            cur_s, cur_start, cur_b, cur_first, cur_cnt, m, h, b, j0, j1, piece, valid = _walk_item(
                i, n_whole, n_tiles, pid, n_prog, cur_s, cur_start, cur_b, cur_first, cur_cnt,
                SEQ_LENS_Q, T_Q, T_K, n_m, H, B, heads, top, n_buckets, BLOCK_M, BLOCK_N, CAUSAL,
                HAS_LENGTHS, BUCKET, VARLEN, SPLIT)
            if valid:
                row0 = m * BLOCK_M
                row_start = row0 + WG * ROWS
                q_off, Lq, owned, k_off, Lk = _sequence(b, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K, MAX_Q,
                                                        MAX_K, B, HAS_LENGTHS,
                                                 VARLEN)
                n_blocks, n_full = _extent(row0, Lq, Lk, BLOCK_M, BLOCK_N, CAUSAL, HAS_LENGTHS)
                if piece:
                    n_blocks = j1
                    n_full = j1
                # (variants.BIAS_MODES: 0 the default -log(valid keys), 1 bias_value, 2 BIAS[b])
                bias_t = bias_half
                if HAS_LENGTHS:
                    if BIAS_MODE == 0:
                        bias_t = -0.5 * gl.log(gl.maximum(Lk, 1).to(gl.float32))
                if BIAS_MODE == 2:
                    if b < B:  # (b == B: a packed batch's tail, no sequence, no keys)
                        bias_t = 0.5 * gl.load(BIAS + b)
                mod_row = SCORE_MOD
                if HAS_MOD:
                    mod_row = SCORE_MOD + b.to(gl.int64) * stride_smb
                qs = i % Q_BUFFERS
                mbarrier.wait(q_ready.index(qs), (i // Q_BUFFERS) & 1)
                q = q_smem.index(CONSUMERS * qs + WG).reshape([ROWS, HEAD_DIM])
                o = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
                if n_blocks > 0:
                    o, it = _attend_tile(q, o, it, j0, n_blocks, n_full, k_smem, v_smem, k_ready,
                                         k_empty, v_ready, v_empty, qk_scale_half, bias_t,
                                         row_start, Lk, mod_row, T_K, s_layout, p_layout, dtype,
                                         ROWS, BLOCK_N, HEAD_DIM, SCORE_DIM, NUM_STAGES, MASKABLE,
                                         CAUSAL, HAS_LENGTHS, HAS_MOD, PIN_P)
                if Q_BUFFERS == 2:
                    # Every wgmma that read this Q buffer has completed.
                    mbarrier.arrive(q_empty.index(qs), count=1)
                if HAS_LENGTHS:
                    rows = row_start + gl.arange(0, ROWS, layout=gl.SliceLayout(1, o_layout))
                    o = gl.where(gl.expand_dims(rows < Lq, 1), o, 0.0)
                # Whole row blocks by TMA; a packed tile in which a sequence ends otherwise.
                whole = True
                bd = b
                if VARLEN:
                    whole = row_start + ROWS <= owned
                    bd = 0  # (the descriptors' one batch entry: the packed rows)
                if SPLIT:
                    whole = i >= 0
                    if piece:
                        # (the piece's tile and role derived again here: carried across the key
                        # loop they cost spills there)
                        _, _, _, _, _, r, owner = _split_item(i, n_whole, n_tiles, n_m, H, heads,
                                                              T_K, BLOCK_N, BUCKET)
                        whole = owner
                        _join_piece(o, WS, FLAGS, r, owner, n_tiles - n_whole * n_prog,
                                    gl.cdiv(T_K, BLOCK_N), o_layout, WG, ROWS, HEAD_DIM, CONSUMERS)
                        if owner:
                            o = _add_pieces(o, WS, FLAGS, r, n_tiles - n_whole * n_prog,
                                            gl.cdiv(T_K, BLOCK_N), o_layout, WG, ROWS, HEAD_DIM,
                                            CONSUMERS)
                _store_tile(o, o_buf, o_desc, O, stride_ot, D, bd, q_off, row_start, owned, h,
                            whole, qs, q_empty, st_layout, ROWS, HEAD_DIM, VARLEN, Q_BUFFERS)
        tma.store_wait(0)


@gluon.jit
def sigmoid_attn_fwd_gluon_persistent(q_desc, k_desc, v_desc, o_desc, SEQ_LENS_Q, SEQ_LENS_K, O,
                                      stride_ot, D, BIAS, SCORE_MOD, stride_smb, BIAS_MODE, T_Q,
                                      T_K, H, B, kv_group, scale, bias_value, MAX_Q, MAX_K, WS,
                                      FLAGS, SCHEDULE, NUM_STAGES: gl.constexpr,
                                      CAUSAL: gl.constexpr, HAS_LENGTHS: gl.constexpr,
                                      CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr,
                                      VARLEN: gl.constexpr = False, HAS_MOD: gl.constexpr = False,
                                      CONSUMERS: gl.constexpr = 2, SCORE_DIM: gl.constexpr = 0):
    """grid (P,) with P <= number of tiles (normally the SM count), num_warps=4 (the default
    partition is consumer 0); BLOCK_M = CONSUMERS * q_desc.block_type.shape[1]. q/o: rank 4
    [B, T_Q, H, D], box [1, ROWS, 1, HEAD_DIM]; k/v: [B, T_K, H_KV, D], box
    [1, BLOCK_N, 1, HEAD_DIM]; D <= HEAD_DIM (a multiple of 8): the columns past D load as zeros,
    add nothing to the scores, and their outputs are stored nowhere. kv_group = H / H_KV.
    SEQ_LENS_Q/K: int32 [B] (read only with HAS_LENGTHS).
    VARLEN (with HAS_LENGTHS): a packed batch, B sequences: the descriptors are [1, total, H, D],
    SEQ_LENS_Q/K are int32 cu_seqlens [B + 1], T_Q/T_K the token totals, and O (the output's
    first element, rows stride_ot elements apart) takes the masked stores of the tiles in which
    a sequence ends; MAX_Q/MAX_K (the caller's max_seqlen) cut longer sequences, as the Triton
    kernels do. Without VARLEN, O is not read (null) and MAX_Q/MAX_K neither.
    BIAS_MODE (variants.BIAS_MODES): 0 the default bias (with HAS_LENGTHS -log(Lk) per
    sequence, else bias_value, which the launcher sets to -log(T_K)), 1 bias_value, 2 BIAS[b]
    (float32, one per sequence). HAS_MOD: SCORE_MOD (float32, [B, T_K], rows stride_smb elements
    apart, contiguous along keys) is added to each key's scores (-inf removes a key exactly:
    P = 0); dense non-causal calls without lengths only (causal with it spills: ptxas, 168
    registers). BIAS and SCORE_MOD are not read otherwise.
    SCHEDULE, the walk over the tiles: 0 static (program pid takes tiles pid, pid + P, ...);
    1 (dense non-causal variants of two consumers up to 128 columns) the same, with the tiles
    past the last whole wave split by key blocks over every program (_split_span, _join_piece,
    _add_pieces): WS float32 [P, BLOCK_M, HEAD_DIM], FLAGS int32 [(tiles mod P) * CONSUMERS];
    2 (with HAS_LENGTHS) the queue: each program's producer takes its next tile of the same
    order from the counter FLAGS[0] (_take_tile). FLAGS is zero at the launch; WS and FLAGS
    are not read with SCHEDULE 0. With HAS_LENGTHS the producer alone walks and posts each
    tile to the consumers (_producer_posts, _consumer_takes); without, each side walks."""
    gl.static_assert(not (HAS_MOD and (CAUSAL or HAS_LENGTHS)),
                     "score_mod: dense non-causal calls without lengths")
    ROWS: gl.constexpr = q_desc.block_type.shape[1]
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[1]
    dtype: gl.constexpr = q_desc.dtype
    BUCKET: gl.constexpr = 8  # causal schedule: q-blocks per bucket (see _schedule)
    gl.static_assert(CONSUMERS == 2 or CONSUMERS == 3, "two or three consumer warpgroups")
    # The split last wave: dense, not causal, two consumers up to 128 columns (with three at
    # hd64, or hd256's 128 accumulator registers a thread, its join code costs spills).
    SPLIT: gl.constexpr = (not CAUSAL and not HAS_LENGTHS and CONSUMERS == 2
                           and HEAD_DIM <= 128)

    # Q: Q_BUFFERS buffers x CONSUMERS warpgroup parts (index CONSUMERS * buffer + warpgroup).
    # Past 128 columns one buffer (tile i+1's Q loads after tile i's output has left), the output's
    # staging: 192 KB at hd256 with 64-key blocks, where two buffers and a staging buffer would
    # need 320 KB.
    Q_BUFFERS: gl.constexpr = 1 if HEAD_DIM > 128 else 2
    q_smem = gl.allocate_shared_memory(dtype, [CONSUMERS * Q_BUFFERS] + q_desc.block_type.shape,
                                       q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES] + k_desc.block_type.shape,
                                       k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES] + v_desc.block_type.shape,
                                       v_desc.layout)
    if Q_BUFFERS == 1:
        o_smem = q_smem
    else:
        o_smem = gl.allocate_shared_memory(dtype, [CONSUMERS] + o_desc.block_type.shape,
                                           o_desc.layout)
    # with lengths, the tiles the producer posts to the consumers, one per Q buffer (_post_item)
    item_smem = gl.allocate_shared_memory(gl.int32, [2, ITEM_FIELDS],
                                          gl.SwizzledSharedLayout(1, 1, 1, order=[0]))
    q_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=CONSUMERS)  # one arrive per consumer warpgroup
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=CONSUMERS)
        mbarrier.init(v_empty.index(i), count=CONSUMERS)
    fence_async_shared()  # barrier inits visible to the async proxy (TMA) before any use

    qk_scale_half = scale * 0.5
    bias_half = bias_value * 0.5

    # (the argument tuples are written out in each call: a tuple held in a variable does not
    # keep its constexpr members constexpr)
    if CONSUMERS == 3:
        gl.warp_specialize([
            (_consumer, (o_desc, q_smem, k_smem, v_smem, o_smem, q_ready, q_empty, k_ready, k_empty,
                      v_ready, v_empty, item_smem, SEQ_LENS_Q, SEQ_LENS_K, O, stride_ot, D, T_Q,
                      T_K, MAX_Q, MAX_K, H, B, qk_scale_half, bias_half, BIAS, SCORE_MOD,
                      stride_smb, BIAS_MODE, 0, ROWS, BLOCK_N, HEAD_DIM, SCORE_DIM, NUM_STAGES,
                      CAUSAL, HAS_LENGTHS, BUCKET, VARLEN, HAS_MOD, Q_BUFFERS, CONSUMERS, WS, FLAGS,
                      SCHEDULE, SPLIT)),
            (_consumer, (o_desc, q_smem, k_smem, v_smem, o_smem, q_ready, q_empty, k_ready, k_empty,
                      v_ready, v_empty, item_smem, SEQ_LENS_Q, SEQ_LENS_K, O, stride_ot, D, T_Q,
                      T_K, MAX_Q, MAX_K, H, B, qk_scale_half, bias_half, BIAS, SCORE_MOD,
                      stride_smb, BIAS_MODE, 1, ROWS, BLOCK_N, HEAD_DIM, SCORE_DIM, NUM_STAGES,
                      CAUSAL, HAS_LENGTHS, BUCKET, VARLEN, HAS_MOD, Q_BUFFERS, CONSUMERS, WS, FLAGS,
                      SCHEDULE, SPLIT)),
            (_consumer, (o_desc, q_smem, k_smem, v_smem, o_smem, q_ready, q_empty, k_ready, k_empty,
                      v_ready, v_empty, item_smem, SEQ_LENS_Q, SEQ_LENS_K, O, stride_ot, D, T_Q,
                      T_K, MAX_Q, MAX_K, H, B, qk_scale_half, bias_half, BIAS, SCORE_MOD,
                      stride_smb, BIAS_MODE, 2, ROWS, BLOCK_N, HEAD_DIM, SCORE_DIM, NUM_STAGES,
                      CAUSAL, HAS_LENGTHS, BUCKET, VARLEN, HAS_MOD, Q_BUFFERS, CONSUMERS, WS, FLAGS,
                      SCHEDULE, SPLIT)),
            (_producer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready,
                     k_empty, v_ready, v_empty, item_smem, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K,
                     MAX_Q, MAX_K, H, B, kv_group, FLAGS, ROWS, BLOCK_N, HEAD_DIM, NUM_STAGES,
                     CAUSAL, HAS_LENGTHS, BUCKET, VARLEN, Q_BUFFERS, CONSUMERS, SCHEDULE,
                     SPLIT)),
        ], [4, 4, 1], [CONSUMER_REGS, CONSUMER_REGS, PRODUCER_REGS])
    else:
        gl.warp_specialize([
            (_consumer, (o_desc, q_smem, k_smem, v_smem, o_smem, q_ready, q_empty, k_ready, k_empty,
                      v_ready, v_empty, item_smem, SEQ_LENS_Q, SEQ_LENS_K, O, stride_ot, D, T_Q,
                      T_K, MAX_Q, MAX_K, H, B, qk_scale_half, bias_half, BIAS, SCORE_MOD,
                      stride_smb, BIAS_MODE, 0, ROWS, BLOCK_N, HEAD_DIM, SCORE_DIM, NUM_STAGES,
                      CAUSAL, HAS_LENGTHS, BUCKET, VARLEN, HAS_MOD, Q_BUFFERS, CONSUMERS, WS, FLAGS,
                      SCHEDULE, SPLIT)),
            (_consumer, (o_desc, q_smem, k_smem, v_smem, o_smem, q_ready, q_empty, k_ready, k_empty,
                      v_ready, v_empty, item_smem, SEQ_LENS_Q, SEQ_LENS_K, O, stride_ot, D, T_Q,
                      T_K, MAX_Q, MAX_K, H, B, qk_scale_half, bias_half, BIAS, SCORE_MOD,
                      stride_smb, BIAS_MODE, 1, ROWS, BLOCK_N, HEAD_DIM, SCORE_DIM, NUM_STAGES,
                      CAUSAL, HAS_LENGTHS, BUCKET, VARLEN, HAS_MOD, Q_BUFFERS, CONSUMERS, WS, FLAGS,
                      SCHEDULE, SPLIT)),
            (_producer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready,
                     k_empty, v_ready, v_empty, item_smem, SEQ_LENS_Q, SEQ_LENS_K, T_Q, T_K,
                     MAX_Q, MAX_K, H, B, kv_group, FLAGS, ROWS, BLOCK_N, HEAD_DIM, NUM_STAGES,
                     CAUSAL, HAS_LENGTHS, BUCKET, VARLEN, Q_BUFFERS, CONSUMERS, SCHEDULE,
                     SPLIT)),
        ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])

    for i in gl.static_range(2):
        mbarrier.invalidate(q_ready.index(i))
        mbarrier.invalidate(q_empty.index(i))
    for i in gl.static_range(NUM_STAGES):
        mbarrier.invalidate(k_ready.index(i))
        mbarrier.invalidate(v_ready.index(i))
        mbarrier.invalidate(k_empty.index(i))
        mbarrier.invalidate(v_empty.index(i))
