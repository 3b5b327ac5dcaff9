# Sourced by the wheel scripts: find_python 3.X prints the path of a CPython 3.X interpreter (GIL
# build) that has its headers, from PATH, pyenv ($PYENV_ROOT/versions/3.X.*) or a manylinux
# image (/opt/python/cp3X-cp3X); returns 1 when there is none.
find_python() {
  local v=$1 t=${1/./} c
  for c in "$(command -v "python$v" || true)" \
           $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/"python$v" 2>/dev/null | sort -rV) \
           "/opt/python/cp$t-cp$t/bin/python" "/usr/local/bin/python$v" "/usr/bin/python$v"; do
    [ -n "$c" ] && [ -x "$c" ] || continue
    "$c" - "$v" >/dev/null 2>&1 <<'PY' && { echo "$c"; return 0; }
import os, sys, sysconfig
assert sys.implementation.name == "cpython" and "%d.%d" % sys.version_info[:2] == sys.argv[1]
assert not sysconfig.get_config_var("Py_GIL_DISABLED")
assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
PY
  done
  return 1
}
