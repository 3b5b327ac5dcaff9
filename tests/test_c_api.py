"""The C entry points (include/sigmoid_attn/c_api.h) that C++ services call without the
dispatcher, reached here through ctypes with AOTInductor tensor handles: the same results as the
op (same code, bitwise), and errors as return codes with the op's message, never a crash."""

import ctypes

import pytest
import torch

import sigmoid_attn
from conftest import has_cuda, make_qkv, rel_err, REL_TOL

_H = ctypes.c_void_p
# torch hands AtenTensorHandles to Python as unnamed capsules.
_capsule_ptr = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_ptr.restype, _capsule_ptr.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype, _capsule_new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p,
                                                                 ctypes.c_void_p]
_D = ctypes.POINTER(ctypes.c_double)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not has_cuda, reason="needs a CUDA device"))]


@pytest.fixture(scope="module")
def lib():
    lib = ctypes.CDLL(sigmoid_attn.library_path())  # already loaded by the import: same handle
    lib.sigmoid_attn_c_api_version.restype = ctypes.c_int32
    lib.sigmoid_attn_last_error.restype = ctypes.c_char_p
    lib.sigmoid_attn_forward.restype = ctypes.c_int32
    lib.sigmoid_attn_forward.argtypes = [_H] * 5 + [ctypes.c_int32, _D, _D, _H, _H,
                                                     ctypes.POINTER(_H)]
    lib.sigmoid_attn_forward_varlen.restype = ctypes.c_int32
    lib.sigmoid_attn_forward_varlen.argtypes = [_H] * 5 + [ctypes.c_int64, ctypes.c_int64,
                                                            ctypes.c_int32, _D, _D, _H, _H,
                                                            ctypes.POINTER(_H)]
    lib.sigmoid_attn_forward_out.restype = ctypes.c_int32
    lib.sigmoid_attn_forward_out.argtypes = [_H] * 5 + [ctypes.c_int32, _D, _D, _H, _H, _H]
    lib.sigmoid_attn_forward_varlen_out.restype = ctypes.c_int32
    lib.sigmoid_attn_forward_varlen_out.argtypes = [_H] * 5 + [ctypes.c_int64, ctypes.c_int64,
                                                                ctypes.c_int32, _D, _D, _H, _H, _H]
    return lib


class Handles:
    """AtenTensorHandles for a call (None -> null), released afterwards."""

    def __init__(self):
        self.owned = []

    def __call__(self, t):
        if t is None:
            return None
        h = torch._C._aoti.unsafe_alloc_void_ptr_from_tensor(t)
        self.owned.append(h)
        return _capsule_ptr(h, None)

    def release(self):
        for h in self.owned:
            torch._C._aoti.alloc_tensor_by_stealing_from_void_ptr(h)
        self.owned = []


def _double(x):
    return None if x is None else ctypes.pointer(ctypes.c_double(x))


def call_forward(lib, q, k, v, lens_q=None, lens_k=None, is_causal=False, scale=None, bias=None,
                 bias_tensor=None, score_mod=None):
    h = Handles()
    out = _H()
    try:
        rc = lib.sigmoid_attn_forward(h(q), h(k), h(v), h(lens_q), h(lens_k), int(is_causal),
                                      _double(scale), _double(bias), h(bias_tensor),
                                      h(score_mod), ctypes.byref(out))
    finally:
        h.release()
    if rc != 0:
        assert not out.value, "a failed call must leave out null"
        return None, lib.sigmoid_attn_last_error().decode()
    return take(out), None


def take(out):
    """The tensor behind a returned handle (the handle is released)."""
    return torch._C._aoti.alloc_tensor_by_stealing_from_void_ptr(_capsule_new(out.value, None, None))


def test_version(lib):
    assert lib.sigmoid_attn_c_api_version() == 2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["plain", "lengths_causal_scale_bias", "bias_tensor_score_mod"])
