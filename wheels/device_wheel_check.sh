#!/usr/bin/env bash
# Check a built wheel on a GPU machine against the machine's own torch (no network, no compiler):
# install it with --no-deps into a fresh target directory, then, from a temporary directory that
# holds only a copy of tests/, run the main job and the tests against the INSTALLED package.
# Logs go to $OUT (default ./wheel_check_out).
#   bash wheels/device_wheel_check.sh dist/sigmoid_attn-*.whl
#   PYTHON=python3.12 bash wheels/device_wheel_check.sh ...   (default python3)
# On the device tool: carry the wheel's folder, e.g. carry=["dist"].
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHEEL=$(realpath "${1:?usage: device_wheel_check.sh WHEEL}")
PY=$(command -v "${PYTHON:-python3}")
OUT=$(mkdir -p "${OUT:-$PWD/wheel_check_out}" && cd "${OUT:-$PWD/wheel_check_out}" && pwd)
T=$(mktemp -d)
export PYTHONUNBUFFERED=1
fail=0

{
  echo "wheel: $(basename "$WHEEL") ($(stat -c %s "$WHEEL") B)"
  "$PY" -c "import sys; print('python', sys.version.split()[0], sys.executable)"
  "$PY" -c "import torch; print('torch', torch.__version__, '| cuda', torch.version.cuda, '| device', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
  "$PY" -c "import triton; print('triton', triton.__version__, '(installed, not needed)')" 2>/dev/null || echo "triton: not installed"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none"
  for m in pytest numpy hypothesis; do "$PY" -c "import $m" 2>/dev/null && echo "have $m" || echo "missing $m"; done
} 2>&1 | tee "$OUT/env.txt"

# --- install: only the wheel, no dependencies (torch is the machine's), nothing from the network
"$PY" -m pip install --no-deps --no-index --no-compile --no-cache-dir --target "$T/site" "$WHEEL" \
  > "$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; echo "FAIL: install"; exit 1; }
ls -la "$T/site/sigmoid_attn" | tee -a "$OUT/install.log"
export PYTHONPATH="$T/site${PYTHONPATH:+:$PYTHONPATH}"

# --- run from a directory holding copies of tests/ and what they read from the tree (examples/,
# triton_src/ for the tuning database, the pytest settings) but not python/, so that neither the
# repo's python/ nor an editable install can stand in for the wheel (checked below)
mkdir -p "$T/run" && cp -r "$ROOT/tests" "$ROOT/examples" "$ROOT/triton_src" "$ROOT/pyproject.toml" "$T/run/"
cd "$T/run"
"$PY" - "$T/site" <<'PY' 2>&1 | tee "$OUT/import.log"
import os, sys
import sigmoid_attn, sigmoid_attn._ops as ops, torch
site = os.path.realpath(sys.argv[1])
for what, path in (("package", sigmoid_attn.__file__),
                   ("binding", sigmoid_attn._library.__file__), ("ops library", ops.LIBRARY_PATH)):
    assert os.path.realpath(path).startswith(site + os.sep), f"{what} not from the wheel: {path}"
assert "triton" not in sys.modules, "importing sigmoid_attn imported triton"
info = sigmoid_attn.info()
print("imported from the wheel:", os.path.dirname(sigmoid_attn.__file__))
print("Python", sys.version.split()[0], "| built with torch",
      info["torch_build"], "Triton", info["triton_build"], "| running torch", torch.__version__,
      "|", len(info["variants"]), "kernels,", info["arch"], "| device", info["device"])
PY
[ "${PIPESTATUS[0]}" = 0 ] || { echo "FAIL: import"; exit 1; }

"$PY" -m sigmoid_attn 2>&1 | tee "$OUT/main.log" | tail -30
[ "${PIPESTATUS[0]}" = 0 ] || { echo "FAIL: python -m sigmoid_attn"; fail=1; }

# interpret: needs Triton >= 3.7 and the source tree; cpp_example: builds C++ from examples/
"$PY" -m pytest -q -rs -p no:cacheprovider tests -k "not interpret and not cpp_example" \
  2>&1 | tee "$OUT/tests.log" | tail -30
[ "${PIPESTATUS[0]}" = 0 ] || { echo "FAIL: tests"; fail=1; }

rm -rf "$T"
[ $fail = 0 ] && echo "device_wheel_check: OK (logs in $OUT)" || echo "device_wheel_check: FAILED (logs in $OUT)"
exit $fail
