# Sourced by wheels/smoke_test.sh: find_python 3.X prints the path of a CPython 3.X interpreter
# from PATH, pyenv ($PYENV_ROOT/versions/3.X.*) or a manylinux image (/opt/python/cp3X-cp3X);
# returns 1 when there is none.
find_python() {
  local v=$1 t=${1/./} c
  for c in "$(command -v "python$v" || true)" \
           $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/"python$v" 2>/dev/null | sort -rV) \
           "/opt/python/cp$t-cp$t/bin/python" "/usr/local/bin/python$v" "/usr/bin/python$v"; do
    [ -n "$c" ] && [ -x "$c" ] || continue
    "$c" - "$v" >/dev/null 2>&1 <<'PY' && { echo "$c"; return 0; }
import sys
assert sys.implementation.name == "cpython" and "%d.%d" % sys.version_info[:2] == sys.argv[1]
PY
  done
  return 1
}
