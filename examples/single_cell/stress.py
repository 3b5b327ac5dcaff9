"""Long-cell stress test: softmax vs sigmoid attention on 8,192-token cells, no gradient clipping.

A bidirectional encoder of 176M parameters (model.py's CellTransformer: dim 1024, 12 layers, 16
heads of 64, MLP 4096) trained by masked-gene prediction on SYNTHETIC cells of 8,192 gene tokens
(synthetic.py: fitted to the bundled pbmc68k_reduced, whose 765 genes cannot make such cells), with
a high learning rate (AdamW 1e-3 after a 20-step warm-up, constant) and no gradient clipping.
Softmax (PyTorch SDPA, cuDNN backend on CUDA) and sigmoid (sigmoid_attn, bias -log(n)) get the
same initialization, cells, masks and step budget per seed. Logged per step: loss, global gradient
norm (before the optimizer step), the largest attention logit, step time. A run stops as diverged
at a non-finite loss or gradient, or when the gradient norm exceeds --diverge-factor (1000) times
its median over the first --ref-steps (10) steps, or the loss --loss-factor (10) times its median
there. The same run also times attention forward + backward alone on the step's shapes, for
attention's share of the step time.

    python examples/single_cell/stress.py --attention softmax   # one H200: under 8 minutes
    python examples/single_cell/stress.py --attention sigmoid   # the same for sigmoid
    python examples/single_cell/stress.py --quick               # CPU, tiny: both, seconds

Each run writes <out>/<attention>-seed<seed>.json, then results.json and stress_8k.png from every
run found in <out> (so two calls with the same --out make one comparison). --out defaults to
$TMPDIR/sigmoid_attn_single_cell/stress/<device>, outside the source tree.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import data as D  # noqa: E402
import metrics  # noqa: E402
import synthetic as S  # noqa: E402
from model import ATTENTIONS, CellTransformer, ModelConfig  # noqa: E402
from train import device_name, git_commit, sync, to_json  # noqa: E402

import sigmoid_attn  # noqa: E402
from sigmoid_attn import sigmoid_attention  # noqa: E402

# full: one H200, about 4-6 minutes of training per attention (see estimate()); quick: CPU test.
SETTINGS = {
    "full": dict(dim=1024, heads=16, layers=12, ff=4096, tokens=8192, batch=4, steps=1200,
                 lr=1e-3, warmup=20, time_limit_s=480, logit_stride=16, eval_cells=256,
                 log_every=25),
    "quick": dict(dim=64, heads=2, layers=2, ff=128, tokens=256, batch=8, steps=40,
                  lr=3e-3, warmup=4, time_limit_s=120, logit_stride=4, eval_cells=32,
                  log_every=5),
}
N_BINS, MASK_RATE, H200_TFLOPS = 16, 0.15, 400.0


class StressModel(CellTransformer):
    """Every cell spans the whole panel (all lengths = T), so attention runs unmasked: SDPA with
    no mask (cuDNN takes it) and sigmoid_attention with no lengths (bias -log T)."""

    def __init__(self, cfg: ModelConfig, kind: str, logit_stride: int = 0, ckpt: bool = False):
        super().__init__(cfg, kind)
        self.ckpt = ckpt
        for blk in self.blocks:
            blk.attn.max_logit_stride = logit_stride

    def encode(self, genes, bins, lens=None):
        pos = torch.arange(genes.shape[1], device=genes.device)
        x = self.gene(genes) + self.bin(bins) + self.pos(pos).unsqueeze(0)
        for blk in self.blocks:
            x = checkpoint(blk, x, None, None, use_reentrant=False) if self.ckpt and \
                torch.is_grad_enabled() else blk(x, None, None)
        return self.norm(x)

    def masked_loss(self, genes, bins, where, target):
        return self.loss_from_hidden(self.encode(genes, bins), where, target)

    def loss_from_hidden(self, h, where, target):
        """Cross-entropy of the gene ids at positions `where` [B, M] (the head runs there only)."""
        h = torch.gather(h, 1, where.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        return F.cross_entropy(self.head(h).float().flatten(0, 1), target.flatten())

    def max_logit(self) -> torch.Tensor:
        return torch.stack([b.attn.max_logit for b in self.blocks]).amax()


def count_params(mcfg: ModelConfig) -> dict:
    m = StressModel(mcfg, "sigmoid")  # the same parameters for both attentions
    total = sum(p.numel() for p in m.parameters())
    emb = sum(p.numel() for n, p in m.named_parameters()
              if n.split(".")[0] in ("gene", "bin", "pos"))
    blocks = sum(p.numel() for p in m.blocks.parameters())
    return {"total": total, "blocks": blocks, "embeddings": emb,
            "head_and_norm": total - emb - blocks}


def estimate(cfg: dict, params: dict, ckpt: bool) -> dict:
    """FLOPs of one training step from the shape (matmuls 2 per weight and token forward, twice
    that backward; attention 4*T*dim per token and layer forward, 2.5x that backward, as in the
    benchmarks), its time at H200_TFLOPS, and the activation memory (bf16 autocast: about
    40*dim bytes per token and layer kept for backward, fp32 residual stream included; the
    attention kernels keep O(T) per head, not T^2)."""
    tokens = cfg["batch"] * cfg["tokens"]
    masked = cfg["batch"] * round(MASK_RATE * cfg["tokens"])
    fwd = 2 * params["blocks"] * tokens + 2 * params["head_and_norm"] * masked \
        + 4 * cfg["tokens"] * cfg["dim"] * tokens * cfg["layers"]
    attn_fwd = 4 * cfg["tokens"] * cfg["dim"] * tokens * cfg["layers"]
    step = fwd + 2 * (fwd - attn_fwd) + 2.5 * attn_fwd + (fwd if ckpt else 0)
    act = 40 * cfg["dim"] * tokens * cfg["layers"] / (cfg["layers"] if ckpt else 1)
    state = 16 * params["total"]  # fp32 weights, gradients, AdamW moments
    return {"flop_per_step": step, "attention_share_of_flop": 3.5 * attn_fwd / step,
            "s_per_step_at_400_tflops": step / (H200_TFLOPS * 1e12),
            "minutes_at_400_tflops": cfg["steps"] * step / (H200_TFLOPS * 1e12) / 60,
            "activation_gb": act / 1e9, "weights_and_optimizer_gb": state / 1e9}


@functools.lru_cache(maxsize=None)
def fitted(n_bins: int) -> S.Fit:
    """The generator's fit to the bundled data (seconds; once per process)."""
    return S.fit(D.load(), n_bins)


