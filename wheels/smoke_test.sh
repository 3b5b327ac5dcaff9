#!/usr/bin/env bash
# Install a built wheel into a fresh virtualenv (with torch from the index, nothing compiled)
# and smoke-test it: import, the main job, the CPU tests. Then load the wheel's _C for each other
# CPython it serves with that interpreter (where one is found; no torch needed for that).
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

# --- the other CPythons' _C: load each with its own interpreter -----------------------------
. "$ROOT/wheels/pythons.sh"  # find_python
PKG=$(python -c "import os, sigmoid_attn; print(os.path.dirname(sigmoid_attn.__file__))")
SELF=$(python -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
for so in "$PKG"/_C.cpython-*.so; do
  [[ "$so" == *"$SELF" ]] && continue
  v=$(basename "$so" | sed -E 's/^_C\.cpython-3([0-9]+)-.*/3.\1/')
  py=$(find_python "$v") || { echo "_C for CPython $v: not loaded (no CPython $v here)"; continue; }
  "$py" - "$so" <<'PY'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("_C", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
for call, arg, want in ((m.build_info, (), "bind() first"), (m.bind, ("/nonexistent.so",), "cannot open")):
    try:
        call(*arg)
        raise SystemExit(f"{call.__name__} did not raise")
    except RuntimeError as e:
        assert want in str(e), e
print(f"_C for CPython {sys.version.split()[0]}: loaded by {sys.executable}, bind/build_info ok")
PY
done
