"""Training smoke test: a 2-layer encoder with sigmoid attention learns a synthetic
variable-length task (predict, per token, the token two positions back in its own sequence,
which needs attention), and its loss falls. CPU here; on the device the same test runs on CUDA too."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sigmoid_attn import sigmoid_attention


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, lens):
        B, T, C = x.shape
        q, k, v = self.qkv(self.n1(x)).view(B, T, 3, self.heads, C // self.heads).unbind(2)
        a = sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens, is_causal=True)
        x = x + self.proj(a.reshape(B, T, C))
        return x + self.ff(self.n2(x))


class Encoder(nn.Module):
    def __init__(self, vocab=4, dim=64, heads=2, T=48):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(T, dim) * 0.02)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(2)])
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens, lens):
        x = self.emb(tokens) + self.pos[: tokens.shape[1]]
        for blk in self.blocks:
            x = blk(x, lens)
        return self.head(x)


def batch(B, T, gen, device):
    lens = torch.randint(T // 4, T + 1, (B,), generator=gen, dtype=torch.int32)
    tokens = torch.randint(0, 4, (B, T), generator=gen)
    target = torch.roll(tokens, 2, dims=1)
    target[:, :2] = 0
    valid = torch.arange(T)[None, :] < lens[:, None].long()
    return tokens.to(device), target.to(device), valid.to(device), lens.to(device)


def train(device, dtype, steps):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = Encoder().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        tokens, target, valid, lens = batch(16, 48, gen, device)
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(tokens, lens)
        loss = F.cross_entropy(logits.float()[valid], target[valid])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_training_loss_falls_cpu():
    losses = train("cpu", torch.float32, 400)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first, (first, last)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_loss_falls_cuda_bf16():
    losses = train("cuda", torch.bfloat16, 300)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first, (first, last)
