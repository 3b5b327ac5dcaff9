"""Property tests (hypothesis) of the C++ CPU op against the float64 reference: random batch,
lengths, GQA grouping, head dims, causal, scale, bias and score_mod. Derandomized and without
an example database, so CI runs the same examples every time; the file runs in seconds."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import rel_err
from sigmoid_attn import sigmoid_attention, sigmoid_attention_reference

ops = torch.ops.sigmoid_attn

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow])
TOL = {torch.float32: 1e-4, torch.float64: 1e-10}
I32_MIN, I32_MAX = -(2**31), 2**31 - 1


@st.composite
def problems(draw, max_b=3, max_t=40, heads=(1, 3), groups=(1, 3), dims=(1, 8, 16, 33, 64),
             dtypes=(torch.float32, torch.float64)):
    B = draw(st.integers(0, max_b))
    Tq = draw(st.integers(0, max_t))
    Tk = draw(st.integers(0, max_t))
    Hkv = draw(st.integers(*heads))
    group = draw(st.integers(*groups))
    D = draw(st.sampled_from(dims))
    dtype = draw(st.sampled_from(dtypes))
    causal = draw(st.booleans())

    def lengths(T):
        # Mostly in [-5, T + 5] (clamped in-kernel), sometimes any int32.
        one = st.one_of(st.integers(-5, T + 5), st.integers(-5, T + 5),
                        st.sampled_from([I32_MIN, I32_MAX]))
        return st.none() | st.lists(one, min_size=B, max_size=B)

    lq = draw(lengths(Tq))
    lk = draw(lengths(Tk))
    bias_kind = draw(st.sampled_from(["none", "float", "tensor"]))
    bias_float = draw(st.floats(-6, 6, allow_nan=False))
    scale = draw(st.none() | st.floats(-2, 2, allow_nan=False))
    mod_kind = draw(st.sampled_from(["none", "randn", "with_-inf"]))
    mod_dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16]))
    layout = draw(st.sampled_from(["contiguous", "bhtd_view"]))
    seed = draw(st.integers(0, 2**31 - 1))

    g = torch.Generator().manual_seed(seed)

    def tensor(B, T, H):
        if layout == "bhtd_view":  # SDPA's [B, H, T, D] seen as [B, T, H, D]
            return torch.randn(B, H, T, D, generator=g, dtype=dtype).transpose(1, 2)
        return torch.randn(B, T, H, D, generator=g, dtype=dtype)

    q, k, v = tensor(B, Tq, Hkv * group), tensor(B, Tk, Hkv), tensor(B, Tk, Hkv)
    kw = dict(is_causal=causal, scale=scale)
    if lq is not None:
        kw["seq_lens_q"] = torch.tensor(lq, dtype=torch.int32).reshape(B)
    if lk is not None:
        kw["seq_lens_k"] = torch.tensor(lk, dtype=torch.int32).reshape(B)
    if bias_kind == "float":
        kw["sigmoid_bias"] = bias_float
    elif bias_kind == "tensor":
        kw["sigmoid_bias"] = 2 * torch.randn(B, generator=g, dtype=dtype)
    if mod_kind != "none":
        mod = torch.randn(B, Tk, generator=g)
        if mod_kind == "with_-inf":
            mod[torch.rand(B, Tk, generator=g) < 0.3] = -float("inf")
        kw["score_mod"] = mod.to(mod_dtype)
    return q, k, v, kw


def clamped(lens, b, T):
    return T if lens is None else min(max(int(lens[b]), 0), T)


def reference(q, k, v, kw):
    """float64 reference of what the op computes (score_mod rounded to its dtype as given)."""
    kw = {key: (val.double() if torch.is_tensor(val) and val.is_floating_point() else val)
          for key, val in kw.items()}
    return sigmoid_attention_reference(q.double(), k.double(), v.double(), **kw)


@settings(FUZZ, max_examples=1000)
@given(problems())
def test_forward_matches_reference(problem):
    q, k, v, kw = problem
    out = sigmoid_attention(q, k, v, **kw)
    assert out.shape == q.shape and out.dtype == q.dtype and out.is_contiguous()
    ref = reference(q, k, v, kw)
    assert rel_err(out, ref) < TOL[q.dtype]
    B, Tq, Tk = q.shape[0], q.shape[1], k.shape[1]
    for b in range(B):
        Lq = clamped(kw.get("seq_lens_q"), b, Tq)
        Lk = clamped(kw.get("seq_lens_k"), b, Tk)
        assert (out[b, Lq:] == 0).all()  # padded rows exactly zero
        if Lk == 0:
            assert (out[b] == 0).all()   # no keys: nothing to attend
    # The raw op and the Python entry point are the same computation.
    bias = kw.get("sigmoid_bias")
    bias_value, bias_tensor = (None, bias) if torch.is_tensor(bias) else (bias, None)
    raw = ops.forward(q, k, v, kw.get("seq_lens_q"), kw.get("seq_lens_k"), kw["is_causal"],
                      kw["scale"], bias_value, bias_tensor, kw.get("score_mod"))
    assert torch.equal(raw, out)
    # Meta kernel: same shape and dtype.
    meta = lambda t: t if not torch.is_tensor(t) else torch.empty_strided(
        t.size(), t.stride(), dtype=t.dtype, device="meta")
    om = sigmoid_attention(meta(q), meta(k), meta(v), **{key: meta(val) for key, val in kw.items()})
    assert om.shape == out.shape and om.dtype == out.dtype


@settings(FUZZ, max_examples=400)
@given(problems(max_b=2, max_t=12, heads=(1, 2), groups=(1, 3), dims=(1, 8, 33),
                dtypes=(torch.float64,)))
def test_backward_matches_reference_autograd(problem):
    q, k, v, kw = problem
    mod = kw.get("score_mod")
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    if mod is not None:
        mod = mod.detach().double().requires_grad_()
        kw = dict(kw, score_mod=mod)
    inputs = [q, k, v] + ([mod] if mod is not None else [])
    out = sigmoid_attention(q, k, v, **kw)
    grad = torch.randn(out.shape, dtype=out.dtype,
                       generator=torch.Generator().manual_seed(out.numel()))
    got = torch.autograd.grad(out, inputs, grad, allow_unused=True, materialize_grads=True)

    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    ref_kw = dict(kw, score_mod=ref_inputs[3] if mod is not None else None)
    ref = reference(*ref_inputs[:3], ref_kw)
    want = torch.autograd.grad(ref, ref_inputs, grad, allow_unused=True, materialize_grads=True)

    names = ["dq", "dk", "dv", "dscore_mod"]
    for name, x, w, t in zip(names, got, want, inputs):
        assert x.shape == t.shape and x.dtype == t.dtype, name
        assert rel_err(x, w) < 1e-10, name

    B, Tq, Tk = q.shape[0], q.shape[1], k.shape[1]
    for b in range(B):  # padding gets exactly zero gradient
        Lq = clamped(kw.get("seq_lens_q"), b, Tq)
        Lk = clamped(kw.get("seq_lens_k"), b, Tk)
        assert (got[0][b, Lq:] == 0).all()
        assert (got[1][b, Lk:] == 0).all() and (got[2][b, Lk:] == 0).all()
        if mod is not None:
            assert (got[3][b, Lk:] == 0).all()


@settings(FUZZ, max_examples=100)
@given(problems(max_b=2, max_t=10, heads=(1, 2), groups=(1, 2), dims=(1, 8),
                dtypes=(torch.float64,)))
def test_backward_is_deterministic(problem):
    """The CPU backward writes each gradient element from one task: bitwise repeatable."""
    q, k, v, kw = problem
    g = torch.randn(q.shape, dtype=q.dtype, generator=torch.Generator().manual_seed(1))
    bias = kw.get("sigmoid_bias")
    bias_value, bias_tensor = (None, bias) if torch.is_tensor(bias) else (bias, None)
    args = (g, q, k, v, kw.get("seq_lens_q"), kw.get("seq_lens_k"), kw["is_causal"], kw["scale"],
            bias_value, bias_tensor, kw.get("score_mod"))
    a, b = ops.backward(*args), ops.backward(*args)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
