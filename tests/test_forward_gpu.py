"""Every compiled CUDA variant against the float64 reference (run on an H100 or H200; skipped
without CUDA). Outputs are poisoned: the caching allocator is handed a NaN-filled block of the
output's size just before each call, so an unwritten element shows up as NaN."""

import itertools

import pytest
import torch

from conftest import (REL_TOL, dtype_code, heads_to_fill, key_masks, launched_kernels,
                      library_function, padded_inputs, rel_err, served_head_dim)

pytestmark = pytest.mark.gpu

if torch.cuda.is_available():
    import sigmoid_attn
    from sigmoid_attn import sigmoid_attention, sigmoid_attention_reference

    CATALOG = [v for v in sigmoid_attn.info()["variants"] if v["kind"] == "fwd" and not v["varlen"]]
    WS_CATALOG = [v for v in sigmoid_attn.info()["variants"] if v["kind"] == "fwd_ws"]
    GLUON_CATALOG = [v for v in sigmoid_attn.info()["variants"] if v["kind"] == "fwd_gluon"]
else:
    CATALOG, WS_CATALOG, GLUON_CATALOG = [], [], []

DT = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def poison_like(shape, dtype):
    torch.empty(shape, dtype=dtype, device="cuda").fill_(float("nan"))  # freed at once


