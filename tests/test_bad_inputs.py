"""Bad inputs raise an error naming the argument, the expected and the received value; valid
edge inputs (empty sizes, out-of-range lengths, scale 0, NaN, -inf score_mod) do not raise and
match the float64 reference.

Every forward-argument problem in CASES goes through five entry points: sigmoid_attention, the
raw forward op, the raw backward op (with a well-formed grad_out), and both of those again on
the meta device (the C++ Meta kernels torch.compile's fake tensors use), with the same message.
The ops raise RuntimeError; the Python entry points raise ValueError (values, shapes, devices)
or TypeError (dtypes, Python types), each also a RuntimeError. Lengths of another integer dtype
are an error for the ops only: the Python entry points cast them to int32.
"""

import math

import pytest
import torch

from conftest import rel_err
from sigmoid_attn import (scaled_dot_product_sigmoid_attention, sigmoid_attention,
                          sigmoid_attention_reference, sigmoid_attention_varlen)
from sigmoid_attn._errors import argument_error
from sigmoid_attn.nn import SigmoidMultiheadAttention

ops = torch.ops.sigmoid_attn
q0 = torch.randn(2, 8, 4, 32)
i32 = torch.int32
NAN, INF = float("nan"), float("inf")


def call(q=q0, k=q0, v=q0, **kw):
    return sigmoid_attention(q, k, v, **kw)


def op_args(q=q0, k=q0, v=q0, seq_lens_q=None, seq_lens_k=None, is_causal=False, scale=None,
            sigmoid_bias=None, score_mod=None):
    """sigmoid_attention's keywords as the registered ops' positional arguments."""
    if isinstance(sigmoid_bias, torch.Tensor):
        bias_value, bias_tensor = None, sigmoid_bias
    else:
        bias_value, bias_tensor = sigmoid_bias, None
    return (q, k, v, seq_lens_q, seq_lens_k, is_causal, scale, bias_value, bias_tensor, score_mod)


def good_grad_out(q):
    """A grad_out that passes its own checks whenever q is a well-formed 4-d tensor."""
    return torch.empty(tuple(q.shape), dtype=q.dtype, device=q.device) if q.dim() == 4 else q


def to_meta(x):
    """Same sizes, strides and dtype on the meta device (.to('meta') would drop the strides of
    a non-dense tensor)."""
    if not isinstance(x, torch.Tensor):
        return x
    return torch.empty_strided(x.size(), x.stride(), dtype=x.dtype, device="meta")


def run_entry(entry, kwargs):
    kw = dict(kwargs)
    if entry.startswith("meta_"):
        kw = {key: to_meta(val) for key, val in kw.items()}
        kw.setdefault("q", to_meta(q0))
        kw.setdefault("k", to_meta(q0))
        kw.setdefault("v", to_meta(q0))
        entry = entry[len("meta_"):]
    if entry == "api":
        return call(**kw)
    args = op_args(**kw)
    if entry == "op":
        return ops.forward(*args)
    assert entry == "bwd"
    return ops.backward(good_grad_out(args[0]), *args)


ENTRIES = ["api", "op", "bwd", "meta_api", "meta_bwd"]

