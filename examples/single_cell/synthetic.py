"""SYNTHETIC single-cell data with thousands of genes, fitted to the bundled pbmc68k_reduced.

Why synthetic: the long-sequence stress test (stress.py) needs cells of 8,192 gene tokens, and
the bundled data has 765 genes (every cell spans at most 765 tokens); a real panel of 8k+ genes
would mean a download at run time. So the bundled data's gene statistics are fitted here and
extended to any number of synthetic genes:

- per gene: the fraction of cells expressing it, and the mean and spread of its nonzero
  log-expression;
- co-expression programs: a rank-K factorization (truncated SVD) of the genes' normal scores
  (rank-based: each gene's values mapped to standard-normal quantiles). A cell is a mixture of
  programs (its K activities), a gene a loading on each.

A model (a Gaussian copula with low-rank correlation): gene g of cell c has the latent
z = a_c . l_g + sqrt(1 - |l_g|^2) eps, eps ~ N(0, 1); the gene is expressed when z exceeds the
quantile that gives its expression fraction, and its value grows with z (a truncated-normal
standardization onto the gene's nonzero mean and spread). The loadings' scale is calibrated so
that the 765 real genes, regenerated this way, keep the real data's share of variance in the
top K principal components. Synthetic gene g copies a random real gene's statistics and loadings,
jittered; a synthetic cell takes a random real cell's program activities, jittered, and keeps its
cell type as a label (for embedding scores). Deterministic for a seed; numpy/torch, vectorized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

import data as D

PROGRAMS = 16           # rank of the co-expression factorization
GENE_JITTER = 0.25      # loading noise, in units of each program's loading std
CELL_JITTER = 0.3       # activity noise, in units of each program's activity std (1 here)
FRACTION_JITTER = 0.25  # expression-fraction noise, on the logit scale


@dataclass
class Fit:
    """What the generator keeps from the real data (G real genes, N real cells, K programs)."""
    fraction: np.ndarray     # [G] fraction of cells expressing each gene
    nz_mean: np.ndarray      # [G] mean of the nonzero log-expression
    nz_std: np.ndarray       # [G] its standard deviation
    loadings: np.ndarray     # [G, K] program loadings on the latent scale, |row| < 1
    activity: np.ndarray     # [N, K] cells' program activities (unit variance per program)
    cell_type: np.ndarray    # [N] labels
    edges: np.ndarray        # expression-bin edges of the real data
    min_value: float         # the smallest nonzero real value
    loading_scale: float     # calibration factor applied to the SVD loadings


@dataclass
class Genes:
    """A synthetic gene panel."""
    threshold: torch.Tensor  # [G] latent threshold for expression
    nz_mean: torch.Tensor    # [G]
    nz_std: torch.Tensor     # [G]
    loadings: torch.Tensor   # [G, K]
    noise_std: torch.Tensor  # [G] sqrt(1 - |l_g|^2)
    template: np.ndarray     # [G] the real gene each one copies

    @property
    def n_genes(self) -> int:
        return self.loadings.shape[0]


def normal_scores(x: np.ndarray) -> np.ndarray:
    """Per column: average ranks (ties share their mean rank), mapped to N(0, 1) quantiles and
    standardized. Zeros, the large tie, all get one low score."""
    n = x.shape[0]
    order = np.argsort(x, axis=0, kind="stable")
    xs = np.take_along_axis(x, order, 0)
    idx = np.arange(n).reshape(n, 1)
    diff = xs[1:] != xs[:-1]
    ones = np.ones((1, x.shape[1]), dtype=bool)
    # each sorted position's tie group runs from `first` to `last` (0-based, inclusive)
    first = np.maximum.accumulate(np.where(np.r_[ones, diff], idx, 0), axis=0)
    last = np.minimum.accumulate(np.where(np.r_[diff, ones], idx, n)[::-1], axis=0)[::-1]
    ranks = np.empty(x.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, 0)
    z = torch.special.ndtri(torch.from_numpy((ranks - 0.5) / n)).numpy()
    z -= z.mean(0)
    sd = z.std(0)
    return z / np.where(sd > 0, sd, 1.0)


def top_svd(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top k singular triplets of z: a randomized range finder with power iterations, in
    torch (float64) like the sampling, so numpy's and torch's thread pools do not take turns
    spinning on a small CPU."""
    a = torch.from_numpy(z)
    gen = torch.Generator().manual_seed(0)
    y = a @ torch.randn(a.shape[1], k + 8, generator=gen, dtype=torch.float64)
    for _ in range(6):
        y = a @ (a.T @ torch.linalg.qr(y).Q)
    q = torch.linalg.qr(y).Q
    u, s, vt = torch.linalg.svd(q.T @ a, full_matrices=False)
    return (q @ u)[:, :k].numpy(), s[:k].numpy(), vt[:k].numpy()


