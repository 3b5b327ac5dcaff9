"""Functional API: the fast op and a pure-torch reference with the same semantics."""

from __future__ import annotations

import math
import os
from typing import Optional, Union

import torch

from ._autograd import below_autograd, needs_grad
from ._errors import SigmoidAttentionValueError, argument_error
from ._ops import ops

_forward = ops.forward.default  # resolved once: skips overload resolution on every call
# The plain call's own overload, forward.plain(q, k, v, is_causal=False): torch.ops parses,
# fills and boxes every argument of a schema, and 4 instead of 10 saved 0.4 us of a 1.9 us
# dispatch (CPU, T=0 call).
_forward_plain = ops.forward.plain

_INT32 = torch.int32
_INT32_MAX = 2**31 - 1
# Integer dtypes taken for lengths and offsets, cast to the op's int32 on their device.
# Wider ones are clamped first so that a value past int32 keeps its meaning (the kernels clamp
# lengths and offsets to [0, T]) instead of wrapping around; uint32/64 have no clamp kernel,
# and going through int64 first is exact for any length that fits in memory.
_NARROW_INTS = frozenset((torch.int8, torch.uint8, torch.int16, torch.uint16))
_WIDE_INTS = frozenset((torch.int64, torch.uint32, torch.uint64))


def as_int32(x: torch.Tensor) -> torch.Tensor:
    """Integer lengths or offsets as int32 on their device, without a host synchronization.
    Other dtypes (bool, floating point) are returned as they are, for the op to reject."""
    dt = x.dtype
    if dt in _NARROW_INTS:
        return x.to(_INT32)
    if dt in _WIDE_INTS:
        return (x if dt is torch.int64 else x.to(torch.int64)).clamp(0, _INT32_MAX).to(_INT32)
    return x


# Strict mode (opt-in): lengths outside [0, T] raise instead of being clamped by the kernels.
STRICT = os.environ.get("SIGMOID_ATTN_STRICT", "0") not in ("", "0")


def check_lengths(lens: Optional[torch.Tensor], T: int, name: str) -> None:
    """Raises ValueError naming the first length outside [0, T]. The comparison runs on the
    lengths' device; reading its result synchronizes, which is why this is opt-in."""
    if lens is None:
        return
    bad = (lens < 0) | (lens > T)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise SigmoidAttentionValueError(
            f"sigmoid_attention: {name}[{i}] = {int(lens[i])} is outside [0, {T}] "
            "(strict mode; without it, lengths are clamped to [0, T])")

__all__ = ["sigmoid_attention", "sigmoid_attention_reference"]