# Forward-argument problems: (kwargs for call, substrings the message must contain). Each one
# names the argument and the value received.
CASES = [
    # ranks
    (dict(q=torch.randn(2, 8, 32)), ["q must have 4 dims", "got 3 dims [2, 8, 32]"]),
    (dict(q=torch.tensor(1.0)), ["q must have 4 dims [B, Tq, Hq, D]", "got 0 dims []"]),
    (dict(k=torch.randn(2, 8, 4, 32, 1)), ["k must have 4 dims [B, Tk, Hkv, D]", "got 5 dims [2, 8, 4, 32, 1]"]),
    (dict(v=torch.randn(8, 4, 32)), ["v must have 4 dims [B, Tk, Hkv, D]", "got 3 dims [8, 4, 32]"]),
    # shapes: batch, [Tk, Hkv], head dim, heads
    (dict(v=torch.randn(3, 8, 4, 32)), ["batch size B=2", "v [3, 8, 4, 32]"]),
    (dict(k=torch.randn(1, 8, 4, 32), v=torch.randn(1, 8, 4, 32)), ["k and v must have q's batch size B=2", "got k [1, 8, 4, 32]"]),
    (dict(k=torch.randn(2, 9, 4, 32)), ["v must have k's [Tk, Hkv]=[9, 4]", "got v [2, 8, 4, 32]"]),
    (dict(v=torch.randn(2, 9, 4, 32)), ["v must have k's [Tk, Hkv]=[8, 4]", "got v [2, 9, 4, 32]"]),
    (dict(v=torch.randn(2, 8, 2, 32)), ["v must have k's [Tk, Hkv]=[8, 4]", "got v [2, 8, 2, 32]"]),
    (dict(k=torch.randn(2, 8, 4, 16), v=torch.randn(2, 8, 4, 16)), ["same head_dim D=32", "k [2, 8, 4, 16]"]),
    (dict(v=torch.randn(2, 8, 4, 64)), ["same head_dim D=32", "v [2, 8, 4, 64]"]),
    (dict(q=torch.randn(2, 8, 4, 0), k=torch.randn(2, 8, 4, 0), v=torch.randn(2, 8, 4, 0)), ["head_dim must be positive", "got q [2, 8, 4, 0]"]),
    (dict(k=torch.randn(2, 8, 3, 32), v=torch.randn(2, 8, 3, 32)), ["Hq=4 must be a multiple of", "Hkv=3"]),
    (dict(q=torch.randn(2, 8, 3, 32), k=torch.randn(2, 8, 2, 32), v=torch.randn(2, 8, 2, 32)), ["Hq=3 must be a multiple of", "Hkv=2"]),
    (dict(k=torch.randn(2, 8, 0, 32), v=torch.randn(2, 8, 0, 32)), ["Hq=4 must be a multiple of", "Hkv=0"]),
    # dtypes
    (dict(q=q0.long(), k=q0.long(), v=q0.long()), ["float16, bfloat16, float32 or float64", "got int64"]),
    (dict(q=q0.int(), k=q0.int(), v=q0.int()), ["float16, bfloat16, float32 or float64", "got int32"]),
    (dict(q=q0.bool(), k=q0.bool(), v=q0.bool()), ["float16, bfloat16, float32 or float64", "got bool"]),
    (dict(q=q0.to(torch.complex64), k=q0.to(torch.complex64), v=q0.to(torch.complex64)), ["float16, bfloat16, float32 or float64", "got complex64"]),
    (dict(k=q0.half()), ["same dtype", "q float32, k float16, v float32"]),
    (dict(v=q0.bfloat16()), ["same dtype", "q float32, k float32, v bfloat16"]),
    (dict(q=q0.double()), ["same dtype", "q float64, k float32"]),
    # non-contiguous last dim
    (dict(q=torch.randn(2, 8, 4, 64)[..., ::2]), ["q must have a contiguous last dim", "stride(3)=2"]),
    (dict(k=torch.randn(2, 8, 4, 96)[..., ::3]), ["k must have a contiguous last dim", "stride(3)=3"]),
    (dict(v=torch.randn(2, 8, 4, 32, 2)[..., 0]), ["v must have a contiguous last dim", "stride(3)=2"]),
    # lengths
    (dict(seq_lens_k=torch.tensor([1, 2])), ["seq_lens_k must be int32 of shape [B]=[2]", "got int64 [2]"]),
    (dict(seq_lens_q=torch.tensor([1, 2, 3], dtype=i32)), ["seq_lens_q must be int32 of shape [B]=[2]", "got int32 [3]"]),
    (dict(seq_lens_q=torch.tensor([[1, 2]], dtype=i32)), ["seq_lens_q", "got int32 [1, 2]"]),
    (dict(seq_lens_k=torch.tensor([1.0, 2.0])), ["seq_lens_k", "got float32 [2]"]),
    (dict(seq_lens_k=torch.tensor(3, dtype=i32)), ["seq_lens_k must be int32 of shape [B]=[2]", "got int32 []"]),
    (dict(seq_lens_q=torch.tensor([1, 2], dtype=torch.int16)), ["seq_lens_q must be int32", "got int16 [2]"]),
    (dict(seq_lens_q=torch.tensor([1, 2], dtype=torch.uint8)), ["seq_lens_q must be int32", "got uint8 [2]"]),
    (dict(seq_lens_k=torch.tensor([True, False])), ["seq_lens_k must be int32", "got bool [2]"]),
    # sigmoid_bias
    (dict(sigmoid_bias=torch.zeros(3)), ["sigmoid_bias tensor must be floating point of shape [B]=[2]", "got float32 [3]"]),
    (dict(sigmoid_bias=torch.zeros(2, dtype=i32)), ["sigmoid_bias", "got int32 [2]"]),
    (dict(sigmoid_bias=torch.tensor(0.5)), ["sigmoid_bias tensor must be floating point of shape [B]=[2]", "got float32 []"]),
    (dict(sigmoid_bias=torch.zeros(2, 1)), ["sigmoid_bias tensor", "got float32 [2, 1]"]),
    (dict(sigmoid_bias=torch.zeros(2, dtype=torch.bool)), ["sigmoid_bias tensor", "got bool [2]"]),
    (dict(sigmoid_bias=NAN), ["sigmoid_bias must be ±inf or within float32 range, and not NaN, got nan"]),
    # score_mod
    (dict(score_mod=torch.zeros(2, 7)), ["score_mod must be floating point of shape [B, Tk]=[2, 8]", "got float32 [2, 7]"]),
    (dict(score_mod=torch.zeros(2, 8, 1)), ["score_mod", "got float32 [2, 8, 1]"]),
    (dict(score_mod=torch.zeros(8)), ["score_mod must be floating point of shape [B, Tk]=[2, 8]", "got float32 [8]"]),
    (dict(score_mod=torch.zeros(3, 8)), ["score_mod", "got float32 [3, 8]"]),
    (dict(score_mod=torch.zeros(2, 8, dtype=torch.int64)), ["score_mod must be floating point", "got int64 [2, 8]"]),
    (dict(score_mod=torch.zeros(2, 8, dtype=torch.bool)), ["score_mod must be floating point", "got bool [2, 8]"]),
    # scale
    (dict(scale=NAN), ["scale must be finite", "got nan"]),
    (dict(scale=INF), ["scale must be finite", "got inf"]),
    (dict(scale=-INF), ["scale must be finite", "got -inf"]),
]


def is_integer(t):
    return (isinstance(t, torch.Tensor) and not t.is_floating_point() and not t.is_complex()
            and t.dtype != torch.bool)


def cast_by_api(kwargs):
    """Lengths of an integer dtype other than int32: the Python entry points cast them."""
    return any(is_integer(kwargs.get(n)) and kwargs[n].dtype != i32 for n in ("seq_lens_q", "seq_lens_k"))


