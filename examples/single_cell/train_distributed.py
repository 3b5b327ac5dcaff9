"""Multi-process training of the single-cell model (model.py, data.py) over torch.distributed.

    torchrun --nproc-per-node 2 examples/single_cell/train_distributed.py --mode ddp
    torchrun --nproc-per-node 2 examples/single_cell/train_distributed.py --mode fsdp2 \
        --attention softmax
    torchrun --nproc-per-node 4 examples/single_cell/train_distributed.py --mode cp --device cuda

Modes (every rank builds the same global batch of cells and the same masks from the same seeds,
then keeps its part, so a run over P ranks follows the single-process run of the same global
batch step by step, up to summation order):

  ddp    DistributedDataParallel; each rank takes a contiguous slice of the batch's cells.
  fsdp2  torch.distributed.fsdp.fully_shard on every block and then on the whole model
         (parameters, gradients and optimizer state sharded); the same data split as ddp.
  cp     context parallelism for long cells (sigmoid attention only): every rank holds a shard
         of each cell's token sequence ("zigzag" or "contiguous", see
         sigmoid_attn.distributed.sequence_shard) and attention runs through
         sigmoid_attention_cp (exact: K/V travel around a ring). Embeddings, LayerNorm, MLP and
         the head are per token, so they run on the local shard; the position embedding uses
         the global positions; the weights are replicated and their gradients (partial sums
         over each rank's tokens) are all-reduced by hand. Cell pooling (embed_cells) all-reduces
         per-cell sums and counts. By default the cells span the whole 765-gene panel here.

The loss is the masked-gene cross-entropy averaged over all masked tokens of the GLOBAL batch
(each rank's sum of token losses divided by the global count), the same as train.py's per-batch
mean. Rank 0 logs the loss per step and writes <out>/<mode>-<attention>.json
(losses, step times, gradient norms, settings).

CPU runs use gloo, CUDA runs NCCL (one GPU per rank, LOCAL_RANK), with bf16 autocast on CUDA
unless --no-amp.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import data as D  # noqa: E402
from model import Attention, CellTransformer, ModelConfig  # noqa: E402
from train import MASK_RATE, N_VAL, lr_at  # noqa: E402  (the single-process schedule)
from sigmoid_attn.distributed import sequence_shard, sigmoid_attention_cp  # noqa: E402

MODES = ("ddp", "fsdp2", "cp", "single")   # "single": one process, no wrapper (the reference)


@dataclass
class Config:
    mode: str = "ddp"
    attention: str = "sigmoid"
    steps: int = 50
    batch: int = 32                 # global batch (cells per step over all ranks)
    dim: int = 64
    heads: int = 2                  # head dim 32: the smallest the CUDA kernels take
    layers: int = 2
    ff: int = 128
    n_bins: int = 16
    lr: float = 2e-3
    clip: Optional[float] = 1.0
    seed: int = 0
    keep_frac: float = 0.4          # top fraction of each cell's expressed genes (ddp/fsdp2)
    full_panel: Optional[bool] = None   # None: True for cp (765 tokens per cell), else False
    max_len: Optional[int] = None
    cells: Optional[int] = None     # use only the first `cells` training cells
    layout: str = "zigzag"          # cp sequence layout
    amp: bool = True                # bf16 autocast (CUDA only)


# ----------------------------------------------------------------------------------- data


def load_tokens(cfg: Config):
    """(tokens of every cell, training cell indices, n_genes): the same on every rank."""
    ds = D.load()
    full = cfg.full_panel if cfg.full_panel is not None else cfg.mode == "cp"
    train_idx, _ = D.split(len(ds.expression), N_VAL)
    if cfg.cells:
        train_idx = train_idx[:cfg.cells]
    tok = D.tokenize(ds.expression[train_idx], D.bin_edges(ds.expression, cfg.n_bins),
                     max_len=cfg.max_len, full_panel=full, keep_frac=cfg.keep_frac,
                     seed=cfg.seed)
    return tok, ds.n_genes


def global_batches(tok: D.Tokens, cfg: Config):
    """Yields (masked genes, bins, lens, target) of each step's global batch, trimmed to its
    longest cell: a fresh permutation of the cells per epoch, masks drawn on the CPU."""
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(tok.lens)
    perm, pos = rng.permutation(n), 0
    for _ in range(cfg.steps):
        if pos + cfg.batch > n:
            perm, pos = rng.permutation(n), 0
        rows = torch.from_numpy(perm[pos:pos + cfg.batch])
        pos += cfg.batch
        lens = tok.lens[rows]
        T = int(lens.max())
        genes, bins = tok.genes[rows, :T], tok.bins[rows, :T]
        inp, target = D.mask_genes(genes, lens, MASK_RATE, gen)
        yield inp, bins, lens, target


def local_part(mode: str, rank: int, world: int, inp, bins, lens, target, layout: str):
    """This rank's part of a global batch: (genes, bins, lens, target, positions).
    ddp/fsdp2: a contiguous slice of the cells, trimmed to its own longest cell.
    cp: every cell, the sequence padded to a multiple of P (2P for zigzag) and sharded; lens
    stay global and positions are the global positions of the shard."""
    B, T = inp.shape
    if mode in ("ddp", "fsdp2"):
        rows = np.array_split(np.arange(B), world)[rank]
        if len(rows) == 0:
            raise ValueError(f"global batch {B} is smaller than the world size {world}")
        rows = torch.from_numpy(rows)
        t = int(lens[rows].max())
        return inp[rows, :t], bins[rows, :t], lens[rows], target[rows, :t], torch.arange(t)
    if mode == "cp":
        parts = 2 * world if layout == "zigzag" else world
        Tp = -(-T // parts) * parts
        pad = Tp - T
        inp = F.pad(inp, (0, pad), value=D.PAD)
        bins = F.pad(bins, (0, pad), value=0)
        target = F.pad(target, (0, pad), value=-100)
        sh = lambda x: sequence_shard(x, rank, world, layout, dim=1).contiguous()  # noqa: E731
        pos = sequence_shard(torch.arange(Tp), rank, world, layout, dim=0).contiguous()
        return sh(inp), sh(bins), lens, sh(target), pos
    return inp, bins, lens, target, torch.arange(T)


# ----------------------------------------------------------------------------------- model


class CPAttention(Attention):
    """Attention over this rank's shard of every cell; lens are the global lengths."""

    def __init__(self, dim: int, heads: int, layout: str, group=None):
        super().__init__(dim, heads, "sigmoid")
        self.layout, self.group = layout, group

    def forward(self, x, lens, key_mask=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).unbind(2)
        o = sigmoid_attention_cp(q, k, v, group=self.group, layout=self.layout, seq_lens=lens)
        return self.proj(o.reshape(B, T, C))


