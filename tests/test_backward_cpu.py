"""Gradients through the op on CPU (the C++ backward): gradcheck in float64 and agreement with
autograd of the reference; padded positions get exactly zero gradient."""

import pytest
import torch

from conftest import rel_err
from sigmoid_attn import sigmoid_attention, sigmoid_attention_reference


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_mod", [False, True])
def test_gradcheck_float64(causal, with_mod):
    g = torch.Generator().manual_seed(3)
    B, Tq, Tk, Hq, Hkv, D = 2, 5, 6, 4, 2, 8
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()
    q, k, v = mk(B, Tq, Hq, D), mk(B, Tk, Hkv, D), mk(B, Tk, Hkv, D)
    mod = mk(B, Tk) if with_mod else None
    lq = torch.tensor([5, 3], dtype=torch.int32)
    lk = torch.tensor([6, 2], dtype=torch.int32)

    def f(q, k, v, mod):
        return sigmoid_attention(q, k, v, seq_lens_q=lq, seq_lens_k=lk, is_causal=causal,
                                 score_mod=mod, scale=0.4)

    assert torch.autograd.gradcheck(f, (q, k, v, mod), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backward_matches_reference_autograd(dtype):
    g = torch.Generator().manual_seed(4)
    B, T, H, D = 3, 33, 4, 32
    base = [torch.randn(B, T, H, D, generator=g) for _ in range(3)]
    mod0 = torch.randn(B, T, generator=g)
    lens = torch.tensor([33, 17, 0], dtype=torch.int32)
    grad = torch.randn(B, T, H, D, generator=g)

    ins = [t.to(dtype).requires_grad_() for t in base]
    mod = mod0.clone().requires_grad_()
    out = sigmoid_attention(*ins, seq_lens_q=lens, seq_lens_k=lens, is_causal=True, score_mod=mod)
    out.backward(grad.to(dtype))

    ref_ins = [t.detach().to(dtype).double().requires_grad_() for t in base]
    ref_mod = mod0.double().requires_grad_()
    ref = sigmoid_attention_reference(*ref_ins, seq_lens_q=lens, seq_lens_k=lens, is_causal=True,
                                      score_mod=ref_mod)
    ref.backward(grad.to(dtype).double())
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for got, want in zip(ins + [mod], ref_ins + [ref_mod]):
        assert rel_err(got.grad, want.grad) < tol
    for b, L in enumerate(lens.tolist()):  # padding gets zero gradient
        for t in ins:
            assert (t.grad[b, L:] == 0).all()
        assert (mod.grad[b, L:] == 0).all()


def test_grad_of_sum_uses_expanded_gradient():
    q, k, v = (torch.randn(2, 7, 2, 16, requires_grad=True) for _ in range(3))
    sigmoid_attention(q, k, v).sum().backward()  # grad_out has stride 0 everywhere
    ref_in = [t.detach().double().requires_grad_() for t in (q, k, v)]
    sigmoid_attention_reference(*ref_in).sum().backward()
    for got, want in zip((q, k, v), ref_in):
        assert rel_err(got.grad, want.grad) < 1e-5


def test_backward_bad_grad_out():
    q = torch.randn(2, 7, 2, 16)
    with pytest.raises(RuntimeError, match=r"grad_out must have q's shape \[2, 7, 2, 16\], got \[2, 7, 2\]"):
        torch.ops.sigmoid_attn.backward(q[..., 0], q, q, q)


def test_opcheck_backward():
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 6, 2, 16, generator=g) for _ in range(3))
    lens = torch.tensor([6, 2], dtype=torch.int32)
    torch.library.opcheck(torch.ops.sigmoid_attn.forward.default,
                          (q, k, v, lens, lens, True, None, None, None, None))
    gout = torch.randn(2, 6, 2, 16, generator=g)
    mod = torch.randn(2, 6, generator=g)
    for m in (None, mod):
        torch.library.opcheck(torch.ops.sigmoid_attn.backward.default,
                              (gout, q, k, v, lens, lens, True, None, None, None, m))


def test_torch_compile_backward_no_graph_break():
    q, k, v = (torch.randn(2, 9, 2, 16, requires_grad=True) for _ in range(3))
    fn = torch.compile(lambda a, b, c: sigmoid_attention(a, b, c, is_causal=True).square().sum(),
                       fullgraph=True, backend="aot_eager")
    fn(q, k, v).backward()
    ref_in = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    sigmoid_attention(*ref_in, is_causal=True).square().sum().backward()
    for got, want in zip((q, k, v), ref_in):
        torch.testing.assert_close(got.grad, want.grad)


def test_autograd_passes_torch_deterministic_mode(monkeypatch):
    """The backward ops cannot read torch's deterministic mode (the stable ABI has no query), so
    the autograd passes it as `deterministic`: every backward (padded, plain, packed) with the
    mode off and on. On CUDA it keeps the atomic-dQ kernel (Gluon) out."""
    import sigmoid_attn._autograd as autograd
    from sigmoid_attn import sigmoid_attention_varlen

    real, calls = autograd.ops, []

    class Spy:
        def __getattr__(self, name):
            fn = getattr(real, name)

            def call(*args, **kwargs):
                calls.append((name, kwargs.get("deterministic")))
                return fn(*args, **kwargs)
            return call

    monkeypatch.setattr(autograd, "ops", Spy())
    g = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(2, 5, 2, 16, generator=g) for _ in range(3))
    packed = [t.reshape(10, 2, 16) for t in (q, k, v)]
    cu = torch.tensor([0, 5, 10], dtype=torch.int32)

    def run_all():
        for kw in ({}, {"scale": 0.5}):  # the plain overload, then the full one
            ins = [t.clone().requires_grad_() for t in (q, k, v)]
            sigmoid_attention(*ins, **kw).sum().backward()
        ins = [t.clone().requires_grad_() for t in packed]
        sigmoid_attention_varlen(*ins, cu, cu, 5, 5).sum().backward()

    before = torch.are_deterministic_algorithms_enabled()
    try:
        for mode in (False, True):
            torch.use_deterministic_algorithms(mode, warn_only=True)
            calls.clear()
            run_all()
            assert calls == [("backward", mode), ("backward", mode),
                             ("backward_varlen", mode)], calls
    finally:
        torch.use_deterministic_algorithms(before)


def test_backward_ops_take_the_deterministic_flag():
    """`deterministic` is the backward ops' last argument, false by default; the CPU path is
    deterministic either way (the same bits), and opcheck passes with it set."""
    for op in (torch.ops.sigmoid_attn.backward.default,
               torch.ops.sigmoid_attn.backward_varlen.default):
        arg = op._schema.arguments[-1]
        assert arg.name == "deterministic" and arg.default_value is False, op._schema
    g = torch.Generator().manual_seed(9)
    q, k, v, gout = (torch.randn(2, 6, 2, 16, generator=g) for _ in range(4))
    a = torch.ops.sigmoid_attn.backward(gout, q, k, v)
    b = torch.ops.sigmoid_attn.backward(gout, q, k, v, deterministic=True)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    torch.library.opcheck(torch.ops.sigmoid_attn.backward.default,
                          (gout, q, k, v, None, None, False, None, None, None, None, True))
