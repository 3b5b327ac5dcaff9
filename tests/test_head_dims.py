"""Head dims on CUDA: the compiled ones (the powers of two and the common model head dims 16, 40,
48, 80, 112, 160, 192) and the generic kernels that serve any other multiple of 8 up to 256 with
the head dim as a run-time value. CPU: the catalog, the dispatcher's choice (C API) and the
errors; the kernel source under Triton's interpreter. The GPU checks against float64 are in
test_forward_gpu.py and test_backward_gpu.py (test_head_dims_match_reference,
test_backward_head_dims)."""

import ctypes
import json
import os
import subprocess
import sys
import textwrap

import pytest

import sigmoid_attn
from conftest import ROOT, TRITON_SRC, dtype_code, library_function

NEW_DIMS = (16, 40, 48, 80, 112, 160, 192)
GENERIC_BLOCKS = (32, 64, 128, 256)


def _catalog():
    return sigmoid_attn.info()["variants"]


def _subset():
    with open(os.path.join(os.path.dirname(sigmoid_attn.library_path()), "catalog.json")) as c:
        return json.load(c)["subset"]


def _built_dims(kind, dtype="bfloat16"):
    return {v["head_dim"] for v in _catalog()
            if v["kind"] == kind and v["dtype"] == dtype and not v["runtime_head_dim"]}


def _generic_built():
    return any(v["runtime_head_dim"] for v in _catalog())


def _pick(D, dtype="bf16", causal=False, ws=False, gluon=False, T=256, B=1, H=8):
    f = library_function("sigmoid_attn_select_forward_kernel")
    i = f(dtype_code(dtype), D, causal, 0, 0, T, T, B, H, 132, ws, gluon)
    return _catalog()[i] if i >= 0 else None


def _last_error():
    f = ctypes.CDLL(sigmoid_attn.library_path()).sigmoid_attn_last_error
    f.restype = ctypes.c_char_p
    return f().decode()


def test_catalog_holds_the_new_head_dims():
    if _subset():
        pytest.skip(f"a partial build ({_subset()})")
    for dtype in ("float16", "bfloat16"):
        for kind in ("fwd", "bwd_dkdv", "bwd_dq"):
            assert set(NEW_DIMS) <= _built_dims(kind, dtype), (kind, dtype)
    generic = {(v["kind"], v["dtype"], v["head_dim"]) for v in _catalog() if v["runtime_head_dim"]}
    for dtype in ("float16", "bfloat16", "float32"):
        for kind in ("fwd", "bwd_dkdv", "bwd_dq"):
            assert {(kind, dtype, d) for d in GENERIC_BLOCKS} <= generic, (kind, dtype)
    # only the plain forward and the two-kernel backward have generic kernels
    assert {k for k, _, _ in generic} == {"fwd", "bwd_dkdv", "bwd_dq"}


def test_stride_promise_follows_the_head_dim():
    """Contiguous tensors of every served head dim meet their kernel's stride promise: 16
    elements where D is a multiple of 16, else 8 (40 and the generic kernels)."""
    for v in _catalog():
        if v["kind"] in ("fwd_gluon", "fwd_gluon_padded"):
            continue
        want = 16 if v["head_dim"] % 16 == 0 and not v["runtime_head_dim"] else 8
        assert v["stride_multiple"] == want, v["name"]


@pytest.mark.parametrize("causal", [False, True])
def test_dispatcher_takes_the_compiled_kernel_for_a_compiled_head_dim(causal):
    for D in sorted(_built_dims("fwd")):
        k = _pick(D, causal=causal)
        assert k is not None and k["head_dim"] == D and not k["runtime_head_dim"], (D, k)
        assert k["kind"] == "fwd"


@pytest.mark.parametrize("ws,gluon", [(False, False), (True, False)])
def test_dispatcher_takes_the_generic_kernel_for_other_multiples_of_8(ws, gluon):
    """D = 24: the generic kernel of BLOCK_D 32; never a warp-specialized kernel (its TMA boxes
    need the exact head dim), whatever the switch says. (The Gluon kernels' wider boxes:
    test_gluon_kernels_serve_head_dims_by_zero_filled_columns.)"""
    if not _generic_built():
        pytest.skip("no generic kernels in this build")
    own = _built_dims("fwd")
    for D in range(8, 257, 8):
        if D in own:
            continue
        for T, B in ((256, 1), (4096, 16)):
            k = _pick(D, ws=ws, gluon=gluon, T=T, B=B)
            assert k is not None, (D, _last_error())
            block = max(32, 1 << (D - 1).bit_length())
            assert k["kind"] == "fwd" and k["runtime_head_dim"] and k["head_dim"] == block, (D, k)
    if 80 in own:
        k = _pick(80, ws=ws, gluon=gluon)
        assert (k["kind"], k["head_dim"], k["runtime_head_dim"]) == ("fwd", 80, False)


@pytest.mark.parametrize("D", [12, 4, 264, 1000])
def test_error_names_the_head_dims_served(D):
    assert _pick(D) is None
    msg = _last_error()
    assert f"no CUDA kernel is compiled for head_dim={D}" in msg, msg
    if _generic_built():
        assert "any multiple of 8 up to 256" in msg, msg
    for d in sorted(_built_dims("fwd")):
        assert str(d) in msg


def test_cpu_path_serves_any_head_dim():
    import torch

    g = torch.Generator().manual_seed(0)
    for D in (12, 24, 80, 264):
        q, k, v = (torch.randn(2, 9, 2, D, generator=g) for _ in range(3))
        out = sigmoid_attn.sigmoid_attention(q, k, v, is_causal=True)
        ref = sigmoid_attn.sigmoid_attention_reference(q.double(), k.double(), v.double(),
                                                       is_causal=True)
        assert out.shape == q.shape and torch.allclose(out.double(), ref, atol=1e-5)


