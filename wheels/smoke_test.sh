#!/usr/bin/env bash
# Install a built wheel into a fresh virtualenv (with torch from the index, nothing compiled)
# and smoke-test it: import, the main job, the CPU tests. Then check the package with each other
# CPython found here: its Python files compile, and its ctypes binding binds the installed ops
# library (no torch needed for that interpreter).
#   bash wheels/smoke_test.sh dist/sigmoid_attn-*.whl
#   PYTHON=python3.12 bash wheels/smoke_test.sh ...     (the venv's interpreter; default python3)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHEEL=$(realpath "$1")
WORK=$(mktemp -d)  # the venv (torch included: gigabytes) and the test directory, removed at exit
trap 'rm -rf "$WORK"' EXIT
VENV=$WORK/venv
"${PYTHON:-python3}" -m venv "$VENV"
. "$VENV/bin/activate"
pip install -q "$WHEEL" pytest numpy hypothesis
mkdir "$WORK/run" && cd "$WORK/run"  # away from the source tree: import the installed package
python - <<'PY'
import sys, sigmoid_attn, torch
assert "triton" not in sys.modules, "importing sigmoid_attn imported triton"
info = sigmoid_attn.info()
print("installed", sigmoid_attn.__file__, "| Python", sys.version.split()[0], "| built with torch",
      info["torch_build"], "| running", torch.__version__, "|", len(info["variants"]), "kernels")
PY
python -m sigmoid_attn --quick
# the tests and what they read from the tree (examples/, triton_src/, the benchmark scripts some
# tests run, pytest settings), never python/
cp -r "$ROOT/tests" "$ROOT/examples" "$ROOT/triton_src" "$ROOT/pyproject.toml" .
mkdir benchmarks && cp -r "$ROOT"/benchmarks/*.py "$ROOT/benchmarks/gluon_fwd" "$ROOT/benchmarks/gluon_bwd" benchmarks/
python -m pytest -q tests -k "not interpret and not cpp_example"

# --- the other CPythons: the wheel holds no compiled Python module, so each compiles the package's
# Python files and binds its ctypes binding (_library.py, loaded on its own) to the installed ops
# library, torch's C++ libraries taken from the venv. Only the venv has torch for Python, so the
# whole package is imported by the venv's interpreter alone (above). ------------------------------
. "$ROOT/wheels/pythons.sh"  # find_python
SELF=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
LIB=$(python -c "import sigmoid_attn; print(sigmoid_attn.library_path())")
TORCH_LIB=$(python -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
KERNELS=$(python -c "import sigmoid_attn; print(len(sigmoid_attn.info()['variants']))")
for v in ${SIGMOID_ATTN_SMOKE_PYTHONS:-3.10 3.11 3.12 3.13 3.14}; do
  [ "$v" = "$SELF" ] && continue
  py=$(find_python "$v") || { echo "CPython $v: not checked (no CPython $v here)"; continue; }
  LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$py" - "$(dirname "$LIB")" "$LIB" "$KERNELS" <<'PY'
import importlib.util, os, sys
pkg, lib, kernels = sys.argv[1], sys.argv[2], int(sys.argv[3])
files = [os.path.join(d, n) for d, _, names in os.walk(pkg) for n in names if n.endswith(".py")]
for f in files:  # syntax this interpreter accepts (compiled in memory: no .pyc written)
    with open(f, encoding="utf-8") as src:
        compile(src.read(), f, "exec")
spec = importlib.util.spec_from_file_location("_library", os.path.join(pkg, "_library.py"))
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
try:
    m.build_info()
    raise SystemExit("build_info() before bind() did not raise")
except RuntimeError as e:
    assert "bind() first" in str(e), e
m.bind(lib)
build, catalog = m.build_info(), m.kernel_catalog()
assert len(catalog) == kernels, (len(catalog), kernels)
before = m.dispatch_switch("gluon_backward", 0)
assert m.dispatch_switch("gluon_backward", before) == 0
try:
    m.dispatch_switch("gluon", 1)
    raise SystemExit("an unknown switch was not refused")
except ValueError as e:
    assert "'gluon_backward'" in str(e), e
assert "torch" not in sys.modules
print(f"CPython {sys.version.split()[0]} ({sys.executable}): {len(files)} package files compile, "
      f"_library bound the ops library: {len(catalog)} kernels, torch {build['torch']}, "
      f"{build['arch']}")
PY
done