def test_forward_is_the_op(lib, device, case):
    gen = torch.Generator().manual_seed(7)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q, k, v = make_qkv(2, 37, 45, 4, 2, 64, dtype, device, gen)
    kw = {}
    if case == "lengths_causal_scale_bias":
        kw = dict(lens_q=torch.tensor([37, 17], dtype=torch.int32, device=device),
                  lens_k=torch.tensor([45, 1], dtype=torch.int32, device=device),
                  is_causal=True, scale=0.2, bias=-1.5)
    elif case == "bias_tensor_score_mod":
        kw = dict(bias_tensor=torch.tensor([-2.0, 0.5], device=device),
                  score_mod=torch.randn(2, 45, generator=gen).to(device))
    expected = torch.ops.sigmoid_attn.forward(
        q, k, v, kw.get("lens_q"), kw.get("lens_k"), kw.get("is_causal", False), kw.get("scale"),
        kw.get("bias"), kw.get("bias_tensor"), kw.get("score_mod"))
    out, err = call_forward(lib, q, k, v, **kw)
    assert err is None, err
    assert out.shape == (2, 37, 4, 64) and out.dtype == dtype and out.device == q.device
    assert torch.equal(out, expected)
    assert not out.requires_grad
    # and it is attention: against the float64 reference
    ref = sigmoid_attn.sigmoid_attention_reference(
        q.double(), k.double(), v.double(), seq_lens_q=kw.get("lens_q"),
        seq_lens_k=kw.get("lens_k"), is_causal=kw.get("is_causal", False),
        scale=kw.get("scale"),
        sigmoid_bias=kw.get("bias") if kw.get("bias_tensor") is None else kw["bias_tensor"],
        score_mod=kw.get("score_mod"))
    assert rel_err(out, ref) < REL_TOL[dtype]


@pytest.mark.parametrize("device", DEVICES)
def test_forward_varlen_is_the_op(lib, device):
    gen = torch.Generator().manual_seed(3)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    lens = [17, 0, 129, 1]
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32, device=device)
    total = sum(lens)
    q = torch.randn(total, 4, 64, generator=gen).to(device, dtype)
    k = torch.randn(total, 2, 64, generator=gen).to(device, dtype)
    v = torch.randn(total, 2, 64, generator=gen).to(device, dtype)
    expected = torch.ops.sigmoid_attn.forward_varlen(q, k, v, cu, cu, 129, 129, True)
    h = Handles()
    out = _H()
    try:
        rc = lib.sigmoid_attn_forward_varlen(h(q), h(k), h(v), h(cu), h(cu), 129, 129, 1, None,
                                             None, None, None, ctypes.byref(out))
    finally:
        h.release()
    assert rc == 0, lib.sigmoid_attn_last_error().decode()
    out = take(out)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("device", DEVICES)
def test_errors_are_return_codes_with_the_ops_message(lib, device):
    gen = torch.Generator().manual_seed(1)
    q, k, v = make_qkv(2, 8, 8, 4, 2, 64, torch.float32 if device == "cpu" else torch.float16,
                       device, gen)
    out, err = call_forward(lib, q, k[..., :32], v)
    assert out is None and "head_dim" in err and "[2, 8, 2, 32]" in err, err
    with pytest.raises(RuntimeError) as e:  # the op says the same
        torch.ops.sigmoid_attn.forward(q, k[..., :32], v)
    assert str(e.value).startswith(err.split(",")[0])
    out, err = call_forward(lib, q, k, v, lens_q=torch.tensor([1, 2], device=device))
    assert out is None and "seq_lens_q must be int32" in err and "int64" in err, err
    out, err = call_forward(lib, None, k, v)
    assert out is None and err == "sigmoid_attention: q must be a tensor, got a null handle"
    out, err = call_forward(lib, q, k, None)
    assert out is None and "v must be a tensor" in err
    # the message is per call: a good call afterwards succeeds
    out, err = call_forward(lib, q, k, v)
    assert err is None and out.shape == q.shape
    # a null out pointer is an error, not a crash
    h = Handles()
    try:
        rc = lib.sigmoid_attn_forward(h(q), h(k), h(v), None, None, 0, None, None, None, None, None)
    finally:
        h.release()
    assert rc != 0 and "out must point to a handle" in lib.sigmoid_attn_last_error().decode()


def test_headers_are_installed():
    import os

    d = sigmoid_attn.include_dir()
    for name in ("c_api.h", "sigmoid_attn.h"):
        assert os.path.isfile(os.path.join(d, "sigmoid_attn", name))
    assert os.path.isfile(sigmoid_attn.library_path())


