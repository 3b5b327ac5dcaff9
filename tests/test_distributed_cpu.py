"""Context parallelism (sigmoid_attention_cp) on CPU: 2, 3 and 4 gloo processes on loopback,
each holding a shard of one sequence, against the single-process op and the float64 reference
on the full tensors (forward and gradients, both layouts, causal or not, padded lengths, GQA,
every bias form), plus the bad-input errors, the P = 1 shortcut and the causal block planner.

One spawn per world size runs every case (process start-up dominates the cost on a small CPU);
each rank writes its measured errors to a JSON file that the parametrized tests read."""

import datetime
import itertools
import json
import os
import traceback

import pytest
import torch
import torch.distributed as dist

from conftest import REL_TOL, free_port, rel_err, run_ranks
from sigmoid_attn import sigmoid_attention, sigmoid_attention_reference
from sigmoid_attn.distributed import (plan_pair, sequence_shard, shard_chunks,
                                      sigmoid_attention_cp)

WORLD_SIZES = (2, 3, 4)
B, T_LOCAL, H, D = 2, 48, 4, 32
F64_TOL = 1e-10  # against the single-process op: only the summation order differs
SPAWN_TIMEOUT_S = 240

# name -> (layout, is_causal, Hkv, lengths, bias, scale, dtype, with_grad).
# lengths: None, or a function of the global T (ends inside chunks, past T, zero).
CASES = {
    "contig_full": ("contiguous", False, 4, None, None, None, torch.float64, True),
    "contig_causal_gqa_lens": ("contiguous", True, 2, lambda T: [T - 13, 29], None, None,
                               torch.float64, True),
    "contig_causal_gqa": ("contiguous", True, 2, None, None, None, torch.float64, True),
    "contig_causal_lens_scalar_bias": ("contiguous", True, 4, lambda T: [5, T], -2.0, None,
                                       torch.float64, True),
    "zigzag_causal_gqa_lens": ("zigzag", True, 2, lambda T: [T - 13, 29], None, None,
                               torch.float64, True),
    "zigzag_full_tensor_bias_lens": ("zigzag", False, 4, lambda T: [0, T + 7], "tensor", None,
                                     torch.float64, True),
    "zigzag_causal_gqa_tensor_bias": ("zigzag", True, 2, lambda T: [T, T // 2 + 3], "tensor",
                                      None, torch.float64, True),
    "zigzag_causal_mqa_float_bias_scale": ("zigzag", True, 1, None, 0.3, 0.2, torch.float64,
                                           True),
    "zigzag_causal_lens_zero_and_short": ("zigzag", True, 2, lambda T: [0, 11], None, None,
                                          torch.float64, True),
    "zigzag_causal_gqa_lens_fp32": ("zigzag", True, 2, lambda T: [T - 13, 29], None, None,
                                    torch.float32, True),
    "contig_causal_gqa_lens_bf16": ("contiguous", True, 2, lambda T: [T - 13, 29], None, None,
                                    torch.bfloat16, True),
    "zigzag_causal_no_grad": ("zigzag", True, 2, lambda T: [T - 5, 31], None, None,
                              torch.float64, False),
}


def _errors(got: torch.Tensor, single: torch.Tensor, ref: torch.Tensor) -> dict:
    got, single, ref = got.detach(), single.detach(), ref.detach()
    return {"vs_op": rel_err(got, single), "vs_ref": rel_err(got, ref),
            "max_abs_vs_op": float((got.double() - single.double()).abs().max())}


def _run_case(rank, world, case):
    layout, causal, hkv, lens_fn, bias, scale, dtype, with_grad = CASES[case]
    T = T_LOCAL * world
    g = torch.Generator().manual_seed(1000 + 7 * world + len(case))
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    q, k, v, dout = mk(B, T, H, D), mk(B, T, hkv, D), mk(B, T, hkv, D), mk(B, T, H, D)
    lens = None if lens_fn is None else torch.tensor(lens_fn(T), dtype=torch.int32)

    def leaves(ts, dt):
        return [t.to(dt).detach().clone().requires_grad_(with_grad) for t in ts]

    # A bias tensor is a leaf of its own in each computation (it has a gradient too).
    biases = [bias] * 3
    if bias == "tensor":
        b0 = torch.tensor([0.25, -1.5], dtype=torch.float64)
        biases = leaves([b0], dtype) + leaves([b0], torch.float64) + leaves([b0], dtype)
    qs, ks, vs = leaves([q, k, v], dtype)
    single = sigmoid_attention(qs, ks, vs, seq_lens_q=lens, seq_lens_k=lens, is_causal=causal,
                               scale=scale, sigmoid_bias=biases[0])
    r64 = leaves([q, k, v], torch.float64)
    ref = sigmoid_attention_reference(*r64, seq_lens_q=lens, seq_lens_k=lens, is_causal=causal,
                                      scale=scale, sigmoid_bias=biases[1])
    shard = lambda t: sequence_shard(t, rank, world, layout)
    cp_in = [shard(t.to(dtype)).detach().clone().requires_grad_(with_grad) for t in (q, k, v)]
    out = sigmoid_attention_cp(*cp_in, layout=layout, seq_lens=lens, is_causal=causal,
                               scale=scale, sigmoid_bias=biases[2])
    res = {"out": _errors(out, shard(single.detach()), shard(ref.detach())),
           "requires_grad": out.requires_grad}
    if with_grad:
        single.backward(dout.to(dtype))
        ref.backward(dout)
        out.backward(shard(dout.to(dtype)))
        for name, a, b, c in zip("qkv", cp_in, (qs, ks, vs), r64):
            res["d" + name] = _errors(a.grad, shard(b.grad), shard(c.grad))
        if isinstance(biases[2], torch.Tensor):
            # the op's own bias gradient is newer than its q/k/v ones: compare where it has one
            single_db = biases[0].grad if biases[0].grad is not None else biases[1].grad
            res["dbias"] = _errors(biases[2].grad, single_db, biases[1].grad)
    return res


def _expect_error(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - recorded: the test says what was expected
        return {"type": type(e).__name__, "msg": str(e)}
    return {"type": None, "msg": "no error"}


def _bad_inputs(rank, world):
    """Bad calls, some wrong on one rank only; every rank must raise (none may hang), and the
    group must still work afterwards."""
    g = torch.Generator().manual_seed(5)
    mk = lambda t, h=H: torch.randn(B, t, h, D, generator=g, dtype=torch.float64)
    q, k, v = mk(T_LOCAL), mk(T_LOCAL, 2), mk(T_LOCAL, 2)
    lens = torch.tensor([30, 60], dtype=torch.int32)
    cp = sigmoid_attention_cp
    res = {
        "layout_unknown": _expect_error(lambda: cp(q, k, v, layout="ring")),
        "layout_unknown_one_rank": _expect_error(
            lambda: cp(q, k, v, layout="ring" if rank == 1 else "zigzag")),
        "t_local_differs": _expect_error(
            lambda: cp(*(x[:, :40] if rank == 1 else x for x in (q, k, v)))),
        "zigzag_odd_t_local": _expect_error(
            lambda: cp(q[:, :47], k[:, :47], v[:, :47], layout="zigzag")),
        "seq_lens_int64": _expect_error(lambda: cp(q, k, v, seq_lens=lens.long())),
        "seq_lens_shape": _expect_error(lambda: cp(q, k, v, seq_lens=lens[:1])),
        "seq_lens_differ": _expect_error(
            lambda: cp(q, k, v, seq_lens=lens + (1 if rank == 0 else 0))),
        "is_causal_differs": _expect_error(lambda: cp(q, k, v, is_causal=rank == 0)),
        "packed_varlen": _expect_error(lambda: cp(q[0], k[0], v[0])),
        "q_not_tensor": _expect_error(lambda: cp(q.tolist(), k, v)),
        "kv_shape": _expect_error(lambda: cp(q, k, v[:, :, :1])),
        "bias_type": _expect_error(lambda: cp(q, k, v, sigmoid_bias="0.5")),
    }
    # The group is intact: a good call still matches the single-process op.
    T = T_LOCAL * world
    g2 = torch.Generator().manual_seed(6)
    full = [torch.randn(B, T, h, D, generator=g2, dtype=torch.float64) for h in (H, 2, 2)]
    want = sigmoid_attention(*full, is_causal=True)
    got = cp(*(sequence_shard(t, rank, world, "zigzag") for t in full), layout="zigzag",
             is_causal=True)
    res["after_errors"] = rel_err(got, sequence_shard(want, rank, world, "zigzag"))
    return res


def _worker(rank, world, port, out_dir):
    torch.set_num_threads(1)  # several processes share a small CPU
    result = {}
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        for case in CASES:
            try:
                result[case] = _run_case(rank, world, case)
            except Exception:  # noqa: BLE001 - reported by the test of that case
                result[case] = {"exception": traceback.format_exc()}
        try:
            result["bad_inputs"] = _bad_inputs(rank, world)
        except Exception:  # noqa: BLE001
            result["bad_inputs"] = {"exception": traceback.format_exc()}
    finally:
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
        dist.destroy_process_group()


_RESULTS = {}


def results(world):
    """Every rank's measurements for this world size: one spawn, cached for the test run."""
    if world not in _RESULTS:
        def load(out_dir, r):
            with open(os.path.join(out_dir, f"rank{r}.json")) as f:
                return json.load(f)
        _RESULTS[world] = run_ranks(_worker, world, SPAWN_TIMEOUT_S, load)
    return _RESULTS[world]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("world", WORLD_SIZES)
def test_matches_single_process_op(world, case):
    dtype, with_grad = CASES[case][6], CASES[case][7]
    tol_op = F64_TOL if dtype == torch.float64 else REL_TOL[dtype]
    tol_ref = F64_TOL if dtype == torch.float64 else REL_TOL[dtype]
    for rank, res in enumerate(results(world)):
        r = res[case]
        assert "exception" not in r, f"rank {rank}:\n{r.get('exception')}"
        assert r["requires_grad"] == with_grad
        names = ["out", "dq", "dk", "dv"] if with_grad else ["out"]
        names += ["dbias"] if with_grad and CASES[case][4] == "tensor" else []
        for n in names:
            assert r[n]["vs_op"] < tol_op, f"rank {rank} {n}: {r[n]} (tolerance {tol_op})"
            assert r[n]["vs_ref"] < tol_ref, f"rank {rank} {n}: {r[n]} (tolerance {tol_ref})"


# case -> (exception type, words the message must hold, on every rank)
BAD = {
    "layout_unknown": ("ValueError", ["layout", "contiguous", "'ring'"]),
    "t_local_differs": ("ValueError", ["T_local", "same on every rank", "48", "40"]),
    "zigzag_odd_t_local": ("ValueError", ["T_local must be even", "47"]),
    "seq_lens_int64": ("ValueError", ["seq_lens", "int32", "int64"]),
    "seq_lens_shape": ("ValueError", ["seq_lens", "[B]=[2]", "[1]"]),
    "seq_lens_differ": ("ValueError", ["seq_lens", "same on every rank"]),
    "is_causal_differs": ("ValueError", ["is_causal", "same on every rank"]),
    "packed_varlen": ("ValueError", ["packed varlen", "not supported", "[48, 4, 32]"]),
    "q_not_tensor": ("TypeError", ["q must be a torch.Tensor", "list"]),
    "kv_shape": ("ValueError", ["k, v of one shape"]),
    "bias_type": ("TypeError", ["sigmoid_bias", "str"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_on_every_rank(case):
    kind, words = BAD[case]
    for rank, res in enumerate(results(2)):
        bad = res["bad_inputs"]
        assert "exception" not in bad, f"rank {rank}:\n{bad.get('exception')}"
        got = bad[case]
        assert got["type"] == kind, f"rank {rank}: {got}"
        for w in words:
            assert w in got["msg"], f"rank {rank}: {w!r} not in {got['msg']!r}"
        assert got["msg"].startswith("sigmoid_attention_cp: "), got["msg"]


def test_bad_input_on_one_rank_raises_everywhere_and_group_survives():
    per_rank = [res["bad_inputs"] for res in results(2)]
    own, other = per_rank[1]["layout_unknown_one_rank"], per_rank[0]["layout_unknown_one_rank"]
    assert own["type"] == "ValueError" and "'ring'" in own["msg"], own
    assert other["type"] == "ValueError" and "rank 1 of the group rejected" in other["msg"], other
    assert "'ring'" in other["msg"], other  # the failing rank's own message travels along
    for rank, bad in enumerate(per_rank):
        assert bad["after_errors"] < F64_TOL, (rank, bad["after_errors"])


def test_no_process_group():
    assert not dist.is_initialized()
    x = torch.randn(1, 4, 2, 32)
    with pytest.raises(ValueError, match="init_process_group"):
        sigmoid_attention_cp(x, x, x)


@pytest.fixture
def single_process_group(monkeypatch):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                            world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_world_of_one_is_the_plain_op(single_process_group, monkeypatch):
    def no_comm(*a, **k):
        raise AssertionError("P = 1 must not communicate")

    for name in ("all_gather_single", "all_gather_into_tensor", "batch_isend_irecv",
                 "all_gather_object", "barrier"):
        monkeypatch.setattr(dist, name, no_comm, raising=False)
    g = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(2, 40, h, D, generator=g).requires_grad_() for h in (4, 2, 2))
    lens = torch.tensor([40, 17], dtype=torch.int32)
    out = sigmoid_attention_cp(q, k, v, layout="zigzag", seq_lens=lens, is_causal=True)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    want = sigmoid_attention(q, k, v, seq_lens_q=lens, seq_lens_k=lens, is_causal=True)
    want_grads = torch.autograd.grad(want.sum(), (q, k, v))
    assert torch.equal(out, want)
    for a, b in zip(grads, want_grads):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="layout must be one of"):
        sigmoid_attention_cp(q, k, v, layout="striped")


def _covered(q_chunks, k_chunks, causal):
    """(query position, key position) -> how many planned calls compute that score."""
    def positions(chunks, r0, r1, segs):
        local = {}
        for l0, g0, n in chunks:
            for i in range(n):
                local[l0 + i] = g0 + i
        pos = [local[i] for i in range(r0, r1)]
        # the block's segments describe the same positions, in the same order
        assert pos == [g + i for g, n in segs for i in range(n)]
        return pos

    count = {}
    for b in plan_pair(q_chunks, k_chunks, causal):
        qp = positions(q_chunks, b.q0, b.q1, b.q_segs)
        kp = positions(k_chunks, b.k0, b.k1, b.k_segs)
        assert all(x < y for x, y in zip(qp, qp[1:])) and all(x < y for x, y in zip(kp, kp[1:]))
        for i, x in enumerate(qp):
            for j, y in enumerate(kp):
                if not b.causal or j <= i:
                    count[(x, y)] = count.get((x, y), 0) + 1
    return count


def _want(q_chunks, k_chunks, causal):
    qp = [g + i for _, g, n in q_chunks for i in range(n)]
    kp = [g + i for _, g, n in k_chunks for i in range(n)]
    return {(x, y): 1 for x in qp for y in kp if not causal or y <= x}


@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("causal", [False, True])
def test_planned_calls_cover_the_global_mask_exactly(layout, world, causal):
    t_local = 6
    for r, src in itertools.product(range(world), range(world)):
        qc = shard_chunks(layout, r, world, t_local)
        kc = shard_chunks(layout, src, world, t_local)
        assert _covered(qc, kc, causal) == _want(qc, kc, causal), (r, src)
        # each pair of shards is one call at most (skipped when fully masked)
        n = len(plan_pair(qc, kc, causal))
        assert n <= 1, (r, src, plan_pair(qc, kc, causal))
        if causal and layout == "zigzag":
            assert n == 1  # zigzag gives every rank work at every step


def test_planner_handles_unaligned_runs():
    # Runs whose starts do not line up: the planner cuts them where they do.
    g = torch.Generator().manual_seed(9)
    for _ in range(200):
        qg, kg, qn, kn = (int(x) for x in torch.randint(0, 12, (4,), generator=g))
        qn, kn = qn + 1, kn + 1
        qc, kc = ((0, qg, qn),), ((0, kg, kn),)
        for causal in (False, True):
            assert _covered(qc, kc, causal) == _want(qc, kc, causal), (qc, kc, causal)
    two = ((0, 3, 4), (4, 20, 5))  # increasing global order, as both layouts keep it
    other = ((0, 5, 3), (3, 17, 6))
    for causal in (False, True):
        assert _covered(two, other, causal) == _want(two, other, causal)
        assert _covered(other, two, causal) == _want(other, two, causal)


@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
def test_sequence_shard_partitions_the_sequence(layout):
    world, T = 3, 36
    x = torch.arange(T).view(1, T)
    shards = [sequence_shard(x, r, world, layout) for r in range(world)]
    assert all(s.shape == (1, T // world) for s in shards)
    assert sorted(torch.cat(shards, 1).flatten().tolist()) == list(range(T))
    if layout == "zigzag":
        assert shards[0].flatten().tolist() == [0, 1, 2, 3, 4, 5, 30, 31, 32, 33, 34, 35]
    with pytest.raises(ValueError, match="multiple of 6"):
        sequence_shard(torch.zeros(1, 35), 0, world, "zigzag")
