"""The op as torch sees it: opcheck, TorchScript, the package surface, no Triton at import."""

import os
import subprocess
import sys

import pytest
import torch

import sigmoid_attn
from sigmoid_attn import sigmoid_attention, sigmoid_attention_reference


def sample_inputs(device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 9, 4, 32, generator=g).to(device, dtype)
    k = torch.randn(2, 11, 2, 32, generator=g).to(device, dtype)
    v = torch.randn(2, 11, 2, 32, generator=g).to(device, dtype)
    lens_q = torch.tensor([9, 4], dtype=torch.int32, device=device)
    lens_k = torch.tensor([3, 11], dtype=torch.int32, device=device)
    mod = torch.randn(2, 11, generator=g).to(device)
    bias = torch.randn(2, generator=g).to(device)
    return [
        (q, k, v, None, None, False, None, None, None, None),
        (q, k, v, lens_q, lens_k, True, 0.3, -1.0, None, mod),
        (q, k, v, lens_q, None, False, None, None, bias, None),
    ]


@pytest.mark.parametrize("idx", range(3))
def test_opcheck_cpu(idx):
    args = sample_inputs()[idx]
    torch.library.opcheck(torch.ops.sigmoid_attn.forward.default, args)


@pytest.mark.parametrize("is_causal", [False, True])
def test_plain_overload_is_the_op(is_causal):
    """forward.plain(q, k, v, is_causal), the overload the Python layer uses for the plain
    call, is forward with every other argument at its default: same output, bitwise."""
    q, k, v = sample_inputs()[0][:3]
    out = torch.ops.sigmoid_attn.forward.plain(q, k, v, is_causal)
    assert torch.equal(out, torch.ops.sigmoid_attn.forward.default(q, k, v, None, None,
                                                                    is_causal))
    torch.library.opcheck(torch.ops.sigmoid_attn.forward.plain, (q, k, v, is_causal))
    with pytest.raises(RuntimeError, match="head_dim"):
        torch.ops.sigmoid_attn.forward.plain(q, k[..., :16], v)


