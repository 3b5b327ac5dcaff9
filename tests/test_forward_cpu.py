"""torch.ops.sigmoid_attn.forward on CPU tensors (the C++ CPU implementation) vs the reference."""

import pytest
import torch

from conftest import REL_TOL, make_qkv, random_lengths, rel_err
from sigmoid_attn import sigmoid_attention, sigmoid_attention_reference


def ref64(q, k, v, **kw):
    kw = {key: (val.double() if torch.is_tensor(val) and val.is_floating_point() else val)
          for key, val in kw.items()}
    return sigmoid_attention_reference(q.double(), k.double(), v.double(), **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T", [1, 17, 129])
def test_cpu_matches_reference(dtype, causal, T):
    g = torch.Generator().manual_seed(T)
    q, k, v = make_qkv(3, T, T, 4, 4, 64, dtype, "cpu", g)
    lens = random_lengths(3, T, g)
    lens[0] = T
    out = sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens, is_causal=causal)
    ref = ref64(q, k, v, seq_lens_q=lens, seq_lens_k=lens, is_causal=causal)
    assert rel_err(out, ref) < REL_TOL[dtype]
    for b in range(3):  # padded rows are exactly zero
        assert (out[b, int(lens[b]):] == 0).all()


@pytest.mark.parametrize("D", [16, 32, 96, 100])
def test_cpu_head_dims_gqa_and_score_mod(D):
    g = torch.Generator().manual_seed(D)
    q, k, v = make_qkv(2, 33, 21, 8, 2, D, torch.float32, "cpu", g)
    mod = torch.randn(2, 21, generator=g)
    bias = torch.randn(2, generator=g)
    out = sigmoid_attention(q, k, v, score_mod=mod, sigmoid_bias=bias, scale=0.2)
    ref = ref64(q, k, v, score_mod=mod, sigmoid_bias=bias, scale=0.2)
    assert rel_err(out, ref) < 1e-5


def test_cpu_tq_ne_tk_and_lengths_beyond_T_are_clamped():
    g = torch.Generator().manual_seed(1)
    q, k, v = make_qkv(2, 5, 11, 2, 2, 32, torch.float32, "cpu", g)
    lq = torch.tensor([100, -3], dtype=torch.int32)
    lk = torch.tensor([-1, 1000], dtype=torch.int32)
    out = sigmoid_attention(q, k, v, seq_lens_q=lq, seq_lens_k=lk, is_causal=True, sigmoid_bias=0.5)
    ref = ref64(q, k, v, seq_lens_q=lq, seq_lens_k=lk, is_causal=True, sigmoid_bias=0.5)
    assert rel_err(out, ref) < 1e-5 or ref.norm() == 0
    assert (out[0] == 0).all() and (out[1] == 0).all()  # Lk=0 for b=0, Lq=0 for b=1


def test_cpu_bhtd_view_layout():
    """SDPA's [B, H, T, D] tensors passed as [B, T, H, D] views: strides, no copies needed."""
    g = torch.Generator().manual_seed(2)
    qb, kb, vb = (torch.randn(2, 4, 19, 64, generator=g) for _ in range(3))
    q, k, v = (t.transpose(1, 2) for t in (qb, kb, vb))
    assert not q.is_contiguous()
    out = sigmoid_attention(q, k, v, is_causal=True)
    ref = ref64(q, k, v, is_causal=True)
    assert rel_err(out, ref) < 1e-5


@pytest.mark.parametrize("shape", [(0, 5, 2, 32), (2, 0, 2, 32)])
def test_cpu_empty_batch_and_empty_sequence(shape):
    q = torch.randn(*shape)
    out = sigmoid_attention(q, q, q)
    assert out.shape == q.shape


def test_cpu_no_keys_gives_zeros():
    q = torch.randn(2, 4, 2, 32)
    k = torch.randn(2, 0, 2, 32)
    out = sigmoid_attention(q, k, k)
    assert out.shape == q.shape and (out == 0).all()