def make_batch(fit: S.Fit, genes: S.Genes, batch: int, seed: int, step: int, templates):
    """The cells and masks of one step: a function of (seed, step) only, the same for both
    attentions. A fixed count of masked positions per cell: no data-dependent shapes."""
    gen = torch.Generator().manual_seed(1_000_003 * seed + step)
    x, labels = S.sample_cells(fit, genes, batch, gen, templates)
    tok = S.tokenize(x, fit.edges, gen)
    n_mask = round(MASK_RATE * tok.genes.shape[1])
    where = torch.rand(tok.genes.shape, generator=gen).argsort(1)[:, :n_mask]
    target = torch.gather(tok.genes, 1, where) - D.N_SPECIAL
    return tok.genes.scatter(1, where, D.MASK), tok.bins, where, target, labels


def attention_call(kind: str):
    if kind == "sigmoid":
        return lambda q, k, v: sigmoid_attention(q, k, v)
    return lambda q, k, v: F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


SDPA_BACKEND = "cudnn"  # on CUDA; --sdpa-backend auto lets PyTorch choose


def sdpa_context(kind: str, device: torch.device):
    if kind != "softmax" or device.type != "cuda" or SDPA_BACKEND == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([{"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                         "efficient": SDPBackend.EFFICIENT_ATTENTION}[SDPA_BACKEND]])


def check_sdpa_backend(cfg: dict, device: torch.device) -> str:
    """Runs the requested SDPA backend once forward and backward on one cell of the model's
    layout (q, k, v strided views of one qkv tensor); if it refuses, falls back to PyTorch's
    choice and says so, rather than failing after the model is built."""
    global SDPA_BACKEND
    if device.type != "cuda" or SDPA_BACKEND == "auto":
        return SDPA_BACKEND if device.type == "cuda" else "cpu"
    h, d = cfg["heads"], cfg["dim"] // cfg["heads"]
    qkv = torch.randn(1, cfg["tokens"], 3, h, d, device=device, dtype=torch.bfloat16,
                      requires_grad=True)
    try:
        with sdpa_context("softmax", device):
            attention_call("softmax")(*qkv.unbind(2)).sum().backward()
        return SDPA_BACKEND
    except RuntimeError as e:
        print(f"SDPA backend {SDPA_BACKEND} refused these shapes ({str(e).splitlines()[0]}): "
              "letting PyTorch choose", flush=True)
        refused, SDPA_BACKEND = SDPA_BACKEND, "auto"
        return f"auto ({refused} refused)"


def time_attention(kind: str, cfg: dict, device, dtype, reps: int = 10) -> tuple[float, float]:
    """Median ms of one attention forward, and of forward + backward, alone on one layer's
    shapes of a step."""
    gen = torch.Generator().manual_seed(0)
    shape = (cfg["batch"], cfg["tokens"], cfg["heads"], cfg["dim"] // cfg["heads"])
    q, k, v = (torch.randn(shape, generator=gen).to(device, dtype).requires_grad_()
               for _ in range(3))
    grad = torch.randn(shape, generator=gen).to(device, dtype)
    fn, fwd, both = attention_call(kind), [], []
    with sdpa_context(kind, device):
        for i in range(reps + 2):
            sync(device)
            t0 = time.perf_counter()
            o = fn(q, k, v)
            sync(device)
            t1 = time.perf_counter()
            torch.autograd.grad(o, (q, k, v), grad)
            sync(device)
            if i >= 2:  # two warm-up calls
                fwd.append(1e3 * (t1 - t0))
                both.append(1e3 * (time.perf_counter() - t0))
    return float(np.median(fwd)), float(np.median(both))


class Divergence:
    """Calls a run diverged at a non-finite loss or gradient norm, or when, past the first
    ref_steps steps, the gradient norm exceeds grad_factor times its median over those steps or
    the loss exceeds loss_factor times its median over them."""

    def __init__(self, ref_steps: int = 10, grad_factor: float = 1000.0, loss_factor: float = 10.0):
        self.ref_steps, self.grad_factor, self.loss_factor = ref_steps, grad_factor, loss_factor
        self.losses, self.norms = [], []
        self.grad_ref = self.loss_ref = None

    def update(self, loss: float, norm: float) -> str | None:
        """The reason this step diverged, or None."""
        if not (math.isfinite(loss) and math.isfinite(norm)):
            return "non-finite loss or gradient"
        if self.grad_ref is None:
            self.losses.append(loss)
            self.norms.append(norm)
            if len(self.norms) == self.ref_steps:
                self.grad_ref = float(np.median(self.norms))
                self.loss_ref = float(np.median(self.losses))
            return None
        if norm > self.grad_factor * self.grad_ref:
            return f"gradient norm {norm:.3g} > {self.grad_factor:g} x {self.grad_ref:.3g}"
        if loss > self.loss_factor * self.loss_ref:
            return f"loss {loss:.3g} > {self.loss_factor:g} x {self.loss_ref:.3g}"
        return None


def train(kind: str, seed: int, cfg: dict, mcfg: ModelConfig, fit, genes, device, args) -> dict:
    torch.manual_seed(seed)
    model = StressModel(mcfg, kind, cfg["logit_stride"], args.checkpoint).to(device)
    init_std = args.init_std
    if init_std is not None:  # a deliberately bad start (the detector's test)
        for blk in model.blocks:
            torch.nn.init.normal_(blk.attn.qkv.weight, std=init_std)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.98),
                            weight_decay=0.01)
    params = [p for p in model.parameters()]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" \
        else contextlib.nullcontext()
    train_cells, val_cells = D.split(len(fit.cell_type), 100)
    rec = {"attention": kind, "seed": seed, "loss": [], "grad_norm": [], "max_logit": [],
           "step_ms": [], "data_ms": [], "diverged_at_step": None, "diverged_because": None,
           "stopped_by_time_limit": False}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    detector = Divergence(args.ref_steps, args.diverge_factor, args.loss_factor)
    start = time.perf_counter()
    for step in range(cfg["steps"]):
        if time.perf_counter() - start > cfg["time_limit_s"]:
            rec["stopped_by_time_limit"] = True
            print(f"  {kind}: time limit {cfg['time_limit_s']} s reached at step {step}")
            break
        t0 = time.perf_counter()
        inp, bins, where, target, _ = make_batch(fit, genes, cfg["batch"], seed, step, train_cells)
        t1 = time.perf_counter()
        inp, bins, where, target = (t.to(device, non_blocking=True)
                                    for t in (inp, bins, where, target))
        for g in opt.param_groups:  # linear warm-up, then constant: the pressure stays high
            g["lr"] = cfg["lr"] * min(1.0, (step + 1) / cfg["warmup"])
        with sdpa_context(kind, device):
            with autocast:
                loss = model.masked_loss(inp, bins, where, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        norm = torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(p.grad.float()) for p in params if p.grad is not None]))
        opt.step()
        loss_v, norm_v, logit_v = torch.stack([loss.detach().float(), norm,
                                               model.max_logit()]).tolist()  # waits for the GPU
        t2 = time.perf_counter()
        rec["loss"].append(loss_v)
        rec["grad_norm"].append(norm_v)
        rec["max_logit"].append(logit_v)
        rec["step_ms"].append(1e3 * (t2 - t1))
        rec["data_ms"].append(1e3 * (t1 - t0))
        why = detector.update(loss_v, norm_v)
        if step % cfg["log_every"] == 0 or why or step == cfg["steps"] - 1:
            print(f"  {kind:7s} seed {seed} step {step:5d}  loss {loss_v:8.4f}  grad {norm_v:9.3g}"
                  f"  max logit {logit_v:8.3g}  {rec['step_ms'][-1]:7.1f} ms", flush=True)
        if why:
            rec["diverged_at_step"], rec["diverged_because"] = step, why
            print(f"  {kind}: diverged at step {step}: {why}", flush=True)
            break
    rec["steps"] = len(rec["loss"])
    rec["grad_norm_ref"], rec["loss_ref"] = detector.grad_ref, detector.loss_ref
    rec["train_time_s"] = time.perf_counter() - start
    warm = rec["step_ms"][min(5, rec["steps"] - 1):]
    rec["step_ms_median"] = float(np.median(warm))
    if device.type == "cuda":
        rec["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rec["attention_fwd_ms"], rec["attention_ms"] = time_attention(kind, cfg, device, dtype)
    per_layer = rec["attention_ms"] + (rec["attention_fwd_ms"] if args.checkpoint else 0)
    rec["attention_share_of_step"] = cfg["layers"] * per_layer / rec["step_ms_median"]
    if rec["diverged_at_step"] is None and cfg["eval_cells"]:
        rec.update(evaluate(model, kind, cfg, fit, genes, val_cells, device, autocast))
    return rec


@torch.no_grad()
def evaluate(model, kind, cfg, fit, genes, val_cells, device, autocast) -> dict:
    """Masked-gene loss on held-out synthetic cells (templates: real validation cells) and how
    well the mean-pooled embeddings separate the templates' cell types."""
    model.eval()
    losses, embs, labels = [], [], []
    for i in range(0, cfg["eval_cells"], cfg["batch"]):
        inp, bins, where, target, lab = make_batch(fit, genes, cfg["batch"], 10_000, i, val_cells)
        inp, bins, where, target = (t.to(device) for t in (inp, bins, where, target))
        with sdpa_context(kind, device), autocast:
            h = model.encode(inp, bins)
            losses.append(float(model.loss_from_hidden(h, where, target)))
            embs.append(h.float().mean(1).cpu())
        labels.append(lab)
    model.train()
    emb, labels = torch.cat(embs).numpy(), np.concatenate(labels)
    k = len(np.unique(labels))
    return {"val_loss": float(np.mean(losses)), "silhouette": metrics.silhouette_score(emb, labels),
            "ari": metrics.adjusted_rand_index(labels, metrics.kmeans(emb, k, seed=0))}


def combine(out_dir: str, header: dict, plot: bool = True) -> dict:
    """results.json and the plot from every <attention>-seed<k>.json in out_dir."""
    runs = []
    for path in sorted(glob.glob(os.path.join(out_dir, "*-seed*.json"))):
        with open(path) as f:
            runs.append(json.load(f)["run"])
    runs.sort(key=lambda r: (r["seed"], ATTENTIONS.index(r["attention"])))
    result = header | {"runs": runs}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        f.write(to_json(result))
    if plot:
        from stress_plot import plot as draw  # noqa: PLC0415  (matplotlib only here)
        draw(result, os.path.join(out_dir, "stress_8k.png"))
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny CPU setting (the CI test)")
    ap.add_argument("--attention", choices=ATTENTIONS + ("both",), default="both")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, help="override the setting's step budget")
    ap.add_argument("--lr", type=float, help="override the setting's peak learning rate")
    ap.add_argument("--batch", type=int, help="override the setting's cells per step")
    ap.add_argument("--tokens", type=int, help="override the setting's tokens (genes) per cell")
    ap.add_argument("--init-std", type=float,
                    help="draw the attention qkv weights with this std (default 0.02)")
    ap.add_argument("--sdpa-backend", choices=("cudnn", "flash", "efficient", "auto"),
                    default="cudnn", help="the softmax attention kernel on CUDA")
    ap.add_argument("--checkpoint", action="store_true", help="activation checkpointing per block")
    ap.add_argument("--diverge-factor", type=float, default=1000.0,
                    help="diverged: gradient norm above this times its first-steps median")
    ap.add_argument("--loss-factor", type=float, default=10.0,
                    help="diverged: loss above this times its first-steps median")
    ap.add_argument("--ref-steps", type=int, default=10, help="the first steps (the reference)")
    ap.add_argument("--time-limit-s", type=float, help="stop training past this many seconds")
    ap.add_argument("--no-plot", action="store_true", help="results.json only")
    ap.add_argument("--plot-only", action="store_true",
                    help="no training: results.json and the plot from the run files in --out")
    ap.add_argument("--out", help="default: $TMPDIR/sigmoid_attn_single_cell/stress/<device>; the "
                                  "committed results: examples/single_cell/results/<device>/stress")
    ap.add_argument("--commit", default=os.environ.get("SIGMOID_ATTN_COMMIT") or git_commit())
    args = ap.parse_args(argv)

    global SDPA_BACKEND
    SDPA_BACKEND = args.sdpa_backend
    mode = "quick" if args.quick else "full"
    cfg = dict(SETTINGS[mode])
    for key in ("steps", "lr", "batch", "tokens", "time_limit_s"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    device = torch.device(args.device)
    name = device_name(device)
    tag = "cpu" if device.type == "cpu" else name.replace(" ", "_")
    out_dir = args.out or os.path.join(tempfile.gettempdir(), "sigmoid_attn_single_cell",
                                       "stress", tag + ("" if mode == "full" else f"_{mode}"))
    os.makedirs(out_dir, exist_ok=True)
    if args.plot_only:  # e.g. where the training machine had no matplotlib
        files = sorted(glob.glob(os.path.join(out_dir, "*-seed*.json")))
        if not files:
            raise SystemExit(f"--plot-only: no <attention>-seed<k>.json in {out_dir}")
        with open(files[-1]) as f:
            header = {k: v for k, v in json.load(f).items() if k != "run"}
        combine(out_dir, header)
        print(f"wrote {out_dir}")
        return header

    ds = D.load()  # 765 genes: too few for long cells, so the cells are synthetic
    if ds.n_genes < cfg["tokens"]:
        print(f"the bundled data has {ds.n_genes} genes, fewer than {cfg['tokens']} tokens per "
              f"cell: using {cfg['tokens']} SYNTHETIC genes fitted to it (synthetic.py)")
    t0 = time.perf_counter()
    fit = fitted(N_BINS)
    genes = S.make_genes(fit, cfg["tokens"], seed=0)
    fit_s = time.perf_counter() - t0
    mcfg = ModelConfig(n_genes=genes.n_genes, n_bins=N_BINS, dim=cfg["dim"], heads=cfg["heads"],
                       layers=cfg["layers"], ff=cfg["ff"], max_positions=cfg["tokens"])
    params = count_params(mcfg)
    est = estimate(cfg, params, args.checkpoint)
    print(f"{name}, torch {torch.__version__}, sigmoid_attn {sigmoid_attn.__version__}, {mode}: "
          f"{params['total'] / 1e6:.1f}M parameters ({params['blocks'] / 1e6:.1f}M in blocks), "
          f"{cfg['batch']} cells x {cfg['tokens']} tokens per step, {cfg['steps']} steps, lr "
          f"{cfg['lr']:g}; estimate {est['flop_per_step'] / 1e12:.1f} TFLOP per step = "
          f"{est['s_per_step_at_400_tflops']:.3f} s at {H200_TFLOPS:.0f} TFLOPS "
          f"({est['minutes_at_400_tflops']:.1f} min), activations ~{est['activation_gb']:.0f} GB"
          f"; data fit {fit_s:.1f} s", flush=True)

    kinds = ATTENTIONS if args.attention == "both" else (args.attention,)
    backend = check_sdpa_backend(cfg, device) if "softmax" in kinds else SDPA_BACKEND
    header = {
        "device": name, "mode": mode, "commit": args.commit, "torch": torch.__version__,
        "sigmoid_attn": sigmoid_attn.__version__,
        "data": {"kind": "SYNTHETIC cells fitted to pbmc68k_reduced (synthetic.py)",
                 "fit": S.fit_report(fit, ds, genes)},
        "settings": cfg | {"n_bins": N_BINS, "mask_rate": MASK_RATE, "clip": None,
                           "init_std": args.init_std or 0.02, "checkpoint": args.checkpoint,
                           "diverge_factor": args.diverge_factor,
                           "loss_factor": args.loss_factor, "ref_steps": args.ref_steps,
                           "optimizer": "AdamW(betas=(0.9, 0.98), weight_decay=0.01), linear "
                                        "warm-up then constant",
                           "softmax": "SDPA" + (f", {backend} backend"
                                                if device.type == "cuda" else ""),
                           "sigmoid": "sigmoid_attn, bias -log(T)",
                           "precision": "bf16 autocast" if device.type == "cuda" else "fp32"},
        "model": asdict(mcfg), "parameters": params, "estimate": est,
    }
    for seed in args.seeds:
        for kind in kinds:
            rec = train(kind, seed, cfg, mcfg, fit, genes, device, args)
            rec["date"], rec["commit"] = time.strftime("%Y-%m-%d %H:%M:%S"), args.commit
            with open(os.path.join(out_dir, f"{kind}-seed{seed}.json"), "w") as f:
                f.write(to_json(header | {"run": rec}))
            print(f"  {kind}: {rec['steps']} steps, diverged at {rec['diverged_at_step']}, "
                  f"median step {rec['step_ms_median']:.1f} ms, attention fwd+bwd "
                  f"{rec['attention_ms']:.2f} ms per layer "
                  f"({100 * rec['attention_share_of_step']:.0f}% of the step)", flush=True)
    combine(out_dir, header, plot=not args.no_plot)
    print(f"wrote {out_dir}")
    return header


if __name__ == "__main__":
    main()