def test_torchscript_calls_the_op():
    @torch.jit.script
    def f(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        return torch.ops.sigmoid_attn.forward(q, k, v, lens, lens, True, None, None, None, None)

    q, k, v = (torch.randn(2, 10, 2, 32) for _ in range(3))
    lens = torch.tensor([10, 3], dtype=torch.int32)
    out = f(q, k, v, lens)
    ref = sigmoid_attention_reference(q.double(), k.double(), v.double(), seq_lens_q=lens,
                                      seq_lens_k=lens, is_causal=True)
    assert (out.double() - ref).norm() / ref.norm() < 1e-5
    assert "sigmoid_attn::forward" in str(f.graph)


def test_torch_compile_fullgraph_cpu():
    q, k, v = (torch.randn(2, 10, 2, 32) for _ in range(3))
    fn = torch.compile(lambda a, b, c: sigmoid_attention(a, b, c, is_causal=True) * 2,
                       fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(fn(q, k, v), sigmoid_attention(q, k, v, is_causal=True) * 2)


def test_import_does_not_import_triton():
    code = ("import sys, sigmoid_attn, torch; q = torch.randn(1, 4, 1, 32); "
            "sigmoid_attn.sigmoid_attention(q, q, q); sigmoid_attn.info(); "
            "print('triton' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def _tiles_db():
    import json

    from conftest import TRITON_SRC

    with open(os.path.join(TRITON_SRC, "tiles.json")) as f:
        return json.load(f)


def _variants_module():
    from conftest import TRITON_SRC

    sys.path.insert(0, TRITON_SRC)
    try:
        import variants as V
    finally:
        sys.path.remove(TRITON_SRC)
    return V


def _gluon_built():
    """Whether this build compiled the Gluon forward (only with variants.GLUON_TRITON)."""
    return _variants_module().gluon_supported(sigmoid_attn.info()["triton_build"])


def _partial_build():
    """The catalog's subset of a partial build (CMake SIGMOID_ATTN_HEAD_DIMS / _DTYPES): head
    dims and dtypes, None where all; None for a full build."""
    import json

    with open(os.path.join(os.path.dirname(sigmoid_attn.library_path()), "catalog.json")) as f:
        subset = json.load(f).get("subset", "")
    if not subset:
        return None
    opts = dict(kv.split("=") for kv in subset.split())
    dims = opts.get("SIGMOID_ATTN_HEAD_DIMS")
    dtypes = opts.get("SIGMOID_ATTN_DTYPES")
    names = dims.split(";") if dims else []
    return ({int(d) for d in names if d != "generic"} if dims else None,
            set(dtypes.split(";")) if dtypes else None, "generic" in names if dims else None)


def test_catalog_is_the_variant_table():
    """The built catalog is variants.variants() for this Triton (and a partial build's subset),
    in order."""
    V = _variants_module()
    head_dims, dtypes, generic = _partial_build() or (None, None, None)
    want = [v.name for v in V.variants(sigmoid_attn.info()["triton_build"], head_dims=head_dims,
                                       dtypes=dtypes, generic=generic)]
    assert [k["name"] for k in sigmoid_attn.info()["variants"]] == want


def test_head_dim_not_built_names_what_was():
    """A head dim this build did not compile: the dispatcher's error names it and what was
    compiled (and a partial build's CMake options)."""
    import ctypes
    import json

    from conftest import dtype_code, library_function

    f = library_function("sigmoid_attn_select_forward_kernel")
    last_error = ctypes.CDLL(sigmoid_attn.library_path()).sigmoid_attn_last_error
    last_error.restype = ctypes.c_char_p
    assert f(dtype_code("bf16"), 12, 0, 0, 0, 256, 256, 1, 8, 132, 0, 0) == -1
    msg = last_error().decode()
    fwd = [k for k in sigmoid_attn.info()["variants"]
           if k["kind"] == "fwd" and not k["runtime_head_dim"]]
    dims = ", ".join(str(d) for d in sorted({k["head_dim"] for k in fwd}))
    assert "no CUDA kernel is compiled for head_dim=12" in msg and dims in msg, msg
    with open(os.path.join(os.path.dirname(sigmoid_attn.library_path()), "catalog.json")) as c:
        subset = json.load(c)["subset"]
    assert (f"(a partial build: {subset};" in msg) == bool(subset), msg


def test_info_lists_compiled_variants():
    if _partial_build():
        pytest.skip("a partial build (test_catalog_is_the_variant_table checks its catalog)")
    info = sigmoid_attn.info()
    assert info["version"] == sigmoid_attn.__version__
    assert info["arch"] == "sm_90"
    names = [k["name"] for k in info["variants"]]
    assert len(names) == len(set(names)) and len(names) >= 8
    dims = {k["head_dim"] for k in info["variants"]}
    assert {64, 128} <= dims
    for k in info["variants"]:
        # the warp-specialized forwards: 3 warpgroups of 4 warps (Triton's Hopper pass; the
        # Gluon kernels' two consumer partitions and producer), 4 for the Gluon forward's
        # three consumers (192-row tiles)
        warps = (12,) if k["kind"] in ("fwd_ws", "bwd_gluon", "bwd_gluon_padded") else (4, 8)
        if k["kind"] in ("fwd_gluon", "fwd_gluon_padded"):
            warps = (4 * (k["block_m"] // 64 + 1),)
        assert k["cubin_bytes"] > 0 and k["num_warps"] in warps
        dt = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}[k["dtype"]]
        dim = f"dmax{k['head_dim']}" if k["runtime_head_dim"] else f"d{k['head_dim']}"
        assert k["name"].startswith(f"{k['kind']}_{dt}_{dim}")
        assert ("_varlen" in k["name"]) == k["varlen"]
    kinds = {k["kind"] for k in info["variants"]}
    extra = {"fwd_ws", "fwd_gluon", "fwd_gluon_padded", "bwd_gluon", "bwd_gluon_padded",
             "dq_cast"}
    assert kinds - extra == {"fwd", "bwd_dkdv", "bwd_dq"}
    # Every (kind, dtype, head dim) is compiled dense and packed, causal or not, with/without mod.
    # (fp32: the powers of two; the other head dims by the generic kernels)
    combos = {(k["kind"], k["dtype"], k["head_dim"], k["runtime_head_dim"], k["varlen"],
               k["causal"], k["score_mod"])
              for k in info["variants"] if k["kind"] not in extra}
    groups = {c[:4] for c in combos}
    assert len(combos) == len(groups) * 8
    assert {(kind, dt) for kind, dt, _, _ in groups} == {
        (kind, dt) for kind in ("fwd", "bwd_dkdv", "bwd_dq") for dt in {k["dtype"] for k in info["variants"]}}
    ws = {(k["dtype"], k["head_dim"], k["varlen"], k["causal"], k["score_mod"])
          for k in info["variants"] if k["kind"] == "fwd_ws"}
    ws_dims = {d for _, d, *_ in ws}
    # (no packed score_mod: such calls take the other forward)
    # (no causal ones when tiles.json's fwd_ws_causal is false)
    per_dim = 6 if _tiles_db().get("fwd_ws_causal", True) else 3
    assert len(ws) == 2 * len(ws_dims) * per_dim and all(dt != "float32" for dt, *_ in ws)
    assert not any(varlen and mod for _, _, varlen, _, mod in ws)
    # The Gluon forward (tiles.json fwd_gluon), built with Triton 3.8 only: fp16/bf16, dense,
    # causal or not, one kernel per head dim in the database and causal flag, and one with
    # score_mod (not causal); the same again with lengths, [B, T, H, D] and packed, without
    # score_mod (kind fwd_gluon_padded, the same tiles)
    for kind, varlens in (("fwd_gluon", (False,)), ("fwd_gluon_padded", (False, True))):
        gluon = sorted((k["dtype"], k["head_dim"], k["varlen"], k["causal"], k["score_mod"])
                       for k in info["variants"] if k["kind"] == kind)
        want = sorted((dt, int(d), varlen, causal, mod) for dt in ("float16", "bfloat16")
                      for d, t in _tiles_db().get("fwd_gluon", {}).items()
                      # (causal: two consumer warpgroups of 64 rows only)
                      for causal in ((False, True) if t[0] == 128 else (False,))
                      for varlen in varlens for mod in (False, True)
                      if not mod or (kind == "fwd_gluon" and not causal and t[0] == 128))
        assert gluon == (want if _gluon_built() else []), kind
    # The Gluon backward (tiles.json bwd_gluon) and its dQ cast, Triton 3.8 only: fp16/bf16,
    # one of each per head dim in the database
    # (the Gluon backward causal or not, with score_mod or not; with lengths, also packed, no
    # score_mod; one cast, dense, serves all)
    for kind, causals, varlens, mods in (("bwd_gluon", (False, True), (False,), (False, True)),
                                         ("bwd_gluon_padded", (False, True), (False, True),
                                          (False,)),
                                         ("dq_cast", (False,), (False,), (False,))):
        got = sorted((k["dtype"], k["head_dim"], k["varlen"], k["causal"], k["score_mod"])
                     for k in info["variants"] if k["kind"] == kind)
        # (one cast per power of two: a head dim between two takes the next one's)
        want = sorted((dt, int(d), varlen, causal, mod) for dt in ("float16", "bfloat16")
                      for d in _tiles_db().get("bwd_gluon", {})
                      if kind != "dq_cast" or int(d) & (int(d) - 1) == 0 for causal in causals
                      for varlen in varlens for mod in mods)
        assert got == (want if _gluon_built() else []), kind


def test_tuning_database_is_what_the_build_compiled(tmp_path):
    """triton_src/tiles.json (the tuning database) covers every kind and head dim with valid
    tiles, round-trips through save_tiles, and is exactly what this build compiled."""
    import json

    from conftest import TRITON_SRC

    sys.path.insert(0, TRITON_SRC)
    try:
        import variants as V
    finally:
        sys.path.remove(TRITON_SRC)
    db = V.load_tiles()
    dims = set(db["fwd"])
    assert dims and set(db["bwd_dkdv"]) == dims and set(db["bwd_dq"]) == dims
    pow2 = lambda x: x > 0 and x & (x - 1) == 0
    for kind in ("fwd", "bwd_dkdv", "bwd_dq"):
        for d, entry in db[kind].items():
            buckets = entry if kind == "fwd" else [[0, entry]]
            mins = [m for m, _ in buckets if m != -1]  # -1: the small-problem bucket (fwd)
            assert mins[0] == 0 and mins == sorted(set(mins)), (kind, d, mins)
            assert [m for m, _ in buckets][:len(buckets) - len(mins)] in ([], [-1]), (kind, d)
            for _, tiles in buckets:
                bm, bn, w, s = tiles[:4]
                assert pow2(bm) and pow2(bn) and w in (4, 8) and 1 <= s <= 5, (kind, d)
                assert tiles[4:] in ([], ["tma"]) and (kind == "fwd" or not tiles[4:]), tiles
    # The warp-specialized forward: [min_T, tiles] buckets of num_warps 4 for power-of-two
    # head dims (Triton's Hopper pass specializes 4-warp kernels only), dispatch off or on.
    for d, buckets in db.get("fwd_ws", {}).items():
        assert pow2(int(d)) and [m for m, _ in buckets][0] == 0, (d, buckets)
        for _, tiles in buckets:
            assert pow2(tiles[0]) and pow2(tiles[1]) and tiles[2] == 4 and len(tiles) == 4, tiles
            # 3 stages came out NaN on the H100 (Triton 3.6; docs/performance.md, "The
            # warp-specialized forward"): the database keeps 2
            assert tiles[3] == 2, tiles
    # The Gluon forward: [BLOCK_M, BLOCK_N, 4, num_stages] per head dim; its consumer
    # warpgroups own 64 rows each (two or three: BLOCK_M 128 or 192), its descriptors' boxes
    # are 64-column (128-byte) swizzled pieces of a power-of-two head dim; causal variants only
    # with two consumers (three spill with the masks). A head dim between two (a multiple of 16
    # past half of the next one: 80, 96, 112, 160, 192) runs over that one's boxes, the score
    # products over its own columns (the kernel's SCORE_DIM), with that one's tiles or, where
    # measured faster, its own key blocks and stages (hd160: 32-key blocks in four stages).
    gluon_fwd = db.get("fwd_gluon", {})
    for d, tiles in gluon_fwd.items():
        bm, bn, w, s = tiles[:4]
        box = 1 << (int(d) - 1).bit_length()
        assert box % 64 == 0 and pow2(bn), (d, tiles)
        if box != int(d):
            assert int(d) % 16 == 0 and 2 * int(d) > box, d
            assert tiles[0] == gluon_fwd[str(box)][0], (d, tiles, "the query tile of", box)
        assert bm in (128, 192) and V.gluon_fwd_consumers(bm) * V.GLUON_FWD_ROWS == bm
        assert 32 <= bn <= 128 and w == 4 and 2 <= s <= 4, (d, tiles)
        assert len(tiles) == 4, (d, tiles)
    assert isinstance(db.get("fwd_gluon_dispatch", False), bool)
    # The Gluon backward: [64, 128, 4, num_stages, schedule] per head dim (64-row query tiles,
    # 64 keys per consumer warpgroup: the kernel's static_assert), a schedule of
    # variants.GLUON_BWD_SCHEDULES ("dqx_dqd" at D = 128 only), off by default. A head dim
    # between 64 and 128 (a multiple of 16: 80, 96, 112) runs over hd128's boxes with its tiles.
    gluon_bwd = db.get("bwd_gluon", {})
    for d, tiles in gluon_bwd.items():
        box = 1 << (int(d) - 1).bit_length()
        assert box in (64, 128) and tiles[:3] == [64, 128, 4] and tiles[3] in (2, 3), tiles
        assert len(tiles) == 5 and tiles[4] in V.GLUON_BWD_SCHEDULES, (d, tiles)
        assert tiles[4] != "dqx_dqd" or box == 128, (d, tiles)
        if box != int(d):
            assert int(d) % 16 == 0 and 2 * int(d) > box, d
            assert tiles == gluon_bwd.get(str(box)), (d, tiles, "the tiles of", box)
    assert isinstance(db.get("bwd_gluon_dispatch", False), bool)
    assert isinstance(db.get("fwd_ws_dispatch", False), bool)
    assert isinstance(db.get("fwd_ws_causal", True), bool)
    # Program order: fwd_causal_lpt holds [min_T, programs per group of heads] buckets per head
    # dim (0: launch order).
    for d, buckets in db.get("fwd_causal_lpt", {}).items():
        mins = [m for m, _ in buckets]
        assert d in db["fwd"] and mins[0] == 0 and mins == sorted(set(mins)), (d, buckets)
        assert all(isinstance(n, int) and n >= 0 for _, n in buckets), (d, buckets)
    for kind in ("bwd_dkdv", "bwd_dq"):  # per head dim, no length buckets
        for d, n in db.get(f"{kind}_causal_lpt", {}).items():
            assert d in db[kind] and isinstance(n, int) and n >= 0, (kind, d, n)
    # (tiles.json's values: a build's CMake overrides, SIGMOID_ATTN_CAUSAL_LPT, are aot.py's)
    for var in V.variants():
        if var.kind == "fwd":
            buckets = db.get("fwd_causal_lpt", {}).get(str(var.head_dim), [])
            want = max(((m, n) for m, n in buckets if m <= var.min_t), default=(0, 0))[1]
        else:
            want = db.get(f"{var.kind}_causal_lpt", {}).get(str(var.head_dim), 0)
        dense_causal = var.causal and not var.varlen and var.dtype != "fp32"
        assert var.causal_lpt == (want if dense_causal else 0), var.name
    path = tmp_path / "tiles.json"
    V.save_tiles(db, str(path))
    assert json.loads(path.read_text()) == db
    if _partial_build():
        return  # (test_catalog_is_the_variant_table checks a partial build's catalog)
    # The compiled catalog (fp16/bf16) holds exactly these tiles.
    # (a TMA variant's tile token ends in "tma": fwd_bf16_d128_m128n64w8s3tma_t8192)
    # (the warp-specialized forwards are written for 4 warps, and run 3 warpgroups)
    # (the Gluon forward: one warpgroup per 64 rows and the producer's)
    def groups(k):
        if k["kind"] in ("fwd_gluon", "fwd_gluon_padded"):
            return k["block_m"] // 64 + 1
        return 3 if k["kind"] in ("fwd_ws", "bwd_gluon", "bwd_gluon_padded") else 1

    compiled = {(k["kind"], k["head_dim"], k["min_t"], (k["block_m"], k["block_n"],
                 k["num_warps"] // groups(k),
                 k["num_stages"])
                 + (("tma",) if "tma" in k["name"] else ())
                 # (the Gluon backward's schedule ends its name: ..._m64n128w4s2_dqx_dqd)
                 + ((k["name"].split(f"s{k['num_stages']}_", 1)[1],)
                    if k["kind"] in ("bwd_gluon", "bwd_gluon_padded") else ()))
                for k in sigmoid_attn.info()["variants"]
                if k["dtype"] != "float32" and k["kind"] != "dq_cast"}
    # (warp-specialized kernels only from a Triton with the pass's barrier fix, Gluon ones only
    # from the Triton they are pinned to)
    ws_ok = V.warp_specialization_safe(sigmoid_attn.info()["triton_build"])
    kinds = (("fwd",) + (("fwd_ws",) if ws_ok else ())
             + (("fwd_gluon", "fwd_gluon_padded", "bwd_gluon", "bwd_gluon_padded")
                if _gluon_built() else ())
             + ("bwd_dkdv", "bwd_dq"))
    want = {(kind, int(d), m, tuple(t))
            for kind in kinds
            # (fwd_gluon_padded: fwd_gluon's tiles)
            for d, entry in db.get(kind.replace("_padded", ""), {}).items()
            for m, t in (entry if kind in ("fwd", "fwd_ws") else [[0, entry]])}
    assert compiled == want


def test_dispatch_size_rules():
    """The forward kernel the C++ dispatcher picks, by size, without a GPU: the length buckets of
    tiles.json (min_t), and the small-problem tile when the length's tile would launch fewer
    programs than the GPU has SMs (an H100 has 132)."""
    if _partial_build():
        pytest.skip("walks every head dim of tiles.json: a full build")
    from conftest import TRITON_SRC, dtype_code, library_function

    sys.path.insert(0, TRITON_SRC)
    try:
        import variants as V
    finally:
        sys.path.remove(TRITON_SRC)
    f = library_function("sigmoid_attn_select_forward_kernel")
    catalog = sigmoid_attn.info()["variants"]

    def pick(D, B, T, H, causal=False, varlen=False, sms=132, dtype="bf16", ws=False, mod=False):
        total = B * T if varlen else T
        i = f(dtype_code(dtype), D, causal, mod, varlen, T, total, B, H, sms, ws, 0)
        assert i >= 0, (D, B, T, H)
        return catalog[i]

    db = V.load_tiles()["fwd"]
    for D in (64, 128):
        buckets = {m: t for m, t in db[str(D)]}
        tiles = lambda k: [k["block_m"], k["block_n"], k["num_warps"], k["num_stages"]]
        for causal in (False, True):
            # B=16, H=16 fills the GPU at every length: the length's bucket
            for T, bucket in ((1024, 0), (4096, 0), (8191, 0), (8192, 8192), (16384, 8192)):
                k = pick(D, 16, T, 16, causal)
                assert k["min_t"] == bucket and tiles(k) == buckets[bucket][:4], (D, T, k["name"])
                assert k["causal"] == causal and k["head_dim"] == D
                assert ("tma" in k["name"]) == ("tma" in buckets[bucket][4:])
        if -1 in buckets:
            small = buckets[-1][:4]
            bm = buckets[0][0]
            # the host-cost shape: B=1, T=256, H=8 -> 2 * 8 = 16 programs of 128 rows < 132 SMs
            k = pick(D, 1, 256, 8)
            assert k["min_t"] == -1 and tiles(k) == small and k["name"].endswith("_small")
            # exactly at the SM count the length tile stays; one program fewer takes the small
            programs = -(-1024 // bm) * 8
            assert pick(D, 1, 1024, 8, sms=programs)["min_t"] == 0
            assert pick(D, 1, 1024, 8, sms=programs + 1)["min_t"] == -1
            # a long sequence of one head: the 8192 bucket's 128-row grid is under one wave
            assert pick(D, 1, 8192, 1)["min_t"] == -1
            # packed: total // block_m + B + 1 programs per head
            k = pick(D, 4, 300, 2, varlen=True)
            assert k["varlen"] and k["min_t"] == -1
            assert pick(D, 40, 2000, 16, varlen=True)["min_t"] == 0
    # float32 has no small-problem tile: always its one bucket
    assert pick(64, 1, 256, 8, dtype="fp32")["min_t"] == 0
    # nothing compiled for head_dim 40: -1, not a crash
    assert f(1, 12, 0, 0, 0, 256, 256, 1, 8, 132, 0, 0) == -1
    # The warp-specialized forward (tiles.json fwd_ws), when the caller allows it: taken for the
    # variant and length it is compiled for, never instead of the small-problem tile, never in
    # float32; the same variant flags.
    ws_db = V.load_tiles().get("fwd_ws", {})
    if not V.warp_specialization_safe(sigmoid_attn.info()["triton_build"]):
        ws_db = {}  # not compiled by this Triton (variants.WS_MIN_TRITON)
    for D, buckets in ws_db.items():
        D = int(D)
        for causal, mod, varlen in ((False, False, False), (True, True, False),
                                    (True, False, True), (False, True, False),
                                    (False, False, True)):
            if causal and not V.FWD_WS_CAUSAL:  # causal calls keep the other forward
                assert pick(D, 16, 4096, 16, causal, varlen, ws=True, mod=mod)["kind"] == "fwd"
                continue
            k = pick(D, 16, 4096, 16, causal, varlen, ws=True, mod=mod)
            assert k["kind"] == "fwd_ws" and k["head_dim"] == D, k["name"]
            assert (k["causal"], k["score_mod"], k["varlen"]) == (causal, mod, varlen)
            assert [k["block_m"], k["block_n"]] == buckets[0][1][:2]
            assert pick(D, 16, 4096, 16, causal, varlen, mod=mod)["kind"] == "fwd"
        assert pick(D, 1, 256, 8, ws=True)["min_t"] == -1  # under one wave: the latency tile
        assert pick(D, 16, 4096, 16, ws=True, dtype="fp32")["kind"] == "fwd"
        # its own grid must fill the GPU too: with taller tiles than the other forward's, a
        # grid that the other fills (>= 132 programs) can be under one wave for it
        ws_m, fwd_m = buckets[0][1][0], pick(D, 16, 4096, 16)["block_m"]
        if ws_m > fwd_m:
            T = 1024
            programs = lambda bm: -(-T // bm) * 16  # B=1, H=16
            sms = programs(ws_m) + 1  # the other forward fills it (its tiles are shorter)
            assert programs(fwd_m) >= sms
            assert pick(D, 1, T, 16, ws=True, sms=sms)["kind"] == "fwd"
            assert pick(D, 1, T, 16, ws=True, sms=sms - 1)["kind"] == "fwd_ws"


def test_dispatch_takes_the_gluon_forward_exactly_where_it_covers_the_call():
    """The Gluon forward (tiles.json fwd_gluon) through the C++ dispatcher, without a GPU: taken
    for fp16/bf16 calls of its head dims that are dense (causal or not) and without score_mod,
    where the caller says the rest holds (switch on, no lengths, no bias tensor, causal only
    with Tq == Tk, TMA-readable operands: the last argument) and it has a tile per SM at least;
    otherwise the choice is the one without it. It takes precedence over the Triton
    warp-specialized forward."""
    if _partial_build():
        pytest.skip("walks every head dim of tiles.json: a full build")
    from conftest import dtype_code, library_function

    V = _variants_module()
    f = library_function("sigmoid_attn_select_forward_kernel")
    catalog = sigmoid_attn.info()["variants"]
    db = V.load_tiles().get("fwd_gluon", {}) if _gluon_built() else {}

    def pick(D, B, T, H, dtype="bf16", causal=False, mod=False, varlen=False, sms=132, ws=False,
             gluon=True):
        total = B * T if varlen else T
        i = f(dtype_code(dtype), D, causal, mod, varlen, T, total, B, H, sms, ws, gluon)
        return catalog[i] if i >= 0 else None

    if not _gluon_built():  # nothing to take: the same choice with and without
        for D in (64, 128):
            assert pick(D, 16, 4096, 16)["kind"] != "fwd_gluon"
        return
    assert db, "a Triton 3.8 build compiles the database's Gluon tiles"
    for D, tiles in db.items():
        D = int(D)
        # (causal: two consumer warpgroups only)
        causals = (False, True) if V.gluon_fwd_consumers(tiles[0]) == 2 else (False,)
        for dtype in ("fp16", "bf16"):
            for ws in (False, True):
                for causal in causals:
                    k = pick(D, 16, 4096, 16, dtype=dtype, ws=ws, causal=causal)
                    assert k["kind"] == "fwd_gluon" and k["head_dim"] == D, k["name"]
                    assert k["dtype"] == V.DTYPE_TABLE[dtype][1] and k["causal"] == causal
                    got = [k["block_m"], k["block_n"], k["num_stages"]]
                    assert got == [tiles[0], tiles[1], tiles[3]], k["name"]
                    # not allowed by the caller: what the dispatcher takes without it
                    without = pick(D, 16, 4096, 16, dtype=dtype, ws=ws, causal=causal,
                                   gluon=False)
                    assert without["kind"] in (("fwd", "fwd_ws") if ws else ("fwd",)), \
                        without["name"]
        # every variant flag it does not cover, and float32: the other forwards
        for kw in ({"varlen": True}, {"dtype": "fp32"}, {"causal": True, "mod": True},
                   {"causal": True, "varlen": True}):
            for ws in (False, True):  # (none at all: float32 at 160, 192)
                k = pick(D, 16, 4096, 16, ws=ws, **kw)
                assert k is None or k["kind"] != "fwd_gluon", kw
        # score_mod (dense, not causal, two consumers): its own variant; three consumers
        # (hd64) spill with it: the other forwards
        k = pick(D, 16, 4096, 16, mod=True)
        if V.gluon_fwd_consumers(tiles[0]) == 2:
            assert (k["kind"], k["score_mod"], k["causal"]) == ("fwd_gluon", True, False), \
                k["name"]
        else:
            assert k["kind"] != "fwd_gluon", k["name"]
        # at least one tile per SM: cdiv(T, BLOCK_M) * H * B tiles >= SMs (causal alike)
        bm = tiles[0]
        T, H, B = 1000, 8, 2
        programs = -(-T // bm) * H * B
        for causal in causals:
            assert pick(D, B, T, H, sms=programs, causal=causal)["kind"] == "fwd_gluon"
            below = pick(D, B, T, H, sms=programs + 1, causal=causal)
            assert below["kind"] != "fwd_gluon"
            assert below == pick(D, B, T, H, sms=programs + 1, causal=causal, gluon=False)
        # the host-cost shape (B=1, T=256, H=8): the small-problem tile, as without it
        assert pick(D, 1, 256, 8) == pick(D, 1, 256, 8, gluon=False)
        # T = 1 and odd lengths: one query block per (head, batch)
        assert pick(D, 200, 1, 1)["kind"] == "fwd_gluon"
        assert pick(D, 3, 4097, 48)["kind"] == "fwd_gluon"
    # head dims without a Gluon kernel: the other forwards, or the Gluon kernel of the next power
    # of two where D fills enough of its columns (test_head_dims.py walks that rule)
    fill = V.load_tiles().get("fwd_gluon_min_fill", 1.0)
    for D in {32, 96, 256} - {int(d) for d in db}:
        block = 1 << (D - 1).bit_length()
        k = pick(D, 16, 4096, 16)
        if str(block) in db and D >= fill * block:
            assert (k["kind"], k["head_dim"]) == ("fwd_gluon", block), (D, k["name"])
        else:
            assert k["kind"] != "fwd_gluon", (D, k["name"])


def test_dispatch_takes_the_gluon_backward_exactly_where_it_covers_the_call():
    """The backward's dK/dV kernel through the C++ dispatcher, without a GPU: the Gluon backward
    (tiles.json bwd_gluon) for a covered call (gluon flag: switched on, nondeterministic allowed,
    no lengths, no bias tensor, TMA-describable: ops_cuda_bwd.cpp decides it) of a compiled
    dtype and head dim, dense, causal or not, with score_mod or not; the two-kernel backward
    otherwise."""
    if _partial_build():
        pytest.skip("walks every head dim of tiles.json: a full build")
    from conftest import TRITON_SRC, dtype_code, library_function

    sys.path.insert(0, TRITON_SRC)
    try:
        import variants as V
    finally:
        sys.path.remove(TRITON_SRC)
    f = library_function("sigmoid_attn_select_backward_kernel")
    catalog = sigmoid_attn.info()["variants"]

    def pick(D, dtype="bf16", causal=False, mod=False, varlen=False, gluon=True):
        i = f(dtype_code(dtype), D, causal, mod, varlen, 4096, gluon)
        assert i >= 0, (D, dtype)
        return catalog[i]

    gluon_dims = {int(d) for d in V.load_tiles().get("bwd_gluon", {})} if _gluon_built() else set()
    fill = V.load_tiles().get("bwd_gluon_min_fill", 1.0)
    for D in (32, 64, 96, 128, 256):
        # its own Gluon kernel, else the next power of two's where D fills enough of its columns
        block = 1 << (D - 1).bit_length()
        served = D if D in gluon_dims else (
            block if block in gluon_dims and D >= fill * block else None)
        for dtype in ("fp16", "bf16"):
            k = pick(D, dtype)
            assert k["kind"] == ("bwd_gluon" if served else "bwd_dkdv"), k["name"]
            assert k["head_dim"] == (served or D) and not k["causal"] and not k["varlen"]
            c = pick(D, dtype, causal=True)
            assert c["kind"] == ("bwd_gluon" if served else "bwd_dkdv") and c["causal"]
            for kw in (dict(varlen=True), dict(gluon=False), dict(causal=True, gluon=False),
                       dict(mod=True, gluon=False)):
                assert pick(D, dtype, **kw)["kind"] == "bwd_dkdv", (D, kw)
            # score_mod (dense, causal or not): its own variant
            for causal in (False, True):
                m = pick(D, dtype, mod=True, causal=causal)
                assert (m["kind"] == "bwd_gluon") == bool(served), (D, m["name"])
                assert m["score_mod"] and m["causal"] == causal
        assert pick(D, "fp32")["kind"] == "bwd_dkdv"  # (no fp32 Gluon kernel)


def test_dispatch_switches_round_trip():
    """The C API dispatch switches (warp-specialized forward, Gluon forward and backward): set
    returns the previous setting, a negative value only reads."""
    from conftest import library_function

    for name in ("sigmoid_attn_warp_specialized", "sigmoid_attn_gluon_forward",
                 "sigmoid_attn_gluon_backward"):
        f = library_function(name)
        start = f(-1)
        assert start in (0, 1)
        assert f(1) == start and f(-1) == 1
        assert f(0) == 1 and f(-1) == 0
        f(start)
        assert f(-1) == start


def test_kernel_options_from_python():
    """sigmoid_attn.kernel_options sets the same switches as the C API (read back through
    ctypes), as a call and as a context manager that restores the settings from before; a
    wrong type is refused, naming the argument."""
    from conftest import library_function

    import sigmoid_attn

    c_api = {"warp_specialized": library_function("sigmoid_attn_warp_specialized"),
             "gluon_forward": library_function("sigmoid_attn_gluon_forward"),
             "gluon_backward": library_function("sigmoid_attn_gluon_backward"),
             "split_wave": library_function("sigmoid_attn_split_wave"),
             "tile_queue": library_function("sigmoid_attn_tile_queue")}
    start = sigmoid_attn.current_kernel_options()
    assert start == {name: bool(f(-1)) for name, f in c_api.items()}
    try:
        with sigmoid_attn.kernel_options(gluon_forward=not start["gluon_forward"]) as o:
            assert o.previous == start
            assert bool(c_api["gluon_forward"](-1)) != start["gluon_forward"]
            assert bool(c_api["warp_specialized"](-1)) == start["warp_specialized"]  # untouched
            assert bool(c_api["gluon_backward"](-1)) == start["gluon_backward"]
        assert sigmoid_attn.current_kernel_options() == start
        o = sigmoid_attn.kernel_options(warp_specialized=False, gluon_forward=True,
                                        gluon_backward=False)
        assert o.previous == start
        now = lambda: tuple(c_api[n](-1) for n in ("warp_specialized", "gluon_forward"))
        assert now() == (0, 1) and c_api["gluon_backward"](-1) == 0
        with sigmoid_attn.kernel_options(gluon_backward=True):
            assert c_api["gluon_backward"](-1) == 1 and now() == (0, 1)
            assert sigmoid_attn.current_kernel_options()["gluon_backward"] is True
        assert c_api["gluon_backward"](-1) == 0
        with pytest.raises(TypeError, match=r"gluon_backward must be a bool or None, got int"):
            sigmoid_attn.kernel_options(gluon_backward=0)
        with pytest.raises(TypeError, match=r"warp_specialized must be a bool or None, got int 1"):
            sigmoid_attn.kernel_options(warp_specialized=1)
        with pytest.raises(TypeError, match=r"gluon_forward must be a bool or None, got str"):
            sigmoid_attn.kernel_options(gluon_forward="on")
        assert now() == (0, 1)
        with sigmoid_attn.kernel_options(gluon_forward=False):
            assert now() == (0, 0)
        assert now() == (0, 1)
        with sigmoid_attn.kernel_options(split_wave=not start["split_wave"]):
            assert bool(c_api["split_wave"](-1)) != start["split_wave"] and now() == (0, 1)
        assert bool(c_api["split_wave"](-1)) == start["split_wave"]
        # split_wave 2 (every call with a partial wave): kept through a context, and set
        # values clamp to 0..2
        before = c_api["split_wave"](2)
        with sigmoid_attn.kernel_options(split_wave=False):
            assert c_api["split_wave"](-1) == 0
        assert c_api["split_wave"](-1) == 2
        assert sigmoid_attn.current_kernel_options()["split_wave"] is True
        assert c_api["split_wave"](7) == 2 and c_api["split_wave"](-1) == 2
        assert c_api["split_wave"](-3) == 2 and c_api["split_wave"](1) == 2
        c_api["split_wave"](before)
        with sigmoid_attn.kernel_options(tile_queue=not start["tile_queue"]):
            assert bool(c_api["tile_queue"](-1)) != start["tile_queue"] and now() == (0, 1)
            assert c_api["split_wave"](-1) == before
        assert bool(c_api["tile_queue"](-1)) == start["tile_queue"]
        with pytest.raises(TypeError, match=r"tile_queue must be a bool or None, got int"):
            sigmoid_attn.kernel_options(tile_queue=1)
    finally:
        sigmoid_attn.kernel_options(**start)
    assert sigmoid_attn.current_kernel_options() == start


def test_binding_is_pure_python():
    """Python reaches the ops library's C entry points through ctypes (_library.py): the
    package's directories (the source tree and the install tree of an editable install) hold no
    compiled Python module, so one wheel serves every CPython >= 3.10. The binding reads the
    library torch loaded: its build facts and catalog as the library's catalog.json has them."""
    import glob
    import json

    from sigmoid_attn import _library

    assert _library.__file__.endswith(".py")
    compiled = [f for d in sigmoid_attn.__path__
                for pattern in ("*.cpython-*.so", "*.abi3.so", "_C*.so")
                for f in glob.glob(os.path.join(d, "**", pattern), recursive=True)]
    assert not compiled, compiled
    assert _library.locate() == sigmoid_attn.library_path()

    build = _library.build_info()
    assert set(build) == {"version", "torch", "triton", "cuda", "arch"}
    assert all(isinstance(v, str) for v in build.values()), build
    with open(os.path.join(os.path.dirname(sigmoid_attn.library_path()), "catalog.json")) as f:
        catalog = json.load(f)
    assert build["arch"] == f"sm_{catalog['arch']}" and build["triton"] == catalog["triton"]
    assert build["version"] == sigmoid_attn.__version__
    kernels = _library.kernel_catalog()
    assert [k["name"] for k in kernels] == [k["name"] for k in catalog["kernels"]]
    types = dict.fromkeys(("name", "kind", "dtype"), str)
    types.update(dict.fromkeys(("causal", "score_mod", "varlen", "runtime_head_dim"), bool))
    types.update(dict.fromkeys(("head_dim", "block_m", "block_n", "num_warps", "num_stages",
                                "min_t", "shared_bytes", "num_hidden_params", "cubin_bytes",
                                "stride_multiple"), int))
    for k, c in zip(kernels, catalog["kernels"]):
        assert {f: type(v) for f, v in k.items()} == types, k
        assert k["kind"] == c["kind"] and k["causal"] == c["causal"], (k, c)
        assert k["cubin_bytes"] == c["cubin_bytes"] and k["head_dim"] == c["head_dim"], (k, c)


def test_dispatch_switch_unknown_name():
    """An unknown switch name is refused with a ValueError naming the valid ones; nothing
    changes."""
    from sigmoid_attn import _library

    start = sigmoid_attn.current_kernel_options()
    with pytest.raises(ValueError, match=r"unknown switch 'warp_spec'.*'warp_specialized', "
                       r"'gluon_forward', 'gluon_backward', 'split_wave' or 'tile_queue'"):
        _library.dispatch_switch("warp_spec", 1)
    assert sigmoid_attn.current_kernel_options() == start
    assert _library.dispatch_switch("gluon_backward", -1) == start["gluon_backward"]
