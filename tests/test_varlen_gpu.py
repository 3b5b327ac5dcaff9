"""Packed variable-length batches on the GPU: every compiled varlen variant (forward, and the
dkdv + dq backward pair) against the float64 reference, with odd lengths, empty sequences,
tail rows past cu_seqlens[B], GQA and poisoned outputs; CUDA-graph replay with new cu_seqlens
values; agreement with the dense padded API. Skipped without CUDA."""

import pytest
import torch

import conftest
from conftest import REL_TOL, heads_to_fill, rel_err

pytestmark = pytest.mark.gpu

if torch.cuda.is_available():
    import sigmoid_attn
    from sigmoid_attn import (sigmoid_attention, sigmoid_attention_varlen,
                              sigmoid_attention_varlen_reference)

    VARIANTS = sigmoid_attn.info()["variants"]
    FWD = [v for v in VARIANTS if v["kind"] == "fwd" and v["varlen"]]
    BWD = [v for v in VARIANTS if v["kind"] == "bwd_dq" and v["varlen"]]
else:
    FWD, BWD = [], []

DT = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def cu_of(lengths):
    return conftest.cu_of(lengths, device="cuda")


def ref64(q, k, v, cu_q, cu_k, mq, mk, **kw):
    kw = {key: (val.double() if torch.is_tensor(val) and val.is_floating_point() else val)
          for key, val in kw.items()}
    return sigmoid_attention_varlen_reference(q.double(), k.double(), v.double(), cu_q, cu_k,
                                              mq, mk, **kw)