class CPCellTransformer(CellTransformer):
    """CellTransformer (sigmoid attention) whose blocks attend over sequence shards; the same
    initialization and parameter names as CellTransformer(cfg, "sigmoid") for the same seed."""

    def __init__(self, cfg: ModelConfig, layout: str = "zigzag", group=None):
        super().__init__(cfg, "sigmoid")
        for blk in self.blocks:
            new = CPAttention(cfg.dim, cfg.heads, layout, group)
            new.load_state_dict(blk.attn.state_dict())
            blk.attn = new
        self.group = group

    def encode(self, genes, bins, lens, pos):
        """[B, T_local] token shards, GLOBAL int32 [B] lengths, [T_local] global positions."""
        x = self.gene(genes) + self.bin(bins) + self.pos(pos).unsqueeze(0)
        for blk in self.blocks:
            x = blk(x, lens, None)
        return self.norm(x)

    def forward(self, genes, bins, lens, pos):
        return self.head(self.encode(genes, bins, lens, pos))

    def embed_cells(self, genes, bins, lens, pos):
        """Mean hidden state over each cell's tokens, pooled across ranks: per-cell sums and
        counts are all-reduced (the full [B, dim] result on every rank). Differentiable: the
        gradient sums over ranks, so a loss computed alike on every rank counts P times."""
        h = self.encode(genes, bins, lens, pos).float()
        valid = (pos.view(1, -1) < lens.view(-1, 1)).unsqueeze(-1)
        stats = torch.cat([(h * valid).sum(1), valid.sum(1).to(h.dtype)], 1)
        if torch.is_grad_enabled() and stats.requires_grad:
            stats = dist.nn.functional.all_reduce(stats, group=self.group)
        else:
            dist.all_reduce(stats, group=self.group)
        return stats[:, :-1] / stats[:, -1:].clamp_min(1)


