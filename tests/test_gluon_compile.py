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
                                  "pfwd_fp16_d128_m128_n128_s2_dense",
                                  "pfwd_bf16_d64_m192_n128_s3_dense_wg3"])
def test_persistent_gluon_forward_compiles_for_sm90(tmp_path, name):
    c = _compile_module()
    (v,) = [v for v in c.variants() if v.name == name]
    rec, missing = c.compile_variant(v, tmp_path)
    assert not missing, missing
    counts = rec["ptx_counts"]
    assert counts["wgmma.mma_async"] > 0 and counts["cp.async.bulk.tensor"] > 0
    # producer down, consumers up: 3 warpgroups, register budget moved by setmaxnreg
    assert rec["threads"] == 128 * (v.consumers + 1)
    assert any(s.startswith("dec") for s in rec["setmaxnreg"])
    assert any(s.startswith("inc") for s in rec["setmaxnreg"])
    assert (tmp_path / f"{name}.cubin").stat().st_size > 0
    # two Q buffers (ready, empty) and four barriers per ring stage, all invalidated
    assert counts["mbarrier.inval"] == 4 + 4 * v.stages, counts
    # rank-4 descriptors [B, T, H, D]: 4d TMA loads and O stores, none of rank 3; each box is
    # [1, rows, 1, 64] (64 16-bit columns = the 128-byte swizzle; hd128 takes two per tile)
    assert counts[c.TMA_LOAD_4D] > 0 and counts[c.TMA_STORE_4D] > 0, counts
    ptx = (tmp_path / f"{name}.ptx").read_text()
    assert "bulk.tensor.3d" not in ptx
    rows = v.block_m // v.consumers
    assert [m["block_size"] for m in rec["tensordesc_meta"]] == [
        [1, rows, 1, 64], [1, v.block_n, 1, 64], [1, v.block_n, 1, 64], [1, rows, 1, 64]]
    # per descriptor a CUtensorMap, 4 shapes and 4 strides; D (the tensors' head dim) after
    # stride_ot
    roles = [p["role"] for p in rec["params"]]
    assert (roles.count("tensormap"), roles.count("desc_shape"),
            roles.count("desc_stride")) == (4, 16, 16)
    assert [p["arg"] for p in rec["params"] if p["role"] == "scalar"] == [
        "SEQ_LENS_Q", "SEQ_LENS_K", "O", "stride_ot", "D", "BIAS", "SCORE_MOD", "stride_smb",
        "BIAS_MODE", "T_Q", "T_K", "H", "B", "kv_group", "scale", "bias_value", "MAX_Q", "MAX_K",
        "WS", "FLAGS", "SCHEDULE"]


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
    aligned 128-byte CUtensorMap then 4 u32 shape and 4 u64 stride scalars (rank 4,
    [B, T, H, D]), then the two length pointers, the output pointer (packed calls' masked
    stores), stride_ot, D (the tensors' head dim), the bias tensor and score_mod pointers,
    score_mod's row stride, BIAS_MODE, T_Q, T_K, H, B, kv_group, scale, bias_value, MAX_Q, MAX_K
    (a packed call's max_seqlen), the split last wave's workspace and flags pointers and its
    switch, then only hidden pointers; the KernelSpec records
    each CUtensorMap's position and its encoding from the compiled metadata (box
    [1, rows, 1, 64] of the 128-byte swizzle, element type)."""
    V, aot = _library_build()
    assert V.SOURCES["fwd_gluon"] == ("sigmoid_attn_fwd_gluon_persistent",
                                      "sigmoid_attn_fwd_gluon_persistent")
    assert V.DESC_RANK == 4
    r = aot.compile_variant(var, 90)
    assert r["num_params"] == 4 * 9 + 21 and r["num_hidden_params"] == 2
    consumers = V.gluon_fwd_consumers(var.block_m)
    assert r["num_warps"] == 4 * (consumers + 1) and r["shared"] <= 227 * 1024
    rows = {"q_desc": V.GLUON_FWD_ROWS, "o_desc": V.GLUON_FWD_ROWS, "k_desc": var.block_n,
            "v_desc": var.block_n}
    cu_type = {"fp16": 6, "bf16": 9}[var.dtype]  # CU_TENSOR_MAP_DATA_TYPE_FLOAT16 / BFLOAT16
    assert [m["arg"] for m in r["tensor_maps"]] == ["q_desc", "k_desc", "v_desc", "o_desc"]
    for i, m in enumerate(r["tensor_maps"]):
        assert m["param"] == 9 * i
        assert m["box"] == [1, rows[m["arg"]], 1, 64], m  # 64 bf16/fp16 columns = 128 bytes
        assert (m["swizzle"], m["elem_bytes"], m["data_type"]) == (3, 2, cu_type), m
    ck, _ = aot.compile_gluon(var, 90)  # (Triton's cache: the same kernel)
    params = aot._entry_params(ck.asm["ptx"], r["entry"])
    assert params[0] == (128, 64) and params[1:5] == [(4, 4)] * 4 and params[5:9] == [(8, 8)] * 4
    assert params[9] == (128, 64) and params[27] == (128, 64)  # k_desc, o_desc
    assert params[36:39] == [(8, 8)] * 3 and params[39:41] == [(4, 4)] * 2
    assert params[41:44] == [(8, 8)] * 3 and params[44:54] == [(4, 4)] * 10
    assert params[54:56] == [(8, 8)] * 2 and params[56] == (4, 4)  # WS, FLAGS, SCHEDULE
    assert params[57:] == [(8, 8)] * 2
    elem = {"fp16": "!tt.ptr<f16>", "bf16": "!tt.ptr<bf16>"}[var.dtype]
    assert r["signature"][4 * 9:] == [("SEQ_LENS_Q", "!tt.ptr<i32>"),
                                      ("SEQ_LENS_K", "!tt.ptr<i32>"), ("O", elem),
                                      ("stride_ot", "i32"), ("D", "i32"),
                                      ("BIAS", "!tt.ptr<f32>"), ("SCORE_MOD", "!tt.ptr<f32>"),
                                      ("stride_smb", "i64"), ("BIAS_MODE", "i32"), ("T_Q", "i32"),
                                      ("T_K", "i32"), ("H", "i32"), ("B", "i32"),
                                      ("kv_group", "i32"), ("scale", "f32"),
                                      ("bias_value", "f32"), ("MAX_Q", "i32"), ("MAX_K", "i32"),
                                      ("WS", "!tt.ptr<f32>"), ("FLAGS", "!tt.ptr<i32>"),
                                      ("SCHEDULE", "i32")]
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
    copies, mbarrier waits, registers moved between the partitions. The packed kernels' masked
    stores (the forward's O, the backward's dK, dV where a sequence ends inside a tile) are 16
    bytes wide, from the alignment their pointer, row stride and head dim D are promised
    (aot.py): without it Triton stores 2 bytes at a time, which with short cells cost as much as
    the tile's products."""
    import re

    _, aot = _library_build()
    compile_kind = aot.compile_gluon if var.kind == "fwd_gluon_padded" else aot.compile_gluon_bwd
    ck, _ = compile_kind(var, 90)
    ptx = ck.asm["ptx"]
    assert "wgmma.mma_async" in ptx and "cp.async.bulk.tensor" in ptx
    assert "mbarrier.try_wait" in ptx
    assert "setmaxnreg.inc" in ptx and "setmaxnreg.dec" in ptx
    if var.varlen:
        assert "st.global.v4" in ptx
        assert not re.search(r"st\.global(\.[a-z0-9:]+)*\.b16\b", ptx)
    if var.kind == "fwd_gluon_padded":
        # the producer's walk: one lane's atom.add on the queue's counter (at both of its
        # places: the first tile and each next one), each posted tile stored to shared memory
        assert ptx.count("atom.global.add.u32") == 2, ptx.count("atom.global.add.u32")
        assert "elect.sync" in ptx and "bar.warp.sync" in ptx
        assert "st.shared" in ptx
        if var.head_dim == 128:
            # a ragged end's last key block at half width (not causal): S over 64 keys
            half = re.search(r"wgmma\.mma_async\.sync\.aligned\.m64n64k16", ptx) is not None
            assert half == (not var.causal), (var.name, half)


def test_library_gluon_forward_without_lengths_walks_itself():
    """The Gluon forward without lengths (kind fwd_gluon: dense and causal, whose SASS the tile
    queue was not to change) has no queue: no atom.add in its PTX."""
    for var in _gluon_variants():
        _, aot = _library_build()
        ck, _ = aot.compile_gluon(var, 90)
        assert "atom.global.add" not in ck.asm["ptx"], var.name


def _library_gluon_variants():
    V, _ = _library_build()
    return [v for v in V.variants(triton.__version__)
            if v.kind in V.GLUON_FORWARD_KINDS + V.GLUON_BACKWARD_KINDS]


@pytest.mark.parametrize("var", _library_gluon_variants(), ids=lambda v: v.name)
def test_library_gluon_tensor_maps_are_rank4(var):
    """Every Gluon kernel the library builds (forward and backward, with and without lengths)
    takes rank-4 descriptors over [B, T, H, D] tensors: the compiled tensordesc types are
    [1, rows, 1, head dim], the tensor maps the KernelSpec records (what the C++ launcher
    encodes) have boxes [1, rows, 1, 64] of the 16-bit tensors and [1, rows, 1, 32] of the fp32
    dQ accumulator (128 bytes of columns: the 128-byte swizzle), each CUtensorMap followed by 4
    shape and 4 stride parameters, and the PTX's TMA copies are 4d; the generated C++
    constants agree (kTensorMapRank)."""
    V, aot = _library_build()
    assert V.DESC_RANK == 4
    assert "constexpr int kTensorMapRank = 4;" in aot.constants_header()
    if var.kind in V.GLUON_FORWARD_KINDS:
        ck, maps = aot.compile_gluon(var, 90)
        part = V.GLUON_FWD_ROWS  # one consumer warpgroup's rows
        rows = {"q_desc": part, "o_desc": part, "k_desc": var.block_n, "v_desc": var.block_n}
    else:
        ck, maps = aot.compile_gluon_bwd(var, 90)
        half = var.block_n // 2
        rows = {"q_desc": var.block_m, "do_desc": var.block_m, "dq_desc": var.block_m,
                "k_desc": half, "v_desc": half, "dk_desc": half, "dv_desc": half}
    assert sorted(m["arg"] for m in maps) == sorted(rows)
    for i, m in enumerate(maps):
        cols = 32 if m["arg"] == "dq_desc" else 64
        assert m["box"] == [1, rows[m["arg"]], 1, cols], m
        assert m["elem_bytes"] * cols == 128 and m["swizzle"] == 3, m
        assert m["param"] == 9 * i, m  # the descriptors lead, 1 + 4 + 4 parameters each
    sig = dict(aot.compiled_signature(ck))
    for name, r in rows.items():
        # (the box spans the power of two at or above the head dim: var.block_d)
        assert sig[name].startswith(f"!tt.tensordesc<1x{r}x1x{var.block_d}x"), sig[name]
        assert [sig.get(f"{name}.{what}.{d}") for what in ("shape", "stride")
                for d in range(5)] == ["i32"] * 4 + [None] + ["i64"] * 4 + [None]
    ptx = ck.asm["ptx"]
    assert "cp.async.bulk.tensor.4d.shared::cta.global" in ptx  # loads
    assert "cp.async.bulk.tensor.4d.global.shared::cta" in ptx  # O; dK, dV stores
    assert "bulk.tensor.3d" not in ptx and "bulk.tensor.5d" not in ptx


def test_library_gluon_forward_score_mod_variants():
    """score_mod in the Gluon forward: compiled for dense non-causal calls only (with the causal
    masks it spills), its full key blocks' entries read two adjacent columns per load (the
    launcher passes rows an even number of floats apart, 8-byte aligned), the plain variant
    reads none."""
    V, aot = _library_build()
    mods = [v for v in _gluon_variants() if v.score_mod]
    assert mods and not any(v.causal for v in mods)
    assert not any(v.score_mod for v in V.variants(triton.__version__)
                   if v.kind == "fwd_gluon_padded")
    for var in mods:
        ptx = aot.compile_gluon(var, 90)[0].asm["ptx"]
        plain = next(v for v in _gluon_variants() if not v.score_mod and not v.causal
                     and v.dtype == var.dtype and v.head_dim == var.head_dim)
        plain_ptx = aot.compile_gluon(plain, 90)[0].asm["ptx"]
        assert "ld.global.v2.b32" in ptx and "ld.global.v2.b32" not in plain_ptx
        assert ptx.count("ld.global") > plain_ptx.count("ld.global")


def test_library_gluon_forward_three_consumers_keep_p_permutes_in_the_sigmoid(tmp_path):
    """The hd64 forward's three consumer warpgroups: in the SASS, every key loop (12 wgmma, a
    score block's 64 tanh) has no byte permutes. P's conversion to the P·V operand layout
    permutes register bytes; unpinned, the compiler moved those PRMT into two consumers' loop
    heads, between the V wait and the P·V wgmma (~10% of the kernel's speed; docs/performance.md,
    "Three consumer warpgroups at hd64")."""
    import subprocess

    spec = importlib.util.spec_from_file_location(
        "sass_loops", os.path.join(HERE, "..", "sass_loops.py"))
    sass_loops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sass_loops)
    V, aot = _library_build()
    three = [v for v in _gluon_variants() if V.gluon_fwd_consumers(v.block_m) == 3]
    assert three, "tiles.json has a three-consumer Gluon forward (hd64)"
    for var in three:
        ck, _ = aot.compile_gluon(var, 90)
        cubin = tmp_path / f"{var.name}.cubin"
        cubin.write_bytes(ck.asm["cubin"])
        sass = subprocess.run([str(sass_loops.nvdisasm()), "-c", str(cubin)],
                              capture_output=True, text=True, check=True).stdout
        # a key loop: one score block's 64 tanh per thread (the loops around it have more)
        key_loops = [c for _, _, c in sass_loops.wgmma_loops(sass) if c["MUFU"] == 64]
        assert len(key_loops) == 3, (var.name, key_loops)  # one per consumer
        assert all(c["PRMT"] == 0 for c in key_loops), (var.name, key_loops)


