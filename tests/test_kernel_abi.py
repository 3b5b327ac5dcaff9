"""The generated kernel ABI, without a GPU: the argument structs and packers of kernel_args.h
(generated from variants.PARAMS by triton_src/aot.py) against the kernels Triton compiled.

What would launch a kernel with two arguments swapped is a packed parameter array whose order is
not the compiled kernel's. So the test compiles the generated header with the C++ compiler, fills
each struct by designated initializers written from the compiled kernel's own signature (its
TTIR: names and types, in order; value = position), packs it and reads every slot back with the
size of that PTX parameter. Swapping two same-typed entries of PARAMS, or two pointers in a
packer, must fail it; so must aot.py's build-time check of the same signature.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, TRITON_SRC

sys.path.insert(0, TRITON_SRC)
try:
    import aot
    import variants as V
finally:
    sys.path.remove(TRITON_SRC)

triton = pytest.importorskip("triton")


def _cuda_include():
    import torch

    site = os.path.dirname(os.path.dirname(torch.__file__))
    for d in (os.path.join(os.environ.get("CUDA_HOME", "/nonexistent"), "include"),
              "/usr/local/cuda/include", os.path.join(site, "nvidia", "cu13", "include"),
              os.path.join(site, "nvidia", "cuda_runtime", "include")):
        if os.path.exists(os.path.join(d, "cuda.h")):
            return d
    return None


CXX = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
CUDA_INCLUDE = _cuda_include()
needs_cxx = pytest.mark.skipif(CXX is None or CUDA_INCLUDE is None,
                               reason="needs a C++20 compiler and cuda.h")


@pytest.fixture(scope="module")
def compiled():
    """One compiled kernel per kind this Triton builds (fp16, the smallest head dim): its
    record as aot.py writes it (compiled signature, PTX parameter sizes, hidden count)."""
    out = {}
    for kind in V.KINDS:
        todo = V.variants(triton.__version__, kinds=[kind], dtypes=["fp16"])
        if todo:
            var = min(todo, key=lambda v: (v.head_dim, v.varlen, v.causal, v.score_mod))
            out[kind] = aot.compile_variant(var, 90)
    assert {"fwd", "bwd_dkdv", "bwd_dq"} <= set(out)
    if V.gluon_supported(triton.__version__):  # (the Gluon kinds: Triton 3.8 builds only)
        assert {"fwd_gluon", "bwd_gluon", "dq_cast"} <= set(out)
    return out


def _hidden(compiled):
    n = max(r["num_hidden_params"] for r in compiled.values())
    return {k: compiled[k]["num_hidden_params"] if k in compiled else n for k in V.KINDS}


def _initializer(kind, record):
    """`Struct{.name = value, ...}` in the compiled kernel's parameter order, each value its
    position (1-based) in that order; a descriptor's map, shapes and strides likewise."""
    fields, order = {}, []
    for pos, (name, ty) in enumerate(record["signature"], start=1):
        field, _, rest = name.partition(".")
        if field not in fields:
            order.append(field)
            fields[field] = []
        fields[field].append((pos, ty, rest))
    inits = []
    for field in order:
        (pos, ty, _), *parts = fields[field]
        if ty.startswith("!tt.tensordesc"):
            sets = [f"t.{r.replace('.', '[')}] = {p};" for p, _, r in parts]
            value = (f"[] {{ TensorMapArg t{{}}; uint64_t m = {pos}; "
                     f"std::memcpy(&t.map, &m, 8); {' '.join(sets)} return t; }}()")
        elif ty.startswith("!tt.ptr"):
            value = f"CUdeviceptr{{{pos}}}"
        else:
            value = {"i32": "int32_t", "i64": "int64_t", "f32": "float"}[ty] + f"{{{pos}}}"
        inits.append(f".{field} = {value}")
    return f"{aot._cpp_name(kind)}{{{', '.join(inits)}}}"


def _reader(ty, size):
    if ty == "f32":
        return "float"
    return {8: "int64_t", 4: "int32_t"}[size] if size in (4, 8) else "int64_t"  # (a map: 8 bytes)


