"""The Gluon backward (triton_src/sigmoid_attn_bwd_gluon.py) compiles ahead of time for sm_90 with
no GPU, and its PTX holds the schedule it is written for: wgmma, TMA loads of the K/V block and
the Q/dO ring, TMA reduce-adds of dQ, mbarrier waits, setmaxnreg moving registers from the
producer and dQ-writer warps to the two consumer warpgroups, every barrier invalidated, and no
spills. The standalone runner then packs every parameter of the compiled kernels (dry run)."""

import importlib.util
import json
import os
import re

import pytest

triton = pytest.importorskip("triton")
if tuple(int(x) for x in triton.__version__.split(".")[:2]) < (3, 8):
    pytest.skip(f"the Gluon backward needs Triton >= 3.8 (tma.async_atomic_add), this is "
                f"{triton.__version__}", allow_module_level=True)

HERE = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gluon_bwd")


def _load(name, file):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, file))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# the baseline, the dS-exchange candidates at both head dims (D = 64 with Newton 1/x), dQ one
# tile late (D = 128) and queued behind dV, dK with a 3-stage ring (D = 64)
NAMES = ["gbwd_bf16_d128_m64_n128_s2", "gbwd_fp16_d64_m64_n128_s2",
         "gbwd_bf16_d128_m64_n128_s2_dqx", "gbwd_fp16_d64_m64_n128_s2_nr_dqx",
         "gbwd_bf16_d128_m64_n128_s2_dqx_dqd", "gbwd_bf16_d64_m64_n128_s3_dqx_dqo"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    c = _load("gluon_bwd_compile", "compile.py")
    out = tmp_path_factory.mktemp("gbwd")
    want = NAMES
    recs = {}
    for v in c.variants():
        if v.name in want:
            rec, missing = c.compile_variant(v, out)
            assert not missing, (v.name, missing)
            recs[v.name] = (v, rec)
    assert sorted(recs) == sorted(want)
    (out / "variants.json").write_text(json.dumps(
        {"triton": triton.__version__, "arch": 90, "variants": [r for _, r in recs.values()]}))
    return out, recs


@pytest.mark.parametrize("name", NAMES)
def test_gluon_backward_schedule_in_ptx(compiled, name):
    out, recs = compiled
    v, rec = recs[name]
    ptx = (out / f"{name}.ptx").read_text()
    d = v.head_dim
    # K_w·Qᵀ, V_w·dOᵀ (N = 64 queries) and dQ chunks (N = 64); dV, dK (N = head dim)
    assert re.search(r"wgmma\.mma_async\.sync\.aligned\.m64n64k16\.f32", ptx)
    assert re.search(rf"wgmma\.mma_async\.sync\.aligned\.m64n{d}k16\.f32", ptx)
    assert "wgmma.wait_group.sync.aligned 1" in ptx  # P is computed while dPᵀ runs
    # dQ queued behind dV, dK: those two retire (<= 2 groups left) before dQ does
    assert ("wgmma.wait_group.sync.aligned 2" in ptx) == (v.dq_issue and v.head_dim == 128)
    assert "cp.async.bulk.tensor.4d.shared::cta.global.mbarrier::complete_tx::bytes" in ptx
    assert "cp.async.bulk.tensor.4d.global.shared::cta" in ptx  # dK, dV stores
    assert re.search(r"cp\.reduce\.async\.bulk\.tensor\.4d\.global\.shared::cta\.add", ptx)
    assert "cp.async.bulk.wait_group.read" in ptx  # the writer frees a dQ buffer once read
    assert "mbarrier.try_wait" in ptx and "ex2.approx" in ptx
    # MUFU.RCP, unless 1/(1 + e) is computed by Newton steps (integer first guess)
    assert ("rcp.approx.ftz.f32" in ptx) != v.rcp_newton
    assert ("0x7EF311C7" in ptx) == v.rcp_newton
    # 2 consumer warpgroups + 1 producer warp + 1 writer warp, padded: 384 threads; the
    # consumers get 240 registers, the producer and writer drop to 24
    assert rec["threads"] == 384 and rec["ptx_reqntid"] == ["384"]
    assert "inc 240" in rec["setmaxnreg"] and "dec 24" in rec["setmaxnreg"], rec["setmaxnreg"]
    # every barrier is invalidated: kv_bar, ready/empty per stage, dq_full/dq_free x 2, and
    # ds_full/ds_free x 2 where the warpgroups exchange dS
    assert rec["ptx_counts"]["mbarrier.inval"] == 1 + 2 * v.stages + 4 + 4 * v.dq_shared
    # one reduce-add per query tile (boxes of 32 columns) instead of one per warpgroup
    assert rec["ptx_counts"]["cp.reduce.async.bulk.tensor"] == d // 32 * (1 if v.dq_shared else 2)
    assert rec["shared"] <= 227 * 1024
    assert rec["spill_store_bytes"] == 0 and rec["spill_load_bytes"] == 0, rec["ptxas_v"]
    # 7 rank-4 descriptors (CUtensorMap + 4 shape + 4 stride each), 20 scalars, 2 hidden
    # pointers
    roles = [p["role"] for p in rec["params"]]
    # (scalars: the lengths' two pointers, T_Q, T_K, kv_group, scale, bias_value, a packed
    # call's dK, dV pointers, their row stride, the tensors' head dim D, the bias tensor,
    # score_mod and its row stride, score_mod's gradient and its strides, BIAS_MODE, MAX_Q,
    # MAX_K)
    assert roles.count("tensormap") == 7 and roles.count("scalar") == 20
    assert roles.count("desc_shape") == roles.count("desc_stride") == 7 * 4
    assert len(roles) == 7 * 9 + 20 + roles.count("hidden_ptr")
    scalars = [p["arg"] for p in rec["params"] if p["role"] == "scalar"]
    assert scalars[scalars.index("stride_kt"):] == [
        "stride_kt", "D", "BIAS", "SCORE_MOD", "stride_smb", "DMOD", "stride_dmb", "stride_dmh",
        "BIAS_MODE", "MAX_Q", "MAX_K"]
    # the dQ accumulator is fp32 with a 128-byte-swizzle box of 32 columns, the 16-bit
    # tensors' of 64; one head per box ([B, T, H, D])
    dq_meta = rec["tensordesc_meta"][rec["descs"].index("dq_desc")]
    assert dq_meta["elem_size"] == 4 and dq_meta["block_size"] == [1, v.block_m, 1, 32]
    boxes = {n: m["block_size"] for n, m in zip(rec["descs"], rec["tensordesc_meta"])}
    assert boxes == {"q_desc": [1, v.block_m, 1, 64], "do_desc": [1, v.block_m, 1, 64],
                     "dq_desc": [1, v.block_m, 1, 32], "k_desc": [1, 64, 1, 64],
                     "v_desc": [1, 64, 1, 64], "dk_desc": [1, 64, 1, 64],
                     "dv_desc": [1, 64, 1, 64]}
    assert "bulk.tensor.3d" not in ptx


def test_runner_packs_compiled_kernels(compiled, capsys):
    out, recs = compiled
    r = _load("gluon_bwd_runner", "run_on_device.py")
    r.dry_run(json.loads((out / "variants.json").read_text())["variants"], out)
    assert "dry run OK" in capsys.readouterr().out


def test_dq_cast_compiles_vectorized(tmp_path):
    c = _load("gluon_bwd_compile", "compile.py")
    rec = c.compile_cast("bf16", tmp_path)
    ptx = (tmp_path / rec["cubin"]).with_suffix(".ptx").read_text()
    assert "ld.global.L1::evict_first.L2::cache_hint.v4.b32" in ptx  # 16-byte loads
    assert "cvt.rn.bf16" in ptx  # round to nearest even, as torch's .to()
    assert rec["n_params"] >= 3 and rec["threads"] == 256


def _library_build():
    """triton_src's variant table and AOT compiler, as the library build runs them."""
    import sys

    from conftest import TRITON_SRC

    sys.path.insert(0, TRITON_SRC)
    try:
        import aot
        import variants
    finally:
        sys.path.remove(TRITON_SRC)
    return variants, aot


def _library_variants(kind):
    V, _ = _library_build()
    return [v for v in V.variants(triton.__version__) if v.kind == kind]


@pytest.mark.parametrize("var", _library_variants("bwd_gluon"), ids=lambda v: v.name)
def test_library_gluon_backward_abi(var):
    """Each bwd_gluon kernel the library builds (tiles.json bwd_gluon), as aot.py compiles it:
    the probe's schedule for its head dim (hd128 dS exchanged and dQ one tile late, hd64 dS
    exchanged), 7 rank-4 descriptors ([B, T, H, D]: a CUtensorMap, 4 shapes, 4 strides each)
    of which dq_desc is fp32 (the reduce-add target, 32-column boxes of the 128-byte swizzle),
    then the lengths, T_Q, T_K, kv_group, scale, bias_value, a packed call's dK, dV, their row
    stride, the tensors' head dim D and max_seqlen, and only hidden pointers; 384 threads and
    the probe's shared memory."""
    V, aot = _library_build()
    assert var.schedule == {128: "dqx_dqd", 64: "dqx"}[var.block_d]
    r = aot.compile_variant(var, 90)
    assert r["num_params"] == 7 * 9 + 20 and r["num_hidden_params"] == 2
    assert r["num_warps"] == 12
    # (Triton's scratch ahead of the barriers grows with the arguments and, with score_mod,
    # the per-key sums' reduction: 32 and 64 bytes over the rank-3 kernels' 229824 / 131520;
    # the data buffers are the same)
    assert r["shared"] == {128: 229856, 64: 131552}[var.block_d] + 32 * var.score_mod
    half = {"fp16": 6, "bf16": 9}[var.dtype]
    names = ["q_desc", "k_desc", "v_desc", "do_desc", "dq_desc", "dk_desc", "dv_desc"]
    assert [m["arg"] for m in r["tensor_maps"]] == names
    for i, m in enumerate(r["tensor_maps"]):
        assert m["param"] == 9 * i and m["swizzle"] == 3, m
        if m["arg"] == "dq_desc":  # fp32: 32 columns = 128 bytes
            assert (m["box"], m["elem_bytes"], m["data_type"]) == ([1, 64, 1, 32], 4, 7), m
        else:
            assert (m["box"], m["elem_bytes"], m["data_type"]) == ([1, 64, 1, 64], 2, half), m
    assert r["ptx_param_bytes"][:9] == [128] + [4] * 4 + [8] * 4
    elem = {"fp16": "!tt.ptr<f16>", "bf16": "!tt.ptr<bf16>"}[var.dtype]
    assert r["signature"][7 * 9:] == [("SEQ_LENS_Q", "!tt.ptr<i32>"),
                                      ("SEQ_LENS_K", "!tt.ptr<i32>"), ("T_Q", "i32"),
                                      ("T_K", "i32"), ("kv_group", "i32"), ("scale", "f32"),
                                      ("bias_value", "f32"), ("DK", elem), ("DV", elem),
                                      ("stride_kt", "i32"), ("D", "i32"),
                                      ("BIAS", "!tt.ptr<f32>"), ("SCORE_MOD", "!tt.ptr<f32>"),
                                      ("stride_smb", "i64"), ("DMOD", "!tt.ptr<f32>"),
                                      ("stride_dmb", "i64"), ("stride_dmh", "i64"),
                                      ("BIAS_MODE", "i32"), ("MAX_Q", "i32"), ("MAX_K", "i32")]


@pytest.mark.parametrize("var", _library_variants("dq_cast")[:1], ids=lambda v: v.name)
def test_library_dq_cast_abi(var):
    """The dQ cast: (src fp32, dst, n), 8 warps, no shared memory; its 16-byte vector loads rely
    on the divisibility the launcher guarantees (fresh buffers, n a multiple of 64)."""
    _, aot = _library_build()
    r = aot.compile_variant(var, 90)
    assert [n for n, _ in r["signature"]] == ["src", "dst", "n"]
    assert r["num_warps"] == 8 and r["shared"] == 0 and r["tensor_maps"] == []


def test_library_gluon_backward_fp32_descriptor_is_checked(monkeypatch):
    """dq_desc declared as a descriptor of the variant's dtype instead of desc_fp32: the build
    refuses the compiled fp32 map instead of encoding it as 16-bit."""
    V, aot = _library_build()
    var = _library_variants("bwd_gluon")[0]
    ck, _ = aot.compile_gluon_bwd(var, 90)  # (Triton's cache: the library's kernel)
    params = tuple((n, "desc" if n == "dq_desc" else t) for n, t in V.PARAMS["bwd_gluon"])
    monkeypatch.setitem(V.PARAMS, "bwd_gluon", params)
    with pytest.raises(RuntimeError, match=f"descriptor dq_desc is not a tiled rank-4 "
                                           f"{var.dtype} map"):
        aot._tensor_maps(var, ck.metadata)
