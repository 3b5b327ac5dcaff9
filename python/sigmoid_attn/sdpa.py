"""SDPA-style entry point: torch.nn.functional.scaled_dot_product_attention's signature and
[B, H, T, D] layout, computing sigmoid attention.

Fast path (the compiled kernels, no copies: [B, H, T, D] tensors are passed as transposed views):
  attn_mask None; a boolean key mask (True = attend) or an additive float key mask whose shape
  broadcasts to [B, 1, 1, Tk] (i.e. [B, 1, 1, Tk], [B, Tk] is NOT accepted as SDPA doesn't either).
  A boolean key mask becomes score_mod = 0 / -inf per key (any pattern, not only trailing
  padding) and the default bias becomes -log(number of attended keys), computed on the device.
Fallback (materializes [B, H, Tq, Tk] scores in float32 with torch ops): any mask that varies
  along queries or heads ([Tq, Tk], [B, H, Tq, Tk], ...); its default bias is -log(Tk).
  Correct and differentiable, but O(T²) memory.
Bad arguments raise ValueError (values, shapes, devices) or TypeError (dtypes, Python types),
both also RuntimeError, on both paths.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch

from ._errors import SigmoidAttentionTypeError, SigmoidAttentionValueError
from .functional import sigmoid_attention

__all__ = ["scaled_dot_product_sigmoid_attention"]


def _key_mask(attn_mask: torch.Tensor, B: int, Tk: int) -> Optional[torch.Tensor]:
    """[B, Tk] view of a mask that only varies along batch and keys, else None."""
    if attn_mask.dim() > 4 or attn_mask.shape[-1] != Tk:
        return None
    shape = (1,) * (4 - attn_mask.dim()) + tuple(attn_mask.shape)
    if shape[1] != 1 or shape[2] != 1 or shape[0] not in (1, B):
        return None
    return attn_mask.reshape(shape[0], Tk).expand(B, Tk)


def scaled_dot_product_sigmoid_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: Optional[torch.Tensor] = None,
    is_causal: bool = False,
    scale: Optional[float] = None,
    *,
    sigmoid_bias: Union[float, torch.Tensor, None] = None,
) -> torch.Tensor:
    """sigmoid(Q Kᵀ * scale + bias + mask) V on [B, H, T, D] tensors (Hq a multiple of Hkv).

    attn_mask: boolean (True = attend) or additive float, broadcastable like SDPA's. Returns
    [B, Hq, Tq, D]. The default bias is -log(attended key count) per sequence.
    """
    try:
        bad_rank = query.dim() != 4 or key.dim() != 4 or value.dim() != 4
    except AttributeError:  # checked only on failure: an isinstance per call costs more
        raise SigmoidAttentionTypeError(
            "scaled_dot_product_sigmoid_attention: query, key, value must be tensors, got "
            f"{type(query).__name__}, {type(key).__name__}, {type(value).__name__}") from None
    if bad_rank:
        raise SigmoidAttentionValueError(
            "scaled_dot_product_sigmoid_attention: query, key, value must be [B, H, T, D], got "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    B, Tk = query.shape[0], key.shape[2]
    q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    if attn_mask is None:
        return sigmoid_attention(q, k, v, is_causal=is_causal, scale=scale,
                                 sigmoid_bias=sigmoid_bias).transpose(1, 2)
    if not isinstance(attn_mask, torch.Tensor) or not (
            attn_mask.dtype == torch.bool or attn_mask.is_floating_point()):
        what = attn_mask.dtype if isinstance(attn_mask, torch.Tensor) else type(attn_mask).__name__
        raise SigmoidAttentionTypeError("scaled_dot_product_sigmoid_attention: attn_mask must be "
                                        f"a bool or floating point tensor, got {what}")
    km = _key_mask(attn_mask, B, Tk)
    if km is not None:
        if km.dtype == torch.bool:
            score_mod = torch.zeros(B, Tk, device=km.device, dtype=torch.float32)
            score_mod = score_mod.masked_fill(~km, float("-inf"))
            if sigmoid_bias is None:
                count = km.sum(-1, dtype=torch.float32).clamp_min(1.0)
                sigmoid_bias = -torch.log(count)
        else:
            score_mod = km
        return sigmoid_attention(q, k, v, is_causal=is_causal, scale=scale,
                                 sigmoid_bias=sigmoid_bias, score_mod=score_mod).transpose(1, 2)
    return _fallback(query, key, value, attn_mask, is_causal, scale, sigmoid_bias)


def _fallback(query, key, value, attn_mask, is_causal, scale, sigmoid_bias):
    """Dense [B, H, Tq, Tk] computation for masks the kernels cannot express."""
    B, Hq, Tq, D = query.shape
    Hkv, Tk = key.shape[1], key.shape[2]
    # The op's own checks (shapes, dtypes, scalars) on meta copies: the torch ops below would
    # report bad arguments in their own terms, or not at all. Meta, not the real device, keeps
    # what only this path serves (float64 and any head dim on CUDA); devices are checked here.
    def meta(t):
        return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")

    bias = meta(sigmoid_bias) if isinstance(sigmoid_bias, torch.Tensor) else sigmoid_bias
    sigmoid_attention(meta(query).transpose(1, 2), meta(key).transpose(1, 2),
                      meta(value).transpose(1, 2), is_causal=is_causal, scale=scale,
                      sigmoid_bias=bias)
    for name, t in (("key", key), ("value", value), ("sigmoid_bias", sigmoid_bias),
                    ("attn_mask", attn_mask)):
        if isinstance(t, torch.Tensor) and t.device != query.device:
            raise SigmoidAttentionValueError(
                f"scaled_dot_product_sigmoid_attention: {name} must be on query's device "
                f"{query.device}, got {t.device}")
    try:
        ok = torch.broadcast_shapes(attn_mask.shape, (B, Hq, Tq, Tk)) == (B, Hq, Tq, Tk)
    except RuntimeError:
        ok = False
    if not ok:
        raise SigmoidAttentionValueError(
            "scaled_dot_product_sigmoid_attention: attn_mask must broadcast to [B, Hq, Tq, Tk]="
            f"{[B, Hq, Tq, Tk]}, got {list(attn_mask.shape)}")
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    k = key.repeat_interleave(Hq // Hkv, dim=1) if Hq != Hkv else key
    v = value.repeat_interleave(Hq // Hkv, dim=1) if Hq != Hkv else value
    s = torch.matmul(query.float(), k.float().transpose(-1, -2)) * scale
    keep = torch.ones(Tq, Tk, dtype=torch.bool, device=query.device)
    if is_causal:
        keep = torch.tril(keep)
    if attn_mask.dtype == torch.bool:
        keep = keep & attn_mask
    else:
        s = s + attn_mask.float()
    if sigmoid_bias is None:  # -log(Tk): the mask's pattern may differ per row and head
        s = s - math.log(max(Tk, 1))
    elif isinstance(sigmoid_bias, torch.Tensor):
        s = s + sigmoid_bias.float().view(B, 1, 1, 1)
    else:
        s = s + float(sigmoid_bias)
    p = torch.sigmoid(s) * keep
    return torch.matmul(p, v.float()).to(query.dtype)
