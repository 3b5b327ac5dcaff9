"""Every compiled backward variant (dkdv + dq kernels) against float64 autograd of the reference
(run on an H100 or H200; skipped without CUDA)."""

import pytest
import torch

from conftest import REL_TOL, rel_err, served_head_dim

pytestmark = pytest.mark.gpu

if torch.cuda.is_available():
    import sigmoid_attn
    from sigmoid_attn import sigmoid_attention, sigmoid_attention_reference

    CATALOG = [v for v in sigmoid_attn.info()["variants"]
               if v["kind"] == "bwd_dq" and not v["varlen"]]
else:
    CATALOG = []

DT = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def grads_vs_reference(q0, k0, v0, grad, mod0=None, **kw):
    ins = [t.clone().requires_grad_() for t in (q0, k0, v0)]
    mod = mod0.clone().requires_grad_() if mod0 is not None else None
    torch.empty_like(q0).fill_(float("nan"))  # poison the allocator's next blocks
    out = sigmoid_attention(*ins, score_mod=mod, **kw)
    out.backward(grad)
    ref_ins = [t.double().requires_grad_() for t in (q0, k0, v0)]
    ref_mod = mod0.double().requires_grad_() if mod0 is not None else None
    ref = sigmoid_attention_reference(*ref_ins, score_mod=ref_mod, **kw)
    ref.backward(grad.double())
    got = [t.grad for t in ins] + ([mod.grad] if mod is not None else [])
    want = [t.grad for t in ref_ins] + ([ref_mod.grad] if mod is not None else [])
    return ins, got, [rel_err(a, b) for a, b in zip(got, want)]


@pytest.mark.parametrize("var", CATALOG, ids=[v["name"] for v in CATALOG])
def test_backward_variant_matches_reference(var):
    g = torch.Generator().manual_seed(var["head_dim"] + 5 * var["causal"] + var["score_mod"])
    dtype, D = DT[var["dtype"]], served_head_dim(var, CATALOG)  # (a generic kernel: below BLOCK_D)
    B, Tq, Tk, Hq, Hkv = 4, 200, 233, 4, 2
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", dtype)
    q, k, v, grad = mk(B, Tq, Hq, D), mk(B, Tk, Hkv, D), mk(B, Tk, Hkv, D), mk(B, Tq, Hq, D)
    lq = torch.tensor([Tq, 0, 17, 129], dtype=torch.int32, device="cuda")
    lk = torch.tensor([Tk, 5, 1, 200], dtype=torch.int32, device="cuda")
    mod = torch.randn(B, Tk, generator=g).cuda() if var["score_mod"] else None
    ins, got, errs = grads_vs_reference(q, k, v, grad, mod, seq_lens_q=lq, seq_lens_k=lk,
                                        is_causal=var["causal"])
    for name, e in zip("dq dk dv dmod".split(), errs):
        assert e < REL_TOL[dtype] * 1.5, f"{name}: rel err {e:.3e}"
    for gr in got:
        assert not torch.isnan(gr).any()
    for b in range(B):  # padded positions get exactly zero gradient
        assert (got[0][b, int(lq[b]):] == 0).all()
        assert (got[1][b, int(lk[b]):] == 0).all() and (got[2][b, int(lk[b]):] == 0).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("T", [1, 17, 129, 300])
@pytest.mark.parametrize("causal", [False, True], ids=["dense", "causal"])
@pytest.mark.parametrize("D", [16, 24, 40, 48, 56, 72, 80, 112, 160, 192, 200])
def test_backward_head_dims(D, causal, T, dtype):
    """The compiled head dims beyond the powers of two and ones only the generic kernels serve:
    full and padded lengths, GQA, against float64 autograd (gradients poisoned before)."""
    g = torch.Generator().manual_seed(D * 17 + T + causal)
    B, Hq, Hkv = 3, 4, 2
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", dtype)
    q, k, v, grad = mk(B, T, Hq, D), mk(B, T, Hkv, D), mk(B, T, Hkv, D), mk(B, T, Hq, D)
    lens = torch.randint(0, T + 1, (B,), generator=g, dtype=torch.int32)
    lens[0] = T
    for kw in ({}, {"seq_lens_q": lens.cuda(), "seq_lens_k": lens.cuda()}):
        _, got, errs = grads_vs_reference(q, k, v, grad, is_causal=causal, **kw)
        assert max(errs) < REL_TOL[dtype] * 1.5, (kw.keys(), errs)
        for gr in got:
            assert not torch.isnan(gr).any()
        if kw:
            for b, L in enumerate(lens.tolist()):
                assert (got[0][b, L:] == 0).all() and (got[1][b, L:] == 0).all()


