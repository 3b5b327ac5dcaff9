"""Packed variable-length batches, FlashAttention's varlen convention.

Sequences are concatenated along the token axis: q is [total_q, Hq, D], k and v are
[total_k, Hkv, D], and sequence b occupies rows cu_seqlens_q[b] : cu_seqlens_q[b + 1] of q (and
the same with cu_seqlens_k of k, v). cu_seqlens are int32 [B + 1], non-decreasing, starting at 0.
The kernels launch only tiles that hold tokens: the grid is total // BLOCK + B + 1 programs and
each finds its sequence from cu_seqlens on the device (no host synchronization, CUDA-graph safe).
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from ._autograd import below_autograd, needs_grad
from ._errors import SigmoidAttentionValueError, argument_error
from ._ops import ops
from .functional import as_int32

__all__ = ["sigmoid_attention_varlen", "sigmoid_attention_varlen_reference"]

_forward_varlen = ops.forward_varlen.default


def check_cu_seqlens(cu: torch.Tensor, total: int, max_seqlen: int, name: str) -> None:
    """Strict mode: raises ValueError unless cu starts at 0, never decreases, ends at or below
    total, and no sequence is longer than max_seqlen. Reading the result synchronizes."""
    c = cu.long()
    d = c[1:] - c[:-1]
    bad = []
    if int(c[0]) != 0:
        bad.append(f"{name}[0] = {int(c[0])} (must be 0)")
    if d.numel() and bool((d < 0).any()):
        i = int((d < 0).nonzero()[0, 0])
        bad.append(f"{name} decreases at {i + 1}: {int(c[i])} -> {int(c[i + 1])}")
    if int(c[-1]) > total:
        bad.append(f"{name}[-1] = {int(c[-1])} exceeds the {total} packed tokens")
    if d.numel() and int(d.max()) > max_seqlen:
        bad.append(f"a sequence of {int(d.max())} tokens exceeds max_seqlen = {max_seqlen}")
    if bad:
        raise SigmoidAttentionValueError(
            "sigmoid_attention_varlen: " + "; ".join(bad) + " (strict mode; without it, offsets "
            "are clamped to the tensor and lengths to max_seqlen)")


def sigmoid_attention_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    is_causal: bool = False,
    scale: Optional[float] = None,
    sigmoid_bias: Union[float, torch.Tensor, None] = None,
    score_mod: Optional[torch.Tensor] = None,
    strict: Optional[bool] = None,
) -> torch.Tensor:
    """Sigmoid attention over packed sequences: q [total_q, Hq, D], k/v [total_k, Hkv, D].

    cu_seqlens_q / cu_seqlens_k: integer [B + 1] cumulative lengths on q's device (other than
    int32, cast on the device).
    max_seqlen_q / max_seqlen_k: the longest sequence (a promise, like FlashAttention's: it picks
    the tiles and bounds the kernels' offsets; longer sequences are cut to it).
    sigmoid_bias: float, or a [B] tensor; default -log(key count) per sequence. score_mod: a
    [total_k] additive per-key bias. is_causal: query i of a sequence attends its keys j <= i.
    Rows past cu_seqlens_q[B] are zero. Returns [total_q, Hq, D]; differentiable in q, k, v,
    score_mod and a sigmoid_bias tensor. strict (default: env SIGMOID_ATTN_STRICT=1) checks cu_seqlens on the host.
    Bad arguments raise ValueError (values, shapes, devices) or TypeError (dtypes, Python
    types), both also RuntimeError.
    """
    from .functional import STRICT

    if strict or (strict is None and STRICT):
        check_cu_seqlens(cu_seqlens_q, q.shape[0], max_seqlen_q, "cu_seqlens_q")
        check_cu_seqlens(cu_seqlens_k, k.shape[0], max_seqlen_k, "cu_seqlens_k")
    bias_value, bias_tensor = sigmoid_bias, None
    if isinstance(sigmoid_bias, torch.Tensor):
        bias_value, bias_tensor = None, sigmoid_bias
    try:  # free unless it raises: validation errors become ValueError / TypeError (_errors.py)
        if cu_seqlens_q.dtype is not torch.int32:
            cu_seqlens_q = as_int32(cu_seqlens_q)
        if cu_seqlens_k.dtype is not torch.int32:
            cu_seqlens_k = as_int32(cu_seqlens_k)
        args = (q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), int(max_seqlen_k),
                is_causal, scale, bias_value, bias_tensor, score_mod)
        if needs_grad(q, k, v, score_mod, bias_tensor) or torch.compiler.is_compiling():
            return _forward_varlen(*args)  # with the op's registered autograd (_autograd.py)
        with below_autograd():
            return _forward_varlen(*args)
    except (RuntimeError, AttributeError, TypeError, ValueError) as e:
        err = argument_error(e, "sigmoid_attention_varlen", q=q, k=k, v=v,
                             cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
                             max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
                             score_mod=score_mod)
        if err is None:
            raise
        raise err from None


def sigmoid_attention_varlen_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    is_causal: bool = False,
    scale: Optional[float] = None,
    sigmoid_bias: Union[float, torch.Tensor, None] = None,
    score_mod: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Pure-torch packed sigmoid attention, one dense reference call per sequence, in q's dtype.
    Same clamps as the kernels: offsets to [0, total], lengths to max_seqlen."""
    from .functional import sigmoid_attention_reference

    total_q, total_k = q.shape[0], k.shape[0]
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    out = q.new_zeros(q.shape)
    pieces = []
    for b in range(len(cq) - 1):
        q0 = min(max(cq[b], 0), total_q)
        q1 = min(max(cq[b + 1], q0), total_q)
        k0 = min(max(ck[b], 0), total_k)
        k1 = min(max(ck[b + 1], k0), total_k)
        Lq, Lk = min(q1 - q0, max_seqlen_q), min(k1 - k0, max_seqlen_k)
        bias = sigmoid_bias[b:b + 1] if isinstance(sigmoid_bias, torch.Tensor) else sigmoid_bias
        mod = score_mod[k0:k0 + Lk].unsqueeze(0) if score_mod is not None else None
        o = sigmoid_attention_reference(q[q0:q0 + Lq].unsqueeze(0), k[k0:k0 + Lk].unsqueeze(0),
                                        v[k0:k0 + Lk].unsqueeze(0), is_causal=is_causal,
                                        scale=scale, sigmoid_bias=bias, score_mod=mod)
        pieces.append((q0, Lq, o[0]))
    if not pieces:
        return out
    # Assemble without in-place writes into a leaf, so that autograd flows through.
    rows = torch.cat([torch.arange(q0, q0 + L, device=q.device) for q0, L, _ in pieces])
    vals = torch.cat([o for _, _, o in pieces])
    return out.index_put((rows,), vals) if rows.numel() else out
