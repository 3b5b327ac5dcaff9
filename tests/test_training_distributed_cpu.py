"""examples/single_cell/train_distributed.py on CPU: 2 gloo processes on loopback train a tiny
single-cell model a few steps in each mode (ddp, fsdp2, cp with both sequence layouts), and
every step's global loss, the gradient norm and the final parameters must match a
single-process run of the same global batches (ddp/fsdp2: the same model; cp: the unsharded
sigmoid model on the same, unpadded cells). The cp run also pools cell embeddings across ranks
(all-reduced sums and counts), checked against the unsharded model's embed_cells.

One spawn runs every case (process start-up dominates the cost on a small CPU)."""

import dataclasses
import datetime
import os
import sys
import traceback

import pytest
import torch
import torch.distributed as dist
from conftest import ROOT, run_ranks

sys.path.insert(0, os.path.join(ROOT, "examples", "single_cell"))
import train_distributed as TD  # noqa: E402
from model import CellTransformer  # noqa: E402

WORLD = 2
SPAWN_TIMEOUT_S = 180
BASE = dict(steps=4, batch=8, dim=32, heads=2, layers=2, ff=64, n_bins=8, lr=1e-2, clip=1.0,
            seed=3, cells=32, amp=False)
# ddp/fsdp2: short cells (max_len 24); cp: whole expressed top-15% lists, 28-62 tokens per
# cell, so the padded length is not a multiple of 2P and the cells' ends fall inside shards.
CASES = {
    "ddp_sigmoid": dict(mode="ddp", attention="sigmoid", keep_frac=0.4, max_len=24),
    "ddp_softmax": dict(mode="ddp", attention="softmax", keep_frac=0.4, max_len=24),
    "fsdp2_sigmoid": dict(mode="fsdp2", attention="sigmoid", keep_frac=0.4, max_len=24),
    "cp_zigzag": dict(mode="cp", attention="sigmoid", keep_frac=0.15, full_panel=False,
                      layout="zigzag"),
    "cp_contiguous": dict(mode="cp", attention="sigmoid", keep_frac=0.15, full_panel=False,
                          layout="contiguous"),
}


def config(case, **over):
    return TD.Config(**{**BASE, **CASES[case], **over})


def fresh_model(cfg, kind=None):
    """The model as the runs initialize it (seeded), unwrapped."""
    torch.manual_seed(cfg.seed)
    return CellTransformer(TD.model_config(cfg, TD.load_tokens(cfg)[1], 0),
                           kind or cfg.attention)


def _embed_batch(cfg):
    """A fixed batch of 5 cells (unmasked) for the pooling check."""
    tok, _ = TD.load_tokens(cfg)
    rows = torch.arange(5)
    T = int(tok.lens[rows].max())
    return tok.genes[rows, :T], tok.bins[rows, :T], tok.lens[rows]


def _worker(rank, world, port, out_dir):
    torch.set_num_threads(1)  # several processes share a small CPU
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    result = {}
    try:
        for case in CASES:
            try:
                cfg = config(case)
                rec = TD.train(cfg, torch.device("cpu"), rank, world, log=lambda s: None,
                               return_state=True)
                model = rec.pop("model")
                if cfg.mode == "cp":
                    genes, bins, lens = _embed_batch(cfg)
                    g, b, l, _, pos = TD.local_part("cp", rank, world, genes, bins, lens,
                                                    torch.zeros_like(genes), cfg.layout)
                    with torch.no_grad():
                        rec["embed"] = model.embed_cells(g, b, l, pos)
                result[case] = rec
            except Exception:  # noqa: BLE001 - reported by the test of that case
                result[case] = {"exception": traceback.format_exc()}
    finally:
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()


_RESULTS = {}


def results():
    """Every rank's records: one spawn, cached for the test run."""
    if not _RESULTS:
        ranks = run_ranks(_worker, WORLD, SPAWN_TIMEOUT_S,
                               lambda out_dir, r: torch.load(os.path.join(out_dir, f"rank{r}.pt")))
        _RESULTS.update(enumerate(ranks))
    return _RESULTS


_REFERENCE = {}


def reference(case):
    """The single-process run of the same global batches (cp: the plain sigmoid model)."""
    if case not in _REFERENCE:
        torch.set_num_threads(1)
        _REFERENCE[case] = TD.train(config(case, mode="single"), torch.device("cpu"),
                                    log=lambda s: None, return_state=True)
    return _REFERENCE[case]


@pytest.mark.parametrize("case", list(CASES))
def test_matches_single_process(case):
    per_rank = [results()[r][case] for r in range(WORLD)]
    for r, rec in enumerate(per_rank):
        assert "exception" not in rec, f"rank {r}:\n{rec.get('exception')}"
    ref = reference(case)
    # the run is not trivial: the loss moves, clipping is active, and the weights move
    assert len(ref["loss"]) == BASE["steps"] and len(set(ref["loss"])) == BASE["steps"]
    assert max(ref["grad_norm"]) > BASE["clip"]
    init = fresh_model(config(case))
    moved = max(float((ref["state"][k] - v).abs().max()) for k, v in init.state_dict().items())
    assert moved > 1e-2
    for r, rec in enumerate(per_rank):
        assert rec["loss"] == pytest.approx(ref["loss"], rel=2e-5, abs=0), f"rank {r} losses"
        assert rec["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-4), f"rank {r} norms"
        assert rec["state"].keys() == ref["state"].keys()
        # Parameters: the difference against the size of the whole update. (Adam's first
        # steps amplify roundoff in rows whose gradient is near its eps, e.g. rare genes'
        # embeddings, so an elementwise bound would be loose; a wrong gradient gives ~1.)
        diff = sum(float((rec["state"][k] - ref["state"][k]).norm()) ** 2 for k in ref["state"])
        upd = sum(float((ref["state"][k] - v).norm()) ** 2 for k, v in init.state_dict().items())
        assert (diff / upd) ** 0.5 < 1e-3, f"rank {r}: parameters differ"
    # each rank did only part of the work: tokens per rank add up to the single run's
    total = [sum(t) for t in zip(*(rec["tokens_per_rank"] for rec in per_rank))]
    assert total == ref["tokens_per_rank"]
    assert all(0 < t < ref_t for rec in per_rank
               for t, ref_t in zip(rec["tokens_per_rank"], ref["tokens_per_rank"]))


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c]["mode"] == "cp"])
def test_cp_pooled_embeddings_match_unsharded(case):
    per_rank = [results()[r][case] for r in range(WORLD)]
    for r, rec in enumerate(per_rank):
        assert "exception" not in rec, f"rank {r}:\n{rec.get('exception')}"
    cfg = config(case)
    model = fresh_model(cfg, "sigmoid")
    model.load_state_dict(per_rank[0]["state"])
    genes, bins, lens = _embed_batch(cfg)
    assert lens.unique().numel() > 1  # ragged cells
    with torch.no_grad():
        want = model.embed_cells(genes, bins, lens)
    for r, rec in enumerate(per_rank):
        assert rec["embed"].shape == want.shape
        torch.testing.assert_close(rec["embed"], want, rtol=1e-5, atol=1e-6)


def test_cp_rejects_softmax():
    with pytest.raises(ValueError, match="sigmoid"):
        TD.build(dataclasses.replace(config("cp_zigzag"), attention="softmax"),
                 TD.model_config(config("cp_zigzag"), 10, 0), torch.device("cpu"), 2)
