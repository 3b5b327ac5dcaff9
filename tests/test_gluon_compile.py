"""The Gluon forward (triton_src/sigmoid_attn_fwd_gluon_persistent.py) compiles ahead of time for
sm_90 with no GPU, and its PTX holds the schedule it is written for: wgmma, TMA loads and
stores, register reallocation between the producer and the consumer warpgroups, and every
mbarrier invalidated (the Triton 3.6 warp-specialized forward left barriers live under a data
buffer; see variants.py). The probe's variants (every flag: lengths too) compile through
benchmarks/gluon_fwd/compile.py; the library's kernels (kind fwd_gluon) through
triton_src/aot.py, whose ABI record the C++ launcher packs by."""

import importlib.util
import os
import sys

import pytest

triton = pytest.importorskip("triton")
if tuple(int(x) for x in triton.__version__.split(".")[:2]) != (3, 8):
    pytest.skip(f"the Gluon kernels are written for Triton 3.8 (GluonASTSource), this is "
                f"{triton.__version__}", allow_module_level=True)

HERE = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gluon_fwd")


def _compile_module():
    sys.path.insert(0, HERE)
    try:
        spec = importlib.util.spec_from_file_location("gluon_fwd_compile",
                                                      os.path.join(HERE, "compile.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(HERE)


@pytest.mark.parametrize("name", ["pfwd_bf16_d128_m128_n128_s2_causal",
                                  "pfwd_bf16_d64_m128_n128_s2_causal_lens",
                                  "pfwd_fp16_d128_m128_n128_s2_dense"])
def test_persistent_gluon_forward_compiles_for_sm90(tmp_path, name):
    c = _compile_module()
    (v,) = [v for v in c.variants() if v.name == name]
    rec, missing = c.compile_variant(v, tmp_path)
    assert not missing, missing
    counts = rec["ptx_counts"]
    assert counts["wgmma.mma_async"] > 0 and counts["cp.async.bulk.tensor"] > 0
    # producer down, consumers up: 3 warpgroups, register budget moved by setmaxnreg
    assert rec["threads"] == 384 and any(s.startswith("dec") for s in rec["setmaxnreg"])
    assert any(s.startswith("inc") for s in rec["setmaxnreg"])
    assert (tmp_path / f"{name}.cubin").stat().st_size > 0
    # two Q buffers (ready, empty) and four barriers per ring stage, all invalidated
    assert counts["mbarrier.inval"] == 4 + 4 * v.stages, counts


def _library_build():
    """triton_src's variant table and AOT compiler, as the library build runs them."""
    from conftest import TRITON_SRC

    sys.path.insert(0, TRITON_SRC)
    try:
        import aot
        import variants
    finally:
        sys.path.remove(TRITON_SRC)
    return variants, aot


def _gluon_variants():
    V, _ = _library_build()
    return [v for v in V.variants(triton.__version__) if v.kind == "fwd_gluon"]


@pytest.mark.parametrize("var", _gluon_variants(), ids=lambda v: v.name)
def test_library_gluon_forward_abi(var):
    """Each fwd_gluon kernel the library builds (tiles.json fwd_gluon: the persistent kernel,
    dense and causal), as aot.py compiles it: the PTX entry takes, per descriptor, a 64-byte
    aligned 128-byte CUtensorMap then 3 u32 shape and 3 u64 stride scalars, then the two length
    pointers, the output pointer (packed calls' masked stores), stride_ot, T_Q, T_K, H, B,
    kv_group, scale, bias_value, MAX_Q, MAX_K (a packed call's max_seqlen), then only hidden
    pointers; the
    KernelSpec records each CUtensorMap's position and its encoding from the compiled metadata
    (box [1, rows, 64] of the 128-byte swizzle, element type)."""
    V, aot = _library_build()
    assert V.SOURCES["fwd_gluon"] == ("sigmoid_attn_fwd_gluon_persistent",
                                      "sigmoid_attn_fwd_gluon_persistent")
    r = aot.compile_variant(var, 90)
    assert r["num_params"] == 4 * 7 + 13 and r["num_hidden_params"] == 2
    assert r["num_warps"] == 12 and r["shared"] <= 227 * 1024
    rows = {"q_desc": var.block_m // 2, "o_desc": var.block_m // 2, "k_desc": var.block_n,
            "v_desc": var.block_n}
    cu_type = {"fp16": 6, "bf16": 9}[var.dtype]  # CU_TENSOR_MAP_DATA_TYPE_FLOAT16 / BFLOAT16
    assert [m["arg"] for m in r["tensor_maps"]] == ["q_desc", "k_desc", "v_desc", "o_desc"]
    for i, m in enumerate(r["tensor_maps"]):
        assert m["param"] == 7 * i
        assert m["box"] == [1, rows[m["arg"]], 64], m  # 64 bf16/fp16 columns = 128 bytes
        assert (m["swizzle"], m["elem_bytes"], m["data_type"]) == (3, 2, cu_type), m
    ck, _ = aot.compile_gluon(var, 90)  # (Triton's cache: the same kernel)
    params = aot._entry_params(ck.asm["ptx"], r["entry"])
    assert params[0] == (128, 64) and params[1:4] == [(4, 4)] * 3 and params[4:7] == [(8, 8)] * 3
    assert params[28:31] == [(8, 8)] * 3 and params[31:41] == [(4, 4)] * 10
    # the persistent schedule: register reallocation, every barrier invalidated
    ptx = ck.asm["ptx"]
    assert "setmaxnreg.inc" in ptx and "setmaxnreg.dec" in ptx
    assert ptx.count("mbarrier.inval") == 4 + 4 * var.num_stages


def test_library_gluon_forward_abi_mismatch_is_refused(monkeypatch):
    """A kernel whose parameters drift from variants.PARAMS["fwd_gluon"] fails the build, naming
    the kernel, instead of launching with a shifted argument list."""
    V, aot = _library_build()
    var = _gluon_variants()[0]
    ck, _ = aot.compile_gluon(var, 90)
    # one scalar more declared than the kernel takes: the PTX check refuses it
    monkeypatch.setitem(V.PARAMS, "fwd_gluon", V.PARAMS["fwd_gluon"] + (("extra", "i32"),))
    with pytest.raises(RuntimeError, match=f"{var.name}: PTX parameters"):
        aot._check_ptx(var, ck.asm["ptx"], ck.metadata.name)
    # a table out of step with the kernel's arguments: refused before compiling
    monkeypatch.setitem(V.PARAMS, "fwd_gluon", V.PARAMS["fwd_gluon"][:-2])
    with pytest.raises(RuntimeError, match="out of date with the kernel"):
        aot.compile_variant(var, 90)


def _variants_with_lengths():
    V, _ = _library_build()
    return [v for v in V.variants(triton.__version__)
            if v.kind in ("fwd_gluon_padded", "bwd_gluon_padded")]


@pytest.mark.parametrize("var", _variants_with_lengths(), ids=lambda v: v.name)
def test_library_gluon_kernels_with_lengths_keep_their_schedule(var):
    """The Gluon kernels compiled with lengths, padded and packed (kinds fwd_gluon_padded and
    bwd_gluon_padded), as aot.py compiles them, keep the hand schedule: wgmma, TMA bulk-tensor
    copies, mbarrier waits, registers moved between the partitions. The packed forward's masked
    stores (where a sequence ends inside a tile) are 16 bytes wide, from the alignment its output
    pointer and row stride are promised (aot.py): without it Triton stores 2 bytes at a time,
    which with short cells cost as much as the tile's products."""
    import re

    _, aot = _library_build()
    compile_kind = aot.compile_gluon if var.kind == "fwd_gluon_padded" else aot.compile_gluon_bwd
    ck, _ = compile_kind(var, 90)
    ptx = ck.asm["ptx"]
    assert "wgmma.mma_async" in ptx and "cp.async.bulk.tensor" in ptx
    assert "mbarrier.try_wait" in ptx
    assert "setmaxnreg.inc" in ptx and "setmaxnreg.dec" in ptx
    if var.kind == "fwd_gluon_padded" and var.varlen:
        assert "st.global.v4" in ptx
        assert not re.search(r"st\.global(\.[a-z0-9:]+)*\.b16\b", ptx)