def sigmoid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    seq_lens_q: Optional[torch.Tensor] = None,
    seq_lens_k: Optional[torch.Tensor] = None,
    is_causal: bool = False,
    scale: Optional[float] = None,
    sigmoid_bias: Union[float, torch.Tensor, None] = None,
    score_mod: Optional[torch.Tensor] = None,
    strict: Optional[bool] = None,
) -> torch.Tensor:
    """O = sigmoid(Q Kᵀ * scale + sigmoid_bias + score_mod) V for padded batches.

    q: [B, Tq, Hq, D]; k, v: [B, Tk, Hkv, D] with Hq a multiple of Hkv; any strides with a
    contiguous last dim. seq_lens_q / seq_lens_k: integer [B] on the tensors' device (None = full
    length; other than int32, cast on the device); positions at or past a length are padding and
    their output rows are zero.
    scale defaults to 1/sqrt(D); sigmoid_bias is a float or a [B] tensor and defaults to
    -log(valid key count) per sequence; score_mod is a [B, Tk] additive per-key bias.
    is_causal: query i attends keys j <= i (top-left aligned). Returns [B, Tq, Hq, D].
    Differentiable in q, k, v, score_mod and a sigmoid_bias tensor (eager, torch.compile, and
    the op called directly or from TorchScript).
    strict (default: env SIGMOID_ATTN_STRICT=1): raise ValueError on lengths outside [0, T]
    instead of clamping them; costs a device->host sync per call.
    Bad arguments raise ValueError (values, shapes, devices) or TypeError (dtypes, Python
    types), both also RuntimeError.
    """
    if strict or (strict is None and STRICT):
        check_lengths(seq_lens_q, q.shape[1], "seq_lens_q")
        check_lengths(seq_lens_k, k.shape[1], "seq_lens_k")
    # This function is the whole Python cost of a call: keep it to a few attribute reads.
    bias_value, bias_tensor = sigmoid_bias, None
    if isinstance(sigmoid_bias, torch.Tensor):
        bias_value, bias_tensor = None, sigmoid_bias
    try:  # free unless it raises: validation errors become ValueError / TypeError (_errors.py)
        if seq_lens_q is not None and seq_lens_q.dtype is not _INT32:
            seq_lens_q = as_int32(seq_lens_q)
        if seq_lens_k is not None and seq_lens_k.dtype is not _INT32:
            seq_lens_k = as_int32(seq_lens_k)
        if needs_grad(q, k, v, score_mod, bias_tensor) or torch.compiler.is_compiling():
            # The op's registered autograd (_autograd.py); torch.compile traces it as one op.
            return _forward(q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, bias_value,
                            bias_tensor, score_mod)
        with below_autograd():  # nothing needs a gradient: skip the Python autograd kernel
            if (seq_lens_q is None and seq_lens_k is None and sigmoid_bias is None
                    and score_mod is None and scale is None):
                # The plain call passes only what differs from the schema's defaults: torch.ops
                # converts every argument given.
                return _forward_plain(q, k, v, True) if is_causal else _forward_plain(q, k, v)
            return _forward(q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, bias_value,
                            bias_tensor, score_mod)
    except (RuntimeError, AttributeError) as e:
        err = argument_error(e, "sigmoid_attention", q=q, k=k, v=v, seq_lens_q=seq_lens_q,
                             seq_lens_k=seq_lens_k, score_mod=score_mod)
        if err is None:
            raise
        raise err from None


def sigmoid_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    seq_lens_q: Optional[torch.Tensor] = None,
    seq_lens_k: Optional[torch.Tensor] = None,
    is_causal: bool = False,
    scale: Optional[float] = None,
    sigmoid_bias: Union[float, torch.Tensor, None] = None,
    score_mod: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Pure-torch sigmoid attention, computed in q's dtype (pass float64 for a reference).

    Materializes the [B, H, Tq, Tk] scores: for tests and small problems. Same arguments and
    semantics as sigmoid_attention; lengths are clamped to [0, T] like the kernels do.
    """
    B, Tq, Hq, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    dev = q.device
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    lq = torch.full((B,), Tq, device=dev) if seq_lens_q is None else seq_lens_q.to(dev).long()
    lk = torch.full((B,), Tk, device=dev) if seq_lens_k is None else seq_lens_k.to(dev).long()
    lq, lk = lq.clamp(0, Tq), lk.clamp(0, Tk)
    group = Hq // Hkv
    kk = k.repeat_interleave(group, dim=2) if group > 1 else k
    vv = v.repeat_interleave(group, dim=2) if group > 1 else v
    s = torch.einsum("bqhd,bkhd->bhqk", q, kk) * scale
    if sigmoid_bias is None:
        bias = -torch.log(lk.clamp(min=1).to(q.dtype))
    elif isinstance(sigmoid_bias, torch.Tensor):
        bias = sigmoid_bias.to(q.dtype)
    else:
        bias = torch.full((B,), float(sigmoid_bias), dtype=q.dtype, device=dev)
    s = s + bias.view(B, 1, 1, 1)
    if score_mod is not None:
        s = s + score_mod.to(q.dtype).view(B, 1, 1, Tk)
    p = torch.sigmoid(s)
    j = torch.arange(Tk, device=dev)
    i = torch.arange(Tq, device=dev)
    keep = j.view(1, 1, 1, Tk) < lk.view(B, 1, 1, 1)
    if is_causal:
        keep = keep & (j.view(1, 1, 1, Tk) <= i.view(1, 1, Tq, 1))
    p = p * keep.to(p.dtype)
    out = torch.einsum("bhqk,bkhd->bqhd", p, vv)
    row_ok = (i.view(1, Tq) < lq.view(B, 1)).to(out.dtype)
    return out * row_ok.view(B, Tq, 1, 1)