def wrong_dtype(kwargs):
    """The case is about a dtype (TypeError from the Python entry points), not a value."""
    for name, t in kwargs.items():
        if not isinstance(t, torch.Tensor):
            continue
        if name in ("q", "k", "v") and t.dtype != torch.float32:
            return True
        if name.startswith("seq_lens") and not is_integer(t):
            return True
        if name in ("sigmoid_bias", "score_mod") and not t.is_floating_point():
            return True
    return False


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("kwargs,needles", CASES, ids=[str(i) for i in range(len(CASES))])
def test_bad_input_message(kwargs, needles, entry):
    if entry.endswith("api") and cast_by_api(kwargs):
        out = run_entry(entry, kwargs)  # cast to int32 on the device; the op alone rejects them
        assert out.shape == q0.shape
        return
    with pytest.raises(RuntimeError) as e:
        run_entry(entry, kwargs)
    msg = str(e.value)
    assert msg.startswith("sigmoid_attention: "), msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    if entry.endswith("api"):
        want = TypeError if wrong_dtype(kwargs) else ValueError
        assert isinstance(e.value, want), (type(e.value).__mro__, msg)
        assert e.value.__cause__ is None and e.value.__suppress_context__
    else:  # the ops themselves: RuntimeError only (the stable ABI cannot raise another type)
        assert type(e.value) is RuntimeError


