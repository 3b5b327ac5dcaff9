"""A gradient flows on every entry point, or the call raises (CPU; the same autograd serves CUDA):
torch.ops called directly, TorchScript modules, the sigmoid_bias tensor, and torch.compile
(fullgraph) with the same tensor passed for both lengths, for q/k/v, and for both cu_seqlens."""

import pytest
import torch

from conftest import rel_err
from sigmoid_attn import (sigmoid_attention, sigmoid_attention_reference,
                          sigmoid_attention_varlen, sigmoid_attention_varlen_reference)
from sigmoid_attn.nn import SigmoidMultiheadAttention

ops = torch.ops.sigmoid_attn


def _inputs(seed, B=2, T=9, H=4, D=16, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, H, D, generator=g, dtype=dtype).requires_grad_() for _ in range(3)]


def _grads(out_fn, ins, seed=0):
    out = out_fn(*ins)
    g = torch.Generator().manual_seed(seed + 100)
    out.backward(torch.randn(out.shape, generator=g, dtype=out.dtype))
    grads = [t.grad.clone() for t in ins]
    for t in ins:
        t.grad = None
    return grads


@pytest.mark.parametrize("overload", ["default", "plain"])
def test_torch_ops_forward_has_autograd(overload):
    q, k, v = _inputs(1)
    lens = torch.tensor([9, 4], dtype=torch.int32)
    if overload == "plain":
        fn = lambda q, k, v: ops.forward.plain(q, k, v, True)  # noqa: E731
        ref = lambda q, k, v: sigmoid_attention_reference(q, k, v, is_causal=True)  # noqa: E731
    else:
        fn = lambda q, k, v: ops.forward(q, k, v, lens, lens, True, 0.3)  # noqa: E731
        ref = lambda q, k, v: sigmoid_attention_reference(  # noqa: E731
            q, k, v, seq_lens_q=lens, seq_lens_k=lens, is_causal=True, scale=0.3)
    assert fn(q, k, v).requires_grad
    for got, want in zip(_grads(fn, [q, k, v]), _grads(ref, [q, k, v])):
        assert rel_err(got, want) < 1e-10


def test_torch_ops_forward_varlen_has_autograd():
    q, k, v = (t.detach().flatten(0, 1).requires_grad_() for t in _inputs(2, B=1, T=20))
    cu = torch.tensor([0, 7, 20], dtype=torch.int32)
    fn = lambda q, k, v: ops.forward_varlen(q, k, v, cu, cu, 13, 13, False)  # noqa: E731
    ref = lambda q, k, v: sigmoid_attention_varlen_reference(q, k, v, cu, cu, 13, 13)  # noqa: E731
    for got, want in zip(_grads(fn, [q, k, v]), _grads(ref, [q, k, v])):
        assert rel_err(got, want) < 1e-10


def test_scripted_module_trains_like_eager():
    torch.manual_seed(0)
    m = SigmoidMultiheadAttention(32, 4, batch_first=True).double()
    scripted = torch.jit.script(m)
    x = torch.randn(2, 11, 32, dtype=torch.float64)
    lens = torch.tensor([11, 6], dtype=torch.int32)
    grads = []
    for mod in (m, scripted):
        mod.zero_grad(set_to_none=True)
        mod(x, seq_lens=lens).square().sum().backward()
        grads.append({n: p.grad for n, p in mod.named_parameters()})
    assert all(g is not None for g in grads[1].values()), grads[1]
    for name, g in grads[0].items():
        assert rel_err(grads[1][name], g) < 1e-10, name


@pytest.mark.parametrize("causal", [False, True])
def test_sigmoid_bias_tensor_gradcheck(causal):
    g = torch.Generator().manual_seed(5)
    B, T, H, D = 2, 6, 2, 8
    q, k, v = (torch.randn(B, T, H, D, generator=g, dtype=torch.float64).requires_grad_()
               for _ in range(3))
    bias = torch.randn(B, generator=g, dtype=torch.float64).requires_grad_()
    lens = torch.tensor([6, 3], dtype=torch.int32)

    def f(q, k, v, bias):
        return sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens, is_causal=causal,
                                 sigmoid_bias=bias)

    assert torch.autograd.gradcheck(f, (q, k, v, bias), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_sigmoid_bias_tensor_gradient_varlen_matches_reference():
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(19, 2, 8, generator=g, dtype=torch.float64).requires_grad_()
               for _ in range(3))
    cu = torch.tensor([0, 5, 5, 16], dtype=torch.int32)  # an empty sequence, a 3-row tail
    bias = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_()
    mod = torch.randn(19, generator=g, dtype=torch.float64).requires_grad_()
    grads = []
    for fn in (sigmoid_attention_varlen, sigmoid_attention_varlen_reference):
        out = fn(q, k, v, cu, cu, 11, 11, is_causal=True, sigmoid_bias=bias, score_mod=mod)
        grads.append(torch.autograd.grad(out.square().sum(), (q, k, v, bias, mod)))
    for got, want in zip(*grads):
        assert rel_err(got, want) < 1e-10
    assert grads[0][3][1] == 0  # the empty sequence's bias touches no score