def problem(var, g):
    lens_q = [300, 0, 17, 129, 1, 64]
    lens_k = [333, 5, 1, 200, 1, 64]
    if var["min_t"] > 0:  # a long-sequence tile bucket
        lens_q, lens_k = [var["min_t"] + 17, 300], [var["min_t"] + 50, 4000]
    dtype, D = DT[var["dtype"]], var["head_dim"]
    Hq, Hkv = 4, 2
    if var["min_t"] == 0 and var["kind"] == "fwd":  # a grid that fills the GPU (not the small tile)
        Hq = heads_to_fill(sum(lens_q) // var["block_m"] + len(lens_q) + 1, Hkv)
    tail_q, tail_k = 5, 3  # rows past cu_seqlens[B]: output zero, gradients zero
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", dtype)
    q = mk(sum(lens_q) + tail_q, Hq, D)
    k, v = mk(sum(lens_k) + tail_k, Hkv, D), mk(sum(lens_k) + tail_k, Hkv, D)
    mod = torch.randn(k.shape[0], generator=g).cuda() if var["score_mod"] else None
    return (q, k, v, cu_of(lens_q), cu_of(lens_k), max(lens_q), max(lens_k), dtype,
            dict(is_causal=var["causal"], score_mod=mod))


@pytest.mark.parametrize("var", FWD, ids=[v["name"] for v in FWD])
def test_varlen_forward_variant(var):
    g = torch.Generator().manual_seed(var["head_dim"] * 7 + var["causal"] * 3 + var["score_mod"])
    q, k, v, cu_q, cu_k, mq, mk, dtype, kw = problem(var, g)
    torch.empty(q.shape, dtype=dtype, device="cuda").fill_(float("nan"))  # poison
    # (the Gluon forward would take the hd128 calls: this tests the Triton variant)
    with sigmoid_attn.kernel_options(gluon_forward=False):
        out = sigmoid_attention_varlen(q, k, v, cu_q, cu_k, mq, mk, **kw)
    torch.cuda.synchronize()
    assert not torch.isnan(out).any(), "unwritten (poisoned) output elements"
    assert rel_err(out, ref64(q, k, v, cu_q, cu_k, mq, mk, **kw)) < REL_TOL[dtype]
    assert (out[int(cu_q[-1]):] == 0).all()


GLUON_VARLEN = [v for v in VARIANTS if v["kind"] == "fwd_gluon_padded" and v["varlen"]] \
    if torch.cuda.is_available() else []


@pytest.mark.skipif(not GLUON_VARLEN, reason="no packed Gluon forward in this build (Triton 3.8)")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["dense", "causal"])
def test_gluon_forward_varlen_matches_reference(causal, dtype):
    """Packed batches through the Gluon forward (kind fwd_gluon_padded compiled for packed rows:
    the tiles of each sequence from cu_seqlens, the tail past cu_seqlens[B] written as zeros,
    TMA stores for whole row blocks and masked stores where a sequence ends mid-block, so the
    next sequence's rows are never touched): lengths 0, 1, 17, 64, 65, 127, 128, 129 and long
    ones, queries and keys of different lengths, GQA; NaN in the tail rows of q, k and v (a
    tile reading past its sequence must not let them through); poisoned output; the profiler
    sees the Gluon kernel; against float64 and the Triton forward."""
    from conftest import launched_kernels

    g = torch.Generator().manual_seed(11 + causal)
    lens_q = [2000, 0, 1, 17, 64, 65, 127, 128, 129, 1500, 777, 3000]
    lens_k = [2000, 3, 1, 17, 70, 65, 127, 129, 128, 1400, 900, 3000]
    if causal:  # (top-left per sequence: keys may outnumber queries and the reverse)
        lens_k = lens_q[:2] + lens_k[2:]
    Hq, Hkv, D, tail = 8, 2, 128, 37
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", dtype)
    q = mk(sum(lens_q) + tail, Hq, D)
    k, v = mk(sum(lens_k) + tail, Hkv, D), mk(sum(lens_k) + tail, Hkv, D)
    for t, n in ((q, sum(lens_q)), (k, sum(lens_k)), (v, sum(lens_k))):
        t[n:] = float("nan")
    cu_q, cu_k = cu_of(lens_q), cu_of(lens_k)
    mq, mkl = max(lens_q), max(lens_k)

    def run():
        torch.empty(q.shape, dtype=dtype, device="cuda").fill_(float("nan"))  # poison
        return sigmoid_attention_varlen(q, k, v, cu_q, cu_k, mq, mkl, is_causal=causal)

    names = launched_kernels(run)
    assert "sigmoid_attn_fwd_gluon_persistent" in names, names
    out = run()
    torch.cuda.synchronize()
    n = sum(lens_q)
    assert not torch.isnan(out).any(), "unwritten output elements, or NaN from the tail"
    assert (out[n:] == 0).all(), "tail rows past cu_seqlens[B] not zero"
    clean = [t.clone() for t in (q, k, v)]
    for t, m in zip(clean, (n, sum(lens_k), sum(lens_k))):
        t[m:] = 0
    want = ref64(*clean, cu_q, cu_k, mq, mkl, is_causal=causal)
    assert rel_err(out[:n], want[:n]) < REL_TOL[dtype]
    with sigmoid_attn.kernel_options(gluon_forward=False):
        other = sigmoid_attention_varlen(*clean, cu_q, cu_k, mq, mkl, is_causal=causal)
    assert rel_err(out[:n], other[:n].double()) < REL_TOL[dtype]


def check_packed_gluon_forward(lens, causal, g, tail):
    """Packed sequences of these lengths (H=4, D=128, bf16, tail rows past cu_seqlens[B])
    through the Gluon forward into a poisoned allocator: every row written, the tail zero, the
    rest against float64. Returns (q, k, v, out, n, the float64 reference)."""
    from conftest import launched_kernels

    H, D = 4, 128
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", torch.bfloat16)  # noqa: E731
    n = sum(lens)
    q, k, v = mk(n + tail, H, D), mk(n + tail, H, D), mk(n + tail, H, D)
    cu = cu_of(lens)

    def run():
        torch.empty(q.shape, dtype=q.dtype, device="cuda").fill_(float("nan"))  # poison
        return sigmoid_attention_varlen(q, k, v, cu, cu, max(lens), max(lens), is_causal=causal)

    assert "sigmoid_attn_fwd_gluon_persistent" in launched_kernels(run)
    out = run()
    torch.cuda.synchronize()
    assert not torch.isnan(out).any(), "unwritten output elements"
    assert (out[n:] == 0).all(), "tail rows past cu_seqlens[B] not zero"
    want = ref64(q, k, v, cu, cu, max(lens), max(lens), is_causal=causal)
    assert rel_err(out[:n], want[:n]) < REL_TOL[torch.bfloat16]
    return q, k, v, out, n, want