def test_bad_input_message_with_grad():
    """The autograd path (an input requires grad) reports the same errors."""
    q = q0.clone().requires_grad_()
    with pytest.raises(TypeError, match="seq_lens_k must be int32 of shape \\[B\\]=\\[2\\], got float32 \\[2\\]"):
        sigmoid_attention(q, q0, q0, seq_lens_k=torch.tensor([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="sigmoid_bias must be ±inf or within float32 range, and not NaN, got nan"):
        sigmoid_attention(q, q0, q0, sigmoid_bias=NAN)


# Problems only the raw ops can express, and devices mixed between meta and cpu:
# (callable, substrings). The callable takes no arguments.
M = "meta"
qm = torch.empty(2, 8, 4, 32, device=M)
lens_cpu = torch.tensor([3, 8], dtype=i32)
OP_CASES = [
    # both sigmoid_bias forms given
    (lambda: ops.forward(q0, q0, q0, None, None, False, None, 0.5, torch.zeros(2), None),
     ["sigmoid_attention: give sigmoid_bias as a float or as a tensor, not both"]),
    (lambda: ops.backward(q0, q0, q0, q0, None, None, False, None, 0.5, torch.zeros(2), None),
     ["sigmoid_attention: give sigmoid_bias as a float or as a tensor, not both"]),
    (lambda: ops.forward(qm, qm, qm, None, None, False, None, 0.0, torch.zeros(2, device=M), None),
     ["sigmoid_attention: give sigmoid_bias as a float or as a tensor, not both"]),
    (lambda: ops.forward(q0, q0, q0, None, None, False, None, NAN, None, None),
     ["sigmoid_attention: sigmoid_bias must be ±inf or within float32 range, and not NaN, got nan"]),
    # q, k, v on different devices (meta vs cpu)
    (lambda: call(q=q0.to(M)), ["q, k and v must be on one device", "got q meta, k cpu, v cpu"]),
    (lambda: call(k=q0.to(M)), ["q, k and v must be on one device", "got q cpu, k meta, v cpu"]),
    (lambda: call(v=q0.to(M)), ["q, k and v must be on one device", "got q cpu, k cpu, v meta"]),
    (lambda: call(q=qm, k=q0, v=qm), ["q, k and v must be on one device", "got q meta, k cpu, v meta"]),
    (lambda: ops.backward(q0, q0, q0, q0.to(M)), ["q, k and v must be on one device", "v meta"]),
    # lengths, bias tensor, score_mod not on q's device
    (lambda: call(seq_lens_q=lens_cpu.to(M)), ["seq_lens_q must be on q's device cpu, got meta"]),
    (lambda: call(seq_lens_k=lens_cpu.to(M)), ["seq_lens_k must be on q's device cpu, got meta"]),
    (lambda: call(q=qm, k=qm, v=qm, seq_lens_q=lens_cpu), ["seq_lens_q must be on q's device meta, got cpu"]),
    (lambda: call(q=qm, k=qm, v=qm, seq_lens_k=lens_cpu), ["seq_lens_k must be on q's device meta, got cpu"]),
    (lambda: call(sigmoid_bias=torch.zeros(2, device=M)), ["sigmoid_bias must be on q's device cpu, got meta"]),
    (lambda: call(q=qm, k=qm, v=qm, sigmoid_bias=torch.zeros(2)), ["sigmoid_bias must be on q's device meta, got cpu"]),
    (lambda: call(score_mod=torch.zeros(2, 8, device=M)), ["score_mod must be on q's device cpu, got meta"]),
    (lambda: call(q=qm, k=qm, v=qm, score_mod=torch.zeros(2, 8)), ["score_mod must be on q's device meta, got cpu"]),
    (lambda: ops.backward(q0, q0, q0, q0, lens_cpu.to(M), None, False, None, None, None, None),
     ["seq_lens_q must be on q's device cpu, got meta"]),
    (lambda: ops.backward(qm, qm, qm, qm, None, None, False, None, None, None, torch.zeros(2, 8)),
     ["score_mod must be on q's device meta, got cpu"]),
]

# grad_out problems of the raw backward op, on cpu and on meta.
BWD = "sigmoid_attention backward: "
GRAD_CASES = [
    (lambda: ops.backward(q0[..., 0], q0, q0, q0), [BWD + "grad_out must have q's shape [2, 8, 4, 32]", "got [2, 8, 4]"]),
    (lambda: ops.backward(torch.randn(2, 8, 4, 16), q0, q0, q0), ["grad_out must have q's shape [2, 8, 4, 32]", "got [2, 8, 4, 16]"]),
    (lambda: ops.backward(torch.randn(2, 7, 4, 32), q0, q0, q0), ["grad_out must have q's shape", "got [2, 7, 4, 32]"]),
    (lambda: ops.backward(torch.randn(1, 8, 4, 32), q0, q0, q0), ["grad_out must have q's shape", "got [1, 8, 4, 32]"]),
    (lambda: ops.backward(torch.randn(2, 8, 4, 32, 1), q0, q0, q0), ["grad_out must have q's shape", "got [2, 8, 4, 32, 1]"]),
    (lambda: ops.backward(torch.randn(2, 4, 8, 32), q0, q0, q0), ["grad_out must have q's shape", "got [2, 4, 8, 32]"]),
    (lambda: ops.backward(torch.tensor(1.0), q0, q0, q0), ["grad_out must have q's shape", "got []"]),
    (lambda: ops.backward(q0.double(), q0, q0, q0), [BWD + "grad_out must be float32 like q, got float64"]),
    (lambda: ops.backward(q0.half(), q0, q0, q0), [BWD + "grad_out must be float32 like q, got float16"]),
    (lambda: ops.backward(q0.double(), q0.half(), q0.half(), q0.half()), ["grad_out must be float16 like q, got float64"]),
    (lambda: ops.backward(q0.long(), q0, q0, q0), ["grad_out must be float32 like q, got int64"]),
    (lambda: ops.backward(q0.to(M), q0, q0, q0), [BWD + "grad_out must be on q's device cpu, got meta"]),
    (lambda: ops.backward(q0, qm, qm, qm), [BWD + "grad_out must be on q's device meta, got cpu"]),
    (lambda: ops.backward(torch.randn(2, 8, 4, 64)[..., ::2], q0, q0, q0), [BWD + "grad_out must have a contiguous last dim", "stride(3)=2"]),
    (lambda: ops.backward(to_meta(torch.randn(2, 8, 4, 64)[..., ::2]), qm, qm, qm), ["grad_out must have a contiguous last dim", "stride(3)=2"]),
    (lambda: ops.backward(torch.empty(2, 8, 4, 16, device=M), qm, qm, qm), ["grad_out must have q's shape [2, 8, 4, 32]", "got [2, 8, 4, 16]"]),
    (lambda: ops.backward(torch.empty(2, 8, 4, 32, device=M, dtype=torch.bfloat16), qm, qm, qm), ["grad_out must be float32 like q, got bfloat16"]),
]


@pytest.mark.parametrize("fn,needles", OP_CASES + GRAD_CASES,
                         ids=[f"op{i}" for i in range(len(OP_CASES))] + [f"grad{i}" for i in range(len(GRAD_CASES))])
def test_bad_op_input_message(fn, needles):
    with pytest.raises(RuntimeError) as e:
        fn()
    msg = str(e.value)
    assert msg.startswith("sigmoid_attention"), msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"


def test_meta_validation_matches_cpu():
    """torch.compile's fake tensors go through the same checks (C++ Meta kernel)."""
    qm = torch.empty(2, 8, 4, 32, device="meta")
    with pytest.raises(RuntimeError, match="seq_lens_k must be int32"):
        sigmoid_attention(qm, qm, qm, seq_lens_k=torch.empty(2, device="meta"))
    out = sigmoid_attention(qm, qm, qm)
    assert out.shape == (2, 8, 4, 32) and out.device.type == "meta"
    dq, dk, dv, dmod = ops.backward(qm, qm, qm, qm)
    assert dq.shape == dk.shape == dv.shape == (2, 8, 4, 32) and dmod.shape == (0,)
    mod = torch.empty(2, 8, device="meta")
    assert ops.backward(qm, qm, qm, qm, None, None, False, None, None, None, mod)[3].shape == (2, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_specific_errors():
    qc = torch.randn(2, 8, 4, 32, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError,
                       match="on CUDA q, k, v must be float16, bfloat16 or float32, got float64"):
        sigmoid_attention(qc.double(), qc.double(), qc.double())
    with pytest.raises(RuntimeError, match="must be on q's device"):
        sigmoid_attention(qc, qc, qc, seq_lens_k=torch.ones(2, dtype=i32))
    with pytest.raises(RuntimeError, match="q, k and v must be on one device"):
        sigmoid_attention(qc, qc.cpu(), qc)
    qd = torch.randn(2, 8, 4, 12, device="cuda", dtype=torch.float16)  # not a multiple of 8
    with pytest.raises(RuntimeError, match="no CUDA kernel is compiled for head_dim=12.*head dims served: .*128"):
        sigmoid_attention(qd, qd, qd)


# Every Python entry point: (callable, exception type, substring). The type is ValueError or
# TypeError, and every one is also a RuntimeError (code written for the ops keeps working).
qv0 = torch.randn(10, 2, 16)
cu0 = torch.tensor([0, 4, 10], dtype=i32)
qs0 = q0.transpose(1, 2)  # [B, H, T, D] for the SDPA-style entry point
mha = SigmoidMultiheadAttention(32, 4, num_kv_heads=2)
x0 = torch.randn(2, 8, 32)
VE, TE = ValueError, TypeError
PY_CASES = {
    # sigmoid_attention: Python types, devices, strict mode
    "api_q_str": (lambda: call(q="q"), TE, "sigmoid_attention: q must be a tensor, got str"),
    "api_v_none": (lambda: call(v=None), TE, "v must be a tensor, got NoneType"),
    "api_lens_list": (lambda: call(seq_lens_k=[1, 2]), TE, "seq_lens_k must be a tensor or None, got list"),
    "api_scale_str": (lambda: call(scale="0.1"), TE, "sigmoid_attention: scale must be of type"),
    "api_bias_str": (lambda: call(sigmoid_bias="x"), TE, "sigmoid_attention: sigmoid_bias must be of type"),
    "api_lens_device": (lambda: call(seq_lens_q=lens_cpu.to(M)), VE, "seq_lens_q must be on q's device cpu, got meta"),
    "api_qkv_device": (lambda: call(k=q0.to(M)), VE, "q, k and v must be on one device"),
    "api_strict": (lambda: call(seq_lens_k=torch.tensor([9, 1], dtype=i32), strict=True), VE, "seq_lens_k[0] = 9 is outside [0, 8]"),
    "api_grad_dtype": (lambda: call(q=q0.clone().requires_grad_(), k=q0.half()), TE, "same dtype"),
    # sigmoid_attention_varlen
    "varlen_rank": (lambda: sigmoid_attention_varlen(q0, qv0, qv0, cu0, cu0, 6, 6), VE, "sigmoid_attention_varlen: q must have 3 dims"),
    "varlen_cu_float": (lambda: sigmoid_attention_varlen(qv0, qv0, qv0, cu0.float(), cu0, 6, 6), TE, "cu_seqlens_q must be int32 of shape [B + 1]"),
    "varlen_cu_2d": (lambda: sigmoid_attention_varlen(qv0, qv0, qv0, cu0, cu0.view(1, 3), 6, 6), VE, "cu_seqlens_k must be int32 of shape [B + 1]"),
    "varlen_cu_entries": (lambda: sigmoid_attention_varlen(qv0, qv0, qv0, cu0, cu0[:2], 6, 6), VE, "must both have B + 1 entries"),
    "varlen_cu_list": (lambda: sigmoid_attention_varlen(qv0, qv0, qv0, [0, 4, 10], cu0, 6, 6), TE, "cu_seqlens_q must be a tensor, got list"),
    "varlen_max_none": (lambda: sigmoid_attention_varlen(qv0, qv0, qv0, cu0, cu0, None, 6), TE, "max_seqlen_q must be an int, got NoneType"),
    "varlen_max_negative": (lambda: sigmoid_attention_varlen(qv0, qv0, qv0, cu0, cu0, 6, -1), VE, "must be >= 0, got 6 and -1"),
    "varlen_dtype": (lambda: sigmoid_attention_varlen(qv0, qv0.double(), qv0, cu0, cu0, 6, 6), TE, "same dtype"),
    "varlen_mod": (lambda: sigmoid_attention_varlen(qv0, qv0, qv0, cu0, cu0, 6, 6, score_mod=torch.zeros(9)), VE, "score_mod must be floating point of shape [total_k]=[10]"),
    "varlen_strict": (lambda: sigmoid_attention_varlen(qv0, qv0, qv0, cu0, cu0, 3, 6, strict=True), VE, "exceeds max_seqlen = 3"),
    # scaled_dot_product_sigmoid_attention: fast path, mask checks and the dense fallback
    "sdpa_rank": (lambda: scaled_dot_product_sigmoid_attention(q0[0], qs0, qs0), VE, "must be [B, H, T, D]"),
    "sdpa_not_tensor": (lambda: scaled_dot_product_sigmoid_attention(None, qs0, qs0), TE, "must be tensors, got NoneType"),
    "sdpa_dtype": (lambda: scaled_dot_product_sigmoid_attention(qs0, qs0.half(), qs0), TE, "same dtype"),
    "sdpa_heads": (lambda: scaled_dot_product_sigmoid_attention(qs0, qs0[:, :3], qs0[:, :3]), VE, "Hq=4 must be a multiple of"),
    "sdpa_mask_dtype": (lambda: scaled_dot_product_sigmoid_attention(qs0, qs0, qs0, torch.ones(8, 8, dtype=torch.int64)), TE, "attn_mask must be a bool or floating point tensor"),
    "sdpa_mask_shape": (lambda: scaled_dot_product_sigmoid_attention(qs0, qs0, qs0, torch.ones(7, 8, dtype=torch.bool)), VE, "attn_mask must broadcast to [B, Hq, Tq, Tk]"),
    "sdpa_fallback_dtype": (lambda: scaled_dot_product_sigmoid_attention(qs0, qs0.double(), qs0.double(), torch.ones(8, 8, dtype=torch.bool)), TE, "same dtype"),
    "sdpa_fallback_scale": (lambda: scaled_dot_product_sigmoid_attention(qs0, qs0, qs0, torch.ones(8, 8, dtype=torch.bool), scale=INF), VE, "scale must be finite"),
    "sdpa_fallback_device": (lambda: scaled_dot_product_sigmoid_attention(qs0, qs0, qs0, torch.ones(8, 8, dtype=torch.bool, device=M)), VE, "attn_mask must be on query's device"),
    # the module (eager)
    "module_lens_float": (lambda: mha(x0, seq_lens=torch.tensor([3.0, 8.0])), TE, "seq_lens_q must be int32"),
    "module_lens_shape": (lambda: mha(x0, seq_lens=torch.tensor([3, 8, 1], dtype=i32)), VE, "seq_lens_q must be int32 of shape [B]=[2]"),
}


@pytest.mark.parametrize("name", list(PY_CASES))
def test_python_entry_points_raise_value_or_type_error(name):
    fn, kind, needle = PY_CASES[name]
    with pytest.raises(kind) as e:
        fn()
    assert isinstance(e.value, RuntimeError), type(e.value).__mro__
    # TypeError and ValueError are disjoint here: a caller can tell a dtype from a shape.
    assert not isinstance(e.value, ValueError if kind is TypeError else TypeError)
    assert needle in str(e.value), str(e.value)


def test_other_errors_keep_their_type():
    """Only argument errors are mapped: failures of the driver, of kernel loading, of memory, or
    of reading a tensor keep their type."""
    good = dict(q=q0, k=q0, v=q0, seq_lens_q=None)
    for msg in ("sigmoid_attn: cuModuleLoadData failed: out of memory (CUresult 2)",
                "sigmoid_attn: loading kernel fwd_bf16_d128 on cuda:0 failed",
                "CUDA out of memory. Tried to allocate 2.00 GiB",
                "sigmoid_attention: cannot read q's metadata",
                "sigmoid_attention_varlen: cannot read k's metadata"):
        assert argument_error(RuntimeError(msg), "sigmoid_attention", **good) is None, msg
    assert argument_error(AttributeError("x"), "sigmoid_attention", **good) is None
    assert argument_error(torch.OutOfMemoryError("CUDA out of memory"), "sigmoid_attention") is None


def test_scripted_module_raises_runtime_error():
    """TorchScript calls the op directly: the same message, as RuntimeError (no mapping)."""
    scripted = torch.jit.script(mha)
    with pytest.raises(RuntimeError, match="seq_lens_q must be int32 of shape") as e:
        scripted(x0, seq_lens=torch.tensor([3.0, 8.0]))
    assert not isinstance(e.value, (ValueError, TypeError))
    lens = torch.tensor([3, 8])  # int64 lengths: cast in the scripted module too
    assert torch.equal(scripted(x0, seq_lens=lens), mha(x0, seq_lens=lens.int()))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int16, torch.uint8, torch.uint32])
def test_integer_lengths_are_cast(dtype):
    """Any integer dtype works as lengths and offsets: cast to int32 on the device, values past
    int32's range clamped first (they mean "all of it", as for int32 lengths past T)."""
    g = torch.Generator().manual_seed(13)
    q, k, v = (torch.randn(3, 6, 2, 8, generator=g) for _ in range(3))
    lq = torch.tensor([6, 2, 0], dtype=dtype)
    lk = torch.tensor([3, 6, 5], dtype=dtype)
    want = sigmoid_attention(q, k, v, seq_lens_q=lq.int(), seq_lens_k=lk.int(), is_causal=True)
    got = sigmoid_attention(q, k, v, seq_lens_q=lq, seq_lens_k=lk, is_causal=True)
    assert torch.equal(got, want)
    cu = torch.tensor([0, 4, 10], dtype=dtype)
    want = sigmoid_attention_varlen(qv0, qv0, qv0, cu.int(), cu.int(), 6, 6)
    assert torch.equal(sigmoid_attention_varlen(qv0, qv0, qv0, cu, cu, 6, 6), want)
    if dtype is torch.int64:
        big = torch.tensor([2**40, -2**40, 2**31], dtype=dtype)
        got = sigmoid_attention(q, k, v, seq_lens_q=big, seq_lens_k=big)
        clamped = torch.tensor([6, 0, 6], dtype=i32)
        assert torch.equal(got, sigmoid_attention(q, k, v, seq_lens_q=clamped, seq_lens_k=clamped))
        cu_big = torch.tensor([0, 4, 2**40], dtype=dtype)  # an offset past the tensor: clamped
        want = sigmoid_attention_varlen(qv0, qv0, qv0, cu.int(), cu.int(), 6, 6)
        assert torch.equal(sigmoid_attention_varlen(qv0, qv0, qv0, cu_big, cu_big, 6, 6), want)


# ---------------------------------------------------------------------------------------------
# Valid edge inputs: must not raise, must match the float64 reference (forward and gradients).


def ref64(q, k, v, **kw):
    kw = {key: (val.double() if torch.is_tensor(val) and val.is_floating_point() else val)
          for key, val in kw.items()}
    return sigmoid_attention_reference(q.double(), k.double(), v.double(), **kw)


def check_against_reference(q, k, v, tol=1e-5, **kw):
    """Forward vs the reference, padded rows exactly zero, and (float64 copies) gradients of the
    raw backward op vs autograd of the reference. Returns the forward output."""
    out = sigmoid_attention(q, k, v, **kw)
    assert out.shape == q.shape and out.dtype == q.dtype
    ref = ref64(q, k, v, **kw)
    assert rel_err(out, ref) < tol
    B, Tq = q.shape[:2]
    lq = kw.get("seq_lens_q")
    for b in range(B):
        L = Tq if lq is None else min(max(int(lq[b]), 0), Tq)
        assert (out[b, L:] == 0).all()

    # Gradients in float64.
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    mod = kw.get("score_mod")
    modd = mod.detach().double().requires_grad_() if mod is not None else None
    kwd = dict(kw, score_mod=modd)
    g = torch.randn(q.shape, dtype=torch.float64)
    r = sigmoid_attention_reference(qd, kd, vd, **kwd)
    wants = torch.autograd.grad(r, [qd, kd, vd] + ([modd] if modd is not None else []), g,
                                allow_unused=True, materialize_grads=True)
    got = ops.backward(g, *op_args(qd.detach(), kd.detach(), vd.detach(),
                                   **dict(kw, score_mod=None if mod is None else modd.detach())))
    for x, want in zip(got, wants):
        assert x.shape == want.shape
        assert rel_err(x, want) < 1e-10
    return out


g0 = torch.Generator().manual_seed(0)


def rnd(*shape):
    return torch.randn(*shape, generator=g0)


EDGE_CASES = {
    "T=0": (rnd(2, 0, 2, 16), rnd(2, 0, 2, 16), rnd(2, 0, 2, 16), {}),
    "Tq=0": (rnd(2, 0, 2, 16), rnd(2, 5, 2, 16), rnd(2, 5, 2, 16), dict(score_mod=rnd(2, 5))),
    "Tk=0": (rnd(2, 4, 2, 16), rnd(2, 0, 2, 16), rnd(2, 0, 2, 16), dict(score_mod=rnd(2, 0))),
    "Tk=0_causal": (rnd(2, 4, 2, 16), rnd(2, 0, 1, 16), rnd(2, 0, 1, 16), dict(is_causal=True)),
    "B=0": (rnd(0, 5, 2, 16), rnd(0, 5, 2, 16), rnd(0, 5, 2, 16), {}),
    "B=0_lengths_mod_bias": (rnd(0, 5, 2, 16), rnd(0, 3, 1, 16), rnd(0, 3, 1, 16),
                             dict(seq_lens_q=torch.zeros(0, dtype=i32), seq_lens_k=torch.zeros(0, dtype=i32),
                                  score_mod=rnd(0, 3), sigmoid_bias=rnd(0))),
    "lengths_negative": (rnd(3, 6, 2, 8), rnd(3, 7, 2, 8), rnd(3, 7, 2, 8),
                         dict(seq_lens_q=torch.tensor([-1, 3, -2**31], dtype=i32),
                              seq_lens_k=torch.tensor([4, -7, 7], dtype=i32))),
    "lengths_beyond_T": (rnd(3, 6, 2, 8), rnd(3, 7, 2, 8), rnd(3, 7, 2, 8),
                         dict(seq_lens_q=torch.tensor([7, 2**31 - 1, 6], dtype=i32),
                              seq_lens_k=torch.tensor([100, 3, 2**31 - 1], dtype=i32), is_causal=True)),
    "lengths_strided": (rnd(2, 6, 2, 8), rnd(2, 6, 2, 8), rnd(2, 6, 2, 8),
                        dict(seq_lens_q=torch.tensor([5, 0, 2, 0], dtype=i32)[::2],
                             seq_lens_k=torch.tensor([3, 4], dtype=i32).flip(0))),
    "lengths_expanded": (rnd(3, 6, 2, 8), rnd(3, 6, 2, 8), rnd(3, 6, 2, 8),
                         dict(seq_lens_k=torch.tensor([4], dtype=i32).expand(3))),
    "scale=0": (rnd(2, 5, 2, 8), rnd(2, 6, 1, 8), rnd(2, 6, 1, 8), dict(scale=0.0)),
    "scale=0_causal_mod": (rnd(2, 5, 2, 8), rnd(2, 6, 1, 8), rnd(2, 6, 1, 8),
                           dict(scale=0.0, is_causal=True, score_mod=rnd(2, 6))),
    "scale_negative": (rnd(2, 5, 2, 8), rnd(2, 6, 1, 8), rnd(2, 6, 1, 8), dict(scale=-0.75)),
    "bias_+inf": (rnd(2, 5, 2, 8), rnd(2, 6, 1, 8), rnd(2, 6, 1, 8), dict(sigmoid_bias=INF)),
    "bias_-inf": (rnd(2, 5, 2, 8), rnd(2, 6, 1, 8), rnd(2, 6, 1, 8), dict(sigmoid_bias=-INF)),
    "bias_tensor_f64_mod_f16": (rnd(2, 5, 2, 8), rnd(2, 6, 1, 8), rnd(2, 6, 1, 8),
                                dict(sigmoid_bias=rnd(2).double(), score_mod=rnd(2, 6).half())),
    "Hq=0_forward": (rnd(2, 5, 0, 8), rnd(2, 6, 1, 8), rnd(2, 6, 1, 8), None),
    "D=1": (rnd(2, 5, 3, 1), rnd(2, 6, 1, 1), rnd(2, 6, 1, 1), dict(is_causal=True)),
    "q_expanded_stride0": (rnd(1, 5, 2, 8).expand(3, 5, 2, 8), rnd(3, 6, 2, 8), rnd(3, 6, 2, 8), {}),
    "score_mod_strided": (rnd(2, 5, 2, 8), rnd(2, 6, 2, 8), rnd(2, 6, 2, 8), dict(score_mod=rnd(6, 2).t())),
}


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_valid_edge_input(name):
    q, k, v, kw = EDGE_CASES[name]
    if kw is None:  # forward only: see test_backward_hq0_gives_zero_kv_grads
        out = sigmoid_attention(q, k, v)
        assert out.shape == q.shape
        return
    check_against_reference(q, k, v, **kw)


def test_fp64_scalars_not_rounded_to_fp32():
    g = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(2, 7, 2, 33, generator=g, dtype=torch.float64) for _ in range(3))
    for kw in (dict(), dict(scale=0.1), dict(sigmoid_bias=0.1)):
        out = sigmoid_attention(q, k, v, **kw)
        assert rel_err(out, sigmoid_attention_reference(q, k, v, **kw)) < 1e-12, kw


