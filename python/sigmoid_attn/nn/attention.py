from typing import Optional

import torch
import torch.nn as nn


class SigmoidMultiheadAttention(nn.Module):
    """Multi-head sigmoid attention with q/k/v/out projections and grouped-query heads.

    Inputs are [B, T, E] (batch_first=True, the default) or [T, B, E]. Padding is given either
    as seq_lens (integer [B], trailing padding, the fastest path) or as key_padding_mask
    ([B, Tk] bool, True = padding, PyTorch's convention; any pattern, applied as a -inf per-key
    score). Scriptable with torch.jit.script (the scripted module calls the C++ op directly, so
    its argument errors are RuntimeError; in eager mode they are ValueError or TypeError, also
    RuntimeError); in eager mode it is differentiable through sigmoid_attn's backward.
    """

    def __init__(self, embed_dim: int, num_heads: int, num_kv_heads: Optional[int] = None,
                 bias: bool = True, batch_first: bool = True, device=None, dtype=None):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if embed_dim % num_heads != 0:
            raise ValueError(f"SigmoidMultiheadAttention: embed_dim={embed_dim} must be divisible "
                             f"by num_heads={num_heads}")
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"SigmoidMultiheadAttention: num_heads={num_heads} must be a multiple "
                             f"of num_kv_heads={num_kv_heads}")
        kw = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.batch_first = batch_first
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self.k_proj = nn.Linear(embed_dim, num_kv_heads * self.head_dim, bias=bias, **kw)
        self.v_proj = nn.Linear(embed_dim, num_kv_heads * self.head_dim, bias=bias, **kw)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)

    def forward(self, query: torch.Tensor, key: Optional[torch.Tensor] = None,
                value: Optional[torch.Tensor] = None, seq_lens: Optional[torch.Tensor] = None,
                key_padding_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        key = query if key is None else key
        value = key if value is None else value
        if not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        B, Tq = query.shape[0], query.shape[1]
        Tk = key.shape[1]
        q = self.q_proj(query).view(B, Tq, self.num_heads, self.head_dim)
        k = self.k_proj(key).view(B, Tk, self.num_kv_heads, self.head_dim)
        v = self.v_proj(value).view(B, Tk, self.num_kv_heads, self.head_dim)
        score_mod: Optional[torch.Tensor] = None
        bias: Optional[torch.Tensor] = None
        if key_padding_mask is not None:
            keep = ~key_padding_mask.to(torch.bool)
            score_mod = torch.zeros(B, Tk, device=q.device, dtype=torch.float32).masked_fill(
                ~keep, float("-inf"))
            bias = -torch.log(keep.sum(-1).to(torch.float32).clamp_min(1.0))
        if torch.jit.is_scripting():
            # The op takes int32 lengths only (eager calls convert any integer dtype).
            if seq_lens is not None and seq_lens.dtype == torch.int64:
                seq_lens = seq_lens.to(torch.int32)
            out = torch.ops.sigmoid_attn.forward(q, k, v, seq_lens, seq_lens, is_causal, None,
                                                 None, bias, score_mod)
        else:
            out = self._attend(q, k, v, seq_lens, is_causal, bias, score_mod)
        out = self.out_proj(out.reshape(B, Tq, self.embed_dim))
        return out if self.batch_first else out.transpose(0, 1)

    @torch.jit.unused
    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                seq_lens: Optional[torch.Tensor], is_causal: bool, bias: Optional[torch.Tensor],
                score_mod: Optional[torch.Tensor]) -> torch.Tensor:
        from ..functional import sigmoid_attention

        return sigmoid_attention(q, k, v, seq_lens_q=seq_lens, seq_lens_k=seq_lens,
                                 is_causal=is_causal, sigmoid_bias=bias, score_mod=score_mod)