def packed_slots(tmp_path, header, compiled):
    """kind -> the values the packer's array holds, slot by slot (own parameters), read with
    the compiled parameters' types and PTX sizes; and the packed array's length. Raises
    CalledProcessError (the compiler's message) when the initializers do not compile."""
    (tmp_path / "sigmoid_attn_constants.h").write_text(aot.constants_header())
    (tmp_path / "kernel_args.h").write_text(header)
    body = []
    for kind, r in compiled.items():
        reads = " ".join(
            f"{{ {_reader(ty, size)} x; std::memcpy(&x, p[{i}], sizeof x); "
            f"std::printf(\" %g\", double(x)); }}"
            for i, ((_, ty), size) in enumerate(zip(r["signature"], r["ptx_param_bytes"])))
        body.append(f"  {{ auto a = {_initializer(kind, r)}; auto p = a.pack();\n"
                    f"    std::printf(\"{kind} %zu\", p.size()); {reads} std::printf(\"\\n\"); }}")
    (tmp_path / "main.cpp").write_text(
        "#include <cstdio>\n#include <cstring>\n#include \"kernel_args.h\"\n"
        "using namespace sigmoid_attn;\nint main() {\n" + "\n".join(body) + "\n}\n")
    exe = tmp_path / "abi"
    subprocess.run([CXX, "-std=c++20", "-I", str(tmp_path), "-I", CUDA_INCLUDE,
                    str(tmp_path / "main.cpp"), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    out = {}
    for line in subprocess.run([str(exe)], check=True, capture_output=True,
                               text=True).stdout.splitlines():
        kind, n, *values = line.split()
        out[kind] = (int(n), [int(float(v)) for v in values])
    return out


def abi_ok(tmp_path, header, compiled):
    try:
        slots = packed_slots(tmp_path, header, compiled)
    except subprocess.CalledProcessError as e:
        return False, e.stderr[-2000:]
    for kind, r in compiled.items():
        n, values = slots[kind]
        own = len(r["signature"])
        if n != own + r["num_hidden_params"] or values != list(range(1, own + 1)):
            return False, f"{kind}: {n} slots, values {values}"
    return True, ""


@needs_cxx
def test_generated_packers_are_the_compiled_kernels(tmp_path, compiled):
    header = aot.args_header(_hidden(compiled), triton.__version__)
    ok, why = abi_ok(tmp_path, header, compiled)
    assert ok, why
    for kind, r in compiled.items():  # own parameters: the PTX entry's, hidden ones after them
        assert len(r["ptx_param_bytes"]) == len(r["signature"]) + r["num_hidden_params"], kind


@needs_cxx
def test_swapped_params_fail(tmp_path, monkeypatch, compiled):
    """Two same-typed (i64) entries of PARAMS swapped: the struct, its packer and the build-time
    check all disagree with the compiled kernel."""
    params = list(V.PARAMS["fwd"])
    i, j = (params.index(("stride_qb", "i64")), params.index(("stride_kb", "i64")))
    params[i], params[j] = params[j], params[i]
    monkeypatch.setitem(V.PARAMS, "fwd", tuple(params))
    header = aot.args_header(_hidden(compiled), triton.__version__)
    ok, why = abi_ok(tmp_path, header, compiled)
    assert not ok, why
    with pytest.raises(RuntimeError, match="parameter 8 of the compiled kernel"):
        aot.check_slots("fwd", "fp16", compiled["fwd"]["signature"])


@needs_cxx
def test_swapped_gluon_backward_descriptors_fail(tmp_path, monkeypatch, compiled):
    """dk_desc and dv_desc (same type, adjacent) swapped in PARAMS["bwd_gluon"]: the packed maps
    are no longer the compiled kernel's order, and the build-time check names the parameter."""
    if "bwd_gluon" not in compiled:
        pytest.skip("no Gluon backward with this Triton")
    params = list(V.PARAMS["bwd_gluon"])
    i, j = (params.index(("dk_desc", "desc")), params.index(("dv_desc", "desc")))
    params[i], params[j] = params[j], params[i]
    monkeypatch.setitem(V.PARAMS, "bwd_gluon", tuple(params))
    header = aot.args_header(_hidden(compiled), triton.__version__)
    ok, why = abi_ok(tmp_path, header, compiled)
    assert not ok, why
    with pytest.raises(RuntimeError, match="kernel ABI of 'bwd_gluon'"):
        aot.check_slots("bwd_gluon", "fp16", compiled["bwd_gluon"]["signature"])


@needs_cxx
def test_swapped_packer_entries_fail(tmp_path, compiled):
    """The fields right but the packer's order wrong (two pointers swapped in pack())."""
    header = aot.args_header(_hidden(compiled), triton.__version__)
    start = header.index("struct BackwardDqArgs")
    body = header[start:]
    body = body.replace("&Q.value, &K.value", "&K.value, &Q.value", 1)
    assert body != header[start:]
    ok, why = abi_ok(tmp_path, header[:start] + body, compiled)
    assert not ok and why.startswith("bwd_dq: "), why


def _table_compiles(tmp_path, head_dims):
    """Whether a kernel table of these head dims (one fwd kernel each) compiles."""
    rec = {"entry": "e", "cubin_path": str(tmp_path / "none.cubin"), "cubin_bytes": 1,
           "kind": "fwd", "dtype": "fp16", "causal": False, "score_mod": False,
           "varlen": False, "runtime_head_dim": False, "stride_multiple": 16,
           "block_m": 64, "block_n": 64, "num_warps": 4, "num_stages": 2,
           "min_t": 0, "shared": 0, "num_params": 33, "num_hidden_params": 2,
           "global_scratch_size": 0, "global_scratch_align": 1, "profile_scratch_size": 0,
           "profile_scratch_align": 1, "tensor_maps": []}
    records = [rec | {"name": f"k{d}", "head_dim": d} for d in head_dims]
    (tmp_path / "sigmoid_attn_constants.h").write_text(aot.constants_header())
    (tmp_path / "table.cpp").write_text(aot.kernels_cpp(records, "x", 90, ""))
    r = subprocess.run([CXX, "-std=c++20", "-fsyntax-only", "-I", str(tmp_path), "-I",
                        os.path.join(ROOT, "csrc"), str(tmp_path / "table.cpp")],
                       capture_output=True, text=True)
    return r.returncode == 0, r.stderr


@needs_cxx
@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, "csrc", "kernel_spec.h")),
                    reason="needs the source tree's csrc/ (not copied by the wheel's smoke test)")
