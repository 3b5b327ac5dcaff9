"""Masked-gene pretraining on scanpy's pbmc68k_reduced (700 PBMCs), softmax vs sigmoid attention.

One command trains the same small transformer twice per seed, once with softmax attention
(PyTorch SDPA, key-padding mask) and once with sigmoid attention (sigmoid_attn, lengths), with
the same initialization, data order, masks and budget; then evaluates the validation loss and
how well the cell embeddings separate the annotated cell types (silhouette, k-means ARI); then
runs a stress test (no gradient clipping, 10x the learning rate, every cell spanning the whole
765-gene panel) recording gradient norms. Writes results.json and plots into --out, by default
a directory outside the source tree ($TMPDIR/sigmoid_attn_single_cell/<device>); the committed
results come from --out examples/single_cell/results/<device>.

    python examples/single_cell/train.py               # cuda if available (minutes on an H100)
    python examples/single_cell/train.py --quick       # a tiny CPU run (about a minute)
    python examples/single_cell/train.py --out DIR     # results into DIR

Needs torch, numpy and sigmoid_attn; matplotlib for the plots (skipped without it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import tempfile
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data as D  # noqa: E402
import metrics  # noqa: E402
import sigmoid_attn  # noqa: E402
from model import ATTENTIONS, CellTransformer, ModelConfig  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# Full: a few minutes for everything on one H100. Quick: a CPU smoke run (< 2 minutes on 2 cores).
SETTINGS = {
    # every expressed gene: 183-409 tokens per cell; stress: the whole 765-gene panel
    "full": dict(dim=128, heads=4, layers=4, ff=512, max_len=None, keep_frac=1.0, batch=32,
                 epochs=60, lr=1e-3, clip=1.0, seeds=[0, 1, 2],
                 stress=dict(lr=1e-2, epochs=20, full_panel=True, max_len=None)),
    # the top 40% of each cell's expressed genes: 74-164 tokens; stress: 256 of the panel.
    # Head dim 32 in both, the smallest the CUDA kernels take.
    "quick": dict(dim=64, heads=2, layers=2, ff=128, max_len=None, keep_frac=0.4, batch=32,
                  epochs=8, lr=2e-3, clip=1.0, seeds=[0],
                  stress=dict(lr=2e-2, epochs=2, full_panel=True, max_len=256)),
}
N_BINS, MASK_RATE, N_VAL, WARMUP = 16, 0.15, 100, 0.05


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU ({model}, {torch.get_num_threads()} threads)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batches(tok: D.Tokens, idx: np.ndarray, batch: int):
    """Yields CPU batches (genes, bins, lens) trimmed to their longest cell."""
    for s in range(0, len(idx), batch):
        rows = torch.from_numpy(idx[s:s + batch])
        lens = tok.lens[rows]
        T = int(lens.max())
        yield tok.genes[rows, :T], tok.bins[rows, :T], lens


def lr_at(step: int, total: int, lr: float) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to 10% of lr."""
    warm = max(1, int(WARMUP * total))
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def masked_loss(model, genes, bins, lens, gen, device, autocast):
    """Masks on the CPU (same masks for both attentions), then runs the model on device."""
    inp, target = D.mask_genes(genes, lens, MASK_RATE, gen)
    inp, bins, lens, target = (t.to(device) for t in (inp, bins, lens, target))
    with autocast():
        logits = model(inp, bins, lens)
    return F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=-100), \
        logits, target


@torch.no_grad()
def evaluate(model, tok, idx, cfg, device, autocast) -> dict:
    """Masked-gene loss and accuracy on idx, with the same masks for every run."""
    model.eval()
    gen = torch.Generator().manual_seed(999)
    tot, correct, count = 0.0, 0, 0
    for genes, bins, lens in batches(tok, idx, cfg["batch"]):
        loss, logits, target = masked_loss(model, genes, bins, lens, gen, device, autocast)
        n = int((target >= 0).sum())
        tot += float(loss) * n
        correct += int(((logits.argmax(-1) == target) & (target >= 0)).sum())
        count += n
    model.train()
    return {"loss": tot / count, "accuracy": correct / count}


@torch.no_grad()
def embed(model, tok, device, autocast, batch: int = 64) -> np.ndarray:
    model.eval()
    out = []
    for genes, bins, lens in batches(tok, np.arange(len(tok.lens)), batch):
        with autocast():
            out.append(model.embed_cells(genes.to(device), bins.to(device),
                                         lens.to(device)).float().cpu())
    model.train()
    return torch.cat(out).numpy()