def ref64(q, k, v, **kw):
    """The float64 reference, a few K/V heads at a time (with their query heads), so that its
    score matrices stay near 512 MB: the large Gluon cases (hd256, T = 4096) beside the other
    GPU tests of a pytest -n run would otherwise run the GPU out of memory."""
    kw = {key: (val.double() if torch.is_tensor(val) and val.is_floating_point() else val)
          for key, val in kw.items()}
    B, Tq, Hq, _ = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    group = Hq // Hkv
    step = max(1, (512 << 20) // max(1, B * group * Tq * Tk * 8))
    parts = [sigmoid_attention_reference(q[:, :, h * group:(h + step) * group].double(),
                                         k[:, :, h:h + step].double(),
                                         v[:, :, h:h + step].double(), **kw)
             for h in range(0, Hkv, step)]
    return torch.cat(parts, dim=2)


def check(q, k, v, tol, **kw):
    poison_like((q.shape[0], q.shape[1], q.shape[2], q.shape[3]), q.dtype)
    out = sigmoid_attention(q, k, v, **kw)
    torch.cuda.synchronize()
    assert not torch.isnan(out).any(), "unwritten (poisoned) output elements"
    ref = ref64(q, k, v, **kw)
    err = rel_err(out, ref)
    assert err < tol, f"rel err {err:.3e} >= {tol:.1e}"
    lq = kw.get("seq_lens_q")
    if lq is not None:
        for b, L in enumerate(lq.clamp(0, q.shape[1]).tolist()):
            assert (out[b, L:] == 0).all(), "padded rows must be exactly zero"
    return out, err


@pytest.mark.parametrize("B", [1, 7, 64, 65, 130])
@pytest.mark.parametrize("causal", [False, True])
def test_padded_batch_sizes_and_the_program_order(B, causal):
    """The causal longest-first program order (tiles.json fwd_causal_lpt: heads in groups, a
    smaller remainder group first): every program must still land on its own (sequence, head,
    block); non-causal, the launch order with the same batches. Lengths with ties and zeros; q
    and k lengths differ."""
    g = torch.Generator().manual_seed(B * 2 + causal)
    dtype = torch.bfloat16
    T = 200
    q, k, v = (torch.randn(B, T, 3, 64, generator=g).to("cuda", dtype) for _ in range(3))
    lk = torch.randint(0, T + 1, (B,), generator=g, dtype=torch.int32)
    lk[: B // 3] = lk[0]  # ties
    lq = torch.randint(0, T + 1, (B,), generator=g, dtype=torch.int32)
    check(q, k, v, REL_TOL[dtype], seq_lens_q=lq.cuda(), seq_lens_k=lk.cuda(), is_causal=causal)


@pytest.mark.parametrize("var", CATALOG, ids=[v["name"] for v in CATALOG])
def test_variant_matches_reference(var):
    g = torch.Generator().manual_seed(var["head_dim"] * 7 + var["causal"] * 3 + var["score_mod"])
    dtype, D = DT[var["dtype"]], served_head_dim(var, CATALOG)  # (a generic kernel: below BLOCK_D)
    B, Tq, Tk, Hq, Hkv = 4, 300, 333, 4, 2
    lq = torch.tensor([Tq, 0, 17, 129], dtype=torch.int32)
    lk = torch.tensor([Tk, 5, 1, 200], dtype=torch.int32)
    if var["min_t"] > 0:  # a long-sequence tile bucket: only dispatched for Tq >= min_t
        B, Tq, Tk, Hq, Hkv = 2, var["min_t"] + 17, var["min_t"] + 50, 2, 1
        lq = torch.tensor([Tq, Tq - 300], dtype=torch.int32)
        lk = torch.tensor([Tk, 4000], dtype=torch.int32)
    elif var["min_t"] == 0:  # not the small-problem tile: a grid that fills the GPU
        Hq = heads_to_fill(-(-Tq // var["block_m"]) * B, Hkv)
    # (min_t == -1, the small-problem tile: the grid above is smaller than the GPU)
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", dtype)
    q, k, v = mk(B, Tq, Hq, D), mk(B, Tk, Hkv, D), mk(B, Tk, Hkv, D)
    mod = torch.randn(B, Tk, generator=g).cuda() if var["score_mod"] else None
    check(q, k, v, REL_TOL[dtype], seq_lens_q=lq.cuda(), seq_lens_k=lk.cuda(),
          is_causal=var["causal"], score_mod=mod)


@pytest.mark.parametrize("T", [1, 17, 129, 1000, 2048])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("D", [64, 128])
def test_odd_lengths_full_and_random_padding(T, causal, D):
    g = torch.Generator().manual_seed(T + D)
    dtype = torch.bfloat16
    q, k, v = (torch.randn(3, T, 8, D, generator=g).to("cuda", dtype) for _ in range(3))
    check(q, k, v, REL_TOL[dtype], is_causal=causal)
    lens = torch.randint(0, T + 1, (3,), generator=g, dtype=torch.int32).cuda()
    check(q, k, v, REL_TOL[dtype], seq_lens_q=lens, seq_lens_k=lens, is_causal=causal)


# The common model head dims compiled beyond the powers of two (16, 40, ...), and ones only the
# generic kernels serve (24: BLOCK_D 32; 56 and 72 around a compiled 64; 200: BLOCK_D 256).
HEAD_DIMS = [16, 24, 40, 48, 56, 72, 80, 112, 160, 192, 200]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("T", [1, 17, 129, 300])
@pytest.mark.parametrize("causal", [False, True], ids=["dense", "causal"])
@pytest.mark.parametrize("D", HEAD_DIMS)
def test_head_dims_match_reference(D, causal, T, dtype):
    """Head dims that are multiples of 8 up to 256, compiled or generic: full and padded lengths,
    GQA, poisoned outputs, and inputs whose rows continue past D with NaN (masked loads)."""
    g = torch.Generator().manual_seed(D * 31 + T * 2 + causal)
    B, Hq, Hkv = 3, 4, 2
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", dtype)
    q, k, v = mk(B, T, Hq, D), mk(B, T, Hkv, D), mk(B, T, Hkv, D)
    check(q, k, v, REL_TOL[dtype], is_causal=causal)
    lens = torch.randint(0, T + 1, (B,), generator=g, dtype=torch.int32)
    lens[0] = T
    check(q, k, v, REL_TOL[dtype], seq_lens_q=lens.cuda(), seq_lens_k=lens.cuda(),
          is_causal=causal)
    # inputs as views of wider rows whose tail is NaN: a load past D would poison the output
    wide = lambda t: torch.cat([t, torch.full_like(t[..., :8], float("nan"))], -1)[..., :D]
    check(wide(q), wide(k), wide(v), REL_TOL[dtype], is_causal=causal)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layouts_bhtd_view_misaligned_and_gqa(dtype):
    g = torch.Generator().manual_seed(5)
    B, H, T, D = 2, 8, 257, 128
    base = [torch.randn(B, H, T, D, generator=g).to("cuda", dtype) for _ in range(3)]
    q, k, v = (t.transpose(1, 2) for t in base)  # SDPA layout seen as [B, T, H, D]
    assert not q.is_contiguous()
    check(q, k, v, REL_TOL[dtype], is_causal=True)
    # A base pointer off by one element (2 bytes): the launcher realigns with a copy.
    flat = torch.randn(B * T * H * D + 1, generator=g).to("cuda", dtype)
    qm = flat[1:].view(B, T, H, D)
    assert qm.data_ptr() % 16 != 0
    check(qm, qm, qm, REL_TOL[dtype])
    # GQA / MQA: K/V heads shared without expansion.
    for hkv in (2, 1):
        kk = torch.randn(B, T, hkv, D, generator=g).to("cuda", dtype)
        check(q, kk, kk, REL_TOL[dtype], sigmoid_bias=-2.0)


def test_bias_forms_and_score_mod_dtypes():
    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(2, 100, 4, 64, generator=g).to("cuda", torch.float16) for _ in range(3))
    tol = REL_TOL[torch.float16]
    check(q, k, v, tol, sigmoid_bias=torch.tensor([-1.0, 0.5], device="cuda"))
    check(q, k, v, tol, sigmoid_bias=torch.tensor([-1.0, 0.5], device="cuda", dtype=torch.float16))
    check(q, k, v, tol, score_mod=torch.randn(2, 100, generator=g).cuda().half(), scale=0.05)
    mod_t = torch.randn(100, 2, generator=g).cuda().t()  # non-contiguous score_mod
    check(q, k, v, tol, score_mod=mod_t)


def test_cuda_agrees_with_cpp_cpu_path():
    g = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(2, 190, 4, 64, generator=g).to(torch.bfloat16) for _ in range(3))
    lens = torch.tensor([190, 77], dtype=torch.int32)
    cpu = sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens, is_causal=True)
    gpu = sigmoid_attention(q.cuda(), k.cuda(), v.cuda(), seq_lens_q=lens.cuda(),
                            seq_lens_k=lens.cuda(), is_causal=True)
    assert rel_err(gpu, cpu.float()) < REL_TOL[torch.bfloat16]


def test_side_stream_and_cuda_graph_replay_with_new_lengths():
    g = torch.Generator().manual_seed(13)
    q, k, v = (torch.randn(2, 256, 8, 64, generator=g).to("cuda", torch.bfloat16) for _ in range(3))
    lens = torch.tensor([256, 100], dtype=torch.int32, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        out_side = sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens)
    torch.cuda.current_stream().wait_stream(s)
    eager = sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens)
    assert torch.equal(out_side, eager)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens)
    for new in ([256, 100], [3, 250], [0, 1]):
        lens.copy_(torch.tensor(new, dtype=torch.int32))
        graph.replay()
        want = sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens)
        torch.cuda.synchronize()
        assert torch.equal(static_out, want), new


def test_forward_is_bitwise_deterministic():
    g = torch.Generator().manual_seed(17)
    q, k, v = (torch.randn(2, 1000, 8, 128, generator=g).to("cuda", torch.bfloat16) for _ in range(3))
    a = sigmoid_attention(q, k, v, is_causal=True)
    b = sigmoid_attention(q, k, v, is_causal=True)
    assert torch.equal(a, b)


