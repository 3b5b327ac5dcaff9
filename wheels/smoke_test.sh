#!/usr/bin/env bash
# Install a built wheel into a fresh virtualenv (with torch from the index, nothing compiled)
# and smoke-test it: import, the main job, the CPU tests.
#   bash wheels/smoke_test.sh dist/sigmoid_attn-*.whl
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHEEL=$(realpath "$1")
VENV=$(mktemp -d)/venv
python3 -m venv "$VENV"
. "$VENV/bin/activate"
pip install -q "$WHEEL" pytest numpy hypothesis
cd "$(mktemp -d)"  # away from the source tree: import the installed package
python - <<'PY'
import sys, sigmoid_attn, torch
assert "triton" not in sys.modules, "importing sigmoid_attn imported triton"
info = sigmoid_attn.info()
print("installed", sigmoid_attn.__file__, "| built with torch", info["torch_build"],
      "| running", torch.__version__, "|", len(info["variants"]), "kernels")
PY
python -m sigmoid_attn --quick
cp -r "$ROOT/tests" ./tests
python -m pytest -q tests -k "not interpret and not cpp_example"
