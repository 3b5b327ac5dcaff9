"""The tiled CPU path (csrc/ops_cpu.cpp) at its tile edges and under any thread count: lengths
around the forward's 128-row (causal) or 256-row by 512-key tiles and the backward's 256-key by
256-row blocks, causal and GQA, against float64; and bitwise-equal outputs and gradients with 1
and 2 threads."""

import pytest
import torch

from conftest import REL_TOL, rel_err
from sigmoid_attn import (sigmoid_attention, sigmoid_attention_reference,
                          sigmoid_attention_varlen)


def run(q, k, v, grad, **kw):
    ins = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    mod = kw.pop("score_mod", None)
    if mod is not None:
        mod = mod.detach().clone().requires_grad_()
    out = sigmoid_attention(*ins, score_mod=mod, **kw)
    out.backward(grad)
    return out.detach(), [t.grad for t in ins] + ([mod.grad] if mod is not None else [])


def reference(q, k, v, grad, **kw):
    kw = {key: (val.double() if torch.is_tensor(val) and val.is_floating_point() else val)
          for key, val in kw.items()}
    mod = kw.pop("score_mod", None)
    ins = [t.detach().double().requires_grad_() for t in (q, k, v)]
    if mod is not None:
        mod = mod.detach().requires_grad_()
    out = sigmoid_attention_reference(*ins, score_mod=mod, **kw)
    out.backward(grad.double())
    return out.detach(), [t.grad for t in ins] + ([mod.grad] if mod is not None else [])


@pytest.mark.parametrize("T", [63, 64, 65, 127, 128, 129, 255, 257, 513])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("Hq,Hkv", [(2, 2), (4, 1)])
def test_tile_boundaries_against_float64(T, causal, Hq, Hkv):
    g = torch.Generator().manual_seed(T)
    B, D = 2, 16
    q = torch.randn(B, T, Hq, D, generator=g)
    k, v = (torch.randn(B, T, Hkv, D, generator=g) for _ in range(2))
    grad = torch.randn(B, T, Hq, D, generator=g)
    mod = torch.randn(B, T, generator=g)
    lens = torch.tensor([T, max(T - 64, 1)], dtype=torch.int32)  # one full, one cut mid-tile
    kw = dict(is_causal=causal, seq_lens_q=lens, seq_lens_k=lens, score_mod=mod)
    out, grads = run(q, k, v, grad, **kw)
    ref, ref_grads = reference(q, k, v, grad, **kw)
    assert rel_err(out, ref) < REL_TOL[torch.float32]
    for got, want in zip(grads, ref_grads):
        assert rel_err(got, want) < REL_TOL[torch.float32]
    assert (out[1, lens[1]:] == 0).all() and (grads[1][1, lens[1]:] == 0).all()


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_same_bits_for_any_thread_count(threads, dtype, causal):
    g = torch.Generator().manual_seed(7)
    # One (batch, kv head): the backward cuts its keys into several chunks, whose dQ partials are
    # summed after; T spans several tiles of both passes.
    B, T, Hq, Hkv, D = 1, 600, 4, 1, 32
    q = torch.randn(B, T, Hq, D, generator=g).to(dtype)
    k, v = (torch.randn(B, T, Hkv, D, generator=g).to(dtype) for _ in range(2))
    grad = torch.randn(B, T, Hq, D, generator=g).to(dtype)
    mod = torch.randn(B, T, generator=g)
    kw = dict(is_causal=causal, score_mod=mod, seq_lens_k=torch.tensor([555], dtype=torch.int32))
    results = []
    for n in (1, 2, 1):
        torch.set_num_threads(n)
        results.append(run(q, k, v, grad, **kw))
    for out, grads in results[1:]:
        assert torch.equal(out, results[0][0])
        for got, want in zip(grads, results[0][1]):
            assert torch.equal(got, want)


def test_varlen_same_bits_for_any_thread_count(threads):
    g = torch.Generator().manual_seed(8)
    lens = [300, 1, 129, 0, 70]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
    total, Hq, Hkv, D = sum(lens), 4, 2, 32
    q = torch.randn(total, Hq, D, generator=g)
    k, v = (torch.randn(total, Hkv, D, generator=g) for _ in range(2))
    grad = torch.randn(total, Hq, D, generator=g)
    results = []
    for n in (1, 2):
        torch.set_num_threads(n)
        ins = [t.clone().requires_grad_() for t in (q, k, v)]
        out = sigmoid_attention_varlen(*ins, cu, cu, max(lens), max(lens), is_causal=True)
        out.backward(grad)
        results.append([out.detach()] + [t.grad for t in ins])
    for a, b in zip(*results):
        assert torch.equal(a, b)