def top_variance_share(x: np.ndarray, k: int = PROGRAMS) -> float:
    """Share of the normal scores' total variance in the top k principal components."""
    z = normal_scores(x)
    return float((top_svd(z, k)[1] ** 2).sum() / np.square(z).sum())


def fit(ds: D.Dataset, n_bins: int = 16, programs: int = PROGRAMS) -> Fit:
    x = ds.expression.astype(np.float64)
    n = x.shape[0]
    expressed = x > 0
    fraction = np.clip(expressed.mean(0), 1 / n, 1 - 1 / n)
    cnt = expressed.sum(0)
    nz_mean = np.where(cnt > 0, (x * expressed).sum(0) / np.maximum(cnt, 1), x[expressed].mean())
    var = ((x - nz_mean) ** 2 * expressed).sum(0) / np.maximum(cnt - 1, 1)
    nz_std = np.where(cnt > 2, np.sqrt(var), x[expressed].std())
    u, s, vt = top_svd(normal_scores(x), programs)
    activity = u * math.sqrt(n)
    base = vt.T * s / math.sqrt(n)
    f = Fit(fraction, nz_mean, nz_std, base, activity, ds.cell_type,
            D.bin_edges(ds.expression, n_bins), float(x[expressed].min()), 1.0)
    # Zeros tie, so the observed correlations understate the latent ones: scale the loadings
    # until the regenerated real genes keep the real top-K variance share (bisection; the share
    # grows with the scale).
    target, lo, hi = top_variance_share(ds.expression, programs), 0.6, 1.6
    for _ in range(6):
        mid = (lo + hi) / 2
        f.loadings, f.loading_scale = _cap(base * mid), mid
        if top_variance_share(regenerate_real(f, seed=0)) < target:
            lo = mid
        else:
            hi = mid
    f.loadings, f.loading_scale = _cap(base * (lo + hi) / 2), (lo + hi) / 2
    return f


def _cap(loadings: np.ndarray, max_norm: float = 0.95) -> np.ndarray:
    """Keeps every gene some private noise: |l_g| <= max_norm."""
    norm = np.linalg.norm(loadings, axis=1, keepdims=True)
    return loadings * np.minimum(1.0, max_norm / np.maximum(norm, 1e-12))


def _panel(f: Fit, template: np.ndarray, loadings: np.ndarray, fraction: np.ndarray,
           nz_mean: np.ndarray) -> Genes:
    loadings = _cap(loadings)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return Genes(threshold=torch.special.ndtri(t(1 - fraction)), nz_mean=t(nz_mean),
                 nz_std=t(f.nz_std[template]), loadings=t(loadings),
                 noise_std=t(np.sqrt(1 - (loadings ** 2).sum(1))), template=template)


def make_genes(f: Fit, n_genes: int, seed: int = 0) -> Genes:
    """n_genes synthetic genes, each a jittered copy of a random real gene."""
    rng = np.random.default_rng(seed)
    g = len(f.fraction)
    template = rng.integers(0, g, n_genes)
    loadings = f.loadings[template] + GENE_JITTER * f.loadings.std(0) * \
        rng.standard_normal((n_genes, f.loadings.shape[1]))
    logit = np.log(f.fraction / (1 - f.fraction))[template]
    fraction = 1 / (1 + np.exp(-(logit + FRACTION_JITTER * rng.standard_normal(n_genes))))
    nz_mean = f.nz_mean[template] + 0.1 * f.nz_std[template] * rng.standard_normal(n_genes)
    return _panel(f, template, loadings, fraction, nz_mean)


