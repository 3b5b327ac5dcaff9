#!/usr/bin/env bash
# triton-sigmoid's published test suite against sigmoid_attn.compat.triton_sigmoid: the migration
# path ("replace `import triton_sigmoid` by `from sigmoid_attn.compat import triton_sigmoid`")
# checked with that package's own tests, unchanged.
#
#   bash benchmarks/run_triton_sigmoid_suite.sh SUITE_DIR [pytest args...]
#
# SUITE_DIR holds that package's tests/ (test_sigmoid_dense.py, test_sigmoid_padded.py,
# test_torch_compile.py and their conftest.py: the 0.1.2 sdist's tests/ plus the repository's
# tests/conftest.py). They are not part of this repository. A module named triton_sigmoid that
# re-exports the compat module is put first on the path, so `from triton_sigmoid import ...` in
# those tests reaches this library; the real package must not be importable beside it.
# Writes $OUT/triton_sigmoid_suite.log and a JUnit XML when OUT is set.
set -uo pipefail
SUITE=${1:?usage: run_triton_sigmoid_suite.sh SUITE_DIR [pytest args...]}
shift
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
SHIM=$(mktemp -d)
mkdir -p "$SHIM/triton_sigmoid"
cat > "$SHIM/triton_sigmoid/__init__.py" <<'PY'
from sigmoid_attn.compat.triton_sigmoid import *  # noqa: F401,F403
from sigmoid_attn.compat.triton_sigmoid import __all__  # noqa: F401
PY
WORK=$(mktemp -d)
cp "$SUITE"/*.py "$WORK"/
cd "$WORK" || exit 2
PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}" python3 -c \
  "import triton_sigmoid, sigmoid_attn.compat.triton_sigmoid as c; assert triton_sigmoid.sigmoid_attention is c.sigmoid_attention; print('triton_sigmoid ->', c.__name__)" \
  || exit 2
PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}" python3 -m pytest -q -rf -p no:cacheprovider \
  --junitxml="$OUT/triton_sigmoid_suite.xml" "$@" . 2>&1 | tee "$OUT/triton_sigmoid_suite.log" | tail -40
