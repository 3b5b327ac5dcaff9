"""Checkpoints for the server: examples/single_cell's CellTransformer, trained by that example's own
training loop (train.train: masked-gene prediction on the bundled pbmc68k_reduced cells), once per
(size, attention), and cached under examples/serving/checkpoints/ (git-ignored).

A checkpoint also holds what a request is tokenized with: the gene panel (symbols, in id order)
and the expression-bin edges of the training data.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SINGLE_CELL = os.path.join(os.path.dirname(HERE), "single_cell")
sys.path.insert(0, SINGLE_CELL)
import data as D  # noqa: E402
import train as T  # noqa: E402
from model import CellTransformer, ModelConfig  # noqa: E402

CACHE = os.path.join(HERE, "checkpoints")

# max_positions 16384: rank embeddings for cells of up to 16k expressed genes (a whole-transcriptome
# panel). The bundled cells have 183-409 tokens, so ranks past 409 keep their initialization; the
# long cells of the load mix measure serving cost, not biology.
SIZES = {
    # Trained on each cell's top 128 genes so that it trains in well under a minute on 2 CPU
    # cores; head dim 32, the smallest the CUDA kernels take.
    "small": dict(dim=64, heads=2, layers=2, ff=128, max_positions=16384, epochs=4, batch=32,
                  lr=2e-3, max_len=128, train_cells=None),
    # examples/single_cell's full model (128 wide, 4 layers): for a GPU, minutes on a CPU.
    "base": dict(dim=128, heads=4, layers=4, ff=512, max_positions=16384, epochs=20, batch=32,
                 lr=1e-3, max_len=None, train_cells=None),
    # for tests: one epoch on 128 cells cut to 64 tokens, a second or two.
    "tiny": dict(dim=32, heads=1, layers=1, ff=64, max_positions=2048, epochs=1, batch=32,
                 lr=2e-3, max_len=64, train_cells=128),
}
KINDS = {"sdpa_padded": "softmax", "sigmoid_padded": "sigmoid", "sigmoid_packed": "sigmoid"}


def default_path(size: str, kind: str) -> str:
    return os.path.join(CACHE, f"{size}_{kind}.pt")


def train_checkpoint(size: str, kind: str, device: torch.device, path: str) -> dict:
    """Trains one model with train.py's loop and writes it to path (atomically: two servers
    starting at once may both train; the last rename wins and both files are complete)."""
    s = SIZES[size]
    ds = D.load()
    edges = D.bin_edges(ds.expression, T.N_BINS)
    tok = D.tokenize(ds.expression, edges, s["max_len"])
    train_idx, val_idx = D.split(len(ds.cell_type), T.N_VAL)
    if s["train_cells"]:
        train_idx = train_idx[:s["train_cells"]]
    mcfg = ModelConfig(n_genes=ds.n_genes, n_bins=T.N_BINS, dim=s["dim"], heads=s["heads"],
                       layers=s["layers"], ff=s["ff"], max_positions=s["max_positions"])
    if device.type == "cuda":
        def autocast():
            return torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        def autocast():
            return torch.autocast("cpu", enabled=False)
    print(f"training the {size} {kind} model on {device} ({len(train_idx)} cells, "
          f"{s['epochs']} epochs); cached to {path}", flush=True)
    t0 = time.perf_counter()
    model, rec = T.train(kind, 0, tok, train_idx, val_idx, {"batch": s["batch"]}, mcfg, device,
                         autocast, s["lr"], 1.0, s["epochs"], size)
    ckpt = {
        "size": size, "kind": kind, "recipe": s, "config": asdict(mcfg),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "genes": [str(g) for g in ds.genes], "bin_edges": [float(e) for e in edges],
        "trained": {"device": str(device), "seconds": time.perf_counter() - t0,
                    "epochs": s["epochs"], "val_loss": rec["val_loss_final"],
                    "val_accuracy": rec["val_accuracy"]},
    }
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the server's main process keeps no GPU memory it won't use
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return ckpt


def load_checkpoint(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def get_checkpoint(size: str, kind: str, device: torch.device, path: str | None = None) -> tuple:
    """(path, checkpoint). An explicit path is used as it is (trained there first if missing);
    the cached default is retrained when its SIZES entry changed since it was written."""
    explicit = path is not None
    path = path or default_path(size, kind)
    if os.path.exists(path):
        ckpt = load_checkpoint(path)
        if ckpt["kind"] != kind:
            raise ValueError(f"{path} holds a {ckpt['kind']} model; this mode needs {kind}")
        if explicit or ckpt.get("recipe") == SIZES[size]:
            return path, ckpt
    return path, train_checkpoint(size, kind, device, path)


def build_model(ckpt: dict) -> CellTransformer:
    model = CellTransformer(ModelConfig(**ckpt["config"]), ckpt["kind"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def panel(ckpt: dict) -> dict:
    """What tokenizing a request needs: gene symbols by id and the bin edges."""
    return {"genes": ckpt["genes"], "index": {g: i for i, g in enumerate(ckpt["genes"])},
            "edges": np.asarray(ckpt["bin_edges"], dtype=np.float64),
            "n_bins": ckpt["config"]["n_bins"], "max_positions": ckpt["config"]["max_positions"]}