def sample_cells(f: Fit, genes: Genes, n: int, gen: torch.Generator,
                 templates: np.ndarray | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """n synthetic cells: float32 [n, G] log-expression (0 = not expressed) and their labels.
    Cell templates are drawn from `templates` (indices of real cells; default all)."""
    pool = torch.from_numpy(np.arange(len(f.activity)) if templates is None else templates)
    cells = pool[torch.randint(0, len(pool), (n,), generator=gen)]
    act = torch.from_numpy(f.activity[cells.numpy()]).float()
    act = act + CELL_JITTER * torch.randn(act.shape, generator=gen)
    z = act @ genes.loadings.T + genes.noise_std * torch.randn(n, genes.n_genes, generator=gen)
    tau = genes.threshold
    # z given z > tau for a standard normal: mean lam, variance 1 + tau lam - lam^2.
    tail = torch.special.ndtr(-tau).clamp_min(1e-12)
    lam = torch.exp(-0.5 * tau ** 2) / math.sqrt(2 * math.pi) / tail
    sd = torch.sqrt((1 + tau * lam - lam ** 2).clamp_min(1e-4))
    value = (genes.nz_mean + genes.nz_std * (z - lam) / sd).clamp_min(f.min_value)
    return torch.where(z > tau, value, torch.zeros(())), f.cell_type[cells.numpy()]


def regenerate_real(f: Fit, seed: int = 0) -> np.ndarray:
    """The real genes themselves (no gene jitter) for as many cells as the real data: the
    calibration and fit checks compare this with the real expression."""
    g = len(f.fraction)
    genes = _panel(f, np.arange(g), f.loadings, f.fraction, f.nz_mean)
    x, _ = sample_cells(f, genes, len(f.activity), torch.Generator().manual_seed(seed))
    return x.numpy()


def tokenize(x: torch.Tensor, edges: np.ndarray, gen: torch.Generator) -> D.Tokens:
    """Whole-panel cells, as data.tokenize(full_panel=True) but vectorized: expressed genes by
    decreasing expression, then the unexpressed ones in a per-cell random order; every cell is
    G tokens long."""
    n, g = x.shape
    key = torch.where(x > 0, -x, 1 + torch.rand(n, g, generator=gen))
    order = torch.argsort(key, dim=1, stable=True)
    v = torch.gather(x, 1, order)
    e = torch.from_numpy(np.asarray(edges, dtype=np.float32))
    bins = torch.where(v > 0, 1 + torch.searchsorted(e, v.contiguous(), right=True),
                       torch.zeros((), dtype=torch.long))
    return D.Tokens(order + D.N_SPECIAL, bins, torch.full((n,), g, dtype=torch.int32))


def fit_report(f: Fit, ds: D.Dataset, genes: Genes, seed: int = 0) -> dict:
    """Real data next to its regenerated copy and the synthetic panel: how well the fit holds."""
    real, regen = ds.expression, regenerate_real(f, seed)
    synth, _ = sample_cells(f, genes, 512, torch.Generator().manual_seed(seed))
    synth = synth.numpy()
    q = [0.1, 0.5, 0.9]

    def stats(x):
        frac, per_cell = (x > 0).mean(0), (x > 0).sum(1)
        return {"genes": x.shape[1],
                "expressed_fraction_quantiles": np.quantile(frac, q).tolist(),
                "expressed_per_cell_fraction": [float(per_cell.min() / x.shape[1]),
                                                float(np.median(per_cell) / x.shape[1]),
                                                float(per_cell.max() / x.shape[1])],
                "nonzero_mean": float(x[x > 0].mean()), "nonzero_std": float(x[x > 0].std())}

    sub = np.random.default_rng(seed).choice(genes.n_genes, min(765, genes.n_genes), False)
    return {"programs": f.activity.shape[1], "loading_scale": f.loading_scale,
            "real": stats(real) | {"top_pc_share": top_variance_share(real)},
            "regenerated_real_genes": stats(regen) | {"top_pc_share": top_variance_share(regen)},
            "synthetic_panel": stats(synth) | {
                "top_pc_share_of_765_genes": top_variance_share(synth[:, sub])},
            "shuffled_real_top_pc_share": top_variance_share(
                np.random.default_rng(seed).permuted(real, axis=0))}
