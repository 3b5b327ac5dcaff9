"""Packed variable-length batches (sigmoid_attention_varlen) through the C++ CPU op: against the
float64 reference, against the dense padded API on the same tokens, gradients, opcheck,
torch.compile, strict mode and bad inputs."""

import pytest
import torch

from conftest import REL_TOL, cu_of, rel_err
from sigmoid_attn import (sigmoid_attention, sigmoid_attention_varlen,
                          sigmoid_attention_varlen_reference)
from sigmoid_attn._ops import ops


def packed(lens_q, lens_k, Hq, Hkv, D, dtype, g, tail_q=0, tail_k=0):
    tq, tk = sum(lens_q) + tail_q, sum(lens_k) + tail_k
    q = torch.randn(tq, Hq, D, generator=g).to(dtype)
    k = torch.randn(tk, Hkv, D, generator=g).to(dtype)
    v = torch.randn(tk, Hkv, D, generator=g).to(dtype)
    return q, k, v, cu_of(lens_q), cu_of(lens_k)


def ref64(q, k, v, cu_q, cu_k, mq, mk, **kw):
    kw = {key: (val.double() if torch.is_tensor(val) and val.is_floating_point() else val)
          for key, val in kw.items()}
    return sigmoid_attention_varlen_reference(q.double(), k.double(), v.double(), cu_q, cu_k,
                                              mq, mk, **kw)


