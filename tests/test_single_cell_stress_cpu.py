"""examples/single_cell/stress.py and synthetic.py on CPU: the synthetic generator keeps the bundled
data's statistics and is deterministic; the divergence detector; the --quick run trains both
attentions (loss falls, no divergence) and a deliberately unstable one (learning rate 10) is
caught for both."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "examples", "single_cell"))
import data as D  # noqa: E402
import stress  # noqa: E402
import synthetic as S  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The quick model is tiny: one thread beats several fighting over a busy CPU (3x here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def fit():
    return stress.fitted(stress.N_BINS)


def test_bundled_data_is_too_short_for_long_cells():
    assert D.load().n_genes < stress.SETTINGS["full"]["tokens"]


def test_synthetic_cells_are_deterministic_whole_panel_sequences(fit):
    genes = S.make_genes(fit, 1000, seed=0)
    a = stress.make_batch(fit, genes, 3, seed=1, step=7, templates=None)
    b = stress.make_batch(fit, genes, 3, seed=1, step=7, templates=None)
    c = stress.make_batch(fit, genes, 3, seed=1, step=8, templates=None)
    for x, y in zip(a[:4], b[:4]):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])
    inp, bins, where, target, labels = a
    assert inp.shape == bins.shape == (3, 1000) and len(labels) == 3
    assert where.shape == target.shape == (3, round(stress.MASK_RATE * 1000))
    assert (torch.gather(inp, 1, where) == D.MASK).all()
    # unmasked, every cell is a permutation of the whole panel: expressed genes first
    genes_tok = inp.scatter(1, where, target + D.N_SPECIAL)
    assert (genes_tok.sort(1).values == torch.arange(1000) + D.N_SPECIAL).all()
    expressed = bins > 0
    assert (expressed[:, :-1] >= expressed[:, 1:]).all()   # no expressed gene after bin 0
    assert (bins[:, :-1] >= bins[:, 1:]).all()             # decreasing expression


def test_synthetic_panel_keeps_the_real_statistics(fit):
    real = D.load().expression
    genes = S.make_genes(fit, 4000, seed=0)
    x, _ = S.sample_cells(fit, genes, 400, torch.Generator().manual_seed(0))
    x = x.numpy()
    q = [0.1, 0.5, 0.9]
    # per-gene expression fractions: the same distribution (within 0.05 at each quantile)
    assert np.abs(np.quantile((x > 0).mean(0), q) - np.quantile((real > 0).mean(0), q)).max() < 0.05
    assert abs(x[x > 0].mean() - real[real > 0].mean()) < 0.1
    # co-expression: the real top-16 PC share, far above that of independent genes
    share = S.top_variance_share(x[:, :765])
    shuffled = S.top_variance_share(np.random.default_rng(0).permuted(real, axis=0))
    assert abs(share - S.top_variance_share(real)) < 0.05 and share > 2 * shuffled


def test_same_initialization_for_both_attentions():
    from model import ModelConfig

    mcfg = ModelConfig(n_genes=300, n_bins=stress.N_BINS, dim=64, heads=2, layers=2, ff=128,
                       max_positions=300)
    weights = []
    for kind in ("softmax", "sigmoid"):
        torch.manual_seed(3)
        weights.append(stress.StressModel(mcfg, kind).state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_divergence_detector():
    stable = stress.Divergence(ref_steps=3)
    assert all(stable.update(5.0 - 0.01 * i, 1.0 + 0.5 * (i % 3)) is None for i in range(50))
    growing = stress.Divergence(ref_steps=3, grad_factor=1000)
    calls = [growing.update(5.0, 2.0 ** i) for i in range(20)]   # median of 1, 2, 4: 2
    assert calls.index(next(c for c in calls if c)) == 11             # 2048 > 1000 x 2
    lossy = stress.Divergence(ref_steps=2, loss_factor=10)
    calls = [lossy.update(v, 1.0) for v in (5, 5, 40, 51)]            # 51 > 10 x 5
    assert calls[:3] == [None] * 3 and calls[3].startswith("loss")
    assert stress.Divergence().update(float("nan"), 1.0).startswith("non-finite")
    assert stress.Divergence().update(1.0, float("inf")).startswith("non-finite")


def _runs(out, *argv):
    stress.main(["--quick", "--device", "cpu", "--out", str(out), *argv])
    runs = {}
    for kind in ("softmax", "sigmoid"):
        with open(out / f"{kind}-seed0.json") as f:
            runs[kind] = json.load(f)["run"]
    return runs


def test_quick_run_trains_both_attentions(tmp_path):
    runs = _runs(tmp_path)
    steps = stress.SETTINGS["quick"]["steps"]
    for kind, r in runs.items():
        loss = np.array(r["loss"])
        assert r["diverged_at_step"] is None and r["steps"] == steps, kind
        assert np.isfinite(loss).all() and np.isfinite(r["grad_norm"]).all()
        assert loss[-5:].mean() < loss[:5].mean() - 0.05, (kind, loss)
        assert 0 < r["attention_share_of_step"] and r["attention_ms"] > 0
        assert np.isfinite(r["val_loss"]) and -1 <= r["silhouette"] <= 1
    # same data, and at initialization q.k ~ 0, so softmax's weights (1/n) and sigmoid's
    # (sigmoid(-log n) ~ 1/n) nearly agree: the first step's losses match closely
    assert runs["softmax"]["loss"][0] == pytest.approx(runs["sigmoid"]["loss"][0], abs=1e-3)
    with open(tmp_path / "results.json") as f:
        result = json.load(f)
    assert {r["attention"] for r in result["runs"]} == {"softmax", "sigmoid"}
    assert result["data"]["kind"].startswith("SYNTHETIC")
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "stress_8k.png").stat().st_size > 10_000


def test_detector_fires_on_learning_rate_10(tmp_path):
    runs = _runs(tmp_path, "--lr", "10", "--steps", "12", "--ref-steps", "1", "--no-plot")
    for kind, r in runs.items():
        assert r["diverged_at_step"] is not None and r["diverged_at_step"] < 12, (kind, r)
        assert r["steps"] == r["diverged_at_step"] + 1
