"""Cells as gene-token sequences: a cell's expressed genes ordered by expression (highest first),
each token a gene id plus its expression bin; lengths vary per cell (183 to 409 expressed genes
in pbmc68k_reduced). Masked-gene prediction hides some gene ids and asks for them back."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "pbmc68k_reduced.npz")

PAD, MASK = 0, 1   # gene token ids; gene g is token g + N_SPECIAL
N_SPECIAL = 2


@dataclass
class Tokens:
    genes: torch.Tensor     # int64 [N, T]: token ids, PAD past each length
    bins: torch.Tensor      # int64 [N, T]: expression bin, 0 = not expressed (and padding)
    lens: torch.Tensor      # int32 [N]


@dataclass
class Dataset:
    expression: np.ndarray  # float32 [N, G], log-normalized
    genes: np.ndarray       # [G] names
    cell_type: np.ndarray   # [N] labels (evaluation only)

    @property
    def n_genes(self) -> int:
        return self.expression.shape[1]


def load(path: str = DATA) -> Dataset:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: run `python examples/single_cell/prepare_data.py` "
                                "where scanpy is installed")
    with np.load(path) as f:
        return Dataset(f["expression"].astype(np.float32), f["genes"], f["cell_type"])


def bin_edges(expression: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantiles of the nonzero values: n_bins bins of about equal size over the whole dataset."""
    nz = expression[expression > 0]
    return np.quantile(nz, np.linspace(0, 1, n_bins + 1)[1:-1])


def tokenize(expression: np.ndarray, edges: np.ndarray, max_len: int | None = None,
             full_panel: bool = False, keep_frac: float = 1.0, seed: int = 0) -> Tokens:
    """Expressed genes by decreasing expression (ties by gene index), truncated to max_len.
    keep_frac < 1 keeps only that top fraction of each cell's expressed genes (shorter
    sequences whose lengths still vary). full_panel appends every unexpressed gene (bin 0) in
    a per-cell random order, so each cell becomes a sequence over the whole gene panel."""
    n, g = expression.shape
    rng = np.random.default_rng(seed)
    rows = []
    for x in expression:
        order = np.lexsort((np.arange(g), -x))          # by -x, then gene index
        expressed = order[x[order] > 0]
        expressed = expressed[:math.ceil(keep_frac * len(expressed))]
        if full_panel:
            expressed = np.concatenate([expressed, rng.permutation(np.flatnonzero(x <= 0))])
        rows.append(expressed[:max_len] if max_len else expressed)
    T = max(len(r) for r in rows)
    genes = np.zeros((n, T), dtype=np.int64)
    bins = np.zeros((n, T), dtype=np.int64)
    for i, r in enumerate(rows):
        genes[i, :len(r)] = r + N_SPECIAL
        v = expression[i, r]
        bins[i, :len(r)] = np.where(v > 0, 1 + np.searchsorted(edges, v, side="right"), 0)
    lens = np.array([len(r) for r in rows], dtype=np.int32)
    return Tokens(torch.from_numpy(genes), torch.from_numpy(bins), torch.from_numpy(lens))


def mask_genes(genes: torch.Tensor, lens: torch.Tensor, rate: float,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Replaces a `rate` fraction of each cell's valid gene tokens (at least one) by MASK.
    Returns (masked input, target): target is the gene index at masked positions, -100 elsewhere.
    Drawn on the CPU from `gen`, so both attentions see the same masks for the same seed."""
    B, T = genes.shape
    valid = torch.arange(T).view(1, T) < lens.view(B, 1).long()
    pick = (torch.rand(B, T, generator=gen) < rate) & valid
    first = torch.randint(0, 1 << 30, (B,), generator=gen) % lens.clamp_min(1).long()
    pick[torch.arange(B), first] = True              # every cell predicts something
    pick &= valid
    target = torch.where(pick, genes - N_SPECIAL, torch.full_like(genes, -100))
    return genes.masked_fill(pick, MASK), target


def split(n: int, n_val: int, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """A fixed train/validation split of n cells (the same for every run)."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