def cluster_scores(emb: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict:
    k = len(np.unique(labels))
    return {"silhouette": metrics.silhouette_score(emb, labels),
            "ari": metrics.adjusted_rand_index(labels, metrics.kmeans(emb, k, seed=seed))}


def train(kind: str, seed: int, tok: D.Tokens, train_idx, val_idx, cfg: dict, mcfg: ModelConfig,
          device, autocast, lr: float, clip: float | None, epochs: int, log: str) -> tuple:
    """Trains one model; returns (model, record). Gradient norms are measured before clipping."""
    torch.manual_seed(seed)
    model = CellTransformer(mcfg, kind).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(train_idx) / cfg["batch"])
    total = epochs * steps_per_epoch
    rec = {"attention": kind, "seed": seed, "lr": lr, "clip": clip, "train_loss": [],
           "val_loss": [], "step_loss": [], "grad_norm": [], "diverged_at_step": None}
    train_time, step = 0.0, 0
    for epoch in range(epochs):
        sync(device)
        t0 = time.perf_counter()
        losses, norms = [], []
        for genes, bins, lens in batches(tok, rng.permutation(train_idx), cfg["batch"]):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, lr)
            loss, _, _ = masked_loss(model, genes, bins, lens, gen, device, autocast)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                  clip if clip else float("inf"))
            opt.step()
            losses.append(loss.detach())
            norms.append(norm.detach())
            step += 1
        losses, norms = torch.stack(losses).float().cpu(), torch.stack(norms).float().cpu()
        train_time += time.perf_counter() - t0  # the .cpu() above waited for the device
        rec["step_loss"] += losses.tolist()
        rec["grad_norm"] += norms.tolist()
        rec["train_loss"].append(float(losses.mean()))
        bad = ~torch.isfinite(losses) | ~torch.isfinite(norms)
        if bad.any():
            rec["diverged_at_step"] = step - len(losses) + int(bad.nonzero()[0, 0])
            print(f"  {log} {kind:7s} seed {seed}: non-finite loss/gradient at step "
                  f"{rec['diverged_at_step']}, stopping", flush=True)
            break
        rec["val_loss"].append(evaluate(model, tok, val_idx, cfg, device, autocast)["loss"])
    rec["steps"] = step
    rec["train_time_s"] = train_time
    rec["ms_per_step"] = 1e3 * train_time / max(step, 1)
    final = evaluate(model, tok, val_idx, cfg, device, autocast)
    rec["val_loss_final"], rec["val_accuracy"] = final["loss"], final["accuracy"]
    g = np.array(rec["grad_norm"])
    g = g[np.isfinite(g)]
    rec["grad_norm_median"] = float(np.median(g)) if len(g) else None
    rec["grad_norm_max"] = float(g.max()) if len(g) else None
    print(f"  {log} {kind:7s} seed {seed}: val loss {rec['val_loss_final']:.3f} "
          f"acc {rec['val_accuracy']:.3f}  {train_time:6.1f} s ({rec['ms_per_step']:.1f} ms/step)  "
          f"grad norm median {rec['grad_norm_median']:.3g} max {rec['grad_norm_max']:.3g}",
          flush=True)
    return model, rec


def summarize(runs: list, keys: list) -> dict:
    out = {}
    for kind in ATTENTIONS:
        rs = [r for r in runs if r["attention"] == kind]
        out[kind] = {k: {"mean": float(np.mean([r[k] for r in rs])),
                         "std": float(np.std([r[k] for r in rs])),
                         "values": [r[k] for r in rs]} for k in keys}
    return out


