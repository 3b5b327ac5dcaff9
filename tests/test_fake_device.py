"""The ops' fake implementations (torch.compile, torch.export) validate as the device the fake
tensors stand for: a trace of a CUDA call rejects what the CUDA op rejects (float64, grid
limits, a head dim with no compiled kernel), with the CUDA op's message, while the same fake
call on CPU passes; and the fake outputs have the real outputs' shapes and dtypes. Fake CUDA
tensors need no GPU, so this runs everywhere."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import sigmoid_attn  # noqa: F401  (registers the ops)

ops = torch.ops.sigmoid_attn


def _fake_call(fn, device, dtype=torch.bfloat16, B=2, T=33, H=4, D=64):
    with FakeTensorMode():
        q = torch.empty(B, T, H, D, device=device, dtype=dtype)
        return fn(q)


@pytest.mark.parametrize("op", ["forward", "forward.plain"])
def test_fake_cuda_rejects_what_cuda_rejects(op):
    call = (lambda q: ops.forward(q, q, q)) if op == "forward" else (
        lambda q: ops.forward.plain(q, q, q, False))
    with pytest.raises(RuntimeError, match="on CUDA q, k, v must be float16, bfloat16 or float32"):
        _fake_call(call, "cuda", torch.float64)
    with pytest.raises(RuntimeError, match="on CUDA B and Hq must be <= 65535"):
        _fake_call(call, "cuda", B=70000)
    # the CPU path serves float64 and any head dim
    out = _fake_call(call, "cpu", torch.float64, D=16)
    assert out.shape == (2, 33, 4, 16) and out.dtype == torch.float64 and out.device.type == "cpu"


def test_fake_cuda_needs_a_compiled_kernel():
    # 12: no kernel serves it (not a multiple of 8); the CPU path does
    with pytest.raises(RuntimeError, match="no CUDA kernel is compiled for head_dim=12"):
        _fake_call(lambda q: ops.forward(q, q, q), "cuda", D=12)
    assert _fake_call(lambda q: ops.forward(q, q, q), "cpu", D=12).shape == (2, 33, 4, 12)
    out = _fake_call(lambda q: ops.forward(q, q, q, is_causal=True), "cuda")
    assert out.shape == (2, 33, 4, 64) and out.device.type == "cuda"


def test_fake_backward_and_varlen_validate_as_cuda():
    def bwd(q):
        return ops.backward(q, q, q, q)

    with pytest.raises(RuntimeError, match="on CUDA q, k, v must be"):
        _fake_call(bwd, "cuda", torch.float64)

    def varlen(q):
        p = q.reshape(-1, q.shape[2], q.shape[3])
        cu = torch.tensor([0, 30, p.shape[0]], dtype=torch.int32, device=q.device)
        return ops.forward_varlen(p, p, p, cu, cu, 36, 36)

    with pytest.raises(RuntimeError, match="on CUDA q, k, v must be"):
        _fake_call(varlen, "cuda", torch.float64)
    assert _fake_call(varlen, "cuda").shape == (66, 4, 64)


def _real_and_fake(fn, make):
    """fn's outputs on real CPU tensors and on fake ones made the same way."""
    real = fn(*make())
    with FakeTensorMode() as mode:
        fake = fn(*(mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in make()))
    return real if isinstance(real, tuple) else (real,), fake if isinstance(fake, tuple) else (fake,)


@pytest.mark.parametrize("with_mod", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fake_shapes_equal_the_real_ones(with_mod, dtype):
    g = torch.Generator().manual_seed(0)

    def make():
        q = torch.randn(2, 17, 4, 32, generator=g, dtype=dtype)
        k = torch.randn(2, 21, 2, 32, generator=g, dtype=dtype)
        mod = torch.randn(2, 21, generator=g, dtype=dtype) if with_mod else None
        return q, k, k.clone(), torch.randn(q.shape, generator=g, dtype=dtype), mod

    cases = {
        "forward": lambda q, k, v, go, m: ops.forward(q, k, v, score_mod=m),
        "backward": lambda q, k, v, go, m: ops.backward(go, q, k, v, score_mod=m),
    }
    for name, fn in cases.items():
        real, fake = _real_and_fake(fn, make)
        assert len(real) == len(fake), name
        for r, f in zip(real, fake):
            assert (tuple(r.shape), r.dtype) == (tuple(f.shape), f.dtype), name

    def make_varlen():
        q = torch.randn(30, 4, 32, generator=g, dtype=dtype)
        k = torch.randn(40, 2, 32, generator=g, dtype=dtype)
        cq = torch.tensor([0, 10, 30], dtype=torch.int32)
        ck = torch.tensor([0, 25, 40], dtype=torch.int32)
        mod = torch.randn(40, generator=g, dtype=dtype) if with_mod else None
        return q, k, k.clone(), torch.randn(q.shape, generator=g, dtype=dtype), cq, ck, mod

    vcases = {
        "forward_varlen": lambda q, k, v, go, cq, ck, m: ops.forward_varlen(
            q, k, v, cq, ck, 20, 25, score_mod=m),
        "backward_varlen": lambda q, k, v, go, cq, ck, m: ops.backward_varlen(
            go, q, k, v, cq, ck, 20, 25, score_mod=m),
    }
    for name, fn in vcases.items():
        real, fake = _real_and_fake(fn, make_varlen)
        for r, f in zip(real, fake):
            assert (tuple(r.shape), r.dtype) == (tuple(f.shape), f.dtype), name
