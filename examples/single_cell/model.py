"""A small pre-LayerNorm transformer encoder over gene tokens, with either softmax attention
(PyTorch SDPA with a key-padding mask) or sigmoid attention (sigmoid_attn, with lengths)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from data import N_SPECIAL
from sigmoid_attn import sigmoid_attention

ATTENTIONS = ("softmax", "sigmoid")


@dataclass
class ModelConfig:
    n_genes: int
    n_bins: int = 16
    dim: int = 128
    heads: int = 4          # head_dim = dim / heads: 32 here (the CUDA kernels take 32..256)
    layers: int = 4
    ff: int = 512
    max_positions: int = 1024


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kind: str):
        super().__init__()
        if kind not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {kind!r}")
        self.heads, self.kind = heads, kind
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # stress.py sets a stride s > 0: each call then keeps in max_logit the largest
        # scale * q.k over every s-th query of the first cell (all keys, all heads).
        self.max_logit_stride, self.max_logit = 0, None

    def forward(self, x: torch.Tensor, lens: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).unbind(2)  # [B, T, H, D]
        if self.max_logit_stride:
            with torch.no_grad():
                qs, k0 = q[0, ::self.max_logit_stride].transpose(0, 1), k[0].transpose(0, 1)
                self.max_logit = (qs @ k0.transpose(1, 2)).amax().float() * q.shape[-1] ** -0.5
        if self.kind == "sigmoid":
            # Padded [B, T, H, D] batch + int32 lengths: padding is skipped, not masked.
            o = sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens)
        else:
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2), attn_mask=key_mask)
            o = o.transpose(1, 2)
        return self.proj(o.reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, kind: str):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg.dim, cfg.heads, kind)
        self.ff = nn.Sequential(nn.Linear(cfg.dim, cfg.ff), nn.GELU(), nn.Linear(cfg.ff, cfg.dim))

    def forward(self, x, lens, key_mask):
        x = x + self.attn(self.n1(x), lens, key_mask)
        return x + self.ff(self.n2(x))


class CellTransformer(nn.Module):
    """Token = gene embedding + expression-bin embedding + rank (position) embedding."""

    def __init__(self, cfg: ModelConfig, kind: str):
        super().__init__()
        self.cfg = cfg
        self.gene = nn.Embedding(cfg.n_genes + N_SPECIAL, cfg.dim)
        self.bin = nn.Embedding(cfg.n_bins + 1, cfg.dim)
        self.pos = nn.Embedding(cfg.max_positions, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg, kind) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.n_genes)
        self.apply(_init)

    def encode(self, genes: torch.Tensor, bins: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """[B, T] tokens, int32 [B] lengths -> [B, T, dim] hidden states."""
        B, T = genes.shape
        pos = torch.arange(T, device=genes.device)
        x = self.gene(genes) + self.bin(bins) + self.pos(pos).unsqueeze(0)
        key_mask = (pos.view(1, T) < lens.view(B, 1)).view(B, 1, 1, T)  # True = attend
        for blk in self.blocks:
            x = blk(x, lens, key_mask)
        return self.norm(x)

    def forward(self, genes, bins, lens):
        return self.head(self.encode(genes, bins, lens))

    def embed_cells(self, genes, bins, lens) -> torch.Tensor:
        """Cell embedding: the mean hidden state over the cell's tokens."""
        h = self.encode(genes, bins, lens).float()
        valid = (torch.arange(genes.shape[1], device=h.device).view(1, -1)
                 < lens.view(-1, 1)).unsqueeze(-1)
        return (h * valid).sum(1) / lens.clamp_min(1).view(-1, 1)


def _init(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