SCRIPT = textwrap.dedent(r"""
    import sys, torch
    sys.path.insert(0, TRITON_SRC)
    sys.path.insert(0, TESTS)
    import jit_launch
    from conftest import rel_err
    from sigmoid_attn import sigmoid_attention_reference

    g = torch.Generator().manual_seed(0)
    n = 0
    # (D, run-time head dim): 24 and 56 by the generic kernels, 40 compiled (BLOCK_D 64),
    # 48 and 80 compiled as two power-of-two column ranges in the forward (32 + 16, 64 + 16)
    for D, rt in ((24, True), (56, True), (40, False), (48, False), (80, False)):
        for causal in (False, True):
            B, T, H = 2, 37, 2
            q, k, v, do = (torch.randn(B, T, H, D, generator=g) for _ in range(4))
            lens = torch.tensor([T, 20], dtype=torch.int32)
            out = jit_launch.forward(q, k, v, seq_lens_q=lens, seq_lens_k=lens, is_causal=causal,
                                     tiles=(32, 16, 4, 1), runtime_head_dim=rt)
            ins = [t.double().requires_grad_() for t in (q, k, v)]
            ref = sigmoid_attention_reference(*ins, seq_lens_q=lens, seq_lens_k=lens,
                                              is_causal=causal)
            assert rel_err(out, ref) < 1e-5, (D, rt, causal, rel_err(out, ref))
            ref.backward(do.double())
            dq, dk, dv, _ = jit_launch.backward(do, q, k, v, seq_lens_q=lens, seq_lens_k=lens,
                                                is_causal=causal, tiles=(32, 16, 4, 1),
                                                runtime_head_dim=rt)
            for got, want in zip((dq, dk, dv), ins):
                assert rel_err(got, want.grad) < 1e-5, (D, rt, causal, rel_err(got, want.grad))
            n += 1
    print("interpreted head dim cases:", n)
""")


def test_kernel_source_masks_head_dims_under_the_interpreter():
    """The kernel source itself (forward, dkdv, dq) on CPU, float32: a generic kernel with a
    run-time head dim below its BLOCK_D and a compiled padded one, padded lengths. Needs the
    interpreter of the Triton the kernels are built with (3.8): 3.6's cannot bound a `tl.range`
    by a value computed from loaded lengths."""
    triton = pytest.importorskip("triton")
    if tuple(int(x) for x in triton.__version__.split(".")[:2]) < (3, 8):
        pytest.skip(f"Triton {triton.__version__}'s interpreter: needs 3.8 (the build's Triton)")
    env = dict(os.environ, TRITON_INTERPRET="1")
    code = SCRIPT.replace("TRITON_SRC", repr(TRITON_SRC)).replace(
        "TESTS", repr(os.path.join(ROOT, "tests")))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "interpreted head dim cases: 10" in r.stdout


def test_gluon_kernels_serve_head_dims_by_zero_filled_columns():
    """A head dim with no Gluon kernel of its own takes the narrowest Gluon kernel above it up to
    the next power of two (over that one's boxes, whose columns past D its descriptors read as
    zeros: D = 72 the hd80 kernel, 120 the hd128 one) when D is a multiple of 8 and fills at
    least tiles.json's fwd_gluon_min_fill / bwd_gluon_min_fill of the power of two's columns;
    every other head dim takes the Triton kernels, forward and backward."""
    if _subset():
        pytest.skip(f"a partial build ({_subset()})")
    with open(os.path.join(TRITON_SRC, "tiles.json")) as f:
        tiles = json.load(f)
    own = {kind: {v["head_dim"] for v in _catalog()
                  if v["kind"] == kind and v["dtype"] == "bfloat16"}
           for kind in ("fwd_gluon", "bwd_gluon")}
    if not own["fwd_gluon"] and not own["bwd_gluon"]:
        pytest.skip("no Gluon kernels in this build (Triton 3.8 only)")
    select_bwd = library_function("sigmoid_attn_select_backward_kernel")

    def expected(kind, fill, D):
        # its own kernel, else the narrowest one above it up to the next power of two
        block = 8
        while block < D:
            block *= 2
        if D in own[kind]:
            return D
        wider = [d for d in own[kind] if D < d <= block]
        return min(wider) if wider and D >= fill * block else None

    served = 0
    for D in range(8, 257, 8):
        want = expected("fwd_gluon", tiles.get("fwd_gluon_min_fill", 1.0), D)
        v = _pick(D, gluon=True, T=4096, B=4, H=16)
        got = v["head_dim"] if v is not None and v["kind"] == "fwd_gluon" else None
        assert got == want, (D, v and v["name"])
        want_b = expected("bwd_gluon", tiles.get("bwd_gluon_min_fill", 1.0), D)
        i = select_bwd(dtype_code("bf16"), D, 0, 0, 0, 4096, 1)
        vb = _catalog()[i] if i >= 0 else None
        got_b = vb["head_dim"] if vb is not None and vb["kind"] == "bwd_gluon" else None
        assert got_b == want_b, (D, vb and vb["name"])
        # switched off (the Gluon backward not allowed), the Triton kernels
        i = select_bwd(dtype_code("bf16"), D, 0, 0, 0, 4096, 0)
        assert i < 0 or _catalog()[i]["kind"] != "bwd_gluon"
        served += (want is not None and want != D) + (want_b is not None and want_b != D)
    assert served == 0 or served >= 2  # (the rule is exercised whenever tiles.json enables it)
