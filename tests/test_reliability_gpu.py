"""GPU reliability (skipped without CUDA): concurrent first calls from many
threads and streams, tensors over 2^31 elements (64-bit batch/head offsets)."""

import subprocess
import sys
import textwrap

import pytest
import torch

pytestmark = pytest.mark.gpu

THREADS = textwrap.dedent(r"""
    import threading, torch, sigmoid_attn as sa
    # 16 threads make their *first* calls at once (module loading races), each on its own
    # stream and head dim; results must equal a single-threaded run afterwards.
    dims = [32, 64, 96, 128, 256]
    g = torch.Generator().manual_seed(0)
    inputs = []
    for i in range(16):
        D = dims[i % len(dims)]
        q, k, v = (torch.randn(2, 300, 4, D, generator=g).cuda().bfloat16() for _ in range(3))
        lens = torch.tensor([300, 100 + i], dtype=torch.int32).cuda()
        inputs.append((q, k, v, lens, bool(i % 2)))
    torch.cuda.synchronize()
    outs = [None] * 16
    barrier = threading.Barrier(16)
    def work(i):
        q, k, v, lens, causal = inputs[i]
        s = torch.cuda.Stream()
        barrier.wait()
        with torch.cuda.stream(s):
            outs[i] = sa.sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens, is_causal=causal)
        s.synchronize()
    ts = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    [t.start() for t in ts]; [t.join() for t in ts]
    for i, (q, k, v, lens, causal) in enumerate(inputs):
        ref = sa.sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens, is_causal=causal)
        assert torch.equal(outs[i], ref), i
    print("threads ok")
""")


def test_sixteen_threads_first_calls_on_streams():
    r = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "threads ok" in r.stdout, r.stdout + r.stderr


def test_tensor_over_2_31_elements():
    from sigmoid_attn import sigmoid_attention

    free, _ = torch.cuda.mem_get_info()
    B, T, H, D = 3, 65536, 128, 128  # 3.2e9 elements per tensor; batch 2 starts past 2^31
    if free < 4 * B * T * H * D * 2 + (4 << 30):
        pytest.skip("needs ~30 GB of free GPU memory")
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
    assert q.numel() > 2**31 and 2 * q.stride(0) >= 2**31  # int32 offsets would overflow
    lq = torch.tensor([1, 1, 64], dtype=torch.int32, device="cuda")  # keep the work small
    lk = torch.tensor([1, 1, T], dtype=torch.int32, device="cuda")
    out = sigmoid_attention(q, k, v, seq_lens_q=lq, seq_lens_k=lk)
    for h in (0, H - 1):  # rows of the last batch entry, first and last head: offsets > 2^31
        qs, ks, vs = q[2, :64, h].double(), k[2, :, h].double(), v[2, :, h].double()
        p = torch.sigmoid(qs @ ks.T / D ** 0.5 - torch.log(torch.tensor(float(T))))
        ref = p @ vs
        err = (out[2, :64, h].double() - ref).norm() / ref.norm()
        assert err < 2e-2, (h, err.item())
    assert (out[2, 64:] == 0).all()
    del q, k, v, out
    torch.cuda.empty_cache()


MIXED = textwrap.dedent(r"""
    import threading, torch, sigmoid_attn as sa
    # 16 threads x 4 streams each, every thread alternating valid calls with calls that must
    # raise (floating-point lengths, mismatched heads, a huge row stride that is copied, an
    # unsupported head dim): no crash, no poisoned context, each valid result bitwise equal to
    # the single-threaded one.
    g = torch.Generator().manual_seed(1)
    valid = []
    for i in range(8):
        D = (64, 128)[i % 2]
        q, k, v = (torch.randn(2, 257, 4, D, generator=g).cuda().bfloat16() for _ in range(3))
        lens = torch.tensor([257, 31 + i], dtype=torch.int32).cuda()
        valid.append((q, k, v, lens, bool(i % 2)))
    ref = [sa.sigmoid_attention(q, k, v, seq_lens_q=l, seq_lens_k=l, is_causal=c)
           for q, k, v, l, c in valid]
    bad = [
        lambda: sa.sigmoid_attention(valid[0][0], valid[0][1], valid[0][2],
                                     seq_lens_q=valid[0][3].float()),
        lambda: sa.sigmoid_attention(valid[0][0], valid[0][1][:, :, :3], valid[0][2][:, :, :3]),
        lambda: sa.sigmoid_attention(*(torch.zeros(1, 8, 2, 12, device="cuda",
                                                   dtype=torch.bfloat16) for _ in range(3))),
    ]
    torch.cuda.synchronize()
    errors, mismatches = [], []
    barrier = threading.Barrier(16)
    def work(t):
        streams = [torch.cuda.Stream() for _ in range(4)]
        barrier.wait()
        for it in range(24):
            s = streams[it % 4]
            with torch.cuda.stream(s):
                if it % 3 == 2:
                    try:
                        bad[(t + it) % len(bad)]()
                        errors.append(f"thread {t}: a bad call did not raise")
                    except RuntimeError:
                        pass
                else:
                    i = (t + it) % len(valid)
                    q, k, v, l, c = valid[i]
                    out = sa.sigmoid_attention(q, k, v, seq_lens_q=l, seq_lens_k=l, is_causal=c)
                    s.synchronize()
                    if not torch.equal(out, ref[i]):
                        mismatches.append((t, it, i))
    ts = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    [t.start() for t in ts]; [t.join() for t in ts]
    torch.cuda.synchronize()  # the context still works
    assert not errors and not mismatches, (errors[:3], mismatches[:3])
    print("mixed ok")
""")


def test_sixteen_threads_four_streams_mixing_valid_and_bad_calls():
    r = subprocess.run([sys.executable, "-c", MIXED], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "mixed ok" in r.stdout, r.stdout + r.stderr
