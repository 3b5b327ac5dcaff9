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
    assert "cp.async.bulk.tensor.3d.shared::cta.global.mbarrier::complete_tx::bytes" in ptx
    assert "cp.async.bulk.tensor.3d.global.shared::cta" in ptx  # dK, dV stores
    assert re.search(r"cp\.reduce\.async\.bulk\.tensor\.3d\.global\.shared::cta\.add", ptx)
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
    # 7 descriptors (CUtensorMap + 3 shape + 3 stride each), 5 scalars, 2 hidden pointers
    roles = [p["role"] for p in rec["params"]]
    assert roles.count("tensormap") == 7 and roles.count("scalar") == 5
    assert len(roles) == 7 * 7 + 5 + roles.count("hidden_ptr")
    # the dQ accumulator is fp32 with a 128-byte-swizzle box of 32 columns
    dq_meta = rec["tensordesc_meta"][rec["descs"].index("dq_desc")]
    assert dq_meta["elem_size"] == 4 and dq_meta["block_size"] == [1, v.block_m, 32]


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