def model_config(cfg: Config, n_genes: int, max_positions: int) -> ModelConfig:
    return ModelConfig(n_genes=n_genes, n_bins=cfg.n_bins, dim=cfg.dim, heads=cfg.heads,
                       layers=cfg.layers, ff=cfg.ff, max_positions=max(1024, max_positions))


def build(cfg: Config, mcfg: ModelConfig, device: torch.device, world: int):
    """The model on `device`, wrapped for the mode, from the same initialization everywhere."""
    torch.manual_seed(cfg.seed)
    if cfg.mode == "cp":
        if cfg.attention != "sigmoid":
            raise ValueError("--mode cp needs --attention sigmoid (softmax does not split "
                             "exactly over key shards without a running normalizer)")
        return CPCellTransformer(mcfg, cfg.layout).to(device)
    model = CellTransformer(mcfg, cfg.attention).to(device)
    if cfg.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.mode == "fsdp2":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        # the head's output is a view (Linear over [B, T, C]); nothing here modifies it in place
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view")
        mesh = init_device_mesh(device.type, (world,))
        for blk in model.blocks:
            fully_shard(blk, mesh=mesh)
        fully_shard(model, mesh=mesh)
    return model


def full_state_dict(model, mode: str) -> dict:
    """Unsharded CPU copy of the parameters (a collective for fsdp2: call on every rank)."""
    if mode == "ddp":
        model = model.module
    out = {}
    for k, v in model.state_dict().items():
        if hasattr(v, "full_tensor"):
            v = v.full_tensor()
        out[k] = v.detach().float().cpu().clone()
    return out