@pytest.mark.skipif(not GLUON_VARLEN, reason="no packed Gluon forward in this build (Triton 3.8)")
@pytest.mark.parametrize("causal", [False, True], ids=["dense", "causal"])
def test_gluon_forward_many_short_sequences(causal):
    """Hundreds of short cells (the serving batch's shape) through the Gluon forward, packed and
    padded: each program finds its tiles' sequences with a cursor carried from tile to tile
    over the lengths, so a wrong step skips or repeats a sequence. Lengths 0 to 300 with runs of
    empty ones, tail rows; poisoned output; against float64."""
    from conftest import launched_kernels

    g = torch.Generator().manual_seed(5 + causal)
    lens = torch.randint(0, 301, (300,), generator=g)
    lens[10:14] = 0  # a run of empty sequences
    lens[50], lens[51], lens[52] = 1, 128, 129
    lens = lens.tolist()
    q, k, v, out, n, want = check_packed_gluon_forward(lens, causal, g, tail=9)
    H, D = q.shape[1:]

    # the same cells padded to [B, T] (the non-causal padded order walks them with the cursor)
    T = max(lens)
    pad = lambda x: torch.nn.utils.rnn.pad_sequence(list(x[:n].split(lens)), batch_first=True)
    qp, kp, vp = pad(q), pad(k), pad(v)
    L = torch.tensor(lens, dtype=torch.int32, device="cuda")

    def run_padded():
        torch.empty(qp.shape, dtype=qp.dtype, device="cuda").fill_(float("nan"))
        return sigmoid_attention(qp, kp, vp, seq_lens_q=L, seq_lens_k=L, is_causal=causal)

    assert "sigmoid_attn_fwd_gluon_persistent" in launched_kernels(run_padded)
    outp = run_padded()
    torch.cuda.synchronize()
    assert not torch.isnan(outp).any(), "unwritten output elements (padded)"
    assert outp.shape == (len(lens), T, H, D)
    for b, Lb in enumerate(lens):
        assert (outp[b, Lb:] == 0).all(), f"rows past sequence {b}'s length not zero"
    packed = torch.cat([outp[b, :Lb] for b, Lb in enumerate(lens)])
    assert rel_err(packed, want[:n]) < REL_TOL[torch.bfloat16]


@pytest.mark.skipif(not GLUON_VARLEN, reason="no packed Gluon forward in this build (Triton 3.8)")
@pytest.mark.parametrize("mix", ["long_tail", "many"])
def test_gluon_forward_packed_causal_orders(mix):
    """The packed causal forward's two tile orders: by levels over every sequence (long_tail: 40
    sequences, two of them 2-4k tokens among short ones, 16 buckets x 40 segments) and, past
    1,024 segments, sequence by sequence (many: 600 sequences of up to 600 tokens, 3 buckets x
    600). A tile skipped or taken twice shows as poison, NaN or a wrong row; against float64."""
    g = torch.Generator().manual_seed(17 + len(mix))
    if mix == "long_tail":
        lens = torch.randint(0, 301, (40,), generator=g)
        lens[7], lens[30] = 4000, 2100
        lens[12:15] = 0
    else:
        lens = torch.randint(0, 601, (600,), generator=g)
        lens[100:103] = 0
    check_packed_gluon_forward(lens.tolist(), True, g, tail=5)


@pytest.mark.skipif(not GLUON_VARLEN, reason="no packed Gluon forward in this build (Triton 3.8)")
@pytest.mark.parametrize("causal", [False, True], ids=["dense", "causal"])
def test_gluon_forward_no_sequences_only_tail(causal):
    """cu_seqlens = [0] (B = 0) over 4,096 rows: every row is tail, written as zeros by the
    packed Gluon forward (enough tiles for it: 32 heads), into a poisoned allocator. (The
    packed causal order by levels divides by B: B = 0 takes the sequence-by-sequence order.)"""
    from conftest import launched_kernels

    g = torch.Generator().manual_seed(23 + causal)
    q, k, v = (torch.randn(4096, 32, 128, generator=g).to("cuda", torch.bfloat16)
               for _ in range(3))
    cu = torch.zeros(1, dtype=torch.int32, device="cuda")

    def run():
        torch.empty(q.shape, dtype=q.dtype, device="cuda").fill_(float("nan"))  # poison
        return sigmoid_attention_varlen(q, k, v, cu, cu, 1, 1, is_causal=causal)

    assert "sigmoid_attn_fwd_gluon_persistent" in launched_kernels(run)
    out = run()
    torch.cuda.synchronize()
    assert (out == 0).all(), "rows past cu_seqlens[B] not zero"