def test_huge_finite_scale():
    q = torch.zeros(1, 2, 1, 4)
    k = torch.randn(1, 3, 1, 4, generator=torch.Generator().manual_seed(12))
    try:
        out = sigmoid_attention(q, k, k, scale=1e39)
    except RuntimeError as e:  # rejecting it, naming the value, is a fix too
        assert "scale" in str(e) and "1e+39" in str(e)
        return
    assert rel_err(out, ref64(q, k, k, scale=1e39)) < 1e-5


def test_backward_hq0_gives_zero_kv_grads():
    for _ in range(3):
        junk = torch.full((1 << 16,), 3.25)  # leave non-zero bytes in the allocator's free lists
        del junk
        q = torch.randn(2, 64, 0, 64)
        k = torch.randn(2, 64, 1, 64)
        dq, dk, dv, _ = ops.backward(torch.randn(2, 64, 0, 64), q, k, k)
        assert (dk == 0).all() and (dv == 0).all()


@pytest.mark.parametrize("causal", [False, True])
def test_nan_in_q_propagates_to_its_row_only(causal):
    """A NaN in q[b, i, h] makes out[b, i, h, :] NaN (all D entries) when that row attends at
    least one key, and nothing else: other rows and heads (also of the same KV group) are
    finite. A padded row (i >= Lq) or a row with no keys (Lk = 0) stays exactly zero."""
    g = torch.Generator().manual_seed(7)
    q = torch.randn(3, 6, 4, 8, generator=g)
    k = torch.randn(3, 5, 2, 8, generator=g)
    v = torch.randn(3, 5, 2, 8, generator=g)
    lq = torch.tensor([6, 2, 6], dtype=i32)
    lk = torch.tensor([5, 5, 0], dtype=i32)
    qn = q.clone()
    qn[0, 3, 1, 5] = NAN   # valid row: NaN
    qn[1, 4, 2, 0] = NAN   # padded row (Lq=2): zero
    qn[2, 1, 0, 0] = NAN   # no keys (Lk=0): zero
    out = sigmoid_attention(qn, k, v, seq_lens_q=lq, seq_lens_k=lk, is_causal=causal)
    nan_rows = torch.isnan(out).any(-1).nonzero().tolist()
    assert nan_rows == [[0, 3, 1]]
    assert torch.isnan(out[0, 3, 1]).all()
    assert (out[1, 2:] == 0).all() and (out[2] == 0).all()
    # Everything else is what it is without the NaN.
    clean = sigmoid_attention(q, k, v, seq_lens_q=lq, seq_lens_k=lk, is_causal=causal)
    mask = torch.ones(out.shape[:3], dtype=torch.bool)
    mask[0, 3, 1] = False
    assert torch.equal(out[mask], clean[mask])


