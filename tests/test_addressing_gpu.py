"""64-bit addressing on the GPU: views into large buffers, one pointer argument at a time (huge
batch, row and head strides, a huge score_mod key stride, a long packed tail), forward and
backward, against the float64 reference on the small part that is computed. Each of these
crashed the process (illegal memory access) or would, with 32-bit offsets."""

import pytest
import torch

from conftest import rel_err
from sigmoid_attn import (sigmoid_attention, sigmoid_attention_reference,
                          sigmoid_attention_varlen, sigmoid_attention_varlen_reference)

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

DT = torch.bfloat16


def _need(gib):
    free, _ = torch.cuda.mem_get_info()
    if free < (gib + 2) * 2**30:
        pytest.skip(f"needs ~{gib} GiB of free GPU memory")


def _view(shape, strides, seed):
    """A bf16 view of `shape` with `strides` into a buffer just large enough, random values at
    the viewed elements (and elsewhere: NaN, so a wrong offset cannot go unnoticed)."""
    span = 1 + sum((n - 1) * s for n, s in zip(shape, strides))
    buf = torch.full((span,), float("nan"), dtype=DT, device="cuda")
    t = buf.as_strided(shape, strides)
    g = torch.Generator(device="cuda").manual_seed(seed)
    t.copy_(torch.randn(shape, generator=g, device="cuda", dtype=torch.float32))
    return t


def _check(q, k, v, **kw):
    """Forward and backward of the op against autograd of the float64 reference."""
    ins = [t.detach().requires_grad_() for t in (q, k, v)]
    out = sigmoid_attention(*ins, **kw)
    ref_ins = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = sigmoid_attention_reference(*ref_ins, **kw)
    assert torch.isfinite(out).all() and rel_err(out, ref) < 2e-2
    g = torch.randn(out.shape, device="cuda", dtype=torch.float32)
    out.backward(g.to(out.dtype))
    ref.backward(g.double())
    for a, b in zip(ins, ref_ins):
        assert torch.isfinite(a.grad).all() and rel_err(a.grad, b.grad) < 3e-2


B, T, H, D = 2, 200, 2, 64
CONTIG = (T * H * D, H * D, D, 1)


@pytest.mark.parametrize("which", ["q", "k", "v"])
@pytest.mark.parametrize("dim,stride", [(0, 2**31 + 1024), (1, 2**24), (2, 2**31 + 2048)],
                         ids=["batch", "row", "head"])
def test_huge_stride_one_operand(which, dim, stride):
    _need(8)
    strides = list(CONTIG)
    strides[dim] = stride
    ts = {n: _view((B, T, H, D), tuple(strides) if n == which else CONTIG, seed=i)
          for i, n in enumerate("qkv")}
    lens = torch.tensor([T, 77], dtype=torch.int32, device="cuda")
    _check(ts["q"], ts["k"], ts["v"], seq_lens_q=lens, seq_lens_k=lens, is_causal=True)


def test_huge_score_mod_key_stride():
    """A score_mod view with key stride 2^20 at T = 4096: (4096 keys x 2^20) overflows int32."""
    _need(17)
    Tk = 4096
    g = torch.Generator(device="cuda").manual_seed(3)
    q, k, v = (torch.randn(1, Tk, 2, 64, generator=g, device="cuda", dtype=DT) for _ in range(3))
    base = torch.empty_strided((1, Tk), (2**32, 2**20), device="cuda", dtype=torch.float32)
    base.copy_(torch.randn(1, Tk, generator=g, device="cuda"))
    out = sigmoid_attention(q, k, v, score_mod=base)
    ref = sigmoid_attention_reference(q.double(), k.double(), v.double(), score_mod=base.double())
    assert rel_err(out, ref) < 2e-2
    qq, kk, vv = (t.detach().requires_grad_() for t in (q, k, v))
    mod = base.detach().requires_grad_()
    sigmoid_attention(qq, kk, vv, score_mod=mod).float().square().sum().backward()
    assert torch.isfinite(mod.grad).all() and torch.isfinite(qq.grad).all()


def test_long_packed_tail_is_zeroed():
    """A large static buffer holding a small batch (the CUDA-graph serving pattern): 2^21 packed
    rows x 32 heads x 64, cu_seqlens = [0, 16]. The rows after the batch are zeroed."""
    _need(18)
    rows, Hq, Dh = 2**21, 32, 64
    g = torch.Generator(device="cuda").manual_seed(4)
    q = torch.empty(rows, Hq, Dh, device="cuda", dtype=DT)
    q[:16].normal_(generator=g)
    q[16:].fill_(float("nan"))  # the tail is no sequence: never read
    k, v = (torch.randn(16, Hq, Dh, generator=g, device="cuda", dtype=DT) for _ in range(2))
    cu_q = torch.tensor([0, 16], dtype=torch.int32, device="cuda")
    out = sigmoid_attention_varlen(q, k, v, cu_q, cu_q, 16, 16)
    torch.cuda.synchronize()
    ref = sigmoid_attention_varlen_reference(q[:16].double(), k.double(), v.double(), cu_q, cu_q,
                                             16, 16)
    assert rel_err(out[:16], ref) < 2e-2
    assert int(torch.count_nonzero(out[16:])) == 0
