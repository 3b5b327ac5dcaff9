"""The Triton kernel source itself, run by Triton's interpreter on CPU (TRITON_INTERPRET=1).

Runs in a subprocess: the interpreter must be switched on before triton is imported, and this
pytest process must keep triton unimported for test_import.py.
"""

import importlib.metadata
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, TRITON_SRC

pytest.importorskip("triton", reason="the kernel source needs triton (a build dependency)")

_TRITON = tuple(int(x) for x in importlib.metadata.version("triton").split(".")[:2])
# Triton 3.6's interpreter holds run-time scalars as shape-(1,) NumPy arrays and converts a
# range() bound with int(array), which NumPy >= 2.4 rejects ("only 0-dimensional arrays can be
# converted"); 3.7+ squeezes first. Any kernel with a run-time loop bound fails there (checked
# with a 4-line kernel); with numpy 2.3 it passes. CI runs Triton 3.8; where 3.6 is installed
# (the GPU machine) the compiled kernels themselves are tested instead.
pytestmark = pytest.mark.skipif(_TRITON < (3, 7), reason=f"Triton {_TRITON} interpreter with "
                                "NumPy >= 2.4 cannot take run-time range() bounds; needs Triton >= 3.7")

SCRIPT = textwrap.dedent(r"""
    import sys, torch
    sys.path.insert(0, TRITON_SRC)
    sys.path.insert(0, TESTS)
    import jit_launch
    from conftest import REL_TOL, make_qkv, rel_err
    from sigmoid_attn import sigmoid_attention_reference

    g = torch.Generator().manual_seed(0)
    cases = 0
    for dtype in (torch.float16, torch.float32):
        for (B, Tq, Tk, Hq, Hkv, D, causal, mod, bias) in [
            (3, 17, 17, 2, 2, 32, False, False, None),
            (3, 17, 17, 2, 2, 32, True, True, None),
            (2, 129, 70, 4, 2, 64, False, True, 0.25),
            (2, 70, 129, 2, 1, 64, True, False, "tensor"),
            (2, 33, 33, 2, 2, 48, True, True, None),  # head dim masked to BLOCK_D=64
            (1, 1, 1, 1, 1, 32, True, False, None),
        ]:
            q, k, v = make_qkv(B, Tq, Tk, Hq, Hkv, D, dtype, "cpu", g)
            lq = torch.randint(0, Tq + 1, (B,), generator=g, dtype=torch.int32)
            lk = torch.randint(0, Tk + 1, (B,), generator=g, dtype=torch.int32)
            lq[0], lk[0] = Tq, Tk          # one full-length sequence
            if B > 2: lq[1], lk[1] = 0, 0  # and one empty
            sm = torch.randn(B, Tk, generator=g) if mod else None
            sb = torch.randn(B, generator=g) if bias == "tensor" else bias
            out = jit_launch.forward(q, k, v, seq_lens_q=lq, seq_lens_k=lk, is_causal=causal,
                                     sigmoid_bias=sb, score_mod=sm, tiles=(32, 16, 4, 1))
            ref = sigmoid_attention_reference(
                q.double(), k.double(), v.double(), seq_lens_q=lq, seq_lens_k=lk,
                is_causal=causal, sigmoid_bias=sb.double() if torch.is_tensor(sb) else sb,
                score_mod=sm.double() if sm is not None else None)
            err = rel_err(out, ref)
            tol = REL_TOL[dtype] if dtype != torch.float32 else 1e-5
            assert err < tol, (dtype, B, Tq, Tk, D, causal, err)
            for b in range(B):
                assert (out[b, int(lq[b]):] == 0).all(), "padded rows must be zero"
            cases += 1
    print("interpreted cases:", cases)

    # The experimental TMA-descriptor path of the forward (USE_TMA): same cases, float32,
    # dense and packed; rows past Lk / columns past HEAD_DIM must come back as zeros.
    tcases = 0
    for (B, Tq, Tk, Hq, Hkv, D, causal, mod) in [
        (3, 40, 40, 2, 2, 32, False, True),
        (2, 70, 129, 2, 1, 48, True, False),
    ]:
        q, k, v = make_qkv(B, Tq, Tk, Hq, Hkv, D, torch.float32, "cpu", g)
        lq = torch.randint(0, Tq + 1, (B,), generator=g, dtype=torch.int32)
        lk = torch.randint(1, Tk + 1, (B,), generator=g, dtype=torch.int32)
        lq[0], lk[0] = Tq, Tk
        sm = torch.randn(B, Tk, generator=g) if mod else None
        out = jit_launch.forward(q, k, v, seq_lens_q=lq, seq_lens_k=lk, is_causal=causal,
                                 score_mod=sm, tiles=(16, 16, 4, 1), use_tma=True)
        ref = sigmoid_attention_reference(q.double(), k.double(), v.double(), seq_lens_q=lq,
                                          seq_lens_k=lk, is_causal=causal,
                                          score_mod=sm.double() if mod else None)
        assert rel_err(out, ref) < 1e-5, ("tma", B, Tq, Tk, D, causal, rel_err(out, ref))
        tcases += 1
    lens = [17, 40, 1]
    cuv = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
    q, k, v = (torch.randn(sum(lens) + 2, 2, 32, generator=g) for _ in range(3))
    out = jit_launch.forward(q, k, v, cu_seqlens_q=cuv, cu_seqlens_k=cuv, max_seqlen_q=40,
                             max_seqlen_k=40, tiles=(16, 16, 4, 1), use_tma=True)
    from sigmoid_attn import sigmoid_attention_varlen_reference as vref
    ref = vref(q.double(), k.double(), v.double(), cuv, cuv, 40, 40)
    assert rel_err(out, ref) < 1e-5, ("tma varlen", rel_err(out, ref))
    tcases += 1
    print("interpreted TMA cases:", tcases)

    # The longest-first order of causal query blocks (CAUSAL_LPT = programs per group of heads):
    # a permutation of the programs, so the same result; uneven lengths, a partial last block,
    # groups of one head, groups of 3 of 4 heads (a smaller last group), one group for all.
    n = 0
    for (B, Tq, Tk, causal) in [(2, 70, 70, True), (2, 53, 90, True), (1, 33, 33, False)]:
        q, k, v = make_qkv(B, Tq, Tk, 2, 1, 32, torch.float32, "cpu", g)
        lq = torch.tensor([Tq, Tq // 2], dtype=torch.int32)[:B]
        ref = sigmoid_attention_reference(q.double(), k.double(), v.double(), seq_lens_q=lq,
                                          is_causal=causal)
        for lpt in (1, 12, 1 << 20):
            out = jit_launch.forward(q, k, v, seq_lens_q=lq, is_causal=causal,
                                     tiles=(16, 16, 4, 1), causal_lpt=lpt)
            assert rel_err(out, ref) < 1e-5, ("causal_lpt", B, Tq, Tk, lpt, rel_err(out, ref))
            n += 1
    print("interpreted LPT cases:", n)

    # The warp-specialized forward (sigmoid_attn_fwd_ws): TMA descriptors that end
    # at the lengths instead of masks, run-time choices as arithmetic; dense, padded with a
    # zero length and partial blocks, GQA, causal, the three bias modes, score_mod.
    wcases = 0
    for (B, Tq, Tk, Hq, Hkv, causal, lens, bias, mod) in [
        (2, 40, 40, 2, 2, False, None, None, False),
        (3, 37, 37, 4, 2, True, [37, 0, 20], None, True),
        (2, 33, 52, 2, 1, False, [33, 7], 0.25, True),
        (2, 48, 48, 2, 2, True, [48, 31], "tensor", False),
    ]:
        q, k, v = make_qkv(B, Tq, Tk, Hq, Hkv, 32, torch.float32, "cpu", g)
        lq = torch.tensor(lens, dtype=torch.int32) if lens else None
        lk = torch.tensor([min(x + 3, Tk) for x in lens], dtype=torch.int32) if lens else None
        sb = torch.randn(B, generator=g) if bias == "tensor" else bias
        sm = torch.randn(B, Tk, generator=g) if mod else None
        kw = dict(seq_lens_q=lq, seq_lens_k=lk, is_causal=causal, sigmoid_bias=sb, score_mod=sm)
        out = jit_launch.forward_ws(q, k, v, tiles=(16, 16, 4, 1), **kw)
        sbr = sb.double() if isinstance(sb, torch.Tensor) else sb
        ref = sigmoid_attention_reference(q.double(), k.double(), v.double(),
                                          **dict(kw, sigmoid_bias=sbr,
                                                 score_mod=sm.double() if mod else None))
        assert rel_err(out, ref) < 1e-5, ("ws", B, Tq, Tk, causal, lens, bias, rel_err(out, ref))
        wcases += 1
    # ... and packed varlen: the device-side schedule, an empty sequence, tail rows, GQA,
    # causal, a score_mod whose sequences start at unaligned offsets.
    for (lens_q, lens_k, Hq, Hkv, causal, mod) in [
        ([17, 0, 40, 1, 33], [17, 3, 40, 1, 20], 2, 1, True, True),
        ([9, 30], [30, 9], 2, 2, False, False),
    ]:
        cu = lambda L: torch.tensor([0] + torch.tensor(L).cumsum(0).tolist(), dtype=torch.int32)
        cq, ck = cu(lens_q), cu(lens_k)
        q = torch.randn(sum(lens_q) + 3, Hq, 32, generator=g)
        k = torch.randn(sum(lens_k), Hkv, 32, generator=g)
        v = torch.randn(sum(lens_k), Hkv, 32, generator=g)
        sm = torch.randn(sum(lens_k), generator=g) if mod else None
        kw = dict(is_causal=causal, score_mod=sm)
        out = jit_launch.forward_ws(q, k, v, cu_seqlens_q=cq, cu_seqlens_k=ck,
                                    max_seqlen_q=max(lens_q), max_seqlen_k=max(lens_k),
                                    tiles=(16, 16, 4, 1), **kw)
        ref = vref(
            q.double(), k.double(), v.double(), cq, ck, max(lens_q), max(lens_k),
            is_causal=causal, score_mod=sm.double() if mod else None)
        assert rel_err(out, ref) < 1e-5, ("ws varlen", lens_q, rel_err(out, ref))
        wcases += 1
    print("interpreted warp-specialized cases:", wcases)

    # Backward kernels vs autograd of the float64 reference.
    bcases = 0
    for (B, Tq, Tk, Hq, Hkv, D, causal, mod) in [
        (3, 17, 17, 2, 2, 32, False, False),
        (3, 33, 33, 4, 2, 32, True, True),
        (2, 40, 23, 2, 1, 48, False, True),
        (2, 23, 40, 2, 2, 32, True, False),
    ]:
        q, k, v = make_qkv(B, Tq, Tk, Hq, Hkv, D, torch.float32, "cpu", g)
        lq = torch.randint(0, Tq + 1, (B,), generator=g, dtype=torch.int32)
        lk = torch.randint(0, Tk + 1, (B,), generator=g, dtype=torch.int32)
        lq[0], lk[0] = Tq, Tk
        sm = torch.randn(B, Tk, generator=g) if mod else None
        gout = torch.randn(B, Tq, Hq, D, generator=g)
        dq, dk, dv, dmod = jit_launch.backward(gout, q, k, v, seq_lens_q=lq, seq_lens_k=lk,
                                               is_causal=causal, score_mod=sm,
                                               tiles=(16, 16, 4, 1))
        if causal:  # longest-first program orders (dkdv ascending, dq descending): a
            # permutation of the programs, each writing its own outputs, so bitwise the same
            for lpt in ((1, 1), (5, 12), (1 << 20, 1 << 20)):
                other = jit_launch.backward(gout, q, k, v, seq_lens_q=lq, seq_lens_k=lk,
                                            is_causal=causal, score_mod=sm,
                                            tiles=(16, 16, 4, 1), causal_lpt=lpt)
                for a, b in zip((dq, dk, dv, dmod), other):
                    assert (a is None and b is None) or torch.equal(a, b), ("bwd lpt", lpt)
                bcases += 1
        ins = [t.double().requires_grad_() for t in (q, k, v)]
        smr = sm.double().requires_grad_() if mod else None
        ref = sigmoid_attention_reference(*ins, seq_lens_q=lq, seq_lens_k=lk, is_causal=causal,
                                          score_mod=smr)
        ref.backward(gout.double())
        got = [dq, dk, dv] + ([dmod] if mod else [])
        want = [t.grad for t in ins] + ([smr.grad] if mod else [])
        for name, a, b in zip("q k v mod".split(), got, want):
            err = rel_err(a, b)
            assert err < 1e-5, ("backward", name, B, Tq, Tk, D, causal, err)
        bcases += 1
    print("interpreted backward cases:", bcases)  # 4 cases, 2 causal x 3 orders

    # Packed varlen: the device-side tile schedule, tail rows, GQA, causal, score_mod, and a
    # schedule chunk smaller than the number of sequences (CHUNK=256 > 5 here, so also 1 loop).
    from sigmoid_attn import sigmoid_attention_varlen_reference
    vcases = 0
    for (lens_q, lens_k, Hq, Hkv, D, causal, mod) in [
        ([17, 0, 40, 1, 33], [17, 3, 40, 1, 20], 2, 1, 32, True, True),
        ([9, 30], [30, 9], 2, 2, 48, False, False),
    ]:
        cu = lambda L: torch.tensor([0] + torch.tensor(L).cumsum(0).tolist(), dtype=torch.int32)
        cq, ck = cu(lens_q), cu(lens_k)
        q = torch.randn(sum(lens_q) + 3, Hq, D, generator=g)
        k = torch.randn(sum(lens_k) + 2, Hkv, D, generator=g)
        v = torch.randn(sum(lens_k) + 2, Hkv, D, generator=g)
        sm = torch.randn(k.shape[0], generator=g) if mod else None
        mq, mk = max(lens_q), max(lens_k)
        out = jit_launch.forward(q, k, v, cu_seqlens_q=cq, cu_seqlens_k=ck, max_seqlen_q=mq,
                                 max_seqlen_k=mk, is_causal=causal, score_mod=sm,
                                 tiles=(16, 16, 4, 1))
        ins = [t.double().requires_grad_() for t in (q, k, v)]
        smr = sm.double().requires_grad_() if mod else None
        ref = sigmoid_attention_varlen_reference(*ins, cq, ck, mq, mk, is_causal=causal,
                                                 score_mod=smr)
        assert rel_err(out, ref) < 1e-5, ("varlen", lens_q, rel_err(out, ref))
        assert (out[sum(lens_q):] == 0).all()
        gout = torch.randn(q.shape, generator=g)
        dq, dk, dv, dmod = jit_launch.backward(gout, q, k, v, cu_seqlens_q=cq, cu_seqlens_k=ck,
                                               max_seqlen_q=mq, max_seqlen_k=mk,
                                               is_causal=causal, score_mod=sm,
                                               tiles=(16, 16, 4, 1))
        ref.backward(gout.double())
        got = [dq, dk, dv] + ([dmod] if mod else [])
        want = [t.grad for t in ins] + ([smr.grad] if mod else [])
        for name, a, b in zip("q k v mod".split(), got, want):
            assert rel_err(a, b) < 1e-5, ("varlen backward", name, rel_err(a, b))
        vcases += 1
    print("interpreted varlen cases:", vcases)
""")


def test_kernel_source_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    code = f"TRITON_SRC={TRITON_SRC!r}\nTESTS={os.path.join(ROOT, 'tests')!r}\n" + SCRIPT
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "interpreted cases: 12" in r.stdout
    assert "interpreted backward cases: 10" in r.stdout
    assert "interpreted varlen cases: 2" in r.stdout
    assert "interpreted TMA cases: 3" in r.stdout
    assert "interpreted LPT cases: 9" in r.stdout
    assert "interpreted warp-specialized cases: 6" in r.stdout