def _column_range_variants():
    V, _ = _library_build()
    return [v for v in V.variants(triton.__version__)
            if v.kind in ("fwd_gluon", "fwd_gluon_padded", "bwd_gluon") and v.dtype == "bf16"
            and v.head_dim & (v.head_dim - 1) and not v.score_mod and not v.causal]


@pytest.mark.parametrize("var", _column_range_variants(), ids=lambda v: v.name)
def test_library_gluon_column_range_kernels_skip_the_zero_columns(var):
    """A head dim between two powers of two (80, 96, 112, 160, 192) has kernels of its own over
    the next one's boxes whose score products run over its own columns only (_scores, chained
    wgmma over power-of-two ranges): against the same variant at the box's width, every score
    product site has (block_d - D) / 16 fewer k-steps, so the PTX has fewer wgmma by a multiple
    of that; the other products and the boxes are the same."""
    import dataclasses
    import re

    _, aot = _library_build()
    compile_kind = aot.compile_gluon if var.kind.startswith("fwd") else aot.compile_gluon_bwd
    (ck, maps), (box_ck, box_maps) = (compile_kind(v, 90) for v in (
        var, dataclasses.replace(var, head_dim=var.block_d)))
    assert [m["box"] for m in maps] == [m["box"] for m in box_maps]
    counts = [len(re.findall(r"wgmma\.mma_async", k.asm["ptx"])) for k in (ck, box_ck)]
    fewer = counts[1] - counts[0]
    assert fewer > 0 and fewer % ((var.block_d - var.head_dim) // 16) == 0, (var.name, counts)
