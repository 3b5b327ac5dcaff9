"""The single-cell encoder over packed cells: the tokens of all cells in one [total_tokens, dim]
tensor, attention by sigmoid_attention_varlen over cu_seqlens, mean pooling per cell by segment.

It wraps a trained CellTransformer (same parameters, no copy) and computes what its padded
embed_cells computes, up to float rounding: embeddings, LayerNorm, the MLP and the projections
act on each token alone, so only attention and pooling need to know where a cell ends, and the
default sigmoid bias, -log(key count), is per sequence in both APIs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import checkpoint  # noqa: F401  (puts examples/single_cell on sys.path)
from model import CellTransformer

from sigmoid_attn import sigmoid_attention_varlen


@dataclass
class PackedCells:
    genes: torch.Tensor       # int64 [N]: token ids (gene id + N_SPECIAL)
    bins: torch.Tensor        # int64 [N]
    pos: torch.Tensor         # int64 [N]: rank of the token within its cell
    cell: torch.Tensor        # int64 [N]: which cell the token belongs to
    lens: torch.Tensor        # float32 [B]
    cu_seqlens: torch.Tensor  # int32 [B + 1]
    max_len: int

    def to(self, device) -> "PackedCells":
        nb = dict(device=device, non_blocking=True)
        return PackedCells(self.genes.to(**nb), self.bins.to(**nb), self.pos.to(**nb),
                           self.cell.to(**nb), self.lens.to(**nb), self.cu_seqlens.to(**nb),
                           self.max_len)


def pack(cells: list) -> PackedCells:
    """cells: (genes, bins) int64 numpy arrays of token ids, one pair per cell. Built on the host
    so that the device sees finished index tensors (no repeat_interleave sync there)."""
    lens = np.array([len(g) for g, _ in cells], dtype=np.int64)
    cu = np.zeros(len(cells) + 1, dtype=np.int64)
    np.cumsum(lens, out=cu[1:])
    pos = np.arange(cu[-1], dtype=np.int64) - np.repeat(cu[:-1], lens)
    return PackedCells(
        genes=torch.from_numpy(np.concatenate([g for g, _ in cells])),
        bins=torch.from_numpy(np.concatenate([b for _, b in cells])),
        pos=torch.from_numpy(pos),
        cell=torch.from_numpy(np.repeat(np.arange(len(cells), dtype=np.int64), lens)),
        lens=torch.from_numpy(lens.astype(np.float32)),
        cu_seqlens=torch.from_numpy(cu.astype(np.int32)),
        max_len=int(lens.max()),
    )


def pad(cells: list) -> tuple:
    """The padded [B, T] batch of the same cells, for CellTransformer.embed_cells."""
    lens = [len(g) for g, _ in cells]
    genes = np.zeros((len(cells), max(lens)), dtype=np.int64)
    bins = np.zeros_like(genes)
    for i, (g, b) in enumerate(cells):
        genes[i, :len(g)], bins[i, :len(b)] = g, b
    return (torch.from_numpy(genes), torch.from_numpy(bins),
            torch.tensor(lens, dtype=torch.int32))


class PackedEncoder(nn.Module):
    def __init__(self, model: CellTransformer):
        super().__init__()
        if any(blk.attn.kind != "sigmoid" for blk in model.blocks):
            raise ValueError("the packed encoder runs sigmoid attention: load a sigmoid checkpoint")
        self.model = model

    def _attention(self, attn, x: torch.Tensor, p: PackedCells) -> torch.Tensor:
        N, C = x.shape
        q, k, v = attn.qkv(x).view(N, 3, attn.heads, C // attn.heads).unbind(1)  # [N, H, D]
        o = sigmoid_attention_varlen(q, k, v, p.cu_seqlens, p.cu_seqlens, p.max_len, p.max_len)
        return attn.proj(o.reshape(N, C))

    def encode(self, p: PackedCells) -> torch.Tensor:
        """[N] tokens -> [N, dim] hidden states."""
        m = self.model
        x = m.gene(p.genes) + m.bin(p.bins) + m.pos(p.pos)
        for blk in m.blocks:
            x = x + self._attention(blk.attn, blk.n1(x), p)
            x = x + blk.ff(blk.n2(x))
        return m.norm(x)

    def embed_cells(self, p: PackedCells) -> torch.Tensor:
        """Cell embeddings [B, dim] (float32): the mean hidden state over each cell's tokens."""
        h = self.encode(p).float()
        sums = h.new_zeros(p.lens.shape[0], h.shape[1]).index_add_(0, p.cell, h)
        return sums / p.lens.clamp_min(1).unsqueeze(1)
