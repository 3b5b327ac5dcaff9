"""The pure-torch reference against a naive per-element loop."""

import math

import pytest
import torch

from sigmoid_attn import sigmoid_attention_reference


def naive(q, k, v, lq, lk, causal, scale, bias, mod):
    B, Tq, Hq, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    out = torch.zeros_like(q)
    for b in range(B):
        Lq, Lk = min(max(int(lq[b]), 0), Tq), min(max(int(lk[b]), 0), Tk)
        bb = -math.log(max(Lk, 1)) if bias is None else float(bias[b]) if torch.is_tensor(bias) else bias
        for h in range(Hq):
            hk = h // (Hq // Hkv)
            for i in range(Lq):
                for j in range(Lk):
                    if causal and j > i:
                        continue
                    s = float(q[b, i, h] @ k[b, j, hk]) * scale + bb
                    if mod is not None:
                        s += float(mod[b, j])
                    out[b, i, h] += v[b, j, hk] / (1.0 + math.exp(-s))
    return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bias_kind", ["default", "float", "tensor"])
def test_reference_matches_naive_loop(causal, bias_kind):
    g = torch.Generator().manual_seed(0)
    B, Tq, Tk, Hq, Hkv, D = 3, 7, 9, 4, 2, 8
    q = torch.randn(B, Tq, Hq, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, Tk, Hkv, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, Tk, Hkv, D, generator=g, dtype=torch.float64)
    lq = torch.tensor([7, 0, 5], dtype=torch.int32)
    lk = torch.tensor([9, 3, 0], dtype=torch.int32)
    mod = torch.randn(B, Tk, generator=g, dtype=torch.float64)
    bias = {"default": None, "float": -1.5, "tensor": torch.randn(B, generator=g, dtype=torch.float64)}[bias_kind]
    scale = 0.3
    ref = sigmoid_attention_reference(q, k, v, seq_lens_q=lq, seq_lens_k=lk, is_causal=causal,
                                      scale=scale, sigmoid_bias=bias, score_mod=mod)
    want = naive(q, k, v, lq, lk, causal, scale, bias, mod)
    torch.testing.assert_close(ref, want, rtol=1e-12, atol=1e-12)
