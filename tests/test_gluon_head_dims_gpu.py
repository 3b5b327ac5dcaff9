"""Head dims that are no power of two through Gluon kernels whose boxes span the next one: the
rank-4 descriptors [B, T, H, D] read the columns past D as zeros (they add nothing to the
scores or to P·V) and the stores and dQ reduce-adds drop them, so no head reads or writes its
neighbour's columns. The kernel is the next power of two's, or (forward, 80, 96, 112, 160,
192) one of D's own whose score products chain wgmma over D's columns only. Forward and backward against float64 (dense, causal, GQA, padded,
packed, poisoned outputs, NaN in the padding), the profiler's view that the Gluon kernels ran,
and the other kernels on the same inputs (run on an H100 or H200; skipped without CUDA or
without a Triton 3.8 build). Which head dims they serve: tiles.json's fwd_gluon_min_fill and
bwd_gluon_min_fill (test_head_dims.py checks the dispatcher's rule on the CPU)."""

import pytest
import torch

from conftest import (REL_TOL, cu_of, dtype_code, heads_to_fill, launched_kernels,
                      library_function, packed_inputs, padded_inputs, rel_err)

pytestmark = pytest.mark.gpu

if torch.cuda.is_available():
    import sigmoid_attn
    from sigmoid_attn import (sigmoid_attention, sigmoid_attention_reference,
                              sigmoid_attention_varlen, sigmoid_attention_varlen_reference)

    CATALOG = sigmoid_attn.info()["variants"]
else:
    CATALOG = []

BWD_OWN = {v["head_dim"] for v in CATALOG if v["kind"] == "bwd_gluon"}
CANDIDATES = (40, 48, 56, 72, 80, 96, 104, 112, 120, 160, 192)
FWD_NAME, BWD_NAME = "sigmoid_attn_fwd_gluon_persistent", "sigmoid_attn_bwd_gluon"
TOL_BWD = {torch.float16: REL_TOL[torch.float16] * 1.5,
           torch.bfloat16: REL_TOL[torch.bfloat16] * 1.5}


def _forward_served(D, causal=False):
    """The dispatcher takes a Gluon forward whose boxes are wider than D for D (a large call,
    dense or causal: the three-consumer hd64 kernel has no causal variant): the kernel of the
    next power of two, or D's own, whose score products run over D's columns only (a head dim
    that is no power of two: 80 = 64 + 16, 96, 112, 160, 192)."""
    if not CATALOG:
        return False
    f = library_function("sigmoid_attn_select_forward_kernel")
    i = f(dtype_code(torch.bfloat16), D, int(causal), 0, 0, 4096, 4096, 4, 16, 132, 0, 1)
    return i >= 0 and CATALOG[i]["kind"] == "fwd_gluon" and (
        CATALOG[i]["head_dim"] != D or D & (D - 1) != 0)


def _backward_served(D):
    if not CATALOG:
        return False
    f = library_function("sigmoid_attn_select_backward_kernel")
    i = f(dtype_code(torch.bfloat16), D, 0, 0, 0, 4096, 1)
    return i >= 0 and CATALOG[i]["kind"] == "bwd_gluon" and CATALOG[i]["head_dim"] != D


def fwd_block_m(D):
    """Query rows per tile of the Gluon forward that serves D (128, or 192 at hd40-64)."""
    f = library_function("sigmoid_attn_select_forward_kernel")
    return CATALOG[f(dtype_code(torch.bfloat16), D, 0, 0, 0, 4096, 4096, 4, 16, 132, 0, 1)][
        "block_m"]


FWD_DIMS = [d for d in CANDIDATES if _forward_served(d)]
FWD_CASES = [(d, c) for d in FWD_DIMS for c in (False, True) if _forward_served(d, c)]
FWD_IDS = [f"{d}-{'causal' if c else 'dense'}" for d, c in FWD_CASES]
BWD_DIMS = [d for d in CANDIDATES if d not in BWD_OWN and _backward_served(d)]
needs_fwd = pytest.mark.skipif(not FWD_DIMS, reason="no head dim takes a wider Gluon forward "
                                                    "in this build")
needs_bwd = pytest.mark.skipif(not BWD_DIMS, reason="no head dim takes a wider Gluon backward "
                               "in this build")


@pytest.fixture
def gluon_on():
    with sigmoid_attn.kernel_options(gluon_backward=True):
        before = library_function("sigmoid_attn_gluon_forward")(1)
        yield
        library_function("sigmoid_attn_gluon_forward")(before)


def other_kernels(fn):
    """fn() with both Gluon kernels switched off."""
    with sigmoid_attn.kernel_options(gluon_backward=False):
        before = library_function("sigmoid_attn_gluon_forward")(0)
        try:
            return fn()
        finally:
            library_function("sigmoid_attn_gluon_forward")(before)


