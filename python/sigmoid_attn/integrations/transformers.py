"""Hugging Face transformers: run a model's attention with this library's kernels.

    from sigmoid_attn.integrations import transformers as sigmoid_hf
    sigmoid_hf.register()
    model = AutoModel.from_pretrained(name, attn_implementation="sigmoid")

register() adds "sigmoid" to transformers' AttentionInterface (the attention function) and to
its AttentionMaskInterface (the mask builder; without an entry there, transformers would build
no mask at all for an unknown name and padding would be attended). A plain padding mask reaches
the kernels as a per-key mask [B, 1, 1, Tk]: no dense [B, 1, Tq, Tk] mask, the default bias is
-log(attended keys) per sequence. Other patterns (causal with padding, sliding windows, packed
sequences) are built densely by transformers' SDPA mask builder and take the dense path
(correct, O(T²) memory); causal without padding passes is_causal to the kernels.

The module under attention sees sigmoid(Q Kᵀ * scaling + bias) V instead of softmax: a model
pretrained with softmax attention computes a different function, as intended when training or
fine-tuning a sigmoid-attention model.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ..sdpa import _key_mask, scaled_dot_product_sigmoid_attention

__all__ = ["NAME", "register", "sigmoid_attention_forward", "sigmoid_mask"]

NAME = "sigmoid"


def register(name: str = NAME) -> None:
    """Registers the attention and mask functions under `name` (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(name, sigmoid_attention_forward)
    try:
        from transformers.masking_utils import AttentionMaskInterface
    except ImportError:  # older transformers build masks without a per-implementation registry
        return
    AttentionMaskInterface.register(name, sigmoid_mask)


def sigmoid_mask(*, batch_size: int, kv_length: int, kv_offset: int = 0,
                 mask_function: Optional[Callable] = None,
                 attention_mask: Optional[torch.Tensor] = None, use_vmap: bool = False,
                 **kwargs: Any) -> Optional[torch.Tensor]:
    """transformers mask builder: a plain bidirectional padding mask becomes a boolean key mask
    [B, 1, 1, kv_length] (True = attend; None without padding); anything else is left to
    transformers' sdpa_mask (a dense boolean mask, or None where is_causal suffices).
    Keyword-only, as transformers calls it: the query arguments differ between its versions
    (q_length/q_offset, cache_position) and are passed through untouched."""
    from transformers.masking_utils import bidirectional_mask_function, sdpa_mask

    if mask_function is bidirectional_mask_function and not use_vmap:
        if attention_mask is None:
            return None
        # A 2D mask may be shorter than offset + length (a static cache): missing keys are padding.
        missing = kv_offset + kv_length - attention_mask.shape[-1]
        if missing > 0:
            attention_mask = F.pad(attention_mask, (0, missing))
        keep = attention_mask[:, kv_offset:kv_offset + kv_length].to(torch.bool)
        return keep.view(keep.shape[0], 1, 1, kv_length)
    if mask_function is not None:
        kwargs["mask_function"] = mask_function
    return sdpa_mask(batch_size=batch_size, kv_length=kv_length, kv_offset=kv_offset,
                     attention_mask=attention_mask, use_vmap=use_vmap, **kwargs)


def sigmoid_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                              value: torch.Tensor, attention_mask: Optional[torch.Tensor],
                              dropout: float = 0.0, scaling: Optional[float] = None,
                              is_causal: Optional[bool] = None,
                              **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention function: query [B, Hq, Tq, D], key/value [B, Hkv, Tk, D]
    (Hq a multiple of Hkv, no repeat needed) -> ([B, Tq, Hq, D], None).

    attention_mask: None; a boolean (True = attend) or additive 4D mask; or a 2D [B, Tk]
    padding mask (1 = token, 0 = padding). Masks that only vary along keys run on the kernels.
    """
    for unsupported in ("softcap", "s_aux", "position_bias", "sinks"):
        if kwargs.get(unsupported) is not None:
            raise ValueError(f"sigmoid attention: `{unsupported}` is not supported")
    if query.is_cuda and query.dtype == torch.float32:
        raise ValueError("sigmoid attention: on CUDA the kernels take float16/bfloat16 inputs, got "
                         "float32; load the model with dtype=torch.bfloat16 or run it under "
                         "torch.autocast")
    B, Tq, Tk = query.shape[0], query.shape[2], key.shape[2]
    if attention_mask is not None and attention_mask.dim() == 2:
        attention_mask = attention_mask.to(torch.bool).view(-1, 1, 1, attention_mask.shape[-1])
    # SDPA's convention: is_causal applies only when no mask is given (a mask then encodes it).
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    causal = bool(causal) and attention_mask is None and Tq > 1
    if causal and Tk > Tq:  # prefill into an empty static cache: the keys past Tq are not filled
        key, value, Tk = key[:, :, :Tq], value[:, :, :Tq], Tq
    bias = None
    km = _key_mask(attention_mask, B, Tk) if attention_mask is not None else None
    if km is not None and km.dtype != torch.bool:
        # Additive key mask (e.g. 0 / finfo.min from an eager-style builder): the default bias
        # counts the keys that are not masked out, as for a boolean mask.
        keep = km > torch.finfo(km.dtype).min / 2
        bias = -torch.log(keep.sum(-1, dtype=torch.float32).clamp_min(1.0))
    if dropout > 0.0 and module.training:
        out = _dense_with_dropout(query, key, value, attention_mask, km, causal, scaling, bias,
                                  dropout)
    else:
        out = scaled_dot_product_sigmoid_attention(query, key, value, attn_mask=attention_mask,
                                                   is_causal=causal, scale=scaling,
                                                   sigmoid_bias=bias)
    # The kernels write [B, Tq, H, D] and return a transposed view: transposing back is free.
    return out.transpose(1, 2).contiguous(), None


def _dense_with_dropout(query, key, value, mask, km, causal, scale, bias, p):
    """Dense float32 sigmoid attention with dropout on the attention weights (the kernels have
    no dropout), with the same bias as the kernel path would use."""
    warnings.warn("sigmoid attention: attention dropout > 0 in training runs a dense O(T²) path; "
                  "set the model's attention dropout to 0 to use the kernels", stacklevel=3)
    Hq, Tq, D = query.shape[1], query.shape[2], query.shape[3]
    Hkv, Tk = key.shape[1], key.shape[2]
    if Hq != Hkv:
        key, value = (t.repeat_interleave(Hq // Hkv, dim=1) for t in (key, value))
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    s = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale
    keep = torch.ones(Tq, Tk, dtype=torch.bool, device=query.device)
    if causal:
        keep = torch.tril(keep)
    if mask is not None:
        if mask.dtype == torch.bool:
            keep = keep & mask
        else:
            s = s + mask.float()
    if bias is None:  # the kernel path's default: attended keys for key masks, else -log(Tk)
        if km is not None and km.dtype == torch.bool:
            bias = -torch.log(km.sum(-1, dtype=torch.float32).clamp_min(1.0))
        else:
            bias = torch.full((query.shape[0],), -math.log(max(Tk, 1)), device=query.device)
    s = s + bias.view(-1, 1, 1, 1)
    w = F.dropout(torch.sigmoid(s) * keep, p=p, training=True)
    return torch.matmul(w, value.float()).to(query.dtype)