def to_json(obj) -> str:
    """Indented JSON with 4 significant digits, non-finite numbers as null and lists of numbers
    on one line (per-step curves stay readable and small)."""
    def clean(o):
        if isinstance(o, float):
            return float(f"{o:.4g}") if math.isfinite(o) else None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o
    text = json.dumps(clean(obj), indent=1)
    return re.sub(r"\[[-0-9.eE,\snul]*\]", lambda m: "[" + ", ".join(m.group(0)[1:-1].split()
                                                                      ).replace(",,", ",") + "]",
                  text)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny model, few epochs (CPU smoke run)")
    ap.add_argument("--epochs", type=int, help="override the setting's epochs")
    ap.add_argument("--seeds", type=int, nargs="+", help="override the setting's seeds")
    ap.add_argument("--no-stress", action="store_true", help="skip the stress test")
    ap.add_argument("--out", "--out-dir", dest="out_dir",
                    help="directory for results.json and the plots (default: "
                         "$TMPDIR/sigmoid_attn_single_cell/<device>, outside the source tree; "
                         "the committed results are examples/single_cell/results/<device>)")
    ap.add_argument("--commit", default=os.environ.get("SIGMOID_ATTN_COMMIT") or git_commit())
    args = ap.parse_args()

    mode = "quick" if args.quick else "full"
    cfg = dict(SETTINGS[mode])
    cfg["epochs"] = args.epochs or cfg["epochs"]
    cfg["seeds"] = args.seeds or cfg["seeds"]
    device = torch.device(args.device)
    name = device_name(device)
    # <out>/cpu (quick) and <out>/<GPU name> (full); the other mode gets a suffix.
    tag = "cpu" if device.type == "cpu" else name.replace(" ", "_")
    if mode != ("quick" if device.type == "cpu" else "full"):
        tag += f"_{mode}"
        if device.type == "cpu":
            print("note: the full setting takes hours on a CPU; --quick is the CPU run")
    out_dir = args.out_dir or os.path.join(tempfile.gettempdir(), "sigmoid_attn_single_cell", tag)
    # bf16 autocast on CUDA for both attentions (the CUDA kernels take fp16/bf16); fp32 on CPU.
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" \
        else (lambda: torch.autocast("cpu", enabled=False))

    ds = D.load()
    edges = D.bin_edges(ds.expression, N_BINS)
    tok = D.tokenize(ds.expression, edges, cfg["max_len"], keep_frac=cfg["keep_frac"])
    train_idx, val_idx = D.split(len(ds.cell_type), N_VAL)
    mcfg = ModelConfig(n_genes=ds.n_genes, n_bins=N_BINS, dim=cfg["dim"], heads=cfg["heads"],
                       layers=cfg["layers"], ff=cfg["ff"])
    lens = tok.lens.numpy()
    print(f"{name}, torch {torch.__version__}, sigmoid_attn {sigmoid_attn.__version__}, {mode}: "
          f"{len(lens)} cells ({len(train_idx)} train / {len(val_idx)} val), "
          f"{ds.n_genes} genes, tokens per cell {lens.min()}-{lens.max()} (median "
          f"{int(np.median(lens))}), model dim {mcfg.dim} x {mcfg.layers} layers, "
          f"{cfg['epochs']} epochs, seeds {cfg['seeds']}", flush=True)

    labels = ds.cell_type
    baselines = {"expression_pca50": cluster_scores(metrics.pca(ds.expression, 50), labels)}
    for kind in ATTENTIONS:
        torch.manual_seed(0)
        untrained = CellTransformer(mcfg, kind).to(device)
        baselines[f"untrained_{kind}"] = cluster_scores(embed(untrained, tok, device, autocast),
                                                        labels)

    runs, embeddings = [], {}
    t_start = time.perf_counter()
    for seed in cfg["seeds"]:
        for kind in ATTENTIONS:
            model, rec = train(kind, seed, tok, train_idx, val_idx, cfg, mcfg, device, autocast,
                               cfg["lr"], cfg["clip"], cfg["epochs"], "main")
            emb = embed(model, tok, device, autocast)
            rec.update(cluster_scores(emb, labels, seed))
            if seed == cfg["seeds"][0]:
                embeddings[kind] = emb
            runs.append(rec)

    stress = None
    if not args.no_stress:
        s = cfg["stress"]
        stok = D.tokenize(ds.expression, edges, s["max_len"], full_panel=s["full_panel"])
        stress = {"lr": s["lr"], "clip": None, "epochs": s["epochs"],
                  "tokens_per_cell": int(stok.lens.max()), "full_panel": s["full_panel"],
                  "runs": []}
        for kind in ATTENTIONS:
            _, rec = train(kind, cfg["seeds"][0], stok, train_idx, val_idx, cfg, mcfg, device,
                           autocast, s["lr"], None, s["epochs"], "stress")
            stress["runs"].append(rec)
    total_s = time.perf_counter() - t_start

    keys = ["val_loss_final", "val_accuracy", "silhouette", "ari", "train_time_s", "ms_per_step"]
    result = {
        "device": name, "mode": mode, "commit": args.commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
        "sigmoid_attn": sigmoid_attn.__version__, "python": platform.python_version(),
        "data": {"source": "scanpy datasets.pbmc68k_reduced(): raw.X log-normalized, "
                           "obs.bulk_labels", "cells": len(lens), "genes": ds.n_genes,
                 "train": len(train_idx), "val": len(val_idx),
                 "tokens_per_cell": [int(lens.min()), int(np.median(lens)), int(lens.max())],
                 "cell_types": int(len(np.unique(labels)))},
        "settings": cfg | {"n_bins": N_BINS, "mask_rate": MASK_RATE, "warmup": WARMUP,
                           "optimizer": "AdamW(betas=(0.9, 0.98), weight_decay=0.01), "
                                        "cosine to 10%",
                           "precision": "bf16 autocast" if device.type == "cuda" else "fp32"},
        "model": asdict(mcfg),
        "summary": summarize(runs, keys), "baselines": baselines,
        "runs": runs, "stress": stress, "wall_time_s": total_s,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        f.write(to_json(result))
    report(result)
    plot(result, embeddings, metrics.pca(ds.expression, 2), labels, out_dir)
    print(f"wrote {out_dir}")


def report(r: dict) -> None:
    print(f"\n{r['device']} ({r['mode']}), seeds {r['settings']['seeds']}: mean (std)")
    print(f"{'':10s}{'val loss':>16s}{'val acc':>16s}{'silhouette':>16s}{'ARI':>16s}"
          f"{'train s':>14s}{'ms/step':>10s}")
    for kind, s in r["summary"].items():
        cells = "".join(f"{s[k]['mean']:.3f} ({s[k]['std']:.3f})".rjust(16)
                        for k in ("val_loss_final", "val_accuracy", "silhouette", "ari"))
        print(f"{kind:10s}{cells}{s['train_time_s']['mean']:14.1f}{s['ms_per_step']['mean']:10.1f}")
    for name, b in r["baselines"].items():
        print(f"baseline {name:20s} silhouette {b['silhouette']:.3f}  ARI {b['ari']:.3f}")
    if r["stress"]:
        st = r["stress"]
        print(f"stress (no clipping, lr {st['lr']}, {st['tokens_per_cell']} tokens per cell):")
        for rec in st["runs"]:
            print(f"  {rec['attention']:8s} val loss {rec['val_loss_final']:.3f}  grad norm median "
                  f"{rec['grad_norm_median']:.3g} max {rec['grad_norm_max']:.3g}  diverged at "
                  f"{rec['diverged_at_step']}")


def plot(r: dict, embeddings: dict, expr_pca: np.ndarray, labels: np.ndarray, out_dir: str):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plots")
        return
    colors = {"softmax": "tab:blue", "sigmoid": "tab:red"}
    title = f"{r['device']} ({r['mode']})"

    fig, ax = plt.subplots(1, 2, figsize=(12, 4.2))
    for kind in ATTENTIONS:
        rs = [x for x in r["runs"] if x["attention"] == kind]
        for i, x in enumerate(rs):
            ep = np.arange(1, len(x["val_loss"]) + 1)
            ax[0].plot(ep, x["val_loss"], color=colors[kind],
                       label=f"{kind} val" if i == 0 else None)
            ax[0].plot(ep, x["train_loss"][:len(ep)], color=colors[kind], ls=":", alpha=0.7,
                       label=f"{kind} train" if i == 0 else None)
    ax[0].set(xlabel="epoch", ylabel="masked-gene cross-entropy",
              title=f"main run, {len(r['settings']['seeds'])} seed(s) each")
    ax[0].legend()
    if r["stress"]:
        for x in r["stress"]["runs"]:
            ax[1].plot(x["step_loss"], color=colors[x["attention"]], lw=0.8, label=x["attention"])
        ax[1].set(xlabel="step", ylabel="training loss",
                  title=f"stress: no clipping, lr {r['stress']['lr']}, "
                        f"{r['stress']['tokens_per_cell']} tokens/cell")
        ax[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "loss_curves.png"), dpi=110)
    plt.close(fig)

    types = np.unique(labels)
    cmap = plt.get_cmap("tab10")
    panels = [("log-expression PCA (baseline)", expr_pca, r["baselines"]["expression_pca50"])]
    for kind in ATTENTIONS:
        run = next(x for x in r["runs"] if x["attention"] == kind)
        panels.append((f"{kind} attention, seed {run['seed']}",
                       metrics.pca(embeddings[kind], 2), run))
    fig, ax = plt.subplots(1, 3, figsize=(17, 5.2))
    for a, (name, xy, sc) in zip(ax, panels):
        for i, t in enumerate(types):
            m = labels == t
            a.scatter(xy[m, 0], xy[m, 1], s=6, color=cmap(i % 10), label=t)
        a.set(title=f"{name}\nsilhouette {sc['silhouette']:.3f}, k-means ARI {sc['ari']:.3f}",
              xlabel="PC1", ylabel="PC2", xticks=[], yticks=[])
    ax[-1].legend(markerscale=3, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"cell embeddings (PCA), colored by bulk_labels; {title}")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "embeddings_pca.png"), dpi=110)
    plt.close(fig)

    if r["stress"]:
        fig, ax = plt.subplots(figsize=(7, 4))
        for x in r["stress"]["runs"]:
            ax.semilogy(x["grad_norm"], color=colors[x["attention"]], lw=0.8, label=x["attention"])
        for kind in ATTENTIONS:  # the main run (seed 0) of each, for scale
            main = next(x for x in r["runs"] if x["attention"] == kind)
            ax.semilogy(main["grad_norm"], color=colors[kind], lw=0.6, alpha=0.35, ls="--",
                        label=f"{kind}, main run (clipped at {main['clip']})")
        ax.set(xlabel="step", ylabel="gradient norm (before clipping)",
               title=f"stress test gradient norms; {title}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "stress_grad_norms.png"), dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    main()