def test_opcheck_cuda():
    g = torch.Generator().manual_seed(19)
    q, k, v = (torch.randn(2, 40, 4, 64, generator=g).to("cuda", torch.float16) for _ in range(3))
    lens = torch.tensor([40, 9], dtype=torch.int32, device="cuda")
    torch.library.opcheck(torch.ops.sigmoid_attn.forward.default,
                          (q, k, v, lens, lens, True, None, None, None, None))


def selected_forward(dtype, D, causal, score_mod, varlen, max_q, Tq, B, Hq, ws, gluon=False):
    """The catalog name of the forward the dispatcher takes for a problem on this GPU (gluon:
    the call is one the Gluon forward covers beyond its variant flags)."""
    f = library_function("sigmoid_attn_select_forward_kernel")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    i = f(dtype_code(dtype), D, causal, score_mod, varlen, max_q, Tq, B, Hq, sms, ws, gluon)
    assert i >= 0, "no forward compiled for this problem"
    return sigmoid_attn.info()["variants"][i]["name"]


def ws_switch(on):
    """Sets whether the dispatcher takes the warp-specialized forward (default: tiles.json's
    fwd_ws_dispatch, or SIGMOID_ATTN_WARP_SPECIALIZED for a process); returns the setting
    before."""
    return library_function("sigmoid_attn_warp_specialized")(on)


@pytest.fixture
def warp_specialized_dispatch():
    before = ws_switch(1)
    yield
    ws_switch(before)