def test_second_derivative_raises():
    q, k, v = _inputs(7)
    with pytest.raises(RuntimeError, match="second derivatives are not supported"):
        torch.autograd.grad(sigmoid_attention(q, k, v).square().sum(), q, create_graph=True)


def test_inference_call_takes_no_graph():
    q, k, v = (t.detach() for t in _inputs(8))
    assert not sigmoid_attention(q, k, v).requires_grad
    with torch.no_grad():
        q.requires_grad_()
        assert not sigmoid_attention(q, k, v, seq_lens_q=torch.tensor([3, 9], dtype=torch.int32)
                                     ).requires_grad


# --- torch.compile(fullgraph=True) with gradients, shared tensors included ---

def _compiled_vs_eager(fn, ins):
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    want = _grads(fn, ins)
    got = _grads(compiled, ins)
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-6


def test_compile_same_lengths_tensor_for_q_and_k():
    ins = _inputs(9, dtype=torch.float32)
    lens = torch.tensor([9, 5], dtype=torch.int32)
    _compiled_vs_eager(lambda q, k, v: sigmoid_attention(q, k, v, seq_lens_q=lens,
                                                         seq_lens_k=lens), ins)


def test_compile_self_attention_same_tensor_for_qkv():
    (x,) = _inputs(10, dtype=torch.float32)[:1]
    _compiled_vs_eager(lambda x: sigmoid_attention(x, x, x, is_causal=True), [x])


def test_compile_varlen_one_cu_seqlens():
    q, k, v = (t.detach().flatten(0, 1).requires_grad_()
               for t in _inputs(11, B=1, T=18, dtype=torch.float32))
    cu = torch.tensor([0, 7, 18], dtype=torch.int32)
    bias = torch.tensor([0.1, -0.2], requires_grad=True)
    _compiled_vs_eager(lambda q, k, v, bias: sigmoid_attention_varlen(
        q, k, v, cu, cu, 11, 11, sigmoid_bias=bias), [q, k, v, bias])


def test_compile_module_with_one_seq_lens():
    torch.manual_seed(1)
    m = SigmoidMultiheadAttention(32, 4, batch_first=True)
    x = torch.randn(2, 10, 32, requires_grad=True)
    lens = torch.tensor([10, 3], dtype=torch.int32)
    _compiled_vs_eager(lambda x: m(x, seq_lens=lens), [x])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("varlen", [False, True])
def test_sigmoid_bias_tensor_gradient_cuda(varlen):
    g = torch.Generator(device="cuda").manual_seed(12)
    B, T, H, D = 3, 130, 4, 64
    mk = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    q, k, v = (mk(B * T if varlen else B, *(() if varlen else (T,)), H, D) for _ in range(3))
    lens = torch.tensor([130, 17, 0], dtype=torch.int32, device="cuda")
    bias = mk(B)
    ins = [t.bfloat16().requires_grad_() for t in (q, k, v)] + [bias.clone().requires_grad_()]
    ref_ins = [t.detach().double().requires_grad_() for t in ins]
    if varlen:
        cu = torch.zeros(B + 1, dtype=torch.int32, device="cuda")
        cu[1:] = lens.cumsum(0)
        run = lambda f, q, k, v, b: f(q, k, v, cu, cu, T, T, sigmoid_bias=b)  # noqa: E731
        fns = (sigmoid_attention_varlen, sigmoid_attention_varlen_reference)
    else:
        run = lambda f, q, k, v, b: f(q, k, v, seq_lens_q=lens, seq_lens_k=lens,  # noqa: E731
                                      sigmoid_bias=b)
        fns = (sigmoid_attention, sigmoid_attention_reference)
    grad = mk(*run(fns[0], *ins).shape)
    got = torch.autograd.grad(run(fns[0], *ins), ins, grad.bfloat16())
    want = torch.autograd.grad(run(fns[1], *ref_ins), ref_ins, grad.double())
    for a, b in zip(got, want):
        assert rel_err(a, b) < 3e-2
    assert got[3][2] == 0  # the empty sequence's bias touches no score