def test_nan_in_padding_is_ignored():
    """K/V rows past Lk and q rows past Lq are never read: NaN there changes nothing. (The
    pure-torch reference multiplies by a mask instead, so NaN there leaks into it: compare with
    the clean inputs.)"""
    g = torch.Generator().manual_seed(8)
    q = torch.randn(2, 6, 2, 8, generator=g)
    k = torch.randn(2, 7, 2, 8, generator=g)
    v = torch.randn(2, 7, 2, 8, generator=g)
    mod = torch.randn(2, 7, generator=g)
    lq = torch.tensor([4, 6], dtype=i32)
    lk = torch.tensor([7, 3], dtype=i32)
    qn, kn, vn, modn = q.clone(), k.clone(), v.clone(), mod.clone()
    qn[0, 4:] = NAN
    kn[1, 3:] = NAN
    vn[1, 3:] = NAN
    modn[1, 3:] = NAN
    kw = dict(seq_lens_q=lq, seq_lens_k=lk)
    out = sigmoid_attention(qn, kn, vn, score_mod=modn, **kw)
    assert torch.equal(out, sigmoid_attention(q, k, v, score_mod=mod, **kw))
    assert rel_err(out, ref64(q, k, v, score_mod=mod, **kw)) < 1e-5
    dq, dk, dv, dmod = ops.backward(torch.randn(q.shape, generator=g), qn, kn, vn, lq, lk, False,
                                    None, None, None, modn)
    for t in (dq, dk, dv, dmod):
        assert not torch.isnan(t).any()
    assert (dq[0, 4:] == 0).all() and (dk[1, 3:] == 0).all() and (dv[1, 3:] == 0).all()
    assert (dmod[1, 3:] == 0).all()