def ref64(q, k, v, **kw):
    kw = {n: x.double() if torch.is_tensor(x) and x.is_floating_point() else x
          for n, x in kw.items()}
    return sigmoid_attention_reference(q.double(), k.double(), v.double(), **kw)


def poison(*specs):
    """NaN blocks of the outputs' sizes, freed at once: the caching allocator hands them to the
    next outputs, so an element no kernel writes stays NaN."""
    blocks = [torch.full(s, float("nan"), dtype=dt, device="cuda") for s, dt in specs]
    del blocks


def heads(B, T, block_m=128, at_least=8, multiple_of=4):
    return max(at_least, heads_to_fill(-(-T // block_m) * B, multiple_of))


@needs_fwd
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("T", [1, 17, 129, 1000])
@pytest.mark.parametrize("D,causal", FWD_CASES, ids=FWD_IDS)
def test_forward_wider_gluon_kernel_matches_reference(D, causal, T, dtype, gluon_on):
    """Dense and causal, odd lengths, B = 2, MHA and GQA: the Gluon forward over wider boxes ran
    (profiler), outputs poisoned before; against float64 and the other forward."""
    g = torch.Generator().manual_seed(D * 7 + T + causal)
    B = 2
    H = heads(B, T, fwd_block_m(D))
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", dtype)  # noqa: E731
    q = mk(B, T, H, D)
    for hkv in (H, H // 4):
        k, v = mk(B, T, hkv, D), mk(B, T, hkv, D)
        run = lambda: sigmoid_attention(q, k, v, is_causal=causal)  # noqa: E731
        assert FWD_NAME in launched_kernels(run)
        poison((q.shape, dtype))
        out = run()
        torch.cuda.synchronize()
        assert torch.isfinite(out).all(), "unwritten output elements"
        assert rel_err(out, ref64(q, k, v, is_causal=causal)) < REL_TOL[dtype]
        other = other_kernels(run)
        assert rel_err(out, other.double()) < REL_TOL[dtype]


@needs_fwd
@pytest.mark.parametrize("D,causal", FWD_CASES, ids=FWD_IDS)
def test_forward_wider_gluon_kernel_padded_and_packed(D, causal, gluon_on):
    """Lengths for queries and keys (NaN in the padding, padded rows exactly zero) and a packed
    batch (cu_seqlens; NaN past the last sequence, those rows exactly zero: the masked stores
    place each head at h * D)."""
    g = torch.Generator().manual_seed(D + 3 * causal)
    dtype, T = torch.bfloat16, 1000
    lens_list = [T, 0, 1, 17, 129, T - 3, 500, 100]
    B = len(lens_list)
    H = heads(B, T, fwd_block_m(D))
    lens = torch.tensor(lens_list, dtype=torch.int32, device="cuda")
    (q, k, v), (qn, kn, vn) = padded_inputs(B, T, H, D, dtype, g, lens_list)
    run = lambda: sigmoid_attention(qn, kn, vn, seq_lens_q=lens,  # noqa: E731
                                    seq_lens_k=lens, is_causal=causal)
    assert FWD_NAME in launched_kernels(run)
    poison((q.shape, dtype))
    out = run()
    torch.cuda.synchronize()
    assert not torch.isnan(out).any()
    ref = ref64(q, k, v, seq_lens_q=lens, seq_lens_k=lens, is_causal=causal)
    assert rel_err(out, ref) < REL_TOL[dtype]
    for b, L in enumerate(lens_list):
        assert (out[b, L:] == 0).all(), "padded rows must be exactly zero"

    plens = [700, 0, 1, 17, 64, 65, 127, 128, 129, 300, 1000, 999]
    n, tail = sum(plens), 37
    Hp = heads(len(plens), 1000, fwd_block_m(D))
    qp, kp, vp = (torch.randn(n + tail, Hp, D, generator=g).to("cuda", dtype) for _ in range(3))
    clean = [t.clone() for t in (qp, kp, vp)]
    for t in clean:
        t[n:] = 0
    for t in (qp, kp, vp):
        t[n:] = float("nan")
    cu = cu_of(plens, "cuda")
    run = lambda: sigmoid_attention_varlen(qp, kp, vp, cu, cu, max(plens),  # noqa: E731
                                           max(plens), is_causal=causal)
    assert FWD_NAME in launched_kernels(run)
    poison((qp.shape, dtype))
    out = run()
    torch.cuda.synchronize()
    assert torch.isfinite(out[:n]).all() and (out[n:] == 0).all()
    ref = sigmoid_attention_varlen_reference(*(t.double() for t in clean), cu, cu, max(plens),
                                             max(plens), is_causal=causal)
    assert rel_err(out[:n], ref[:n]) < REL_TOL[dtype]


def _grads(q, k, v, grad, fn):
    ins = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = fn(*ins)
    poison((q.shape, q.dtype), (k.shape, k.dtype), (v.shape, v.dtype), (q.shape, torch.float32))
    out.backward(grad)
    return [t.grad for t in ins]


def _check_grads(got, want, dtype, rows=None):
    for name, a, b in zip(("dq", "dk", "dv"), got, want):
        a, b = (a, b) if rows is None else (a[:rows[name]], b[:rows[name]])
        assert torch.isfinite(a).all(), f"{name}: unwritten or NaN elements"
        e = rel_err(a, b)
        assert e < TOL_BWD[dtype], f"{name}: rel err {e:.3e}"


@needs_bwd
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("T", [17, 129, 1000])
@pytest.mark.parametrize("causal", [False, True], ids=["dense", "causal"])
@pytest.mark.parametrize("D", BWD_DIMS)
def test_backward_wider_gluon_kernel_matches_reference(D, causal, T, dtype, gluon_on):
    """dQ, dK, dV through the Gluon backward of the next power of two (profiler), GQA (dK, dV
    summed over the group), outputs poisoned: against float64 autograd and the two-kernel
    backward."""
    g = torch.Generator().manual_seed(D * 5 + T + causal)
    B, Hq, Hkv = 2, 8, 2
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", dtype)  # noqa: E731
    q, k, v, grad = mk(B, T, Hq, D), mk(B, T, Hkv, D), mk(B, T, Hkv, D), mk(B, T, Hq, D)
    fn = lambda *t: sigmoid_attention(*t, is_causal=causal)  # noqa: E731
    assert BWD_NAME in launched_kernels(lambda: _grads(q, k, v, grad, fn))
    got = _grads(q, k, v, grad, fn)
    ins = [t.double().requires_grad_() for t in (q, k, v)]
    sigmoid_attention_reference(*ins, is_causal=causal).backward(grad.double())
    _check_grads(got, [t.grad for t in ins], dtype)
    other = other_kernels(lambda: _grads(q, k, v, grad, fn))
    _check_grads(got, [t.double() for t in other], dtype)


@needs_bwd
@pytest.mark.parametrize("causal", [False, True], ids=["dense", "causal"])
@pytest.mark.parametrize("D", BWD_DIMS)
def test_backward_wider_gluon_kernel_padded_and_packed(D, causal, gluon_on):
    """Padded (lengths, NaN in the padding) and packed (cu_seqlens, NaN past the last sequence:
    the tail's dK, dV rows zeroed and its masked stores placed at h * D)."""
    g = torch.Generator().manual_seed(D + 11 * causal)
    dtype, T = torch.bfloat16, 700
    lens_list = [T, 0, 1, 17, 129, T - 3]
    B, H = len(lens_list), 4
    lens = torch.tensor(lens_list, dtype=torch.int32, device="cuda")
    (q, k, v, grad), nans = padded_inputs(B, T, H, D, dtype, g, lens_list, n=4)
    nans = nans[:3]
    fn = lambda *t: sigmoid_attention(*t, seq_lens_q=lens, seq_lens_k=lens,  # noqa: E731
                                      is_causal=causal)
    assert BWD_NAME in launched_kernels(lambda: _grads(*nans, grad, fn))
    got = _grads(*nans, grad, fn)
    ins = [t.double().requires_grad_() for t in (q, k, v)]
    sigmoid_attention_reference(*ins, seq_lens_q=lens, seq_lens_k=lens,
                                is_causal=causal).backward(grad.double())
    _check_grads(got, [t.grad for t in ins], dtype)
    for t in got:
        for b, L in enumerate(lens_list):
            assert (t[b, L:] == 0).all(), "padded rows of a gradient must be zero"

    lens_q = [700, 0, 1, 17, 64, 65, 127, 128, 129, 300]
    lens_k = [700, 3, 1, 17, 70, 65, 127, 129, 128, 250]
    (qp, kp, vp, gp), clean, nq, nk = packed_inputs(lens_q, lens_k, 8, 2, D, dtype, g)
    cu_q, cu_k = cu_of(lens_q, "cuda"), cu_of(lens_k, "cuda")
    args = (cu_q, cu_k, max(lens_q), max(lens_k))
    fn = lambda *t: sigmoid_attention_varlen(*t, *args, is_causal=causal)  # noqa: E731
    assert BWD_NAME in launched_kernels(lambda: _grads(qp, kp, vp, gp, fn))
    got = _grads(qp, kp, vp, gp, fn)
    ref = [t.double().requires_grad_() for t in clean[:3]]
    sigmoid_attention_varlen_reference(*ref, *args, is_causal=causal).backward(
        clean[3].double())
    rows = {"dq": nq, "dk": nk, "dv": nk}
    _check_grads(got, [t.grad for t in ref], dtype, rows)
    for name, t in zip(("dq", "dk", "dv"), got):
        assert (t[rows[name]:] == 0).all(), f"{name}: rows past cu_seqlens[B] not zero"
