"""Bad inputs raise RuntimeError naming the argument, the expected and the received value."""

import pytest
import torch

from sigmoid_attn import sigmoid_attention

q0 = torch.randn(2, 8, 4, 32)
i32 = torch.int32


def call(q=q0, k=q0, v=q0, **kw):
    return sigmoid_attention(q, k, v, **kw)


CASES = [
    # (kwargs for call, substrings the message must contain)
    (dict(q=torch.randn(2, 8, 32)), ["q must have 4 dims", "got 3 dims [2, 8, 32]"]),
    (dict(k=torch.randn(2, 8, 4, 32, 1)), ["k must have 4 dims"]),
    (dict(v=torch.randn(3, 8, 4, 32)), ["batch size B=2", "v [3, 8, 4, 32]"]),
    (dict(k=torch.randn(2, 9, 4, 32)), ["v must have k's [Tk, Hkv]=[9, 4]"]),
    (dict(k=torch.randn(2, 8, 4, 16), v=torch.randn(2, 8, 4, 16)), ["same head_dim D=32"]),
    (dict(k=torch.randn(2, 8, 3, 32), v=torch.randn(2, 8, 3, 32)), ["Hq=4 must be a multiple of", "Hkv=3"]),
    (dict(q=q0.long(), k=q0.long(), v=q0.long()), ["float16, bfloat16, float32 or float64", "got int64"]),
    (dict(k=q0.half()), ["same dtype", "k float16"]),
    (dict(q=q0.int(), k=q0.int(), v=q0.int()), ["got int32"]),
    (dict(q=torch.randn(2, 8, 4, 64)[..., ::2]), ["contiguous last dim"]),
    (dict(seq_lens_k=torch.tensor([1, 2])), ["seq_lens_k must be int32 of shape [B]=[2]", "got int64 [2]"]),
    (dict(seq_lens_q=torch.tensor([1, 2, 3], dtype=i32)), ["seq_lens_q must be int32 of shape [B]=[2]", "[3]"]),
    (dict(seq_lens_q=torch.tensor([[1, 2]], dtype=i32)), ["seq_lens_q", "[1, 2]"]),
    (dict(seq_lens_k=torch.tensor([1.0, 2.0])), ["seq_lens_k", "got float32"]),
    (dict(sigmoid_bias=torch.zeros(3)), ["sigmoid_bias tensor must be floating point of shape [B]=[2]", "[3]"]),
    (dict(sigmoid_bias=torch.zeros(2, dtype=i32)), ["sigmoid_bias", "got int32"]),
    (dict(sigmoid_bias=float("nan")), ["sigmoid_bias must not be NaN"]),
    (dict(score_mod=torch.zeros(2, 7)), ["score_mod must be floating point of shape [B, Tk]=[2, 8]", "[2, 7]"]),
    (dict(score_mod=torch.zeros(2, 8, 1)), ["score_mod", "[2, 8, 1]"]),
    (dict(scale=float("nan")), ["scale must be finite"]),
    (dict(scale=float("inf")), ["scale must be finite"]),
    (dict(q=torch.randn(2, 8, 4, 0), k=torch.randn(2, 8, 4, 0), v=torch.randn(2, 8, 4, 0)), ["head_dim must be positive"]),
]


@pytest.mark.parametrize("kwargs,needles", CASES, ids=[str(i) for i in range(len(CASES))])
def test_bad_input_message(kwargs, needles):
    with pytest.raises(RuntimeError) as e:
        call(**kwargs)
    msg = str(e.value)
    assert msg.startswith("sigmoid_attention: "), msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"


def test_meta_validation_matches_cpu():
    """torch.compile's fake tensors go through the same checks (C++ Meta kernel)."""
    qm = torch.empty(2, 8, 4, 32, device="meta")
    with pytest.raises(RuntimeError, match="seq_lens_k must be int32"):
        sigmoid_attention(qm, qm, qm, seq_lens_k=torch.empty(2, device="meta"))
    out = sigmoid_attention(qm, qm, qm)
    assert out.shape == (2, 8, 4, 32) and out.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_specific_errors():
    qc = torch.randn(2, 8, 4, 32, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="on CUDA q, k, v must be float16 or bfloat16, got float32"):
        sigmoid_attention(qc.float(), qc.float(), qc.float())
    with pytest.raises(RuntimeError, match="must be on q's device"):
        sigmoid_attention(qc, qc, qc, seq_lens_k=torch.ones(2, dtype=i32))
    with pytest.raises(RuntimeError, match="q, k and v must be on one device"):
        sigmoid_attention(qc, qc.cpu(), qc)
    qd = torch.randn(2, 8, 4, 80, device="cuda", dtype=torch.float16)
    with pytest.raises(RuntimeError, match="no CUDA kernel is compiled for head_dim=80.*32, 64, 96, 128, 256"):
        sigmoid_attention(qd, qd, qd)
