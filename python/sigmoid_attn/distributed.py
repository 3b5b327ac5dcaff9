"""Exact context parallelism: sigmoid attention over a sequence sharded across a process group.

Every sigmoid score stands alone (no softmax normalization across keys), so the output over all
keys is the plain sum of the outputs over key shards, and the gradient of each (query shard, key
shard) pair depends on that pair alone. Two things must be global: the bias (by default
-log(valid key count), counted over the whole sequence, so it is passed explicitly to every
local call) and the causal mask (global positions; see `_pair_blocks`).

K and V travel around a ring of point-to-point transfers (NCCL on GPU, gloo on CPU); each rank
adds the partial outputs of its queries against every key shard in fp32 (float64 for float64
inputs). The backward sends K and V around the ring again, and with them the fp32 dK/dV
accumulators, which arrive complete at their owners after one more hop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.distributed as dist

from ._ops import ops
from .functional import sigmoid_attention

__all__ = ["sigmoid_attention_cp", "sequence_shard", "LAYOUTS"]

LAYOUTS = ("contiguous", "zigzag")

_FN = "sigmoid_attention_cp"

# (local start row, global start position, rows) of one run of consecutive positions in a shard.
Chunk = Tuple[int, int, int]
# (global start position, rows) runs that make up one side of a local call, in local row order.
Segs = Tuple[Tuple[int, int], ...]


def shard_chunks(layout: str, rank: int, world_size: int, t_local: int) -> Tuple[Chunk, ...]:
    """The runs of global positions that `rank` holds, in local row order (always increasing
    global order: that is what lets a shard's valid rows be a prefix, see `_Block`)."""
    if layout == "contiguous":
        return ((0, rank * t_local, t_local),)
    c = t_local // 2
    return ((0, rank * c, c), (c, (2 * world_size - 1 - rank) * c, c))


def sequence_shard(x: torch.Tensor, rank: int, world_size: int, layout: str = "contiguous",
                   dim: int = 1) -> torch.Tensor:
    """The shard of a full-length tensor that `rank` holds under `layout` (a view for
    "contiguous", a copy for "zigzag"); the sequence runs along `dim` (1 for [B, T, H, D])."""
    if layout not in LAYOUTS:
        raise ValueError(f"sequence_shard: layout must be one of {LAYOUTS}, got {layout!r}")
    T = x.shape[dim]
    parts = 2 * world_size if layout == "zigzag" else world_size
    if T % parts:
        raise ValueError(f"sequence_shard: the sequence length {T} (dim {dim}) must be a multiple "
                         f"of {parts} for layout={layout!r} over {world_size} ranks")
    chunks = shard_chunks(layout, rank, world_size, T // world_size)
    pieces = [x.narrow(dim, g, n) for _, g, n in chunks]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim)


@dataclass(frozen=True)
class _Block:
    """One local op call: query rows q0:q1 of this rank's shard against key rows k0:k1 of the
    key shard in hand, with top-left causal masking or none. q_segs / k_segs give the global
    positions of those rows. Blocks only span runs in increasing global order, so the rows of a
    block that lie before a sequence's length form a prefix, which the op's local lengths
    express."""

    q0: int
    q1: int
    k0: int
    k1: int
    causal: bool
    q_segs: Segs
    k_segs: Segs


def _pair_blocks(qc: Chunk, kc: Chunk, causal: bool) -> List[_Block]:
    """The local calls that give the globally masked attention of query run qc on key run kc.

    Causal, globally: key position y is seen by query position x iff y <= x. The op's causal
    mask is top-left aligned on local rows (j <= i), which equals the global mask exactly when
    both runs start at the same position. So: a key run that ends at or before the query run's
    start is fully visible; one that starts after its end is skipped; an overlapping pair is cut
    where the positions align: keys before the first query are fully visible to the whole query
    run, queries before the first key see none of it, and the rest starts at one position.
    """
    ql, qg, qn = qc
    kl, kg, kn = kc
    if qn <= 0 or kn <= 0:
        return []
    if not causal or kg + kn - 1 <= qg:
        return [_Block(ql, ql + qn, kl, kl + kn, False, ((qg, qn),), ((kg, kn),))]
    if kg > qg + qn - 1:
        return []
    blocks = []
    if kg < qg:
        m = qg - kg
        blocks.append(_Block(ql, ql + qn, kl, kl + m, False, ((qg, qn),), ((kg, m),)))
        kl, kg, kn = kl + m, qg, kn - m
    elif qg < kg:
        m = kg - qg
        ql, qg, qn = ql + m, kg, qn - m
    blocks.append(_Block(ql, ql + qn, kl, kl + kn, True, ((qg, qn),), ((kg, kn),)))
    return blocks


def _join(a: _Block, b: _Block) -> Optional[_Block]:
    """a and b as one call, where that computes the same thing: both unmasked, one side shared,
    the other side adjacent in local rows and in increasing global order."""
    if a.causal or b.causal:
        return None
    if (a.k0, a.k1) == (b.k0, b.k1) and a.q1 == b.q0 and a.q_segs[-1][0] < b.q_segs[0][0]:
        return _Block(a.q0, b.q1, a.k0, a.k1, False, a.q_segs + b.q_segs, a.k_segs)
    if (a.q0, a.q1) == (b.q0, b.q1) and a.k1 == b.k0 and a.k_segs[-1][0] < b.k_segs[0][0]:
        return _Block(a.q0, a.q1, a.k0, b.k1, False, a.q_segs, a.k_segs + b.k_segs)
    return None


def _ordered(chunks: Tuple[Chunk, ...]) -> bool:
    """Non-empty runs that tile local rows from 0, in increasing global order."""
    row, pos = 0, -1
    for local, g, n in chunks:
        if local != row or n <= 0 or g <= pos:
            return False
        row, pos = row + n, g + n - 1
    return True


def plan_pair(q_chunks: Tuple[Chunk, ...], k_chunks: Tuple[Chunk, ...],
              causal: bool) -> List[_Block]:
    """The fewest local calls (by greedy joining) that cover query shard x key shard exactly."""
    if causal and q_chunks == k_chunks and _ordered(q_chunks):
        # A shard against itself: local order is increasing global order on both sides, so
        # local j <= i iff global y <= x, and one top-left causal call is the global mask.
        segs = tuple((g, n) for _, g, n in q_chunks)
        t = sum(n for _, _, n in q_chunks)
        return [_Block(0, t, 0, t, True, segs, segs)]
    blocks = [b for qc in q_chunks for kc in k_chunks for b in _pair_blocks(qc, kc, causal)]
    joined = True
    while joined:
        joined = False
        for i in range(len(blocks)):
            for j in range(len(blocks)):
                m = _join(blocks[i], blocks[j]) if i != j else None
                if m is not None:
                    blocks[i] = m
                    del blocks[j]
                    joined = True
                    break
            if joined:
                break
    return sorted(blocks, key=lambda b: (b.q0, b.k0))


@dataclass
class _Ring:
    group: Optional[dist.ProcessGroup]
    world: int
    rank: int
    next_peer: int  # global ranks, as P2POp takes them
    prev_peer: int
    plans: List[List[_Block]]  # plans[s]: the calls against the key shard held at step s
    seq_lens: Optional[torch.Tensor]  # global lengths clamped to [0, T], int32
    scale: Optional[float]
    bias_value: Optional[float]
    bias_tensor: Optional[torch.Tensor]
    acc_dtype: torch.dtype
    _lens: Dict[Segs, torch.Tensor] = field(default_factory=dict)

    def lens(self, segs: Segs) -> Optional[torch.Tensor]:
        """Local valid-row count of a block side, per sequence (None: every row is valid)."""
        if self.seq_lens is None:
            return None
        got = self._lens.get(segs)
        if got is None:
            got = sum((self.seq_lens - g).clamp(0, n) for g, n in segs).to(torch.int32)
            self._lens[segs] = got
        return got

    def exchange(self, sends, recvs) -> list:
        """Starts sending `sends` to the next rank and receiving `recvs` from the previous one.
        With NCCL the transfers run on the process group's own stream, ordered after the work
        queued so far on the current one: that is the side stream the compute overlaps with."""
        p2p = [dist.P2POp(dist.isend, t, self.next_peer, self.group, tag)
               for tag, t in enumerate(sends)]
        p2p += [dist.P2POp(dist.irecv, t, self.prev_peer, self.group, tag)
                for tag, t in enumerate(recvs)]
        return dist.batch_isend_irecv(p2p) if p2p else []


def _call_args(ring: _Ring, b: _Block, q, k, v, score_mod=None):
    return (q[:, b.q0:b.q1], k[:, b.k0:b.k1], v[:, b.k0:b.k1], ring.lens(b.q_segs),
            ring.lens(b.k_segs), b.causal, ring.scale, ring.bias_value, ring.bias_tensor,
            score_mod)


def _wait(reqs) -> None:
    for r in reqs:
        r.wait()


def _ring_forward(ring: _Ring, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    acc = torch.zeros(q.shape, dtype=ring.acc_dtype, device=q.device)
    kv = (k.contiguous(), v.contiguous())  # transfers need dense buffers
    for s in range(ring.world):
        reqs, incoming = [], None
        if s + 1 < ring.world:
            incoming = (torch.empty_like(kv[0]), torch.empty_like(kv[1]))
            reqs = ring.exchange(kv, incoming)  # before the compute, so the two overlap
        try:
            for b in ring.plans[s]:
                acc[:, b.q0:b.q1] += ops.forward(*_call_args(ring, b, q, kv[0], kv[1]))
        finally:  # an op error is raised on every rank alike: settle the transfers first
            _wait(reqs)
        if incoming is not None:
            kv = incoming
    return acc.to(q.dtype)


def _ring_backward(ring: _Ring, grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                   v: torch.Tensor, need_bias: bool):
    """dQ stays here; the dK/dV of the key shard in hand at step s travel one hop behind it:
    at step s this rank sends on the accumulators it finished at step s - 1 and receives those
    of the shard it works on now, which the previous rank finished at step s - 1. After the
    last step the accumulators in hand are complete and go one more hop, to their owner.
    need_bias: also the gradient of the sigmoid_bias tensor (the sum of dS over each sequence's
    scores), which the backward op gives per key when it has a score_mod: a zero one is passed,
    and the per-rank sums are all-reduced."""
    if grad.stride(-1) != 1:
        grad = grad.contiguous()
    dq = torch.zeros(q.shape, dtype=ring.acc_dtype, device=q.device)
    dbias = torch.zeros(q.shape[0], dtype=ring.acc_dtype, device=q.device) if need_bias else None
    kv = (k.contiguous(), v.contiguous())
    done = None  # (dK, dV) finished at the previous step, for the next rank
    for s in range(ring.world):
        sends, recvs, incoming = [], [], None
        if s + 1 < ring.world:
            incoming = (torch.empty_like(kv[0]), torch.empty_like(kv[1]))
            sends, recvs = list(kv), list(incoming)
        arrived = None
        if done is not None:
            arrived = (torch.empty_like(done[0]), torch.empty_like(done[1]))
            sends, recvs = sends + list(done), recvs + list(arrived)
        reqs = ring.exchange(sends, recvs)
        dk = dv = None
        try:
            for b in ring.plans[s]:
                mod = (torch.zeros(q.shape[0], b.k1 - b.k0, dtype=torch.float32, device=q.device)
                       if need_bias else None)
                a = _call_args(ring, b, q, kv[0], kv[1], mod)
                g_dq, g_dk, g_dv, g_mod = ops.backward(grad[:, b.q0:b.q1], *a)
                if need_bias:
                    dbias += g_mod.sum(-1)
                if dk is None:
                    # The partial sums arrive while the first kernel runs; they then take this
                    # shard's terms in place (one fp32 pair per step, not two). With NCCL the
                    # wait is a stream dependency: the kernel queued above still overlaps.
                    if arrived is not None:
                        _wait(reqs)
                        reqs = []  # waited once: gloo's work objects count their waits
                        dk, dv = arrived
                    else:
                        dk = torch.zeros(kv[0].shape, dtype=ring.acc_dtype, device=q.device)
                        dv = torch.zeros_like(dk)
                dq[:, b.q0:b.q1] += g_dq
                dk[:, b.k0:b.k1] += g_dk
                dv[:, b.k0:b.k1] += g_dv
                del g_dq, g_dk, g_dv, g_mod
        finally:
            _wait(reqs)
        if dk is None:  # every score of this pair of shards is masked
            done = arrived if arrived is not None else (
                torch.zeros(kv[0].shape, dtype=ring.acc_dtype, device=q.device),
                torch.zeros(kv[1].shape, dtype=ring.acc_dtype, device=q.device))
        else:
            done = (dk, dv)
        if incoming is not None:
            kv = incoming
    if ring.world > 1:
        own = (torch.empty_like(done[0]), torch.empty_like(done[1]))
        _wait(ring.exchange(list(done), list(own)))
        done = own
        if need_bias:
            dist.all_reduce(dbias, group=ring.group)
    return dq.to(q.dtype), done[0].to(k.dtype), done[1].to(v.dtype), dbias


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias_tensor, ring):
        # bias_tensor is ring.bias_tensor, passed again so that autograd sees it as an input
        ctx.ring = ring
        ctx.save_for_backward(q, k, v)
        return _ring_forward(ring, q, k, v)

    @staticmethod
    def backward(ctx, grad):
        q, k, v = ctx.saved_tensors
        need_bias = ctx.needs_input_grad[3]
        dq, dk, dv, dbias = _ring_backward(ctx.ring, grad, q, k, v, need_bias)
        if need_bias:
            dbias = dbias.to(ctx.ring.bias_tensor.dtype)
        return dq, dk, dv, dbias, None


_DTYPE_CODE = {torch.float16: 1, torch.bfloat16: 2, torch.float32: 3, torch.float64: 4}

# What every rank of the group must agree on, in the order of the checked vector.
_AGREED = ("T_local (q.shape[1])", "batch size (q.shape[0])", "query heads (q.shape[2])",
           "key/value heads (k.shape[2])", "head_dim (q.shape[3])", "dtype", "layout",
           "is_causal", "scale", "sigmoid_bias (float)", "sigmoid_bias (tensor)", "seq_lens")


def _agreement_vector(q, k, layout, is_causal, scale, sigmoid_bias, seq_lens,
                      device) -> torch.Tensor:
    def digest(t):  # position-weighted, so that a permutation of the values differs too
        if t is None:
            return torch.zeros((), dtype=torch.float64, device=device)
        w = torch.arange(1, t.numel() + 1, dtype=torch.float64, device=device)
        return (t.detach().to(device=device, dtype=torch.float64) * w).sum() + 0.5

    head = [1.0, q.shape[1], q.shape[0], q.shape[2], k.shape[2], q.shape[3],
            _DTYPE_CODE.get(q.dtype, 0), LAYOUTS.index(layout), int(bool(is_causal)),
            -1.0 if scale is None else float(scale),
            float(sigmoid_bias) if isinstance(sigmoid_bias, (int, float)) else math.nan]
    vec = torch.tensor(head, dtype=torch.float64, device=device)
    bias_t = sigmoid_bias if isinstance(sigmoid_bias, torch.Tensor) else None
    return torch.cat([vec, torch.stack([digest(bias_t), digest(seq_lens)])])


def _check_agreement(group, world, q, k, v, layout, is_causal, scale, sigmoid_bias, seq_lens):
    """Validates this rank's inputs and checks, with one small all-gather, that every rank's
    shapes and arguments agree. A rank that raised alone would leave the others waiting in the
    ring, and one whose shapes differ would hang it or compute a silently wrong result: so
    every rank learns of every failure and raises."""
    try:
        _check_inputs(q, k, v, layout, seq_lens, sigmoid_bias, scale, group)
        error = None
    except (TypeError, ValueError) as e:
        error = e
    if error is None:
        device = q.device
        mine = _agreement_vector(q, k, layout, is_causal, scale, sigmoid_bias, seq_lens, device)
    else:
        nccl = "nccl" in str(dist.get_backend(group)) and torch.cuda.is_available()
        device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        mine = torch.zeros(1 + len(_AGREED), dtype=torch.float64, device=device)
    every = torch.empty(world * mine.numel(), dtype=mine.dtype, device=device)
    # torch 2.14 renamed all_gather_into_tensor (now deprecated); older releases lack the new name
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(every, mine, group=group)
    rows = every.view(world, -1).tolist()
    bad = [r for r in range(world) if rows[r][0] != 1.0]
    if bad:
        # Only on this path, and on every rank alike: the failing ranks' messages.
        msgs = [None] * world
        dist.all_gather_object(msgs, None if error is None else str(error), group=group)
        if error is not None:
            raise error
        raise ValueError(f"{_FN}: rank {bad[0]} of the group rejected its inputs: {msgs[bad[0]]}")
    for i, name in enumerate(_AGREED, start=1):
        vals = [r[i] for r in rows]
        same = all(x == vals[0] or (math.isnan(x) and math.isnan(vals[0])) for x in vals)
        if not same:
            shown = ", ".join(_show(name, x) for x in vals)
            raise ValueError(f"{_FN}: {name} must be the same on every rank of the group, got "
                             f"[{shown}] on ranks 0..{world - 1}")


def _show(name, x):
    if name == "layout":
        return repr(LAYOUTS[int(x)])
    if name == "dtype":
        return {c: str(d) for d, c in _DTYPE_CODE.items()}.get(int(x), "other")
    if name in ("sigmoid_bias (tensor)", "seq_lens"):
        return "none" if x == 0 else f"digest {x:.6g}"
    if name == "scale":
        return "default" if x == -1.0 else f"{x:g}"
    if name == "sigmoid_bias (float)":
        return "not a float" if math.isnan(x) else f"{x:g}"
    return str(int(x))


def _check_inputs(q, k, v, layout, seq_lens, sigmoid_bias, scale, group):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{_FN}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if q.dim() == 3:
        raise ValueError(f"{_FN}: packed varlen inputs ([total_T, H, D] with cu_seqlens) are not "
                         f"supported; give [B, T_local, H, D] shards with seq_lens, got q "
                         f"{list(q.shape)}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{_FN}: {name} must be [B, T_local, H, D], got {list(t.shape)}")
    if k.shape != v.shape or k.shape[:2] != q.shape[:2]:
        raise ValueError(f"{_FN}: q, k, v must be shards of one sequence with the same [B, "
                         f"T_local] and k, v of one shape, got q {list(q.shape)}, k "
                         f"{list(k.shape)}, v {list(v.shape)}")
    if (not q.is_floating_point() or k.dtype != q.dtype or v.dtype != q.dtype
            or k.device != q.device or v.device != q.device):
        raise ValueError(f"{_FN}: q, k, v must be floating point of one dtype on one device, got "
                         f"q {q.dtype} on {q.device}, k {k.dtype} on {k.device}, v {v.dtype} on "
                         f"{v.device}")
    if layout not in LAYOUTS:
        raise ValueError(f"{_FN}: layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "zigzag" and q.shape[1] % 2:
        raise ValueError(f"{_FN}: layout='zigzag' holds two equal chunks per rank, so T_local "
                         f"must be even, got T_local={q.shape[1]}")
    B = q.shape[0]
    if seq_lens is not None:
        if not isinstance(seq_lens, torch.Tensor):
            raise TypeError(f"{_FN}: seq_lens must be an int32 tensor of shape [B]=[{B}] or "
                            f"None, got {type(seq_lens).__name__}")
        if seq_lens.dtype != torch.int32 or tuple(seq_lens.shape) != (B,):
            raise ValueError(f"{_FN}: seq_lens must be int32 of shape [B]=[{B}], got "
                             f"{str(seq_lens.dtype).replace('torch.', '')} "
                             f"{list(seq_lens.shape)}")
        if seq_lens.device != q.device:
            raise ValueError(f"{_FN}: seq_lens must be on q's device {q.device}, got "
                             f"{seq_lens.device}")
    if isinstance(sigmoid_bias, torch.Tensor):
        if not sigmoid_bias.is_floating_point() or tuple(sigmoid_bias.shape) != (B,):
            raise ValueError(f"{_FN}: sigmoid_bias tensor must be floating point of shape "
                             f"[B]=[{B}], got {sigmoid_bias.dtype} {list(sigmoid_bias.shape)}")
    elif sigmoid_bias is not None and not isinstance(sigmoid_bias, (int, float)):
        raise TypeError(f"{_FN}: sigmoid_bias must be a float, a [B] tensor or None, got "
                        f"{type(sigmoid_bias).__name__}")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"{_FN}: scale must be a finite float or None, got {scale!r}")
    if q.is_cuda and dist.get_backend(group) == "gloo":
        raise ValueError(f"{_FN}: CUDA tensors need a process group with the nccl backend, got "
                         "gloo")


def _resolve_group(group):
    if group is None and not (dist.is_available() and dist.is_initialized()):
        raise ValueError(f"{_FN}: group=None needs an initialized default process group "
                         "(torch.distributed.init_process_group), got none")
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError(f"{_FN}: this process (global rank {dist.get_rank()}) is not a member "
                         f"of the given group")
    return rank, dist.get_world_size(group)


def sigmoid_attention_cp(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    group: Optional[dist.ProcessGroup] = None,
    layout: str = "contiguous",
    seq_lens: Optional[torch.Tensor] = None,
    is_causal: bool = False,
    scale: Optional[float] = None,
    sigmoid_bias: Union[float, torch.Tensor, None] = None,
) -> torch.Tensor:
    """Sigmoid attention with the sequence sharded over the ranks of a process group.

    q: [B, T_local, Hq, D], k, v: [B, T_local, Hkv, D] (Hq a multiple of Hkv): this rank's
    shard of one sequence of T = T_local * P positions (P ranks in `group`, default: the world),
    T_local the same on every rank. layout="contiguous": rank r holds positions
    [r*T_local, (r+1)*T_local). layout="zigzag": the sequence is cut into 2P chunks and rank r
    holds chunks r and 2P-1-r, in that order, which balances causal work across ranks.
    `sequence_shard(x, rank, P, layout)` cuts a full tensor that way.

    seq_lens: GLOBAL lengths, int32 [B] on q's device, the same on every rank; positions at or
    past a length are padding. is_causal: position x attends positions y <= x (global
    positions). scale defaults to 1/sqrt(D); sigmoid_bias is a float or a [B] tensor and
    defaults to -log(global valid key count) per sequence. No score_mod.

    Returns this rank's shard of the output, equal (up to summation order) to
    sigmoid_attention on the full tensors; differentiable in q, k, v (gradients: the shards of
    the single-device op's) and in a sigmoid_bias tensor (the same gradient on every rank).
    Partial outputs and dK/dV are accumulated in fp32 (float64 for float64 inputs).

    Each call all-gathers a small vector of shapes and arguments first (a host sync) and
    raises ValueError on every rank if a rank disagrees. With P = 1 it is sigmoid_attention
    itself. Packed varlen inputs ([total_T, H, D] with cu_seqlens) are not supported: they
    raise ValueError; use the padded layout with seq_lens.
    """
    rank, world = _resolve_group(group)
    if world == 1:
        if layout not in LAYOUTS:
            raise ValueError(f"{_FN}: layout must be one of {LAYOUTS}, got {layout!r}")
        return sigmoid_attention(q, k, v, seq_lens_q=seq_lens, seq_lens_k=seq_lens,
                                 is_causal=is_causal, scale=scale, sigmoid_bias=sigmoid_bias)
    _check_agreement(group, world, q, k, v, layout, is_causal, scale, sigmoid_bias, seq_lens)
    t_local = q.shape[1]
    T = t_local * world
    if t_local == 0:
        return sigmoid_attention(q, k, v, is_causal=is_causal, scale=scale,
                                 sigmoid_bias=0.0 if sigmoid_bias is None else sigmoid_bias)

    acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    lens = None if seq_lens is None else seq_lens.clamp(0, T)  # the op's clamp, globally
    bias_value, bias_tensor = None, None
    if isinstance(sigmoid_bias, torch.Tensor):
        bias_tensor = sigmoid_bias
    elif sigmoid_bias is not None:
        bias_value = float(sigmoid_bias)
    elif lens is None:
        bias_value = -math.log(T)
    else:
        # float32 is what the CUDA kernels read; float64 keeps float64 runs exact
        bias_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        bias_tensor = -torch.log(lens.clamp(min=1).to(bias_dtype))

    q_chunks = shard_chunks(layout, rank, world, t_local)
    plans = [plan_pair(q_chunks, shard_chunks(layout, (rank - s) % world, world, t_local),
                       is_causal) for s in range(world)]
    ring = _Ring(group, world, rank,
                 dist.get_global_rank(group, (rank + 1) % world) if group is not None
                 else (rank + 1) % world,
                 dist.get_global_rank(group, (rank - 1) % world) if group is not None
                 else (rank - 1) % world,
                 plans, lens, scale, bias_value, bias_tensor, acc_dtype)
    grad = q.requires_grad or k.requires_grad or v.requires_grad or (
        bias_tensor is not None and bias_tensor.requires_grad)
    if grad and torch.is_grad_enabled():
        return _RingAttention.apply(q, k, v, bias_tensor, ring)
    return _ring_forward(ring, q, k, v)