@pytest.mark.parametrize("causal", [False, True])
def test_score_mod_minus_inf_masks_keys(causal):
    """score_mod = -inf gives p = 0 exactly: those keys' v rows do not matter, their dk, dv and
    dscore_mod are exactly zero, nothing is NaN, and forward/backward match the reference."""
    g = torch.Generator().manual_seed(9)
    q = torch.randn(2, 6, 4, 16, generator=g)
    k = torch.randn(2, 7, 2, 16, generator=g)
    v = torch.randn(2, 7, 2, 16, generator=g)
    mod = torch.randn(2, 7, generator=g)
    masked = torch.tensor([[0, 3, 6], [1, 2, 5]])
    for b in range(2):
        mod[b, masked[b]] = -INF
    if causal:  # also a whole sequence masked out
        mod[1, :] = -INF
    out = check_against_reference(q, k, v, score_mod=mod, is_causal=causal)
    assert not torch.isnan(out).any()
    v2 = v.clone()
    for b in range(2):
        v2[b, masked[b]] = 1e6
    assert torch.equal(out, sigmoid_attention(q, k, v2, score_mod=mod, is_causal=causal))
    if causal:
        assert (out[1] == 0).all()
    qd, kd, vd, md = (t.double() for t in (q, k, v, mod))
    dq, dk, dv, dmod = ops.backward(torch.randn(qd.shape, generator=g, dtype=torch.float64), qd,
                                    kd, vd, None, None, causal, None, None, None, md)
    for t in (dq, dk, dv, dmod):
        assert not torch.isnan(t).any()
    for b in range(2):
        j = masked[b]
        assert (dk[b, j] == 0).all() and (dv[b, j] == 0).all() and (dmod[b, j] == 0).all()


def test_score_mod_plus_inf_gives_p_one():
    """score_mod = +inf gives p = 1 for that key (sigmoid saturates, no NaN)."""
    g = torch.Generator().manual_seed(10)
    q = torch.randn(1, 3, 1, 8, generator=g)
    k = torch.randn(1, 4, 1, 8, generator=g)
    v = torch.randn(1, 4, 1, 8, generator=g)
    mod = torch.tensor([[INF, -INF, -INF, -INF]])
    out = sigmoid_attention(q, k, v, score_mod=mod)
    assert torch.equal(out[0, :, 0], v[0, 0, 0].expand(3, 8))
