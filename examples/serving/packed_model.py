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


def linears_to(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The linear layers' parameters stored in dtype (LayerNorm and the embeddings keep theirs).
    Under autocast to that dtype the model computes the same values: autocast casts fp32 weights
    and biases on every call (a kernel each, inside every CUDA graph too) and leaves parameters
    already in its dtype as they are."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.to(dtype)
    return model


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


class GraphedEncoder:
    """PackedEncoder.embed_cells replayed from CUDA graphs: one graph per (token bucket, cell
    bucket), both powers of two, captured on first use into static buffers. A batch is copied
    into its bucket's buffers and the graph replayed: one launch instead of the model's few
    dozen, which is what a tiny cell's latency is made of (the host's launches, the GPU idle
    between them).

    The bucket's spare rows are inert: its spare cells have zero tokens (cu_seqlens repeats the
    batch's total), and its spare tokens lie past cu_seqlens[-1], where the attention op leaves
    its output zero; they are pooled into one extra cell row that is dropped. Only attention and
    pooling see across tokens, so the real cells' embeddings are the eager ones up to float
    rounding. max_seqlen is the bucket's token count (an upper bound, as the op allows).

    Batches above max_tokens tokens run eagerly: there the kernels' time dominates."""

    def __init__(self, encoder: PackedEncoder, device, dtype, max_tokens: int = 4096,
                 max_cells: int = 256, min_tokens: int = 256):
        self.encoder, self.device, self.dtype = encoder, torch.device(device), dtype
        self.max_tokens, self.max_cells, self.min_tokens = max_tokens, max_cells, min_tokens
        self.graphs = {}  # (tokens, cells) -> (graph, static inputs, static output)
        self.pool = None  # one memory pool shared by every graph (replays never overlap)

    @staticmethod
    def _bucket(n: int, least: int) -> int:
        return max(least, 1 << max(0, n - 1).bit_length())

    def capture_all(self) -> None:
        """Captures every bucket: tokens min_tokens..max_tokens, cells 1..min(tokens, max_cells)."""
        t = self._bucket(self.min_tokens, 1)
        while t <= self.max_tokens:
            c = 1
            while c <= min(t, self.max_cells):
                if (t, c) not in self.graphs:
                    self.graphs[(t, c)] = self._capture(t, c)
                c *= 2
            t *= 2

    def covers(self, p: PackedCells) -> bool:
        return (int(p.cu_seqlens[-1]) <= self.max_tokens
                and self._bucket(p.lens.shape[0], 1) <= self.max_cells)

    def _capture(self, n_tok: int, n_cells: int):
        dev = self.device
        # the inputs as three device buffers, each filled by one copy from its pinned twin:
        # genes, bins, pos, cell as rows of one int64 [4, n_tok]; lens; cu_seqlens
        ints = torch.zeros(4, n_tok, dtype=torch.int64, device=dev)
        lens = torch.zeros(n_cells + 1, dtype=torch.float32, device=dev)
        cu = torch.zeros(n_cells + 2, dtype=torch.int32, device=dev)
        static = PackedCells(genes=ints[0], bins=ints[1], pos=ints[2], cell=ints[3], lens=lens,
                             cu_seqlens=cu, max_len=n_tok)
        host = tuple(torch.zeros_like(t, device="cpu").pin_memory() for t in (ints, lens, cu))

        def run():
            # (no autocast cache: torch.cuda.graph's advice for capture under autocast)
            with torch.autocast(dev.type, dtype=self.dtype, enabled=self.dtype is not None,
                                cache_enabled=False):
                return self.encoder.embed_cells(static)

        side = torch.cuda.Stream(dev)  # warm-up off the capture stream, as torch.cuda.graph asks
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            run()
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = run()
        self.pool = graph.pool()
        return graph, host, (ints, lens, cu), out

    def embed_cells(self, p: PackedCells) -> torch.Tensor:
        """p on the host (pack()'s tensors); returns [B, dim] float32 on the device. The pinned
        staging buffers are reused: the caller synchronizes (reads the result) before the next
        call, as the server's predict does."""
        n, b = int(p.cu_seqlens[-1]), p.lens.shape[0]
        key = (self._bucket(n, self.min_tokens), self._bucket(b, 1))
        if key not in self.graphs:
            self.graphs[key] = self._capture(*key)
        graph, (h_ints, h_lens, h_cu), dev_bufs, out = self.graphs[key]
        for row, t in enumerate((p.genes, p.bins, p.pos, p.cell)):
            h_ints[row, :n] = t
        h_ints[:3, n:] = 0
        h_ints[3, n:] = key[1]  # spare tokens: the dropped extra cell
        h_lens[:b] = p.lens
        h_lens[b:] = 0
        h_cu[:b + 1] = p.cu_seqlens
        h_cu[b + 1:] = n  # spare cells: no tokens
        for dst, src in zip(dev_bufs, (h_ints, h_lens, h_cu)):
            dst.copy_(src, non_blocking=True)
        graph.replay()
        return out[:b]