def test_dispatch_table_overflow_is_a_build_error(tmp_path):
    n = V.DISPATCH_MAX_HEAD_DIMS
    ok, err = _table_compiles(tmp_path, [8 * (i + 1) for i in range(n)])
    assert ok, err
    ok, err = _table_compiles(tmp_path, [8 * (i + 1) for i in range(n + 1)])
    assert not ok and "DISPATCH_MAX_HEAD_DIMS)" in err, err
    ok, err = _table_compiles(tmp_path, [V.DISPATCH_MAX_HEAD_DIM + 8])
    assert not ok and "DISPATCH_MAX_HEAD_DIM)" in err, err


def test_names_are_the_variant_tables():
    """Kinds and dtypes of the built catalog are variants.py's, by name and code."""
    import sigmoid_attn

    catalog = os.path.join(os.path.dirname(sigmoid_attn.library_path()), "catalog.json")
    with open(catalog) as f:
        c = json.load(f)
    assert c["kinds"] == list(V.KINDS) and c["dtypes"] == list(V.DTYPES)
    torch_names = {t for _, t in V.DTYPE_TABLE.values()}
    for k in sigmoid_attn.info()["variants"]:
        assert k["kind"] in V.KINDS and k["dtype"] in torch_names, k
    header = aot.constants_header()
    for i, (cpp, _, _) in enumerate(V.KIND_TABLE.values()):
        assert f"  {cpp} = {i}," in header


def test_bias_modes_are_the_kernels():
    """BIAS_MODE: the kernels' values (and the JIT launcher's) are variants.BIAS_MODES', which
    C++ takes from the generated header."""
    sys.path.insert(0, TRITON_SRC)
    try:
        import sigmoid_attn_fwd as F
    finally:
        sys.path.remove(TRITON_SRC)
    assert (F.BIAS_DEFAULT, F.BIAS_SCALAR, F.BIAS_TENSOR) == tuple(
        V.BIAS_MODES.index(m) for m in ("default", "scalar", "tensor"))
    assert "enum BiasMode : int { kBiasDefault = 0, kBiasScalar = 1, kBiasTensor = 2 };" in \
        aot.constants_header()
