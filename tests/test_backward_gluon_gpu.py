"""The Gluon backward (kind bwd_gluon, with its dq_cast) through the library's backward, switched on
with kernel_options(gluon_backward=True): gradients against float64 autograd of the reference,
the calls it does not cover, deterministic mode, CUDA graphs and torch.compile (run on an H100
or H200; skipped without CUDA or without a Triton 3.8 build)."""

import pytest
import torch

from conftest import (REL_TOL, cu_of, key_masks, launched_kernels, nan_padded, packed_inputs,
                      rel_err)

pytestmark = pytest.mark.gpu

if torch.cuda.is_available():
    import sigmoid_attn
    from sigmoid_attn import sigmoid_attention, sigmoid_attention_reference

    from sigmoid_attn import sigmoid_attention_varlen, sigmoid_attention_varlen_reference

    GLUON_BWD = [v for v in sigmoid_attn.info()["variants"] if v["kind"] == "bwd_gluon"]
    GLUON_FWD = [v for v in sigmoid_attn.info()["variants"] if v["kind"] == "fwd_gluon"]
    GLUON_BWD_PACKED = [v for v in sigmoid_attn.info()["variants"]
                        if v["kind"] == "bwd_gluon_padded" and v["varlen"]]
else:
    GLUON_BWD = GLUON_FWD = GLUON_BWD_PACKED = []

DIMS = sorted({v["head_dim"] for v in GLUON_BWD})
requires_gluon_bwd = pytest.mark.skipif(not GLUON_BWD,
                                        reason="no Gluon backward in this build (Triton 3.8 only)")
TOL = {torch.float16: REL_TOL[torch.float16] * 1.5, torch.bfloat16: REL_TOL[torch.bfloat16] * 1.5}


@pytest.fixture
def gluon_backward():
    with sigmoid_attn.kernel_options(gluon_backward=True):
        yield


def poison_allocator(*specs):
    """NaN-filled blocks of the outputs' sizes, freed at once: the caching allocator hands them
    to the backward's dQ, dK, dV and fp32 dQ buffer, so an element no kernel writes stays NaN."""
    blocks = [torch.full(shape, float("nan"), dtype=dt, device="cuda") for shape, dt in specs]
    del blocks


def grads(q, k, v, grad, **kw):
    """dq, dk, dv of sigmoid_attention through autograd, outputs poisoned."""
    ins = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = sigmoid_attention(*ins, **kw)
    poison_allocator((q.shape, q.dtype), (k.shape, k.dtype), (v.shape, v.dtype),
                     (q.shape, torch.float32))
    out.backward(grad)
    return [t.grad for t in ins]


def reference_grads(q, k, v, grad, **kw):
    ins = [t.detach().double().requires_grad_() for t in (q, k, v)]
    kw = {n: x.double() if torch.is_tensor(x) and x.is_floating_point() else x
          for n, x in kw.items()}
    sigmoid_attention_reference(*ins, **kw).backward(grad.double())
    return [t.grad for t in ins]


def check(q, k, v, grad, **kw):
    got = grads(q, k, v, grad, **kw)
    want = reference_grads(q, k, v, grad, **kw)
    for name, a, b in zip(("dq", "dk", "dv"), got, want):
        assert torch.isfinite(a).all(), f"{name} has non-finite elements"
        e = rel_err(a, b)
        assert e < TOL[q.dtype], f"{name}: rel err {e:.3e}"
    return got


def inputs(B, Tq, Tk, Hq, Hkv, D, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", dtype)  # noqa: E731
    return mk(B, Tq, Hq, D), mk(B, Tk, Hkv, D), mk(B, Tk, Hkv, D), mk(B, Tq, Hq, D)


# (T, B): every length at B = 1 and 3 but 4096 (B = 1: the float64 reference's [B, H, T, T]).
SHAPES = [(T, B) for T in (1, 17, 129, 1000, 1024, 4096) for B in (1, 3) if T < 4096 or B == 1]


@requires_gluon_bwd
@pytest.mark.parametrize("T,B", SHAPES, ids=[f"T{T}-B{B}" for T, B in SHAPES])
@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["dense", "causal"])
def test_gluon_backward_matches_reference(causal, dtype, D, T, B, gluon_backward):
    """GQA 8 query heads on 2 KV heads (the kernel sums dK, dV over each group); causal: the
    query tiles above each key block skipped, the diagonal tiles masked (T = 1, 17, 129: the
    diagonal inside a partial tile; 1000: key blocks whose first query tile straddles them)."""
    q, k, v, grad = inputs(B, T, T, 8, 2, D, dtype, seed=T + 7 * B + D + causal)
    check(q, k, v, grad, is_causal=causal)