@pytest.mark.parametrize("gluon", [True, False], ids=["gluon", "triton"])
@pytest.mark.parametrize("causal", [False, True], ids=["dense", "causal"])
def test_max_seqlen_cuts_longer_sequences_on_the_gpu(causal, gluon):
    """A max_seqlen below a sequence's length (ill-formed input, which strict mode rejects) cuts
    it, as the CPU path does: the keys past it are not attended and the rows up to it match the
    reference's cut, forward and backward, through the Gluon kernels (hd128) and the Triton
    ones. The rows past it are unspecified (the Triton kernels leave them unwritten, their
    32-bit row offsets bounded by max_seqlen); the Gluon kernels write zeros there."""
    lens = [300, 100, 257]
    # 32 heads: enough tiles for the packed Gluon forward (under one wave of them the dispatcher
    # takes the small-problem Triton tile, which leaves the rows past the cut unwritten)
    H, D, cut = 32, 128, 200
    g = torch.Generator().manual_seed(41 + causal)
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", torch.bfloat16)  # noqa: E731
    n = sum(lens)
    q, k, v, grad = mk(n, H, D), mk(n, H, D), mk(n, H, D), mk(n, H, D)
    cu = cu_of(lens)
    starts = cu.tolist()[:-1]
    kept = torch.cat([torch.arange(s, s + min(L, cut)) for s, L in zip(starts, lens)]).cuda()
    past = torch.cat([torch.arange(s + cut, s + L) for s, L in zip(starts, lens) if L > cut])
    opts = dict(gluon_forward=gluon, gluon_backward=gluon)
    ins = [t.clone().requires_grad_() for t in (q, k, v)]
    with sigmoid_attn.kernel_options(**opts):
        out = sigmoid_attention_varlen(*ins, cu, cu, cut, cut, is_causal=causal)
        out.backward(grad)
    ref_ins = [t.double().requires_grad_() for t in (q, k, v)]
    want = ref64(*ref_ins, cu, cu, cut, cut, is_causal=causal)
    want.backward(grad.double())
    assert rel_err(out[kept], want[kept]) < REL_TOL[torch.bfloat16]
    for name, a, b in zip(("dq", "dk", "dv"), [t.grad for t in ins], [t.grad for t in ref_ins]):
        assert rel_err(a[kept], b[kept]) < REL_TOL[torch.bfloat16] * 1.5, name
        if gluon:
            assert (a[past.cuda()] == 0).all(), f"{name}: rows past max_seqlen not zero"
    if gluon:
        assert (out[past.cuda()] == 0).all(), "output rows past max_seqlen not zero"
        from conftest import launched_kernels

        fresh = [t.clone().requires_grad_() for t in (q, k, v)]
        with sigmoid_attn.kernel_options(**opts):
            names = launched_kernels(lambda: sigmoid_attention_varlen(
                *fresh, cu, cu, cut, cut, is_causal=causal).backward(grad))
        assert any("fwd_gluon" in n for n in names), names
        assert any("bwd_gluon" in n for n in names), names


