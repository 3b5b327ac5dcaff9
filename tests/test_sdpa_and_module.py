"""SDPA-style entry point and the nn.Module, on CPU (and on CUDA when present)."""

import pytest
import torch

from conftest import REL_TOL, rel_err
from sigmoid_attn import scaled_dot_product_sigmoid_attention as sdpa_sig
from sigmoid_attn import sigmoid_attention_reference
from sigmoid_attn.nn import SigmoidMultiheadAttention

DEVICES = [("cpu", torch.float32)] + ([("cuda", torch.bfloat16)] if torch.cuda.is_available() else [])


def dense_reference(q, k, v, keep=None, add=None, causal=False, bias=None):
    """[B, H, T, D] float64 reference with an explicit [.., Tq, Tk] keep/add mask."""
    q, k, v = q.double(), k.double(), v.double()
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    k = k.repeat_interleave(H // k.shape[1], 1)
    v = v.repeat_interleave(H // v.shape[1], 1)
    s = q @ k.transpose(-1, -2) / D ** 0.5
    keep_all = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device)
    if causal:
        keep_all = torch.tril(keep_all)
    if keep is not None:
        keep_all = keep_all & keep
    if add is not None:
        s = s + add.double()
    s = s + bias.double().view(B, 1, 1, 1) if torch.is_tensor(bias) else s + bias
    return (torch.sigmoid(s) * keep_all) @ v


@pytest.mark.parametrize("device,dtype", DEVICES)
def test_sdpa_style_no_mask_and_gqa(device, dtype):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 37, 64, generator=g).to(device, dtype)
    k, v = (torch.randn(2, 2, 41, 64, generator=g).to(device, dtype) for _ in range(2))
    out = sdpa_sig(q, k, v, is_causal=True)
    assert out.shape == (2, 4, 37, 64)
    ref = dense_reference(q, k, v, causal=True, bias=-torch.log(torch.tensor(41.0)).item())
    assert rel_err(out, ref) < REL_TOL[dtype]


@pytest.mark.parametrize("device,dtype", DEVICES)
def test_sdpa_style_boolean_key_mask_with_holes(device, dtype):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(3, 2, 30, 32, generator=g).to(device, dtype) for _ in range(3))
    keep = torch.rand(3, 30, generator=g) > 0.3  # holes anywhere, not only trailing padding
    keep[2] = False  # a sequence with no key at all
    mask = keep.view(3, 1, 1, 30).to(device)
    out = sdpa_sig(q, k, v, attn_mask=mask)
    bias = -torch.log(keep.sum(-1).float().clamp_min(1)).to(device)
    ref = dense_reference(q, k, v, keep=mask, bias=bias)
    assert rel_err(out, ref) < REL_TOL[dtype]
    assert (out[2] == 0).all()


@pytest.mark.parametrize("device,dtype", DEVICES)
def test_sdpa_style_float_key_mask_and_fallback(device, dtype):
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 2, 25, 32, generator=g).to(device, dtype) for _ in range(3))
    add = torch.randn(2, 1, 1, 25, generator=g).to(device)
    out = sdpa_sig(q, k, v, attn_mask=add, sigmoid_bias=-1.0)
    assert rel_err(out, dense_reference(q, k, v, add=add, bias=-1.0)) < REL_TOL[dtype]
    # A [Tq, Tk] mask varies along queries: the dense fallback, same answer as the reference.
    qk_mask = torch.rand(25, 25, generator=g).to(device) > 0.5
    out = sdpa_sig(q, k, v, attn_mask=qk_mask, sigmoid_bias=-2.0)
    assert rel_err(out, dense_reference(q, k, v, keep=qk_mask, bias=-2.0)) < REL_TOL[dtype]


def test_sdpa_style_gradients_flow():
    q, k, v = (torch.randn(2, 2, 9, 16, requires_grad=True) for _ in range(3))
    sdpa_sig(q, k, v, is_causal=True).sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (q, k, v))


@pytest.mark.parametrize("device,dtype", DEVICES)
def test_module_matches_functional_and_scripts(device, dtype):
    torch.manual_seed(0)
    m = SigmoidMultiheadAttention(128, num_heads=4, num_kv_heads=2).to(device, dtype)
    x = torch.randn(2, 33, 128, device=device, dtype=dtype)
    lens = torch.tensor([33, 20], dtype=torch.int32, device=device)
    out = m(x, seq_lens=lens, is_causal=True)
    q = m.q_proj(x).view(2, 33, 4, 32)
    k = m.k_proj(x).view(2, 33, 2, 32)
    v = m.v_proj(x).view(2, 33, 2, 32)
    ref = sigmoid_attention_reference(q.double(), k.double(), v.double(), seq_lens_q=lens,
                                      seq_lens_k=lens, is_causal=True)
    ref = m.out_proj(ref.reshape(2, 33, 128).to(dtype))
    assert rel_err(out, ref) < REL_TOL[dtype] * 2
    scripted = torch.jit.script(m)
    torch.testing.assert_close(scripted(x, seq_lens=lens, is_causal=True), out)
    # key_padding_mask (True = padding), PyTorch's convention
    pad = torch.arange(33, device=device)[None, :] >= lens[:, None]
    out_mask = m(x, key_padding_mask=pad)
    torch.testing.assert_close(scripted(x, key_padding_mask=pad), out_mask)


def test_module_trains_and_rejects_bad_config():
    m = SigmoidMultiheadAttention(64, num_heads=4)
    x = torch.randn(2, 10, 64, requires_grad=True)
    m(x).square().mean().backward()
    assert x.grad is not None and m.q_proj.weight.grad is not None
    with pytest.raises(ValueError, match="num_heads=4 must be a multiple of num_kv_heads=3"):
        SigmoidMultiheadAttention(64, num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="embed_dim=65 must be divisible by num_heads=4"):
        SigmoidMultiheadAttention(65, num_heads=4)
