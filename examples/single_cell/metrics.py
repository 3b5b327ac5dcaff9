"""Clustering metrics in numpy (the device machine has no scikit-learn): silhouette score,
k-means (k-means++ seeding, best of n_init restarts) and the adjusted Rand index. They follow
scikit-learn's definitions; tests/test_single_cell_example.py checks them against it."""

from __future__ import annotations

import numpy as np


def pairwise_distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix of the rows of x, in float64."""
    x = np.asarray(x, dtype=np.float64)
    sq = (x * x).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.T
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(d2)


def silhouette_score(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean over samples of (b - a) / max(a, b): a = mean distance to the own cluster's other
    members, b = smallest mean distance to another cluster; 0 for members of singleton clusters."""
    _, y = np.unique(labels, return_inverse=True)
    k = y.max() + 1
    if k < 2 or k >= len(y):
        raise ValueError(f"silhouette_score: needs 2 <= clusters < samples, got {k} clusters")
    d = pairwise_distances(x)
    onehot = np.eye(k)[y]                       # [n, k]
    counts = onehot.sum(0)                      # [k]
    sums = d @ onehot                           # [n, k]: distance sum from each sample to each cluster
    own = counts[y]
    a = sums[np.arange(len(y)), y] / np.maximum(own - 1, 1)
    mean_other = sums / counts[None, :]
    mean_other[np.arange(len(y)), y] = np.inf
    b = mean_other.min(1)
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-300)
    s[own == 1] = 0.0
    return float(s.mean())


def kmeans(x: np.ndarray, k: int, seed: int = 0, n_init: int = 10,
           max_iter: int = 300, tol: float = 1e-6) -> np.ndarray:
    """Cluster labels of Lloyd's k-means, k-means++ seeding, the lowest-inertia of n_init runs."""
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        centers = _kmeans_pp(x, k, rng)
        for _ in range(max_iter):
            d2 = ((x[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
            assign = d2.argmin(1)
            new = np.stack([x[assign == j].mean(0) if (assign == j).any() else centers[j]
                            for j in range(k)])
            shift = ((new - centers) ** 2).sum()
            centers = new
            if shift <= tol * x.var(0).sum():
                break
        d2 = ((x[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
        assign = d2.argmin(1)
        inertia = d2[np.arange(len(x)), assign].sum()
        if inertia < best_inertia:
            best, best_inertia = assign, inertia
    return best


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centers = [x[rng.integers(len(x))]]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(x), 1.0 / len(x))
        c = x[rng.choice(len(x), p=p)]
        centers.append(c)
        d2 = np.minimum(d2, ((x - c) ** 2).sum(1))
    return np.stack(centers)


def adjusted_rand_index(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Hubert-Arabie adjusted Rand index: 1 for identical partitions, ~0 for random ones."""
    _, a = np.unique(labels_true, return_inverse=True)
    _, b = np.unique(labels_pred, return_inverse=True)
    n = len(a)
    table = np.zeros((a.max() + 1, b.max() + 1), dtype=np.float64)
    np.add.at(table, (a, b), 1.0)
    def pairs(m: np.ndarray) -> float:
        return (m * (m - 1) / 2.0).sum()

    index = pairs(table)
    rows, cols = pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / (n * (n - 1) / 2.0)
    top = (rows + cols) / 2.0
    if top == expected:  # both partitions trivial (one cluster, or all singletons)
        return 1.0
    return float((index - expected) / (top - expected))


def pca(x: np.ndarray, n: int) -> np.ndarray:
    """The first n principal-component scores of x (centered), via SVD."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u[:, :n] * s[:n]