# ----------------------------------------------------------------------------------- training


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _allreduce_grads(params):
    """Sums the gradients over ranks in one flat buffer (cp: each rank's are partial sums)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    off = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[off:off + n].view_as(g))
        off += n


def train(cfg: Config, device: torch.device, rank: int = 0, world: int = 1,
          log=print, return_state: bool = False) -> dict:
    """Trains for cfg.steps steps; returns the record (same on every rank: global losses)."""
    if cfg.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {cfg.mode!r}")
    if cfg.mode == "single":
        world, rank = 1, 0
    tok, n_genes = load_tokens(cfg)
    mcfg = model_config(cfg, n_genes, tok.genes.shape[1] + 2 * world)
    model = build(cfg, mcfg, device, world)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.01)
    use_amp = cfg.amp and device.type == "cuda"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp)

    # DDP and FSDP2 average gradients over ranks: scale the local loss by P so the result is
    # the gradient of the global mean. cp sums gradients by hand.
    scale = world if cfg.mode in ("ddp", "fsdp2") else 1
    rec = {"loss": [], "grad_norm": [], "step_ms": [], "tokens_per_rank": []}
    for step, (inp, bins, lens, target) in enumerate(global_batches(tok, cfg)):
        _sync(device)
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.steps, cfg.lr)
        n_global = int((target >= 0).sum())
        x, b, l, tgt, pos = (t.to(device) for t in local_part(
            cfg.mode, rank, world, inp, bins, lens, target, cfg.layout))
        with autocast():
            logits = model(x, b, l, pos) if cfg.mode == "cp" else model(x, b, l)
        ce_sum = F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(), ignore_index=-100,
                                 reduction="sum")
        opt.zero_grad(set_to_none=True)
        (ce_sum * (scale / n_global)).backward()
        if cfg.mode == "cp":
            _allreduce_grads(list(model.parameters()))
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                              cfg.clip if cfg.clip else float("inf"))
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        opt.step()
        loss = ce_sum.detach().clone()
        if world > 1:
            dist.all_reduce(loss)
        loss = float(loss) / n_global       # a host sync: the step is done
        _sync(device)
        dt = time.perf_counter() - t0
        rec["loss"].append(loss)
        rec["grad_norm"].append(float(norm))
        rec["step_ms"].append(1e3 * dt)
        rec["tokens_per_rank"].append(int((pos.view(1, -1) < l.view(-1, 1)).sum()))
        log(f"step {step:4d}  loss {loss:.4f}  grad norm {float(norm):.3g}  {1e3 * dt:7.1f} ms")
    if return_state:
        rec["state"] = full_state_dict(model, cfg.mode)
        rec["model"] = model
    return rec


# ----------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=MODES[:3], required=True)
    ap.add_argument("--attention", choices=("sigmoid", "softmax"), default="sigmoid")
    ap.add_argument("--steps", type=int, default=Config.steps)
    ap.add_argument("--device", choices=("cpu", "cuda"),
                    default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=Config.batch, help="global batch (cells)")
    ap.add_argument("--dim", type=int, default=Config.dim)
    ap.add_argument("--heads", type=int, default=Config.heads)
    ap.add_argument("--layers", type=int, default=Config.layers)
    ap.add_argument("--ff", type=int, default=Config.ff)
    ap.add_argument("--lr", type=float, default=Config.lr)
    ap.add_argument("--clip", type=float, default=Config.clip, help="0: no clipping")
    ap.add_argument("--seed", type=int, default=Config.seed)
    ap.add_argument("--keep-frac", type=float, default=Config.keep_frac)
    ap.add_argument("--full-panel", type=int, choices=(0, 1), default=None,
                    help="cells span the whole gene panel (default: 1 for cp, 0 otherwise)")
    ap.add_argument("--max-len", type=int, default=None)
    ap.add_argument("--layout", choices=("zigzag", "contiguous"), default=Config.layout)
    ap.add_argument("--no-amp", action="store_true", help="fp32 on CUDA (no bf16 autocast)")
    ap.add_argument("--out", "--out-dir", dest="out_dir",
                    help="default: $TMPDIR/sigmoid_attn_single_cell/<device>-x<P>, outside the "
                         "source tree; the committed results come from --out "
                         "examples/single_cell/results/<device>-x<P>")
    args = ap.parse_args()
    cfg = Config(mode=args.mode, attention=args.attention, steps=args.steps, batch=args.batch,
                 dim=args.dim, heads=args.heads, layers=args.layers, ff=args.ff, lr=args.lr,
                 clip=args.clip or None, seed=args.seed, keep_frac=args.keep_frac,
                 full_panel=None if args.full_panel is None else bool(args.full_panel),
                 max_len=args.max_len, layout=args.layout, amp=not args.no_amp)

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if args.device == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        dist.init_process_group("nccl", device_id=device,
                                timeout=datetime.timedelta(seconds=300))
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=300))
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        log = print if rank == 0 else (lambda *a, **k: None)
        log(f"{cfg.mode} over {world} ranks ({args.device}), {cfg.attention} attention")
        t0 = time.perf_counter()
        rec = train(cfg, device, rank, world, log=lambda s: log(s, flush=True))
        wall = time.perf_counter() - t0
        if rank == 0:
            out_dir = args.out_dir or os.path.join(tempfile.gettempdir(), "sigmoid_attn_single_cell",
                                                   f"{args.device}-x{world}")
            os.makedirs(out_dir, exist_ok=True)
            ms = rec["step_ms"][1:] or rec["step_ms"]
            if args.device == "cuda":
                name = torch.cuda.get_device_name(device)
            else:
                name = f"CPU ({torch.get_num_threads()} threads per rank)"
            result = {"mode": cfg.mode, "attention": cfg.attention, "world_size": world,
                      "device": name, "backend": dist.get_backend(), "torch": torch.__version__,
                      "settings": asdict(cfg), "wall_time_s": wall,
                      "median_step_ms_after_first": float(np.median(ms)), **rec}
            path = os.path.join(out_dir, f"{cfg.mode}-{cfg.attention}.json")
            with open(path, "w") as f:
                json.dump(result, f, indent=1)
            print(f"final loss {rec['loss'][-1]:.4f}, median step {np.median(ms):.1f} ms; "
                  f"wrote {path}", flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
