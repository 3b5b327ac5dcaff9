"""The API of the `triton-sigmoid` package (PyPI triton-sigmoid 0.1.2), served by this library.

    from sigmoid_attn.compat import triton_sigmoid      # instead of: import triton_sigmoid
    out = triton_sigmoid.sigmoid_attention_padded(q, k, v, seq_lens_k=lens)

The same names, signatures (positional order included: seq_lens_k comes before seq_lens_q, and
the reference's causal flag is `causal`), defaults and results:
- [B, T, H, D] tensors in and out; scale defaults to 1/sqrt(D).
- sigmoid_attention: dense, one length T for q, k and v (ValueError otherwise); sigmoid_bias
  defaults to -log(T).
- sigmoid_attention_padded: trailing padding given by seq_lens_k / seq_lens_q ([B]; any dtype,
  cast to int32 like triton-sigmoid does; None = no padding); padded query rows are zero;
  sigmoid_bias defaults to -log(seq_lens_k) per sequence.
- sigmoid_bias is a number (a one-element tensor also works) and score_mod a [B, Tk] tensor;
  neither gets a gradient, as in triton-sigmoid; q, k and v do.
- sigmoid_attention_ref: triton-sigmoid's PyTorch reference, in float32 (upcast=True) or in
  the inputs' dtype (upcast=False), with its default bias -log(L + 1e-6).
- Argument errors raise ValueError where triton-sigmoid does (shapes, ranks) and TypeError for
  dtypes and Python types, all also RuntimeError, with this library's messages.

Beyond triton-sigmoid (where it refuses or leaves the result undefined): k and v may have fewer
heads than q (grouped-query attention, a divisor of q's heads); CPU tensors (also float64) run
and importing needs no GPU; any strides with a contiguous last dim are read without copies;
lengths outside [0, T] are clamped to [0, T], for the default bias too; the sigmoid is exact
(TRITON_SIGMOID_ACCURATE has no effect).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .._errors import SigmoidAttentionValueError
from ..functional import sigmoid_attention as _attention
from ..functional import sigmoid_attention_reference as _reference

__all__ = ["sigmoid_attention", "sigmoid_attention_padded", "sigmoid_attention_ref"]

_EPS = 1e-6  # triton-sigmoid's reference: default bias -log(L + eps)


def _bias(sigmoid_bias, query, detach: bool = True):
    """triton-sigmoid reads the bias with float(): a number or a one-element tensor, constant.
    A one-element tensor becomes a [B] view here (no host synchronization); a [B] tensor is
    taken as one bias per sequence."""
    if not isinstance(sigmoid_bias, torch.Tensor):
        return sigmoid_bias
    b = sigmoid_bias.detach() if detach else sigmoid_bias
    if not b.is_floating_point():
        b = b.float()
    if b.numel() == 1 and isinstance(query, torch.Tensor) and query.dim() >= 1:
        b = b.reshape(1).expand(query.shape[0])
    return b


def _lengths(lens):
    """triton-sigmoid casts lengths of any dtype with .to(torch.int32); integer dtypes are
    cast (and clamped) by sigmoid_attention itself."""
    if isinstance(lens, torch.Tensor) and (lens.is_floating_point() or lens.dtype is torch.bool):
        return lens.to(torch.int32)
    return lens


def _constant(score_mod):
    # triton-sigmoid computes no gradient for score_mod ("not trainable").
    if isinstance(score_mod, torch.Tensor) and score_mod.requires_grad:
        return score_mod.detach()
    return score_mod


def sigmoid_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    is_causal: bool = False,
    scale: Optional[float] = None,
    sigmoid_bias: Optional[float] = None,
    score_mod: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Dense sigmoid attention: sigmoid(Q Kᵀ * scale + sigmoid_bias + score_mod) V.

    query, key, value: [B, T, H, D] with one T. is_causal: query i attends keys j <= i.
    scale: default 1/sqrt(D). sigmoid_bias: default -log(T). score_mod: [B, T] per-key bias,
    constant. Returns [B, T, H, D]."""
    if (isinstance(query, torch.Tensor) and isinstance(key, torch.Tensor) and query.dim() == 4
            and key.dim() == 4 and query.shape[1] != key.shape[1]):
        raise SigmoidAttentionValueError(
            "sigmoid_attention: dense attention needs one sequence length for q, k and v, got "
            f"Tq={query.shape[1]}, Tk={key.shape[1]} (sigmoid_attention_padded takes both)")
    return _attention(query, key, value, is_causal=bool(is_causal), scale=scale,
                      sigmoid_bias=_bias(sigmoid_bias, query), score_mod=_constant(score_mod))


def sigmoid_attention_padded(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    seq_lens_k: Optional[torch.Tensor] = None,
    seq_lens_q: Optional[torch.Tensor] = None,
    is_causal: bool = False,
    scale: Optional[float] = None,
    sigmoid_bias: Optional[float] = None,
    score_mod: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Sigmoid attention over padded batches (trailing padding).

    query: [B, Tq, H, D]; key, value: [B, Tk, H, D]. seq_lens_k / seq_lens_q: [B] valid
    lengths (None = no padding); query rows at or past seq_lens_q are zero. scale: default
    1/sqrt(D). sigmoid_bias: default -log(seq_lens_k) per sequence. score_mod: [B, Tk] per-key
    bias, constant. Returns [B, Tq, H, D]."""
    return _attention(query, key, value, seq_lens_q=_lengths(seq_lens_q),
                      seq_lens_k=_lengths(seq_lens_k), is_causal=bool(is_causal), scale=scale,
                      sigmoid_bias=_bias(sigmoid_bias, query), score_mod=_constant(score_mod))


def sigmoid_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_lens_k: Optional[torch.Tensor] = None,
    seq_lens_q: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    sigmoid_bias: Optional[float] = None,
    upcast: bool = True,
    reorder_ops: bool = False,
    causal: bool = False,
    score_mod: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """triton-sigmoid's pure-PyTorch reference for padded (or dense) batches, differentiable.

    upcast=True computes in float32, upcast=False in the inputs' dtype; the result has the
    inputs' dtype. reorder_ops scales k instead of q before the product (only the rounding
    differs). sigmoid_bias defaults to -log(seq_lens_k + 1e-6) per sequence, or -log(Tk + 1e-6)
    without lengths. Materializes [B, H, Tq, Tk]: for tests and small problems."""
    dtype = q.dtype
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    # The scale goes into one operand before the product, as in triton-sigmoid: same rounding.
    if reorder_ops:
        k = k * scale
    else:
        q = q * scale
    if sigmoid_bias is None:
        if seq_lens_k is not None:
            sigmoid_bias = -torch.log(seq_lens_k.to(q.device).float() + _EPS)
        else:
            sigmoid_bias = -math.log(k.shape[1] + _EPS)
    else:
        sigmoid_bias = _bias(sigmoid_bias, q, detach=False)
    out = _reference(q, k, v, seq_lens_q=seq_lens_q, seq_lens_k=seq_lens_k, is_causal=causal,
                     scale=1.0, sigmoid_bias=sigmoid_bias, score_mod=score_mod)
    return out.to(dtype)
