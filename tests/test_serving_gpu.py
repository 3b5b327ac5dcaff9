"""The serving example's CUDA-graph path (examples/serving/packed_model.py, GraphedEncoder):
embeddings replayed from captured graphs equal the eager packed encoder's, batch after batch in
the same bucket (no stale tokens or cells from a bigger batch), at bucket edges, and with a
model whose weights are random (no checkpoint needed). Needs CUDA."""

import os
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, rel_err

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

sys.path.insert(0, os.path.join(ROOT, "examples", "serving"))
import checkpoint  # noqa: E402,F401  (puts examples/single_cell on sys.path)
from model import CellTransformer, ModelConfig  # noqa: E402
from packed_model import GraphedEncoder, PackedEncoder, pack  # noqa: E402


def cells_of(rng, lengths, n_genes):
    return [(rng.integers(2, n_genes + 2, n), rng.integers(1, 17, n)) for n in lengths]


def test_graph_replays_match_eager():
    torch.manual_seed(0)
    cfg = ModelConfig(n_genes=500, dim=128, heads=4, layers=2, ff=256, max_positions=4096)
    enc = PackedEncoder(CellTransformer(cfg, "sigmoid").cuda().eval())
    graphed = GraphedEncoder(enc, "cuda", torch.bfloat16, max_tokens=1024, max_cells=16)
    rng = np.random.default_rng(1)
    # a big batch first, then smaller ones in the same buckets (stale rows would leak), bucket
    # edges (256, 257, 1024 tokens), one token, one cell of every size class
    batches = [[300, 200, 250, 274], [17], [1], [256], [257], [100, 3, 60], [1024],
               [64] * 16, [5] * 9, [700, 200, 124]]
    with torch.inference_mode():
        for lengths in batches:
            p = pack(cells_of(rng, lengths, cfg.n_genes))
            assert graphed.covers(p), lengths
            got = graphed.embed_cells(p).float().clone()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                want = enc.embed_cells(p.to("cuda")).float()
            assert got.shape == want.shape == (len(lengths), cfg.dim)
            assert torch.isfinite(got).all(), lengths
            assert rel_err(got, want) < 2e-2, lengths
    assert len(graphed.graphs) >= 5
    # over the limits: not covered (the server runs those eagerly)
    assert not graphed.covers(pack(cells_of(rng, [1025], cfg.n_genes)))
    assert not graphed.covers(pack(cells_of(rng, [2] * 17, cfg.n_genes)))