@pytest.mark.parametrize("var", WS_CATALOG, ids=[v["name"] for v in WS_CATALOG])
def test_warp_specialized_variant_matches_reference(var, warp_specialized_dispatch):
    """Each compiled warp-specialized forward, through the dispatcher: a grid that fills the GPU
    (not the small-problem tile), odd lengths with a zero one, GQA, causal, score_mod, packed
    batches with tail rows; poisoned outputs. The dispatcher's choice for the problem is this
    variant (the outputs cannot tell: both forwards sum the same products in the same order, and
    came out bitwise equal on the H100). Against the other forward: equal within the tolerance.
    Row offsets in the kernel are what Triton's data partitioning got wrong once (rows 64..127
    of each block unwritten): the poison and the reference catch that."""
    from sigmoid_attn import sigmoid_attention_varlen, sigmoid_attention_varlen_reference

    g = torch.Generator().manual_seed(var["head_dim"] * 7 + var["causal"] * 3 + var["score_mod"])
    dtype, D = DT[var["dtype"]], var["head_dim"]
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", dtype)
    if not var["varlen"]:
        B, Tq, Tk, Hkv = 4, 300, 333, 2
        Hq = heads_to_fill(-(-Tq // var["block_m"]) * B, Hkv)
        q, k, v = mk(B, Tq, Hq, D), mk(B, Tk, Hkv, D), mk(B, Tk, Hkv, D)
        lq = torch.tensor([Tq, 0, 17, 129], dtype=torch.int32, device="cuda")
        lk = torch.tensor([Tk, 5, 1, 200], dtype=torch.int32, device="cuda")
        # score_mod rows 16-byte aligned (a [B, Tk] view of [B, 336]): what the kernel's 1-D
        # descriptors read; an unaligned one takes the other forward
        mod = (torch.randn(B, 336, generator=g).cuda()[:, :Tk] if var["score_mod"] else None)
        out, _ = check(q, k, v, REL_TOL[dtype], seq_lens_q=lq, seq_lens_k=lk,
                       is_causal=var["causal"], score_mod=mod)
        before = ws_switch(0)
        other = sigmoid_attention(q, k, v, seq_lens_q=lq, seq_lens_k=lk, is_causal=var["causal"],
                                  score_mod=mod)
        ws_switch(before)
        picked = selected_forward(dtype, D, var["causal"], var["score_mod"], False, Tq, Tq, B,
                                  Hq, True)
    else:
        lens_q, lens_k = [300, 0, 17, 129, 1, 64], [333, 5, 1, 200, 1, 64]
        Hkv = 2
        Hq = heads_to_fill(sum(lens_q) // var["block_m"] + len(lens_q) + 1, Hkv)
        cu = lambda L: torch.tensor([0] + torch.tensor(L).cumsum(0).tolist(), dtype=torch.int32,
                                    device="cuda")
        cq, ck = cu(lens_q), cu(lens_k)
        q = mk(sum(lens_q) + 5, Hq, D)
        k, v = mk(sum(lens_k) + 3, Hkv, D), mk(sum(lens_k) + 3, Hkv, D)
        args = (q, k, v, cq, ck, max(lens_q), max(lens_k))
        poison_like(q.shape, dtype)
        out = sigmoid_attention_varlen(*args, is_causal=var["causal"])
        torch.cuda.synchronize()
        assert not torch.isnan(out).any(), "unwritten (poisoned) output elements"
        ref = sigmoid_attention_varlen_reference(*(t.double() for t in args[:3]), *args[3:],
                                                 is_causal=var["causal"])
        assert rel_err(out, ref) < REL_TOL[dtype]
        assert (out[int(cq[-1]):] == 0).all()
        before = ws_switch(0)
        other = sigmoid_attention_varlen(*args, is_causal=var["causal"])
        ws_switch(before)
        picked = selected_forward(dtype, D, var["causal"], False, True, max(lens_q), q.shape[0],
                                  len(lens_q), Hq, True)
    assert picked == var["name"], f"the dispatcher takes {picked}, not {var['name']}"
    assert rel_err(out, other.double()) < REL_TOL[dtype]



# ----------------------------------------------------------------------------------------------
# The Gluon forward (kind fwd_gluon, persistent: dense, causal only with Tq == Tk, no score_mod,
# no lengths, no bias tensor, operands TMA reads as [B, T, H*D]; built with Triton 3.8 only)
# ----------------------------------------------------------------------------------------------

GLUON_DIMS = sorted({v["head_dim"] for v in GLUON_CATALOG})
# (head dim, causal) of the compiled Gluon forwards, without lengths and with (causal only with
# two consumer warpgroups: hd64's three are not)
GLUON_CASES = sorted({(v["head_dim"], v["causal"]) for v in GLUON_CATALOG if not v["score_mod"]})
GLUON_PADDED_CASES = sorted({(v["head_dim"], v["causal"]) for v in sigmoid_attn.info()["variants"]
                             if v["kind"] == "fwd_gluon_padded" and not v["varlen"]}
                            if GLUON_CATALOG else set())
CASE_IDS = [f"{'causal' if c else 'dense'}-{d}" for d, c in GLUON_CASES]
requires_gluon = pytest.mark.skipif(not GLUON_CATALOG,
                                    reason="no Gluon forward in this build (Triton 3.8 only)")


def gluon_switch(on):
    """Sets whether the dispatcher takes the Gluon forward (default: tiles.json's
    fwd_gluon_dispatch, or SIGMOID_ATTN_GLUON_FORWARD); returns the setting before."""
    return library_function("sigmoid_attn_gluon_forward")(on)


@pytest.fixture
def gluon_dispatch():
    before = gluon_switch(1)
    yield
    gluon_switch(before)


def gluon_heads(B, T, D, at_least=8, multiple_of=1):
    """Heads for a call the Gluon forward is dispatched for (one tile per SM at least:
    cdiv(T, BLOCK_M) * H * B), at least `at_least`."""
    (bm,) = {v["block_m"] for v in GLUON_CATALOG if v["head_dim"] == D}
    return max(at_least, heads_to_fill(-(-T // bm) * B, multiple_of))


def other_forward(fn):
    """fn() with the Gluon forward switched off: the kernel the call took before it existed."""
    before = gluon_switch(0)
    try:
        return fn()
    finally:
        gluon_switch(before)


@requires_gluon
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("T", [1, 17, 129, 1000, 1024, 4096])
@pytest.mark.parametrize("D,causal", GLUON_CASES, ids=CASE_IDS)
def test_gluon_forward_matches_reference(causal, T, B, D, dtype, gluon_dispatch):
    """Through the dispatcher, on a problem with a tile per SM at least (so it is the Gluon
    kernel: asserted from the dispatcher's own choice), dense and causal: odd lengths and T = 1
    (the descriptors' zero fill past T for K and V, the clipped stores of Q's rows past T, the
    causal diagonal block masked: poisoned outputs catch unwritten rows, the reference wrong
    ones), whole blocks (1024), the persistent schedule's several tiles per program (4096), the
    default bias -log(T), a scalar bias with a custom scale; and the other forward on the same
    inputs, within the tolerance."""
    g = torch.Generator().manual_seed(T * 10 + B + D + causal)
    H = gluon_heads(B, T, D)
    q, k, v = (torch.randn(B, T, H, D, generator=g).to("cuda", dtype) for _ in range(3))
    picked = selected_forward(dtype, D, causal, False, False, T, T, B, H, True, True)
    dt = {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    assert picked.startswith(f"fwd_gluon_{dt}_d{D}_" + ("causal_" if causal else "m")), picked
    out, _ = check(q, k, v, REL_TOL[dtype], is_causal=causal)
    other = other_forward(lambda: sigmoid_attention(q, k, v, is_causal=causal))
    assert rel_err(out, other.double()) < REL_TOL[dtype]
    check(q, k, v, REL_TOL[dtype], is_causal=causal, sigmoid_bias=-1.5, scale=0.07)
    check(q, k, v, REL_TOL[dtype], is_causal=causal, sigmoid_bias=0.25)


@requires_gluon
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("T", [129, 1024, 2048])
@pytest.mark.parametrize("D,causal", GLUON_PADDED_CASES,
                         ids=[f"{'causal' if c else 'dense'}-{d}" for d, c in GLUON_PADDED_CASES])
def test_gluon_forward_padded_matches_reference(causal, T, D, dtype, gluon_dispatch):
    """Padded batches (lengths for queries and keys, the default bias -log(Lk) per sequence)
    through the Gluon forward with lengths (kind fwd_gluon_padded: the profiler sees the Gluon
    kernel, not the Triton forwards): lengths 0, 1, 17, 129, T and ones ending inside a key
    block, NaN in every padded row of q, k and v (never read: the last key block's V rows past
    Lk are zeroed before P·V), poisoned outputs; rows past a length exactly zero. The reference
    and the other forward run on the same inputs with zeros in the padding."""
    g = torch.Generator().manual_seed(T + D + causal)
    lens_list = [min(L, T) for L in (T, 0, 1, 17, 129, T - 3, T // 2 + 5, 100)]
    B = len(lens_list)
    H = gluon_heads(B, T, D)
    lens = torch.tensor(lens_list, dtype=torch.int32, device="cuda")
    (q, k, v), (qn, kn, vn) = padded_inputs(B, T, H, D, dtype, g, lens_list)
    run = lambda: sigmoid_attention(qn, kn, vn, seq_lens_q=lens, seq_lens_k=lens,
                                    is_causal=causal)
    names = launched_kernels(run)
    assert "sigmoid_attn_fwd_gluon_persistent" in names, names
    poison_like(q.shape, dtype)
    out = run()
    torch.cuda.synchronize()
    assert not torch.isnan(out).any(), "NaN from the padding, or unwritten output elements"
    ref = ref64(q, k, v, seq_lens_q=lens, seq_lens_k=lens, is_causal=causal)
    assert rel_err(out, ref) < REL_TOL[dtype]
    for b, L in enumerate(lens_list):
        assert (out[b, L:] == 0).all(), "padded rows must be exactly zero"
    other = other_forward(lambda: sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens,
                                                    is_causal=causal))
    assert rel_err(out, other.double()) < REL_TOL[dtype]
    # int64 lengths (converted on the device) take it too; a scalar bias does not (the kernel
    # derives the default bias per sequence), nor lengths for keys only: both still right.
    out64 = sigmoid_attention(qn, kn, vn, seq_lens_q=lens.long(), seq_lens_k=lens.long(),
                              is_causal=causal)
    assert torch.equal(out64, out)
    check(q, k, v, REL_TOL[dtype], seq_lens_q=lens, seq_lens_k=lens, is_causal=causal,
          sigmoid_bias=-2.0)
    check(q, k, v, REL_TOL[dtype], seq_lens_k=lens)


# Non-causal calls with lengths run a tile's last key block at half width (64 of its 128 keys)
# where it holds at most 64 keys and the tile has two or more blocks.
HALF_BLOCK_DIMS = sorted({d for d, c in GLUON_PADDED_CASES if not c})


@requires_gluon
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("D", HALF_BLOCK_DIMS)
def test_gluon_forward_half_width_last_key_block(D, packed, gluon_dispatch):
    """Key lengths on both sides of the half-width last block: 192 and 320 (64 keys in the last
    block: half width), 193 and 321 (65: whole), 129 (1 key past a block), 200, 255, 64 (a
    single block: whole), with query lengths that differ from them (padded) so a tile's rows
    and keys end apart; NaN in every padded row (padded) and in the rows past the last sequence
    (packed), where the half block's unread second half holds the next sequence's keys; poisoned
    outputs, against float64."""
    from sigmoid_attn import sigmoid_attention_varlen, sigmoid_attention_varlen_reference

    g = torch.Generator().manual_seed(D + 11 * packed)
    dtype, T = torch.bfloat16, 384
    lens_k = [192, 320, 193, 321, 129, 200, 255, 64]
    lens_q = lens_k if packed else [T, 100, 193, 1, 321, 384, 17, 64]
    B = len(lens_k)
    H = gluon_heads(B, T, D, at_least=12)  # (the Gluon forward's grid: a tile per SM at least)
    if packed:
        cu = torch.tensor([0] + list(itertools.accumulate(lens_k)), dtype=torch.int32,
                          device="cuda")
        n = int(cu[-1])
        q, k, v = (torch.randn(n + 7, H, D, generator=g).to("cuda", dtype) for _ in range(3))
        for t in (q, k, v):
            t[n:] = float("nan")
        run = lambda: sigmoid_attention_varlen(q, k, v, cu, cu, T, T)  # noqa: E731
        names = launched_kernels(run)
        poison_like(q.shape, dtype)
        out = run()
        torch.cuda.synchronize()
        assert not torch.isnan(out[:n]).any(), "NaN from the tail, or unwritten output"
        expect = sigmoid_attention_varlen_reference(q[:n].double(), k[:n].double(),
                                                    v[:n].double(), cu, cu, T, T)
        assert rel_err(out[:n], expect) < REL_TOL[dtype]
    else:
        lq = torch.tensor(lens_q, dtype=torch.int32, device="cuda")
        lk = torch.tensor(lens_k, dtype=torch.int32, device="cuda")
        (q,), (qn,) = padded_inputs(B, T, H, D, dtype, g, lens_q, n=1)
        (k, v), (kn, vn) = padded_inputs(B, T, H, D, dtype, g, lens_k, n=2)
        run = lambda: sigmoid_attention(qn, kn, vn, seq_lens_q=lq, seq_lens_k=lk)  # noqa: E731
        names = launched_kernels(run)
        poison_like(q.shape, dtype)
        out = run()
        torch.cuda.synchronize()
        assert not torch.isnan(out).any(), "NaN from the padding, or unwritten output elements"
        expect = ref64(q, k, v, seq_lens_q=lq, seq_lens_k=lk)
        assert rel_err(out, expect) < REL_TOL[dtype]
        for b, L in enumerate(lens_q):
            assert (out[b, L:] == 0).all(), "rows past a length must be exactly zero"
    assert "sigmoid_attn_fwd_gluon_persistent" in names, names


@requires_gluon
@pytest.mark.parametrize("D", GLUON_DIMS)
def test_gluon_forward_gqa_cross_lengths_and_strided_rows(D, gluon_dispatch):
    """What it covers beyond the plain case: GQA and MQA (K/V head h // kv_group, no expansion),
    Tq != Tk (key tail at T_K, query rows clipped at T_Q), q/k/v as slices of one fused
    projection [B, T, 3, H, D] (rows of 3*H*D elements: the descriptors take any 16-byte row
    and batch strides)."""
    g = torch.Generator().manual_seed(D)
    dtype = torch.bfloat16
    B, T = 2, 777
    H = gluon_heads(B, T, D, at_least=16, multiple_of=8)
    q = torch.randn(B, T, H, D, generator=g).to("cuda", dtype)
    for hkv in (H // 2, H // 8, 1):
        k, v = (torch.randn(B, T, hkv, D, generator=g).to("cuda", dtype) for _ in range(2))
        check(q, k, v, REL_TOL[dtype])
        check(q, k, v, REL_TOL[dtype], sigmoid_bias=-3.0)
        check(q, k, v, REL_TOL[dtype], is_causal=True)
    for tk in (1, 100, 1500):
        k, v = (torch.randn(B, tk, H // 4, D, generator=g).to("cuda", dtype) for _ in range(2))
        check(q, k, v, REL_TOL[dtype])
    fused = torch.randn(B, T, 3, H, D, generator=g).to("cuda", dtype)
    qf, kf, vf = fused.unbind(2)
    assert qf.stride(1) == 3 * H * D and qf.stride(2) == D
    check(qf, kf, vf, REL_TOL[dtype])
    check(qf, kf, vf, REL_TOL[dtype], is_causal=True)


@requires_gluon
@pytest.mark.parametrize("D", GLUON_DIMS)
def test_gluon_forward_ineligible_calls_take_the_other_kernel(D, gluon_dispatch):
    """With the Gluon forward on, the calls it does not cover are still right (they take the
    other forwards, or with lengths for both its padded kind): lengths (causal too), lengths for
    keys only, causal with Tq != Tk, score_mod and a bias tensor (the Gluon forward's own
    since it reads them: test_gluon_forward_score_mod_and_bias_tensor), SDPA's
    [B, H, T, D] tensors seen as [B, T, H, D] (head stride T*D: the Gluon forward's rank-4
    descriptors take it too), a misaligned base, an
    empty key set, fewer tiles than SMs."""
    g = torch.Generator().manual_seed(D + 1)
    dtype = torch.float16
    B, T = 3, 300
    H = gluon_heads(B, T, D, multiple_of=2)
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", dtype)
    q, k, v = mk(B, T, H, D), mk(B, T, H, D), mk(B, T, H, D)
    tol = REL_TOL[dtype]
    lens = torch.tensor([T, 17, 0], dtype=torch.int32, device="cuda")
    check(q, k, v, tol, seq_lens_q=lens, seq_lens_k=lens)
    check(q, k, v, tol, seq_lens_k=lens)
    check(q, k, v, tol, seq_lens_q=lens, seq_lens_k=lens, is_causal=True)
    check(q, k[:, :T - 77], v[:, :T - 77], tol, is_causal=True)
    check(q[:, :T - 77], k, v, tol, is_causal=True)
    check(q, k, v, tol, score_mod=torch.randn(B, T, generator=g).cuda())
    check(q, k, v, tol, sigmoid_bias=torch.tensor([-1.0, 0.5, -4.0], device="cuda"))
    bhtd = [mk(B, H, T, D).transpose(1, 2) for _ in range(3)]
    check(*bhtd, tol)
    flat = mk(B * T * H * D + 1)
    qm = flat[1:].view(B, T, H, D)
    assert qm.data_ptr() % 16 != 0
    check(qm, k, v, tol)
    out = sigmoid_attention(q, k[:, :0], v[:, :0])  # no keys: zeros, not a hang
    torch.cuda.synchronize()
    assert (out == 0).all()
    check(q[:1, :, :2], k[:1, :, :2], v[:1, :, :2], tol)  # 2 heads, 1 sequence: under one wave
    check(q[:1, :, :2], k[:1, :, :2], v[:1, :, :2], tol, is_causal=True)


GLUON_MOD = {v["head_dim"] for v in GLUON_CATALOG if v["score_mod"]}


@requires_gluon
@pytest.mark.skipif(not GLUON_MOD, reason="no Gluon forward with score_mod in this build")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("D", sorted(GLUON_MOD))
def test_gluon_forward_score_mod_and_bias_tensor(D, dtype, gluon_dispatch):
    """score_mod (per batch entry and key, added to the scores) and a bias tensor (one per
    sequence) through the Gluon forward (profiler): random finite score_mod, a key mask of
    -inf (one batch entry with every key masked: zeros), a bias tensor with and without it, key
    counts not a multiple of the key block, GQA, score_mod given in bf16 (converted); the
    SDPA-style function's boolean key mask. A row stride the kernel does not take (odd) and the
    causal calls take the other forward. Lengths or a packed batch with a scalar bias or a
    bias tensor take the Gluon kernel with lengths. Against float64, outputs poisoned."""
    from sigmoid_attn import (scaled_dot_product_sigmoid_attention, sigmoid_attention_varlen,
                              sigmoid_attention_varlen_reference)

    g = torch.Generator().manual_seed(D + (dtype == torch.float16))
    B, T = 3, 1000
    H = gluon_heads(B, T, D, multiple_of=4)
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", dtype)  # noqa: E731
    q, k, v = mk(B, T, H, D), mk(B, T, H // 4, D), mk(B, T, H // 4, D)
    tol = REL_TOL[dtype]
    mod, mask, bias = key_masks(T, g, masked_from=700)
    for kw in ({"score_mod": mod}, {"score_mod": mask}, {"score_mod": mod, "sigmoid_bias": bias},
               {"sigmoid_bias": bias}, {"score_mod": mod.bfloat16()},
               {"score_mod": mask, "sigmoid_bias": -2.0, "scale": 0.05}):
        names = launched_kernels(lambda: sigmoid_attention(q, k, v, **kw))
        assert "sigmoid_attn_fwd_gluon_persistent" in names, (kw.keys(), names)
        out, _ = check(q, k, v, tol, **kw)
        if kw.get("score_mod") is mask:
            assert (out[2] == 0).all(), "every key masked: P = 0 exactly"
    # rows an odd number of floats apart, and causal: the other forward, still right
    wide = torch.randn(B, T + 1, generator=g).cuda()
    for kw in ({"score_mod": wide[:, :T]}, {"score_mod": mod, "is_causal": True}):
        names = launched_kernels(lambda: sigmoid_attention(q, k, v, **kw))
        assert "sigmoid_attn_fwd_gluon_persistent" not in names, kw.keys()
        check(q, k, v, tol, **kw)
    # the SDPA-style function's boolean key mask: score_mod and a bias tensor
    attend = torch.rand(B, 1, 1, T, generator=g).cuda() > 0.3
    qs, ks, vs = (t.transpose(1, 2) for t in (q, k, v))
    run = lambda: scaled_dot_product_sigmoid_attention(qs, ks, vs, attn_mask=attend)  # noqa
    assert "sigmoid_attn_fwd_gluon_persistent" in launched_kernels(run)
    keep = attend.reshape(B, T)
    sm = torch.zeros(B, T, device="cuda").masked_fill(~keep, float("-inf"))
    want = ref64(q, k, v, score_mod=sm,
                 sigmoid_bias=-torch.log(keep.sum(-1).double().clamp_min(1)))
    assert rel_err(run().transpose(1, 2), want) < tol
    # lengths, packed: a scalar bias or a bias tensor through the kernel with lengths
    lens = torch.tensor([T, 17, 0], dtype=torch.int32, device="cuda")
    kv = mk(B, T, H, D), mk(B, T, H, D)
    for sb in (-2.0, bias):
        names = launched_kernels(lambda: sigmoid_attention(q, *kv, seq_lens_q=lens,
                                                           seq_lens_k=lens, sigmoid_bias=sb))
        assert "sigmoid_attn_fwd_gluon_persistent" in names
        check(q, *kv, tol, seq_lens_q=lens, seq_lens_k=lens, sigmoid_bias=sb)
    lens_p = [700, 1, 0, 129]
    n = sum(lens_p)
    cu = torch.tensor([0, 700, 701, 701, 830], dtype=torch.int32, device="cuda")
    Hp = 16  # (tiles: (830 / 128 + 5) * 16 >= the SMs)
    qp, kp, vp = (torch.randn(n + 5, Hp, D, generator=g).to("cuda", dtype) for _ in range(3))
    bias4 = torch.tensor([-1.0, 0.5, -4.0, -2.5], device="cuda")
    run = lambda: sigmoid_attention_varlen(qp, kp, vp, cu, cu, 700, 700,  # noqa: E731
                                           sigmoid_bias=bias4)
    assert "sigmoid_attn_fwd_gluon_persistent" in launched_kernels(run)
    poison_like(qp.shape, dtype)
    out = run()
    ref = sigmoid_attention_varlen_reference(qp.double(), kp.double(), vp.double(), cu, cu, 700,
                                             700, sigmoid_bias=bias4.double())
    assert torch.isfinite(out[:n]).all() and (out[n:] == 0).all()
    assert rel_err(out[:n], ref[:n]) < tol


# The split last wave: the Gluon forward variants of two consumer warpgroups up to 128 columns,
# dense and not causal, split the tiles past the last whole wave by key blocks over every SM.
SPLIT_DIMS = sorted({v["head_dim"] for v in GLUON_CATALOG if v["block_m"] == 128
                     and v["head_dim"] <= 128 and not v["causal"]})


def split_switch(on):
    return library_function("sigmoid_attn_split_wave")(on)


@requires_gluon
@pytest.mark.skipif(not SPLIT_DIMS, reason="no Gluon forward that splits its last wave")
@pytest.mark.parametrize("T,waves", [(1, 1.5), (17, 2.3), (129, 1.3), (300, 2.4), (1000, 1.1),
                                     (2048, 3.9)])
def test_gluon_forward_split_last_wave(T, waves, gluon_dispatch):
    """Tiles past the last whole wave split by key blocks over every SM (the pieces of a tile
    summed by its last program in a fixed order), for tile counts of about `waves` waves (T = 1
    and 17: one key block, so no tile is cut; 129 and 300: two and three blocks, several
    programs per tile, some programs with nothing), GQA, a scalar bias and a bias tensor,
    score_mod, T_Q != T_K. Against float64 with outputs poisoned, against the same call
    unsplit, and bitwise the same over repeated calls and a CUDA graph replay."""
    D = SPLIT_DIMS[-1]
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    B, n_m = 2, -(-T // 128)
    H = -(-int(waves * sms) // (n_m * B))
    H += (-H) % 4
    if (n_m * B * H) % sms == 0:
        H += 4
    assert n_m * B * H > sms, (T, H)
    g = torch.Generator().manual_seed(T)
    mk = lambda *s: torch.randn(*s, generator=g).to("cuda", torch.bfloat16)  # noqa: E731
    q, k, v = mk(B, T, H, D), mk(B, T, H // 4, D), mk(B, T, H // 4, D)
    tol = REL_TOL[torch.bfloat16]
    before = split_switch(2)  # (every call with a partial wave, short keys included)
    try:
        out, _ = check(q, k, v, tol)
        assert torch.equal(out, sigmoid_attention(q, k, v)), "split: not reproducible"
        split_switch(0)
        whole = sigmoid_attention(q, k, v)
        assert rel_err(out, whole.double()) < tol
        split_switch(2)
        mod, _, bias = key_masks(T, g, masked_from=max(1, T // 2))
        for kw in ({"sigmoid_bias": -1.0, "scale": 0.06}, {"sigmoid_bias": bias[:B]},
                   {"score_mod": mod[:B]}):
            check(q, k, v, tol, **kw)
        kl, vl = mk(B, T + 77, H // 4, D), mk(B, T + 77, H // 4, D)  # T_K != T_Q
        check(q, kl, vl, tol)
        graph = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            sigmoid_attention(q, k, v)
        torch.cuda.current_stream().wait_stream(s)
        with torch.cuda.graph(graph):
            static_out = sigmoid_attention(q, k, v)
        q.copy_(mk(B, T, H, D))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_out, sigmoid_attention(q, k, v))
    finally:
        split_switch(before)


def queue_switch(on):
    return library_function("sigmoid_attn_tile_queue")(on)


def _queue_cases():
    variants = sigmoid_attn.info()["variants"] if GLUON_CATALOG else []
    dims = lambda kind, causal, varlen: sorted({  # noqa: E731
        v["head_dim"] for v in variants if v["kind"] == kind and v["causal"] == causal
        and v["varlen"] == varlen and not v["score_mod"]})
    return ([(("padded", c), d) for c in (False, True) for d in dims("fwd_gluon_padded", c, False)]
            + [(("packed", c), d) for c in (False, True) for d in dims("fwd_gluon_padded", c, True)])


@requires_gluon
@pytest.mark.parametrize("case,D", _queue_cases(), ids=lambda x: str(x))
def test_gluon_forward_tile_queue(case, D, gluon_dispatch):
    """Padded and packed calls of several waves take their tiles from the queue (each program's
    next tile from a counter zeroed on the stream), causal or not: padded with NaN in the
    padding and lengths 0, 1, 17, 129, T, packed with a tail past the last sequence; against
    float64 with poisoned outputs, and bitwise the same as the static walk (a tile's sum does
    not depend on the program that takes it), over repeated calls, and in a CUDA graph replayed
    with new inputs (the counter's memset captured with the kernel)."""
    from sigmoid_attn import sigmoid_attention_varlen, sigmoid_attention_varlen_reference

    case, causal = case
    g = torch.Generator().manual_seed(D * 7 + len(case) + causal)
    dtype, T = torch.bfloat16, 700
    tol = REL_TOL[dtype]
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    (bm,) = {v["block_m"] for v in GLUON_CATALOG if v["head_dim"] == D}
    lens_list = [T, 0, 1, 17, 129, T - 3]
    B = len(lens_list)
    H = -(-int(3.4 * sms) // (-(-T // bm) * B))  # (about 3.4 waves of tiles)
    if case == "packed":
        lens = [L for L in lens_list if L] + [5]
        cu = torch.tensor([0] + list(itertools.accumulate(lens[:-1])), dtype=torch.int32,
                          device="cuda")
        n = int(cu[-1])
        q, k, v = (torch.randn(n + lens[-1], H, D, generator=g).to("cuda", dtype)
                   for _ in range(3))
        run = lambda: sigmoid_attention_varlen(q, k, v, cu, cu, T, T,  # noqa: E731
                                               is_causal=causal)
        ref = lambda: sigmoid_attention_varlen_reference(  # noqa: E731
            q.double(), k.double(), v.double(), cu, cu, T, T, is_causal=causal)
        fresh = lambda: torch.randn(q.shape, generator=g).to("cuda", dtype)  # noqa: E731
    else:
        lens = torch.tensor(lens_list, dtype=torch.int32, device="cuda")
        (q0, k0, v0), (q, k, v) = padded_inputs(B, T, H, D, dtype, g, lens_list)
        kw = {"is_causal": causal, "seq_lens_q": lens, "seq_lens_k": lens}
        run = lambda: sigmoid_attention(q, k, v, **kw)  # noqa: E731
        ref = lambda: ref64(q0, k0, v0, **kw)  # noqa: E731
        fresh = lambda: torch.randn(q.shape, generator=g).to("cuda", dtype)  # noqa: E731
    assert "sigmoid_attn_fwd_gluon_persistent" in launched_kernels(run)
    before = queue_switch(1)
    try:
        poison_like(q.shape, dtype)
        out = run()
        torch.cuda.synchronize()
        assert not torch.isnan(out).any(), "unwritten (poisoned) output elements"
        expect = ref()
        if case == "packed":
            assert (out[n:] == 0).all(), "the tail past cu_seqlens[-1] must be zero"
            out, expect = out[:n], expect[:n]
        assert rel_err(out, expect) < tol
        again = run()
        assert torch.equal(out, again[:out.shape[0]]), "queue: not reproducible"
        queue_switch(0)
        static = run()
        assert torch.equal(out, static[:out.shape[0]]), "queue and static walk differ"
        queue_switch(1)
        graph = torch.cuda.CUDAGraph()
        st = torch.cuda.Stream()
        st.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(st):
            run()
        torch.cuda.current_stream().wait_stream(st)
        with torch.cuda.graph(graph):
            static_out = run()
        for _ in range(2):
            q.copy_(fresh())
            graph.replay()
            torch.cuda.synchronize()
            assert torch.equal(static_out, run())
    finally:
        queue_switch(before)


@requires_gluon
def test_gluon_forward_cuda_graph_and_determinism(gluon_dispatch):
    """The descriptors are encoded on the host at capture: a replay reads the captured buffers'
    new contents; two calls give the same bits (dense and causal: the persistent schedule is
    static, each tile summed in one order)."""
    g = torch.Generator().manual_seed(3)
    dtype, D = torch.bfloat16, GLUON_DIMS[0]
    B, T = 2, 1000
    H = gluon_heads(B, T, D)
    q, k, v = (torch.randn(B, T, H, D, generator=g).to("cuda", dtype) for _ in range(3))
    a = sigmoid_attention(q, k, v)
    assert torch.equal(a, sigmoid_attention(q, k, v))
    c = sigmoid_attention(q, k, v, is_causal=True)
    assert torch.equal(c, sigmoid_attention(q, k, v, is_causal=True))
    graph = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        sigmoid_attention(q, k, v)  # warm-up on the capture stream
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(graph):
        static_out = sigmoid_attention(q, k, v)
    for seed in (4, 5):
        g2 = torch.Generator().manual_seed(seed)
        for t in (q, k, v):
            t.copy_(torch.randn(t.shape, generator=g2).to(dtype))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_out, sigmoid_attention(q, k, v)), seed