@pytest.mark.parametrize("T", [1, 129, 1000])
def test_backward_full_length_bf16(T):
    g = torch.Generator().manual_seed(T)
    q, k, v, grad = (torch.randn(2, T, 8, 128, generator=g).to("cuda", torch.bfloat16)
                     for _ in range(4))
    _, _, errs = grads_vs_reference(q, k, v, grad, is_causal=T != 129)
    assert max(errs) < REL_TOL[torch.bfloat16] * 1.5, errs


def test_backward_is_bitwise_deterministic():
    g = torch.Generator().manual_seed(1)
    q, k, v, grad = (torch.randn(2, 700, 8, 64, generator=g).to("cuda", torch.bfloat16)
                     for _ in range(4))
    mod = torch.randn(2, 700, generator=g).cuda()
    a = torch.ops.sigmoid_attn.backward(grad, q, k, v, None, None, True, None, None, None, mod)
    b = torch.ops.sigmoid_attn.backward(grad, q, k, v, None, None, True, None, None, None, mod)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_compile_fullgraph_forward_backward_cuda():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 300, 4, 64, generator=g).to("cuda", torch.bfloat16).requires_grad_()
               for _ in range(3))
    fn = torch.compile(lambda a, b, c: sigmoid_attention(a, b, c, is_causal=True).float().square().sum(),
                       fullgraph=True)
    fn(q, k, v).backward()
    ref_in = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    sigmoid_attention(*ref_in, is_causal=True).float().square().sum().backward()
    # (the Gluon backward sums dQ in arrival order: equal within rounding, dK and dV bitwise)
    for name, a, b in zip("qkv", (q, k, v), ref_in):
        assert (rel_err(a.grad, b.grad.double()) < 1e-2 if name == "q"
                else torch.equal(a.grad, b.grad)), name


def test_cuda_graph_forward_backward_replay_with_new_lengths():
    """Forward and backward captured in one CUDA graph, replayed with new lengths written into
    the same buffers: each replay equals eager calls bitwise and matches the float64 reference.
    (Bitwise also through the Gluon backward's fp32 dQ reductions: 200 keys are two key blocks,
    and two additions onto zero give the same sum in either order.)"""
    g = torch.Generator().manual_seed(29)
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", torch.bfloat16)
    B, T, H, D = 3, 200, 4, 64
    q, k, v, grad = mk(B, T, H, D), mk(B, T, H, D), mk(B, T, H, D), mk(B, T, H, D)
    lens = torch.tensor([T, 100, 17], dtype=torch.int32, device="cuda")
    ops = torch.ops.sigmoid_attn

    def step():
        out = ops.forward(q, k, v, lens, lens, True, None, None, None, None)
        return (out,) + tuple(ops.backward(grad, q, k, v, lens, lens, True, None, None, None,
                                           None))

    s = torch.cuda.Stream()  # warm-up off the capture stream, as torch.cuda.graph expects
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = step()
    for new in ([200, 100, 17], [1, 199, 0], [129, 0, 200]):
        lens.copy_(torch.tensor(new, dtype=torch.int32))
        for t in static[:4]:
            t.fill_(float("nan"))  # a replay that skips an element leaves NaN behind
        graph.replay()
        want = step()
        torch.cuda.synchronize()
        for name, a, b in zip(("out", "dq", "dk", "dv"), static[:4], want[:4]):
            assert torch.equal(a, b), f"{name} differs from eager with lengths {new}"
        _, got, errs = grads_vs_reference(q, k, v, grad, seq_lens_q=lens, seq_lens_k=lens,
                                          is_causal=True)
        for name, e in zip("dq dk dv".split(), errs):
            assert e < REL_TOL[torch.bfloat16] * 1.5, f"{name}: rel err {e:.3e} ({new})"