def call_forward_out(lib, out, q, k, v, lens_q=None, lens_k=None, is_causal=False, scale=None,
                     bias=None):
    h = Handles()
    try:
        rc = lib.sigmoid_attn_forward_out(h(q), h(k), h(v), h(lens_q), h(lens_k), int(is_causal),
                                          _double(scale), _double(bias), None, None, h(out))
    finally:
        h.release()
    return None if rc == 0 else lib.sigmoid_attn_last_error().decode()


@pytest.mark.parametrize("device", DEVICES)
def test_forward_out_writes_the_ops_result_into_the_buffer(lib, device):
    gen = torch.Generator().manual_seed(11)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q, k, v = make_qkv(3, 129, 17, 4, 1, 64, dtype, device, gen)
    lq = torch.tensor([129, 0, 5], dtype=torch.int32, device=device)
    lk = torch.tensor([17, 3, 1], dtype=torch.int32, device=device)
    expected = torch.ops.sigmoid_attn.forward(q, k, v, lq, lk, True, None, 0.5)
    out = torch.full_like(q, float("nan"))  # poisoned: every element must be written
    buf = out.data_ptr()
    assert call_forward_out(lib, out, q, k, v, lq, lk, True, None, 0.5) is None
    assert out.data_ptr() == buf and torch.equal(out, expected)
    # packed: rows past cu_seqlens[B] come back zero, whatever the buffer held
    cu = torch.tensor([0, 40, 40, 129], dtype=torch.int32, device=device)
    qp, kp, vp = (t[0, :130].contiguous() for t in (q, q, q))
    expected = torch.ops.sigmoid_attn.forward_varlen(qp, kp, vp, cu, cu, 89, 89, False)
    outp = torch.full_like(qp, float("nan"))
    h = Handles()
    try:
        rc = lib.sigmoid_attn_forward_varlen_out(h(qp), h(kp), h(vp), h(cu), h(cu), 89, 89, 0,
                                                 None, None, None, None, h(outp))
    finally:
        h.release()
    assert rc == 0, lib.sigmoid_attn_last_error().decode()
    assert torch.equal(outp, expected) and (outp[129:] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_forward_out_rejects_bad_buffers(lib, device):
    gen = torch.Generator().manual_seed(12)
    dtype = torch.float16 if device == "cuda" else torch.float32
    q, k, _ = make_qkv(2, 33, 40, 4, 2, 64, dtype, device, gen)
    big = torch.randn(40000, generator=gen).to(device, dtype)
    v = big[:2 * 40 * 2 * 64].view(2, 40, 2, 64)  # out may start inside v's memory
    cases = {
        "shape": (torch.empty(2, 33, 4, 32, dtype=dtype, device=device),
                  "out must be a %s tensor of shape [2, 33, 4, 64]" % {torch.float16: "float16",
                                                                        torch.float32: "float32"}[dtype]),
        "dtype": (torch.empty(2, 33, 4, 64, dtype=torch.float64, device=device), "got float64"),
        "strides": (torch.empty(2, 4, 33, 64, dtype=dtype, device=device).transpose(1, 2),
                    "out must be contiguous"),
        "misaligned": (torch.empty(2 * 33 * 4 * 64 + 1, dtype=dtype, device=device)[1:]
                       .view(2, 33, 4, 64), "16-byte aligned"),
        "aliases q": (q, "out must not share memory with q"),
        "overlaps v": (big[8192:8192 + 2 * 33 * 4 * 64].view(2, 33, 4, 64),
                       "out must not share memory with v"),
    }
    for name, (out, msg) in cases.items():
        before = out.clone()
        err = call_forward_out(lib, out, q, k, v)
        assert err is not None and msg in err, (name, err)
        assert torch.equal(out.nan_to_num(), before.nan_to_num()), name  # nothing written
    other = "cpu" if device == "cuda" else None
    if other:
        err = call_forward_out(lib, torch.empty(2, 33, 4, 64, dtype=dtype), q, k, v)
        assert err is not None and "on cuda" in err and "on cpu" in err, err
