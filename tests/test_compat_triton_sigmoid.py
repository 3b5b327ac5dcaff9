"""sigmoid_attn.compat.triton_sigmoid (CPU): the API of the triton-sigmoid package (PyPI 0.1.2),
its signatures, defaults and error types, against the float64 reference."""

import inspect
import math

import pytest
import torch

from conftest import REL_TOL, make_qkv, rel_err
from sigmoid_attn import sigmoid_attention_reference
from sigmoid_attn.compat import triton_sigmoid as ts

REL_TOL64 = {**REL_TOL, torch.float64: 1e-12}
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
i32 = torch.int32


def ref64(q, k, v, **kw):
    kw = {key: (val.double() if torch.is_tensor(val) and val.is_floating_point() else val)
          for key, val in kw.items()}
    return sigmoid_attention_reference(q.double(), k.double(), v.double(), **kw)


def test_public_names_and_signatures():
    """triton-sigmoid's names, parameter order and defaults (positional calls must map)."""
    assert set(ts.__all__) == {"sigmoid_attention", "sigmoid_attention_padded",
                               "sigmoid_attention_ref"}

    def params(f):
        return [(p.name, p.default) for p in inspect.signature(f).parameters.values()]

    e = inspect.Parameter.empty
    assert params(ts.sigmoid_attention) == [
        ("query", e), ("key", e), ("value", e), ("is_causal", False), ("scale", None),
        ("sigmoid_bias", None), ("score_mod", None)]
    assert params(ts.sigmoid_attention_padded) == [
        ("query", e), ("key", e), ("value", e), ("seq_lens_k", None), ("seq_lens_q", None),
        ("is_causal", False), ("scale", None), ("sigmoid_bias", None), ("score_mod", None)]
    assert params(ts.sigmoid_attention_ref) == [
        ("q", e), ("k", e), ("v", e), ("seq_lens_k", None), ("seq_lens_q", None),
        ("scale", None), ("sigmoid_bias", None), ("upcast", True), ("reorder_ops", False),
        ("causal", False), ("score_mod", None)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_dense_defaults(dtype, causal):
    """scale = 1/sqrt(D), sigmoid_bias = -log(T)."""
    g = torch.Generator().manual_seed(1)
    T, D = 19, 32
    q, k, v = make_qkv(2, T, T, 4, 4, D, dtype, "cpu", g)
    out = ts.sigmoid_attention(q, k, v, is_causal=causal)
    assert out.shape == q.shape and out.dtype == dtype
    ref = ref64(q, k, v, is_causal=causal, scale=1 / math.sqrt(D), sigmoid_bias=-math.log(T))
    assert rel_err(out, ref) < REL_TOL64[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_positional_arguments(dtype):
    g = torch.Generator().manual_seed(2)
    q, k, v = make_qkv(2, 11, 11, 2, 2, 16, dtype, "cpu", g)
    mod = torch.randn(2, 11, generator=g)
    out = ts.sigmoid_attention(q, k, v, True, 0.3, -1.5, mod)
    ref = ref64(q, k, v, is_causal=True, scale=0.3, sigmoid_bias=-1.5, score_mod=mod)
    assert rel_err(out, ref) < REL_TOL64[dtype]
    assert torch.equal(out, ts.sigmoid_attention(q, k, v, is_causal=True, scale=0.3,
                                                 sigmoid_bias=-1.5, score_mod=mod))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("Tq,Tk", [(13, 13), (9, 21), (21, 9)])
def test_padded_defaults_and_lengths(dtype, causal, Tq, Tk):
    """Positional lengths are (seq_lens_k, seq_lens_q); the default bias is -log(seq_lens_k)
    per sequence; padded query rows are zero."""
    g = torch.Generator().manual_seed(Tq * 100 + Tk)
    q, k, v = make_qkv(3, Tq, Tk, 4, 4, 32, dtype, "cpu", g)
    lk = torch.tensor([Tk, Tk // 2, 1], dtype=i32)
    lq = torch.tensor([Tq // 3, Tq, 2], dtype=i32)
    out = ts.sigmoid_attention_padded(q, k, v, lk, lq, causal)
    bias = -torch.log(lk.double())
    ref = ref64(q, k, v, seq_lens_q=lq, seq_lens_k=lk, is_causal=causal, sigmoid_bias=bias,
                scale=1 / math.sqrt(32))
    assert rel_err(out, ref) < REL_TOL64[dtype]
    for b in range(3):
        assert (out[b, int(lq[b]):] == 0).all()
    # No lengths: no padding, the bias is -log(Tk).
    out = ts.sigmoid_attention_padded(q, k, v, is_causal=causal)
    ref = ref64(q, k, v, is_causal=causal, sigmoid_bias=-math.log(Tk))
    assert rel_err(out, ref) < REL_TOL64[dtype]


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.float32])
def test_padded_length_dtypes(dtype):
    """triton-sigmoid casts lengths of any dtype to int32 (float lengths truncate)."""
    g = torch.Generator().manual_seed(3)
    q, k, v = make_qkv(2, 10, 12, 2, 2, 16, torch.float32, "cpu", g)
    lk, lq = torch.tensor([12, 5], dtype=i32), torch.tensor([7, 10], dtype=i32)
    want = ts.sigmoid_attention_padded(q, k, v, seq_lens_k=lk, seq_lens_q=lq)
    got = ts.sigmoid_attention_padded(q, k, v, seq_lens_k=lk.to(dtype), seq_lens_q=lq.to(dtype))
    assert torch.equal(got, want)
    if dtype.is_floating_point:
        got = ts.sigmoid_attention_padded(q, k, v, seq_lens_k=lk + 0.75, seq_lens_q=lq + 0.75)
        assert torch.equal(got, want)


def test_scalar_and_tensor_bias_and_score_mod():
    g = torch.Generator().manual_seed(4)
    q, k, v = make_qkv(3, 8, 8, 2, 2, 16, torch.float64, "cpu", g)
    mod = torch.randn(3, 8, generator=g, dtype=torch.float64)
    for bias in (0.25, torch.tensor(0.25), torch.tensor([0.25])):
        out = ts.sigmoid_attention(q, k, v, sigmoid_bias=bias, score_mod=mod)
        ref = ref64(q, k, v, sigmoid_bias=0.25, score_mod=mod)
        assert rel_err(out, ref) < 1e-12


def test_gradients_and_constant_bias_and_score_mod():
    """q, k, v get gradients; score_mod and a tensor sigmoid_bias do not (triton-sigmoid
    computes none for them)."""
    g = torch.Generator().manual_seed(5)
    q, k, v = (t.requires_grad_() for t in make_qkv(2, 9, 11, 4, 4, 16, torch.float64, "cpu", g))
    lk, lq = torch.tensor([11, 4]), torch.tensor([9, 6])
    mod = torch.randn(2, 11, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.tensor(-0.5, dtype=torch.float64, requires_grad=True)
    out = ts.sigmoid_attention_padded(q, k, v, lk, lq, True, None, bias, mod)
    grad = torch.randn(out.shape, dtype=torch.float64, generator=g)
    got = torch.autograd.grad(out, (q, k, v), grad)
    assert mod.grad is None and bias.grad is None
    ref = ref64(q, k, v, seq_lens_q=lq, seq_lens_k=lk, is_causal=True, sigmoid_bias=-0.5,
                score_mod=mod.detach())
    want = torch.autograd.grad(ref, (q, k, v), grad)
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-10
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        torch.autograd.grad(out, mod, grad)


def test_zero_length_sequences_and_empty_inputs():
    g = torch.Generator().manual_seed(6)
    q, k, v = (t.requires_grad_() for t in make_qkv(2, 16, 16, 2, 2, 16, torch.float16, "cpu", g))
    out = ts.sigmoid_attention_padded(q, k, v, seq_lens_k=torch.tensor([0, 16]))
    out.float().sum().backward()
    assert not torch.isnan(out).any() and (out[0] == 0).all()
    assert not any(torch.isnan(t.grad).any() for t in (q, k, v))
    for shape in ((0, 16, 2, 16), (2, 0, 2, 16)):
        e = torch.randn(shape)
        assert ts.sigmoid_attention_padded(e, e, e).shape == shape
        assert ts.sigmoid_attention(e, e, e).shape == shape


def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 4, 12, 16, generator=g).transpose(1, 2) for _ in range(3))
    assert not q.is_contiguous()
    out = ts.sigmoid_attention_padded(q, k, v)
    assert rel_err(out, ref64(q, k, v)) < REL_TOL[torch.float32]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("upcast,reorder_ops", [(True, False), (True, True), (False, False),
                                                (False, True)])
def test_reference(dtype, upcast, reorder_ops):
    """The reference: float32 (upcast) or the inputs' dtype, result in the inputs' dtype,
    default bias -log(L + 1e-6); `causal` is its flag's name."""
    g = torch.Generator().manual_seed(8)
    q, k, v = make_qkv(2, 10, 14, 2, 2, 16, dtype, "cpu", g)
    lk, lq = torch.tensor([14, 6], dtype=i32), torch.tensor([10, 3], dtype=i32)
    mod = torch.randn(2, 14, generator=g)
    out = ts.sigmoid_attention_ref(q, k, v, lk, lq, upcast=upcast, reorder_ops=reorder_ops,
                                   causal=True, score_mod=mod)
    assert out.dtype == dtype
    ref = ref64(q, k, v, seq_lens_q=lq, seq_lens_k=lk, is_causal=True, score_mod=mod,
                sigmoid_bias=-torch.log(lk.double() + 1e-6))
    tol = REL_TOL[torch.float32] if upcast or dtype == torch.float64 else REL_TOL[dtype]
    assert rel_err(out, ref) < max(tol, REL_TOL64[dtype])
    # Without lengths: -log(Tk + 1e-6); the kernels (-log(Tk)) differ from it by the 1e-6.
    out = ts.sigmoid_attention_ref(q, k, v, scale=0.2, upcast=upcast)
    ref = ref64(q, k, v, scale=0.2, sigmoid_bias=-math.log(14 + 1e-6))
    assert rel_err(out, ref) < max(tol, REL_TOL64[dtype])
    dense = ts.sigmoid_attention_padded(q, k, v, scale=0.2)
    assert rel_err(dense, ref) < max(REL_TOL64[dtype], 1e-6)


def test_reference_is_differentiable():
    g = torch.Generator().manual_seed(9)
    q, k, v = (t.requires_grad_() for t in make_qkv(1, 5, 5, 2, 2, 8, torch.float32, "cpu", g))
    ts.sigmoid_attention_ref(q, k, v, seq_lens_k=torch.tensor([3])).sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


q0 = torch.randn(2, 8, 4, 32)
lens2 = torch.tensor([5, 8], dtype=i32)
VE, TE = ValueError, TypeError
# (callable, type): ValueError where triton-sigmoid raises one; TypeError for dtypes and types.
BAD = {
    "rank_3d": (lambda f: f(q0[0], q0[0], q0[0]), VE),
    "rank_5d": (lambda f: f(q0[..., None], q0[..., None], q0[..., None]), VE),
    "batch": (lambda f: f(q0, q0[:1], q0[:1]), VE),
    "head_dim": (lambda f: f(q0, q0[..., :16], q0[..., :16]), VE),
    "heads_not_a_divisor": (lambda f: f(q0, q0[:, :, :3], q0[:, :, :3]), VE),
    "kv_lengths": (lambda f: f(q0, q0, q0[:, :7]), VE),
    "score_mod_shape": (lambda f: f(q0, q0, q0, score_mod=torch.zeros(2, 8, 4)), VE),
    "scale_nan": (lambda f: f(q0, q0, q0, scale=float("nan")), VE),
    "dtypes_differ": (lambda f: f(q0, q0.half(), q0), TE),
    "integer_qkv": (lambda f: f(q0.long(), q0.long(), q0.long()), TE),
    "q_not_tensor": (lambda f: f(q0.tolist(), q0, q0), TE),
    "score_mod_integer": (lambda f: f(q0, q0, q0, score_mod=torch.zeros(2, 8, dtype=i32)), TE),
}
BAD_PADDED = {
    "seq_lens_k_2d": (lambda: ts.sigmoid_attention_padded(q0, q0, q0, seq_lens_k=lens2[None]), VE),
    "seq_lens_k_batch": (lambda: ts.sigmoid_attention_padded(q0, q0, q0, seq_lens_k=torch.tensor([1, 2, 3])), VE),
    "seq_lens_q_2d": (lambda: ts.sigmoid_attention_padded(q0, q0, q0, lens2, lens2[:, None]), VE),
    "seq_lens_device": (lambda: ts.sigmoid_attention_padded(q0, q0, q0, lens2.to("meta")), VE),
    "seq_lens_list": (lambda: ts.sigmoid_attention_padded(q0, q0, q0, [5, 8]), TE),
    "dense_lengths_differ": (lambda: ts.sigmoid_attention(q0, q0[:, :6], q0[:, :6]), VE),
}


@pytest.mark.parametrize("name", list(BAD))
@pytest.mark.parametrize("fn", ["sigmoid_attention", "sigmoid_attention_padded"])
def test_error_types(fn, name):
    call, kind = BAD[name]
    if fn == "sigmoid_attention" and name == "kv_lengths":
        kind = VE  # dense: q and k of one length (checked first)
    with pytest.raises(kind) as e:
        call(getattr(ts, fn))
    assert isinstance(e.value, RuntimeError)  # code catching RuntimeError keeps working
    assert str(e.value).startswith("sigmoid_attention: ")


@pytest.mark.parametrize("name", list(BAD_PADDED))
def test_error_types_lengths(name):
    call, kind = BAD_PADDED[name]
    with pytest.raises(kind) as e:
        call()
    assert isinstance(e.value, RuntimeError)
    assert str(e.value).startswith("sigmoid_attention: ")


def test_grouped_query_heads_beyond_triton_sigmoid():
    """k, v with a divisor of q's heads run (triton-sigmoid refuses them)."""
    g = torch.Generator().manual_seed(10)
    q, k, v = make_qkv(2, 7, 7, 4, 2, 16, torch.float32, "cpu", g)
    out = ts.sigmoid_attention(q, k, v)
    assert rel_err(out, ref64(q, k, v, sigmoid_bias=-math.log(7))) < REL_TOL[torch.float32]
