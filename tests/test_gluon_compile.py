"""The Gluon forward (benchmarks/gluon_fwd) compiles ahead of time for sm_90 with no GPU, and its
PTX holds the schedule it is written for: wgmma, TMA loads and stores, register reallocation
between the producer and the consumer warpgroups, and every mbarrier invalidated (the Triton
3.6 warp-specialized forward left barriers live under a data buffer; see variants.py)."""

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


@pytest.mark.parametrize("name", ["gfwd_bf16_d128_m128_n128_s2_ov", "gfwd_fp16_d64_m128_n128_s2_ov"])
def test_gluon_forward_compiles_for_sm90(tmp_path, name):
    c = _compile_module()
    (v,) = [v for v in c.variants() if v.name == name]
    rec, missing = c.compile_variant(v, tmp_path)
    assert not missing, missing
    counts = rec["ptx_counts"]
    assert counts["wgmma.mma_async"] > 0 and counts["cp.async.bulk.tensor"] > 0
    # producer down, consumers up: 3 warpgroups, register budget moved by setmaxnreg
    assert rec["threads"] == 384 and any(s.startswith("dec") for s in rec["setmaxnreg"])
    assert any(s.startswith("inc") for s in rec["setmaxnreg"])
    # every barrier initialized is invalidated: one for Q, four per ring stage
    assert counts["mbarrier.inval"] == 1 + 4 * v.stages, counts
    assert (tmp_path / f"{name}.cubin").stat().st_size > 0