CASES = [  # (lens_q, lens_k, Hq, Hkv, D, causal, mod, bias)
    ([17, 1, 129, 0, 40], [17, 1, 129, 0, 40], 2, 2, 32, False, False, None),
    ([17, 1, 129, 0, 40], [17, 1, 129, 0, 40], 4, 2, 64, True, True, None),
    ([5, 33, 20], [9, 12, 64], 4, 1, 48, False, True, "tensor"),
    ([5, 33, 20], [9, 12, 64], 2, 2, 96, True, False, -1.5),
    ([1], [1], 1, 1, 16, True, False, None),
    ([], [], 2, 2, 32, False, False, None),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_varlen_matches_reference(case, dtype):
    lens_q, lens_k, Hq, Hkv, D, causal, mod, bias = case
    g = torch.Generator().manual_seed(len(lens_q) * 31 + D)
    q, k, v, cu_q, cu_k = packed(lens_q, lens_k, Hq, Hkv, D, dtype, g, tail_q=3, tail_k=2)
    mq, mk = max(lens_q, default=0), max(lens_k, default=0)
    sm = torch.randn(k.shape[0], generator=g) if mod else None
    sb = torch.randn(len(lens_q), generator=g) if bias == "tensor" else bias
    kw = dict(is_causal=causal, score_mod=sm, sigmoid_bias=sb)
    out = sigmoid_attention_varlen(q, k, v, cu_q, cu_k, mq, mk, **kw)
    assert out.shape == q.shape and out.dtype == dtype
    ref = ref64(q, k, v, cu_q, cu_k, mq, mk, **kw)
    tol = 1e-12 if dtype == torch.float64 else REL_TOL[dtype]
    assert rel_err(out, ref) < tol
    assert (out[int(cu_q[-1]):] == 0).all(), "rows past cu_seqlens_q[B] must be zero"


def test_varlen_equals_dense_padded_on_same_tokens():
    g = torch.Generator().manual_seed(1)
    lens = [30, 7, 0, 19]
    B, T, H, D = len(lens), max(lens), 4, 32
    q, k, v = (torch.randn(B, T, H, D, generator=g) for _ in range(3))
    mod = torch.randn(B, T, generator=g)
    L = torch.tensor(lens, dtype=torch.int32)
    dense = sigmoid_attention(q, k, v, seq_lens_q=L, seq_lens_k=L, is_causal=True, score_mod=mod)
    pack = lambda x: torch.cat([x[b, :n] for b, n in enumerate(lens)])
    cu = cu_of(lens)
    out = sigmoid_attention_varlen(pack(q), pack(k), pack(v), cu, cu, T, T, is_causal=True,
                                   score_mod=pack(mod))
    assert torch.allclose(out, pack(dense), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_gradcheck_float64(causal):
    g = torch.Generator().manual_seed(2)
    lens_q, lens_k = [3, 0, 5], [4, 2, 5]
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()
    q, k, v = mk(sum(lens_q) + 1, 4, 8), mk(sum(lens_k), 2, 8), mk(sum(lens_k), 2, 8)
    mod = mk(sum(lens_k))
    cu_q, cu_k = cu_of(lens_q), cu_of(lens_k)

    def f(q, k, v, mod):
        return sigmoid_attention_varlen(q, k, v, cu_q, cu_k, 5, 5, is_causal=causal,
                                        score_mod=mod, scale=0.4)

    assert torch.autograd.gradcheck(f, (q, k, v, mod), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_varlen_backward_matches_reference_autograd():
    g = torch.Generator().manual_seed(4)
    lens = [33, 17, 0, 9]
    q0, k0, v0, cu, _ = packed(lens, lens, 4, 2, 32, torch.float32, g, tail_q=2)
    k0, v0 = k0[:sum(lens)], v0[:sum(lens)]
    mod0 = torch.randn(sum(lens), generator=g)
    grad = torch.randn(q0.shape, generator=g)
    ins = [t.clone().requires_grad_() for t in (q0, k0, v0)]
    mod = mod0.clone().requires_grad_()
    sigmoid_attention_varlen(*ins, cu, cu, 33, 33, is_causal=True, score_mod=mod).backward(grad)
    ref_ins = [t.double().requires_grad_() for t in (q0, k0, v0)]
    ref_mod = mod0.double().requires_grad_()
    sigmoid_attention_varlen_reference(*ref_ins, cu, cu, 33, 33, is_causal=True,
                                       score_mod=ref_mod).backward(grad.double())
    for got, want in zip(ins + [mod], ref_ins + [ref_mod]):
        assert rel_err(got.grad, want.grad) < 1e-5
    assert (ins[0].grad[sum(lens):] == 0).all(), "tail rows get zero gradient"


def test_max_seqlen_cuts_longer_sequences_like_the_kernels():
    g = torch.Generator().manual_seed(5)
    q, k, v, cu, _ = packed([10, 6], [10, 6], 2, 2, 16, torch.float32, g)
    out = sigmoid_attention_varlen(q, k, v, cu, cu, 8, 8)
    ref = ref64(q, k, v, cu, cu, 8, 8)
    assert rel_err(out, ref) < 1e-5
    assert (out[8:10] == 0).all(), "rows past max_seqlen are zero"
    with pytest.raises(ValueError, match="exceeds max_seqlen = 8"):
        sigmoid_attention_varlen(q, k, v, cu, cu, 8, 8, strict=True)


def test_strict_mode_rejects_ill_formed_cu_seqlens():
    q = torch.randn(10, 2, 16)
    bad = [(torch.tensor([1, 5, 10], dtype=torch.int32), "cu_seqlens_q\\[0\\] = 1"),
           (torch.tensor([0, 6, 5], dtype=torch.int32), "decreases at 2: 6 -> 5"),
           (torch.tensor([0, 5, 12], dtype=torch.int32), "exceeds the 10 packed tokens")]
    for cu, msg in bad:
        with pytest.raises(ValueError, match=msg):
            sigmoid_attention_varlen(q, q, q, cu, torch.tensor([0, 5, 10], dtype=torch.int32),
                                     10, 10, strict=True)
    # Without strict mode an ill-formed cu_seqlens is memory-safe (clamped), not checked.
    out = sigmoid_attention_varlen(q, q, q, torch.tensor([0, 6, 5], dtype=torch.int32),
                                   torch.tensor([0, 5, 10], dtype=torch.int32), 10, 10)
    assert out.shape == q.shape


def test_opcheck_and_compile_fullgraph():
    g = torch.Generator().manual_seed(6)
    q, k, v, cu_q, cu_k = packed([7, 0, 12], [5, 3, 12], 4, 2, 16, torch.float32, g, tail_q=1)
    sm = torch.randn(k.shape[0], generator=g)
    args = (q, k, v, cu_q, cu_k, 12, 12, True, None, None, None, sm)
    torch.library.opcheck(ops.forward_varlen.default, args)
    grad = torch.randn(q.shape, generator=g)
    torch.library.opcheck(ops.backward_varlen.default, (grad,) + args)

    def f(q, k, v, sm):
        return sigmoid_attention_varlen(q, k, v, cu_q, cu_k, 12, 12, is_causal=True,
                                        score_mod=sm)

    ins = [t.clone().requires_grad_() for t in (q, k, v, sm)]
    out = torch.compile(f, fullgraph=True)(*ins)
    out.backward(grad)
    eager = [t.clone().requires_grad_() for t in (q, k, v, sm)]
    f(*eager).backward(grad)
    assert torch.allclose(out, f(q, k, v, sm), rtol=1e-6, atol=1e-6)
    for a, b in zip(ins, eager):
        assert torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-6)


def _msg(fn):
    with pytest.raises(RuntimeError) as e:
        fn()
    return str(e.value)


def test_bad_inputs_name_the_argument():
    q = torch.randn(10, 2, 16)
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    f = lambda *a, **kw: ops.forward_varlen(*a, **kw)
    m = _msg(lambda: f(q.unsqueeze(0), q, q, cu, cu, 6, 6))
    assert "sigmoid_attention_varlen: q must have 3 dims [total, H, D]" in m and "[1, 10, 2, 16]" in m
    m = _msg(lambda: f(q, q, q, cu.long(), cu, 6, 6))
    assert "cu_seqlens_q must be int32 of shape [B + 1]" in m and "int64 [3]" in m
    m = _msg(lambda: f(q, q, q, cu, cu[:2], 6, 6))
    assert "must both have B + 1 entries, got 3 and 2" in m
    m = _msg(lambda: f(q, q, q, cu, cu, -1, 6))
    assert "max_seqlen_q and max_seqlen_k must be >= 0, got -1 and 6" in m
    m = _msg(lambda: f(q, q, q, cu, cu, 6, 6, score_mod=torch.randn(2, 10)))
    assert "score_mod must be floating point of shape [total_k]=[10]" in m
    m = _msg(lambda: f(q, q, q, cu, cu, 6, 6, sigmoid_bias_tensor=torch.randn(3)))
    assert "sigmoid_bias tensor must be floating point of shape [B]=[2]" in m
    m = _msg(lambda: f(q, torch.randn(10, 3, 16), torch.randn(10, 3, 16), cu, cu, 6, 6))
    assert "Hq=2 must be a multiple of k/v's heads Hkv=3" in m
    m = _msg(lambda: f(q, q, q, torch.tensor([], dtype=torch.int32), cu, 6, 6))
    assert "cu_seqlens_q must be int32 of shape [B + 1]" in m
    m = _msg(lambda: ops.backward_varlen(q[:5], q, q, q, cu, cu, 6, 6))
    assert "grad_out must have q's shape [10, 2, 16], got [5, 2, 16]" in m