@requires_gluon_bwd
@pytest.mark.parametrize("D", DIMS)
def test_gluon_backward_cross_lengths_mha_and_scalar_bias(D, gluon_backward):
    """T_Q != T_K both ways, one KV head per query head, a scalar bias and a scale of its own."""
    for Tq, Tk, Hq, Hkv in ((300, 100, 4, 4), (100, 300, 4, 2), (129, 129, 4, 4)):
        q, k, v, grad = inputs(2, Tq, Tk, Hq, Hkv, D, torch.bfloat16, seed=Tq + Tk)
        check(q, k, v, grad)
        check(q, k, v, grad, sigmoid_bias=-2.5, scale=0.3)


@requires_gluon_bwd
@pytest.mark.parametrize("T", [129, 1000, 2048])
@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("causal", [False, True], ids=["dense", "causal"])
def test_gluon_backward_padded_matches_reference(causal, D, T, gluon_backward):
    """Padded batches (lengths for queries and keys, the default bias per sequence) through the
    Gluon backward with lengths (kind bwd_gluon_padded; the profiler sees the Gluon kernel):
    lengths 0, 1, 17, 64, 65, T, and ones ending inside a query tile and a key block; NaN in every
    padded row of q, k, v and the output gradient (never read: the tail tile's Q and dO rows and
    the key block's K rows past the lengths are zeroed before a wgmma reads them, dSᵀ is masked);
    gradients of padded rows exactly zero. The reference runs on the same inputs with zeros in
    the padding."""
    dtype = torch.bfloat16
    lens_list = [min(L, T) for L in (T, 0, 1, 17, 64, 65, T - 3, T // 2 + 5)]
    B = len(lens_list)
    q, k, v, grad = inputs(B, T, T, 8, 2, D, dtype, seed=T + D + causal)
    for t in (q, k, v, grad):
        for b, L in enumerate(lens_list):
            t[b, L:] = 0
    lens = torch.tensor(lens_list, dtype=torch.int32, device="cuda")
    kw = dict(seq_lens_q=lens, seq_lens_k=lens, is_causal=causal)
    qn, kn, vn, gn = (nan_padded(t, lens_list) for t in (q, k, v, grad))
    names = launched_kernels(lambda: grads(qn, kn, vn, gn, **kw))
    assert "sigmoid_attn_bwd_gluon" in names and "sigmoid_attn_bwd_dkdv" not in names, names
    got = grads(qn, kn, vn, gn, **kw)
    want = reference_grads(q, k, v, grad, **kw)
    for name, a, b in zip(("dq", "dk", "dv"), got, want):
        assert torch.isfinite(a).all(), f"{name}: NaN from the padding, or unwritten elements"
        assert rel_err(a, b) < TOL[dtype], f"{name}: rel err {rel_err(a, b):.3e}"
        for i, L in enumerate(lens_list):
            assert (a[i, L:] == 0).all(), f"{name}: padded rows of sequence {i} not zero"
    other = two_kernel(lambda: grads(q, k, v, grad, **kw))
    for name, a, b in zip(("dq", "dk", "dv"), got, other):
        assert rel_err(a, b.double()) < TOL[dtype], name


@pytest.mark.skipif(not GLUON_BWD_PACKED, reason="no packed Gluon backward in this build")
@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["dense", "causal"])
def test_gluon_backward_packed_matches_reference(causal, dtype, D, gluon_backward):
    """Packed batches (cu_seqlens) through the Gluon backward compiled for packed rows (the
    profiler sees it, not the two-kernel backward): lengths 0, 1, 17, 64, 65, 127, 128, 129 and
    longer, queries and keys of different lengths, GQA; NaN in the rows past cu_seqlens[B] of
    q, k, v and the output gradient; poisoned outputs. A key block where a sequence ends writes
    only its own rows (the next sequence's dK, dV come from another CTA), the tail's dK, dV
    rows are zeroed by their own CTAs, and the tail tile's dQ rows past a sequence add exactly
    zero to the next one's: against float64 autograd and the two-kernel backward."""
    lens_q = [700, 0, 1, 17, 64, 65, 127, 128, 129, 300]
    lens_k = [700, 3, 1, 17, 70, 65, 127, 129, 128, 250]
    g = torch.Generator().manual_seed(D + causal + (dtype == torch.float16))
    (q, k, v, grad), clean, nq, nk = packed_inputs(lens_q, lens_k, 8, 2, D, dtype, g)
    cu_q, cu_k = cu_of(lens_q, "cuda"), cu_of(lens_k, "cuda")
    args = (cu_q, cu_k, max(lens_q), max(lens_k))

    def run(q, k, v, grad):
        ins = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        out = sigmoid_attention_varlen(*ins, *args, is_causal=causal)
        poison_allocator((q.shape, q.dtype), (k.shape, k.dtype), (v.shape, v.dtype),
                         (q.shape, torch.float32))
        out.backward(grad)
        return [t.grad for t in ins]

    names = launched_kernels(lambda: run(q, k, v, grad))
    assert "sigmoid_attn_bwd_gluon" in names and "sigmoid_attn_bwd_dkdv" not in names, names
    got = run(q, k, v, grad)
    ref = [t.double().requires_grad_() for t in clean[:3]]
    sigmoid_attention_varlen_reference(*ref, *args, is_causal=causal).backward(
        clean[3].double())
    other = two_kernel(lambda: run(*clean))
    for name, a, want, b, n in zip(("dq", "dk", "dv"), got, ref, other, (nq, nk, nk)):
        assert torch.isfinite(a).all(), f"{name}: NaN from the tail, or unwritten elements"
        assert (a[n:] == 0).all(), f"{name}: rows past cu_seqlens[B] not zero"
        e = rel_err(a[:n], want.grad[:n])
        assert e < TOL[dtype], f"{name}: rel err {e:.3e}"
        assert rel_err(a[:n], b[:n].double()) < TOL[dtype], f"{name} vs the two-kernel backward"


@requires_gluon_bwd
def test_gluon_backward_is_the_kernel_launched(gluon_backward):
    """Switched on, a covered call runs the Gluon kernel and its cast, not the two-kernel
    backward; switched off, the two-kernel backward."""
    q, k, v, grad = inputs(2, 300, 300, 8, 2, DIMS[-1], torch.bfloat16, seed=1)
    on = launched_kernels(lambda: grads(q, k, v, grad))
    assert {"sigmoid_attn_bwd_gluon", "dq_cast"} <= on, on
    assert not any(n.startswith("sigmoid_attn_bwd_dkdv") for n in on), on
    with sigmoid_attn.kernel_options(gluon_backward=False):
        off = launched_kernels(lambda: grads(q, k, v, grad))
    assert "sigmoid_attn_bwd_gluon" not in off and "sigmoid_attn_bwd_dkdv" in off, off
    causal = launched_kernels(lambda: grads(q, k, v, grad, is_causal=True))
    assert "sigmoid_attn_bwd_gluon" in causal, causal


def two_kernel(fn):
    with sigmoid_attn.kernel_options(gluon_backward=False):
        return fn()


@requires_gluon_bwd
@pytest.mark.parametrize("D", DIMS)
def test_gluon_backward_ineligible_calls_take_the_two_kernel_backward(D, gluon_backward):
    """Causal with T_Q != T_K, lengths for keys only, score_mod with lengths, a score_mod not
    contiguous along keys: the switch changes nothing (bitwise the two-kernel backward's
    gradients, which is deterministic), and they match the reference. ([B, H, T, D] tensors
    seen as [B, T, H, D], score_mod on dense calls and any bias take the Gluon kernels:
    test_gluon_kernels_take_sdpa_layout, test_gluon_backward_score_mod_and_bias_tensor.)"""
    dtype = torch.float16
    B, T = 3, 300
    q, k, v, grad = inputs(B, T, T, 4, 2, D, dtype, seed=D + 1)
    lens = torch.tensor([T, 17, 0], dtype=torch.int32, device="cuda")
    mod = torch.randn(B, T, device="cuda")
    mod_t = torch.randn(T, B, device="cuda").t()  # (keys B floats apart)
    cases = [((q[:, :T - 50], k, v, grad[:, :T - 50]), dict(is_causal=True)),
             ((q, k, v, grad), dict(seq_lens_k=lens)),
             ((q, k, v, grad), dict(seq_lens_q=lens, seq_lens_k=lens, score_mod=mod)),
             ((q, k, v, grad), dict(score_mod=mod_t))]
    for args, kw in cases:
        got = check(*args, **kw)
        want = two_kernel(lambda: grads(*args, **kw))
        for name, a, b in zip(("dq", "dk", "dv"), got, want):
            assert torch.equal(a, b), f"{name} differs from the two-kernel backward with {kw}"


@requires_gluon_bwd
def test_deterministic_mode_keeps_the_two_kernel_backward(gluon_backward):
    """torch.use_deterministic_algorithms(True): the autograd passes deterministic=True, and the
    backward is the two-kernel one (bitwise equal to it, and no Gluon kernel launched)."""
    q, k, v, grad = inputs(2, 500, 500, 8, 2, DIMS[-1], torch.bfloat16, seed=4)
    want = two_kernel(lambda: grads(q, k, v, grad))
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        got = grads(q, k, v, grad)
        names = launched_kernels(lambda: grads(q, k, v, grad))
    finally:
        torch.use_deterministic_algorithms(before)
    for name, a, b in zip(("dq", "dk", "dv"), got, want):
        assert torch.equal(a, b), name
    assert "sigmoid_attn_bwd_gluon" not in names, names
    # the op's own flag does the same for a direct caller
    ops = torch.ops.sigmoid_attn
    a = ops.backward(grad, q, k, v, None, None, False, deterministic=True)
    b = ops.backward(grad, q, k, v, None, None, False, deterministic=True)
    for x, y in zip(a[:3], b[:3]):
        assert torch.equal(x, y)


def thread_context():
    """Whether the calling thread has a current CUDA driver context (ctypes: cuCtxGetCurrent)."""
    import ctypes

    ctx = ctypes.c_void_p()
    ctypes.CDLL("libcuda.so.1").cuCtxGetCurrent(ctypes.byref(ctx))
    return ctx.value is not None


@requires_gluon_bwd
def test_gluon_kernels_from_a_thread_without_a_context(gluon_backward):
    """A thread torch starts need not have a current driver context (autograd's device thread:
    the first backward of a training run is called there), and the driver encodes TMA
    descriptors only in one: the Gluon kernels are launched from such a thread all the same
    (the launcher makes the device's context current), with the gradients of the main thread's
    call. The ops are called first thing in a fresh thread, on tensors made beforehand, so the
    caching allocator serves them without a cudaMalloc that would bind a context."""
    import threading

    q, k, v, grad = inputs(1, 4096, 4096, 8, 8, 128, torch.bfloat16, seed=11)
    ops = torch.ops.sigmoid_attn
    want = ops.backward(grad, q, k, v, None, None, False)
    want_out = ops.forward(q, k, v, None, None, False, None, None, None, None)
    del want_out  # its block is cached for the thread's forward
    seen = {}

    def work():
        seen["context before"] = thread_context()
        seen["out"] = ops.forward(q, k, v, None, None, False, None, None, None, None)
        seen["grads"] = ops.backward(grad, q, k, v, None, None, False)

    def run():
        t = threading.Thread(target=work)
        t.start()
        t.join()

    names = launched_kernels(run)
    assert {"sigmoid_attn_bwd_gluon", "dq_cast"} <= names, (names, seen["context before"])
    if GLUON_FWD:
        assert "sigmoid_attn_fwd_gluon_persistent" in names, (names, seen["context before"])
    ref = sigmoid_attention_reference(q.double(), k.double(), v.double())
    assert rel_err(seen["out"], ref) < REL_TOL[torch.bfloat16]
    for name, a, b in zip(("dq", "dk", "dv"), seen["grads"][:3], want[:3]):
        assert rel_err(a, b.double()) < TOL[torch.bfloat16], name


@requires_gluon_bwd
def test_gluon_backward_cuda_graph_replay(gluon_backward):
    """Forward and the Gluon backward captured in one CUDA graph (the memset, the kernel with
    descriptors encoded at capture, the cast), replayed on new contents of the same buffers: dK
    and dV equal eager calls bitwise (one writer each), dQ matches the reference."""
    D = DIMS[-1]
    q, k, v, grad = inputs(2, 1000, 1000, 8, 2, D, torch.bfloat16, seed=9)
    ops = torch.ops.sigmoid_attn

    def step():
        return (ops.forward(q, k, v),) + tuple(ops.backward(grad, q, k, v)[:3])

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = step()
    for seed in (10, 11):
        g = torch.Generator().manual_seed(seed)
        for t in (q, k, v, grad):
            t.copy_(torch.randn(t.shape, generator=g).to(t.dtype))
        for t in static:
            t.fill_(float("nan"))
        graph.replay()
        want = step()
        torch.cuda.synchronize()
        assert torch.equal(static[0], want[0])
        assert torch.equal(static[2], want[2]) and torch.equal(static[3], want[3]), seed
        ref = reference_grads(q, k, v, grad)
        for name, a, b in zip(("dq", "dk", "dv"), static[1:], ref):
            assert rel_err(a, b) < TOL[torch.bfloat16], f"{name} (seed {seed})"


@requires_gluon_bwd
def test_gluon_backward_compile_fullgraph(gluon_backward):
    """torch.compile(fullgraph=True) of forward and backward with the switch on: the same
    gradients as eager (dK, dV bitwise; dQ within the reference tolerance)."""
    D = DIMS[0]
    q0, k0, v0, _ = inputs(2, 300, 300, 4, 2, D, torch.bfloat16, seed=12)
    loss = lambda a, b, c: sigmoid_attention(a, b, c).float().square().sum()  # noqa: E731
    fn = torch.compile(loss, fullgraph=True)
    ins = [t.clone().requires_grad_() for t in (q0, k0, v0)]
    fn(*ins).backward()
    eager = [t.clone().requires_grad_() for t in (q0, k0, v0)]
    loss(*eager).backward()
    assert torch.equal(ins[1].grad, eager[1].grad) and torch.equal(ins[2].grad, eager[2].grad)
    assert rel_err(ins[0].grad, eager[0].grad) < TOL[torch.bfloat16]


@requires_gluon_bwd
@pytest.mark.parametrize("causal", [False, True], ids=["dense", "causal"])
def test_gluon_kernels_take_sdpa_layout(causal, gluon_backward):
    """SDPA's [B, H, T, D] tensors (the SDPA-style function transposes them to [B, T, H, D]
    views, head stride T*D) through the Gluon forward and backward: their rank-4 descriptors
    step over any 16-byte head stride, so no copy and no fallback (profiler), GQA; against
    float64 autograd and the Triton kernels on the same inputs."""
    from sigmoid_attn import scaled_dot_product_sigmoid_attention as sdpa

    g = torch.Generator().manual_seed(7 + causal)
    B, T, Hq, Hkv, D, dtype = 2, 1000, 16, 4, DIMS[-1], torch.bfloat16
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", dtype)  # noqa: E731
    q, k, v, grad = mk(B, Hq, T, D), mk(B, Hkv, T, D), mk(B, Hkv, T, D), mk(B, Hq, T, D)
    fn = lambda a, b, c: sdpa(a, b, c, is_causal=causal)  # noqa: E731

    def run(q, k, v):
        ins = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        out = fn(*ins)
        poison_allocator((q.shape, q.dtype), (k.shape, k.dtype), (v.shape, v.dtype),
                         (q.shape, torch.float32))
        out.backward(grad)
        return [out] + [t.grad for t in ins]

    names = launched_kernels(lambda: run(q, k, v))
    assert "sigmoid_attn_fwd_gluon_persistent" in names, names
    assert "sigmoid_attn_bwd_gluon" in names and "sigmoid_attn_bwd_dkdv" not in names, names
    got = run(q, k, v)
    ins = [t.double().requires_grad_() for t in (q, k, v)]
    ref = sigmoid_attention_reference(*(t.transpose(1, 2) for t in ins),
                                      is_causal=causal).transpose(1, 2)
    ref.backward(grad.double())
    want = [ref.detach()] + [t.grad for t in ins]
    with sigmoid_attn.kernel_options(gluon_forward=False, gluon_backward=False):
        other = run(q, k, v)
    for name, a, b, c in zip(("out", "dq", "dk", "dv"), got, want, other):
        assert torch.isfinite(a).all(), f"{name}: unwritten or NaN elements"
        assert rel_err(a, b) < TOL[dtype], f"{name}: rel err {rel_err(a, b):.3e}"
        assert rel_err(a, c.double()) < TOL[dtype], f"{name} vs the Triton kernels"


GLUON_BWD_MOD = sorted({v["head_dim"] for v in GLUON_BWD if v["score_mod"]})


@pytest.mark.skipif(not GLUON_BWD_MOD, reason="no Gluon backward with score_mod in this build")
@pytest.mark.parametrize("causal", [False, True], ids=["dense", "causal"])
@pytest.mark.parametrize("D", GLUON_BWD_MOD)
def test_gluon_backward_score_mod_and_bias_tensor(D, causal, gluon_backward):
    """score_mod and bias tensors through the Gluon backward (profiler: no two-kernel
    backward): dQ, dK, dV and the gradients of score_mod (per key, summed over heads and
    queries) and of the bias tensor against float64 autograd; a random finite score_mod, a key
    mask of -inf with one batch entry all masked (its gradients zero), GQA, key counts not a
    multiple of the key block; the SDPA-style function's boolean key mask (training through a
    padding mask); a scalar bias and a bias tensor with lengths (the kind with lengths)."""
    from sigmoid_attn import scaled_dot_product_sigmoid_attention as sdpa

    dtype = torch.bfloat16
    B, T, Hq, Hkv = 3, 777, 8, 2
    q, k, v, grad = inputs(B, T, T, Hq, Hkv, D, dtype, seed=D + causal)
    g = torch.Generator().manual_seed(5 + D)
    mod, mask, bias = key_masks(T, g, masked_from=500)
    tol = TOL[dtype]
    for m, b_, leaf in ((mod, None, True), (mask, None, False), (mod, bias, True),
                        (None, bias, False)):
        def run(q, k, v, m=m, b_=b_, leaf=leaf):
            mm = m.clone().requires_grad_(leaf) if m is not None else None
            bb = b_.clone().requires_grad_() if b_ is not None else None
            ins = [t.detach().clone().requires_grad_() for t in (q, k, v)]
            out = sigmoid_attention(*ins, is_causal=causal, score_mod=mm, sigmoid_bias=bb)
            out.backward(grad)
            return [t.grad for t in ins] + [mm.grad if leaf else None,
                                            bb.grad if bb is not None else None]

        names = launched_kernels(lambda: run(q, k, v))
        assert "sigmoid_attn_bwd_gluon" in names and "sigmoid_attn_bwd_dkdv" not in names, names
        got = run(q, k, v)
        mm = m.double().requires_grad_(leaf) if m is not None else None
        bb = b_.double().requires_grad_() if b_ is not None else None
        ins = [t.double().requires_grad_() for t in (q, k, v)]
        sigmoid_attention_reference(*ins, is_causal=causal, score_mod=mm,
                                    sigmoid_bias=bb).backward(grad.double())
        want = [t.grad for t in ins] + [mm.grad if leaf else None,
                                        bb.grad if bb is not None else None]
        for name, a, w in zip(("dq", "dk", "dv", "dscore_mod", "dbias"), got, want):
            if w is None:
                continue
            assert torch.isfinite(a).all(), f"{name}: NaN or unwritten elements"
            assert rel_err(a, w) < tol, f"{name}: rel err {rel_err(a, w):.3e}"
        if m is mask:  # batch entry 2: every key masked, P = 0, no gradient
            assert (got[0][2] == 0).all() and (got[1][2] == 0).all() and (got[2][2] == 0).all()
    # the SDPA-style function's boolean key mask, training
    attend = torch.rand(B, 1, 1, T, generator=g).cuda() > 0.3
    qs, ks, vs = (t.transpose(1, 2) for t in (q, k, v))
    ins = [t.detach().clone().requires_grad_() for t in (qs, ks, vs)]
    names = launched_kernels(lambda: sdpa(*ins, attn_mask=attend, is_causal=causal).backward(
        grad.transpose(1, 2)))
    assert "sigmoid_attn_bwd_gluon" in names, names
    # lengths with a scalar bias or a bias tensor (no gradient asked of it): the kind with
    # lengths
    lens = torch.tensor([T, 17, 0], dtype=torch.int32, device="cuda")
    for sb in (-2.0, bias):
        kw = dict(seq_lens_q=lens, seq_lens_k=lens, sigmoid_bias=sb, is_causal=causal)
        assert "sigmoid_attn_bwd_gluon" in launched_kernels(lambda: grads(q, k, v, grad, **kw))
        check(q, k, v, grad, **kw)