@pytest.mark.parametrize("var", BWD, ids=[v["name"] for v in BWD])
def test_varlen_backward_variant(var):
    g = torch.Generator().manual_seed(var["head_dim"] + 5 * var["causal"] + var["score_mod"])
    q0, k0, v0, cu_q, cu_k, mq, mk, dtype, kw = problem(var, g)
    grad = torch.randn(q0.shape, generator=g).to("cuda", dtype)
    mod0 = kw.pop("score_mod")
    ins = [t.clone().requires_grad_() for t in (q0, k0, v0)]
    mod = mod0.clone().requires_grad_() if mod0 is not None else None
    torch.empty_like(q0).fill_(float("nan"))
    sigmoid_attention_varlen(*ins, cu_q, cu_k, mq, mk, score_mod=mod, **kw).backward(grad)
    ref_ins = [t.double().requires_grad_() for t in (q0, k0, v0)]
    ref_mod = mod0.double().requires_grad_() if mod0 is not None else None
    ref64(*ref_ins, cu_q, cu_k, mq, mk, score_mod=ref_mod, **kw).backward(grad.double())
    got = [t.grad for t in ins] + ([mod.grad] if mod is not None else [])
    want = [t.grad for t in ref_ins] + ([ref_mod.grad] if mod is not None else [])
    for name, a, b in zip("dq dk dv dmod".split(), got, want):
        assert not torch.isnan(a).any(), name
        assert rel_err(a, b) < REL_TOL[dtype] * 1.5, name
    assert (got[0][int(cu_q[-1]):] == 0).all()
    assert (got[1][int(cu_k[-1]):] == 0).all() and (got[2][int(cu_k[-1]):] == 0).all()


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_equals_dense_padded(causal):
    g = torch.Generator().manual_seed(3)
    lens = [1000, 17, 0, 513, 129]
    B, T, H, D = len(lens), max(lens), 8, 128
    q, k, v = (torch.randn(B, T, H, D, generator=g).to("cuda", torch.bfloat16) for _ in range(3))
    L = torch.tensor(lens, dtype=torch.int32, device="cuda")
    dense = sigmoid_attention(q, k, v, seq_lens_q=L, seq_lens_k=L, is_causal=causal)
    pack = lambda x: torch.cat([x[b, :n] for b, n in enumerate(lens)])
    cu = cu_of(lens)
    out = sigmoid_attention_varlen(pack(q), pack(k), pack(v), cu, cu, T, T, is_causal=causal)
    # Same tiles and per-row arithmetic; only the compiled variant differs.
    assert rel_err(out, pack(dense)) < 5e-3


def test_varlen_many_sequences_and_graph_replay_with_new_cu_seqlens():
    g = torch.Generator().manual_seed(4)
    n, H, D = 700, 4, 64  # more sequences than one 256-entry schedule chunk
    lens = torch.randint(0, 40, (n,), generator=g).tolist()
    replays = [torch.randint(0, 40, (n,), generator=torch.Generator().manual_seed(seed)).tolist()
               for seed in range(3)]
    # Every replay's lengths fit in the buffers, with a padding tail longer than max_seqlen.
    total = max(map(sum, [lens] + replays)) + 300
    q, k, v = (torch.randn(total, H, D, generator=g).to("cuda", torch.float16) for _ in range(3))
    cu = cu_of(lens)
    out = sigmoid_attention_varlen(q, k, v, cu, cu, 40, 40, is_causal=True)
    assert rel_err(out, ref64(q, k, v, cu, cu, 40, 40, is_causal=True)) < REL_TOL[torch.float16]

    static_cu = cu.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        sigmoid_attention_varlen(q, k, v, static_cu, static_cu, 40, 40)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = sigmoid_attention_varlen(q, k, v, static_cu, static_cu, 40, 40)
    for lens2 in replays:
        static_cu.copy_(cu_of(lens2))
        static_out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        eager = sigmoid_attention_varlen(q, k, v, static_cu, static_cu, 40, 40)
        assert torch.equal(static_out, eager)
        assert rel_err(eager, ref64(q, k, v, static_cu, static_cu, 40, 40)) < REL_TOL[torch.float16]
        assert (eager[sum(lens2):] == 0).all(), "the padding tail is written as zeros"


def test_varlen_fp32_is_full_precision():
    g = torch.Generator().manual_seed(5)
    lens = [200, 77]
    q, k, v = (torch.randn(sum(lens), 4, 64, generator=g).cuda() for _ in range(3))
    cu = cu_of(lens)
    out = sigmoid_attention_varlen(q, k, v, cu, cu, 200, 200)
    # IEEE fp32 dot products (not TF32, whose 10-bit mantissa would give ~1e-3).
    assert rel_err(out, ref64(q, k, v, cu, cu, 200, 200)) < 1e-5
