"""examples/single_cell: its numpy metrics against scikit-learn (when installed), the
tokenization and masking, and a one-epoch training smoke run of both attentions on CPU."""

import os
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "examples", "single_cell"))
import data as D  # noqa: E402
import metrics  # noqa: E402


def blobs(n=300, k=4, dim=8, spread=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (k, dim))
    y = rng.integers(0, k, n)
    return centers[y] + rng.normal(0, spread, (n, dim)), y


@pytest.mark.parametrize("spread", [0.5, 3.0])
def test_silhouette_matches_sklearn(spread):
    sk = pytest.importorskip("sklearn.metrics")
    x, y = blobs(spread=spread)
    y[:3] = 9  # a cluster of three, and one singleton below
    y[3] = 7
    assert metrics.silhouette_score(x, y) == pytest.approx(sk.silhouette_score(x, y), abs=1e-10)


def test_ari_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = rng.integers(0, 5, 200), rng.integers(0, 7, 200)
        b[:120] = a[:120]
        assert metrics.adjusted_rand_index(a, b) == pytest.approx(
            sk.adjusted_rand_score(a, b), abs=1e-12)
    assert metrics.adjusted_rand_index(np.array(["x", "y", "y"]), np.array([3, 1, 1])) == 1.0


def test_kmeans_recovers_blobs_like_sklearn():
    cluster = pytest.importorskip("sklearn.cluster")
    x, y = blobs(spread=0.5, seed=2)
    ours = metrics.kmeans(x, 4, seed=0)
    theirs = cluster.KMeans(4, n_init=10, random_state=0).fit_predict(x)
    assert metrics.adjusted_rand_index(y, ours) == 1.0
    assert metrics.adjusted_rand_index(theirs, ours) == 1.0


def test_tokenize_orders_by_expression_and_masks_valid_tokens():
    x = np.array([[0.0, 2.0, 1.0, 0.0, 3.0], [1.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    edges = D.bin_edges(x, 2)
    tok = D.tokenize(x, edges)
    assert tok.lens.tolist() == [3, 1]
    assert (tok.genes[0] - D.N_SPECIAL).tolist() == [4, 1, 2]
    assert tok.genes[1].tolist() == [0 + D.N_SPECIAL, D.PAD, D.PAD]
    assert tok.bins[0, 0] >= tok.bins[0, 2] >= 1 and tok.bins[1, 1:].eq(0).all()
    full = D.tokenize(x, edges, full_panel=True)
    assert full.lens.tolist() == [5, 5]
    assert sorted(full.genes[1].tolist()) == list(range(D.N_SPECIAL, D.N_SPECIAL + 5))
    inp, target = D.mask_genes(tok.genes, tok.lens, 0.0, torch.Generator().manual_seed(0))
    assert (inp == D.MASK).sum(1).tolist() == [1, 1]  # at least one per cell, in its length
    assert torch.equal(target[inp == D.MASK], tok.genes[inp == D.MASK] - D.N_SPECIAL)
    assert (target[inp != D.MASK] == -100).all()


def test_training_smoke_both_attentions():
    """One epoch of each attention on 64 cells: same initialization, finite losses, records."""
    import train as T
    from model import CellTransformer, ModelConfig

    ds = D.load()
    tok = D.tokenize(ds.expression[:80], D.bin_edges(ds.expression, 8), max_len=48)
    mcfg = ModelConfig(n_genes=ds.n_genes, n_bins=8, dim=32, heads=2, layers=1, ff=64)
    torch.manual_seed(0)
    a = CellTransformer(mcfg, "softmax").state_dict()
    torch.manual_seed(0)
    b = CellTransformer(mcfg, "sigmoid").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    cfg = {"batch": 16}
    def no_autocast():
        return torch.autocast("cpu", enabled=False)

    for kind in ("softmax", "sigmoid"):
        model, rec = T.train(kind, 0, tok, np.arange(64), np.arange(64, 80), cfg, mcfg,
                             torch.device("cpu"), no_autocast, 1e-3, None, 1, "test")
        assert rec["steps"] == 4 and rec["diverged_at_step"] is None
        assert np.isfinite(rec["grad_norm"]).all() and np.isfinite(rec["val_loss_final"])
        emb = T.embed(model, tok, torch.device("cpu"), no_autocast)
        assert emb.shape == (80, 32) and np.isfinite(emb).all()
