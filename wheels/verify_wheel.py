"""Check a built wheel's tag, contents and metadata.

    python wheels/verify_wheel.py dist/sigmoid_attn-*.whl

The wheel must serve every CPython >= 3.10 (as wheels/build_wheel.sh builds it): a
py3-none-manylinux tag and no compiled Python module (the package reaches the ops library through
ctypes), one Python-free ops library with every cubin embedded, and torch>=2.10 and numpy as its
only run-time requirement (no Triton).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

MIN_PYTHON = "3.10"  # pyproject.toml's requires-python


def needed_libs(data):
    """DT_NEEDED entries of an ELF image (via readelf), or None where readelf is missing."""
    if shutil.which("readelf") is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".so") as f:
        f.write(data)
        f.flush()
        out = subprocess.run(["readelf", "-d", f.name], capture_output=True, text=True,
                             check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)


def main(path):
    z = zipfile.ZipFile(path)
    names = z.namelist()
    problems = []

    def need(pattern, what):
        if not any(re.search(pattern, n) for n in names):
            problems.append(f"missing {what} ({pattern})")

    # --- the tag: one wheel for every CPython (no Python ABI), manylinux ------------------------
    m = re.fullmatch(r"(?P<name>[^-]+)-(?P<ver>[^-]+)-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)"
                     r"\.whl", os.path.basename(path))
    if m is None:
        problems.append(f"unexpected wheel file name {os.path.basename(path)}")
        plats = []
    else:
        plats = m["plat"].split(".")
        if (m["py"], m["abi"]) != ("py3", "none"):
            problems.append(f"tag {m['py']}-{m['abi']} is not py3-none (one wheel for every "
                            "CPython; pyproject.toml's wheel.py-api)")
        if not all(p.startswith("manylinux_") for p in plats):
            problems.append(f"platform tag {m['plat']} is not manylinux (auditwheel repair?)")
    wheel_file = z.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
    listed = sorted(re.findall(r"^Tag: (\S+)$", wheel_file, re.M))
    expected = sorted(f"py3-none-{p}" for p in plats)
    if listed != expected:
        problems.append(f"WHEEL lists tags {listed}, file name says {expected}")
    if not re.search(r"^Root-Is-Purelib: false$", wheel_file, re.M):
        problems.append("WHEEL must say Root-Is-Purelib: false (the ops library is a binary)")

    # --- no compiled Python module: the binding is ctypes (_library.py) -------------------------
    compiled = sorted(n for n in names if re.search(r"(\.cpython-[^/]*|\.abi3)\.so$", n)
                      or re.fullmatch(r"sigmoid_attn/_C[^/]*\.so", n))
    if compiled:
        problems.append(f"compiled Python modules {compiled}: the wheel must not depend on the "
                        "CPython version")
    need(r"^sigmoid_attn/_library\.py$", "the ctypes binding")

    # --- the ops library: one, Python-free, every cubin embedded --------------------------------
    need(r"^sigmoid_attn/libsigmoid_attn_ops\.so$", "the ops library")
    need(r"^sigmoid_attn/catalog\.json$", "the kernel catalog")
    need(r"^sigmoid_attn/__init__\.py$", "the Python package")
    need(r"^sigmoid_attn/include/sigmoid_attn/c_api\.h$", "the C API header")
    need(r"^sigmoid_attn/include/sigmoid_attn/sigmoid_attn\.h$", "the C++ API header")
    bundled = [n for n in names if re.search(r"\.libs/.*(torch|c10|cuda|python)", n)]
    if bundled:
        problems.append(f"torch/CUDA/Python libraries bundled: {bundled}")
    catalog = json.loads(z.read("sigmoid_attn/catalog.json"))
    kernels = catalog["kernels"]
    ops_info = z.getinfo("sigmoid_attn/libsigmoid_attn_ops.so")
    ops = z.read(ops_info)
    cubin_bytes = sum(k["cubin_bytes"] for k in kernels)
    if ops_info.file_size < cubin_bytes:
        problems.append(f"ops library ({ops_info.file_size} B) smaller than its cubins "
                        f"({cubin_bytes} B)")
    embedded = ops.count(b"\x7fELF") - 1  # each cubin is an ELF image; the first is the library
    if embedded < len(kernels):
        problems.append(f"ops library embeds {embedded} ELF images, catalog lists "
                        f"{len(kernels)} kernels")
    if not kernels:
        problems.append("catalog lists no kernels")
    libs = needed_libs(ops)
    if libs is not None:
        if any("python" in l for l in libs):
            problems.append(f"ops library links libpython: {libs}")
        if not any(l.startswith("libtorch") for l in libs):
            problems.append(f"ops library does not link torch: {libs}")
        if any(l.startswith(("libcuda.", "libcudart")) for l in libs):
            problems.append(f"ops library links CUDA at load time (must dlopen it): {libs}")

    # --- metadata: torch only, no Triton, Python range matching the tags ------------------------
    meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [l.split(":", 1)[1].strip() for l in meta.splitlines()
                if l.startswith("Requires-Dist:") and "extra ==" not in l]
    if requires != ["torch>=2.10", "numpy"]:
        problems.append("run-time requirements must be exactly torch>=2.10 and numpy (torch "
                        f"warns at import without numpy), got {requires}")
    if "triton" in " ".join(requires).lower():
        problems.append("triton must not be a run-time requirement")
    rp = re.search(r"^Requires-Python: (.+?)\s*$", meta, re.M)
    if rp is None or rp[1] != f">={MIN_PYTHON}":
        problems.append(f"Requires-Python must be >={MIN_PYTHON}, got {rp and rp[1]}")

    version = re.search(r"^Version: (.+)$", meta, re.M).group(1)
    print(f"{os.path.basename(path)}: version {version}, CPython >= {MIN_PYTHON} "
          f"(no compiled Python module), {len(kernels)} kernels (Triton {catalog['triton']}, "
          f"sm_{catalog['arch']}), ops library {ops_info.file_size / 2**20:.1f} MiB, wheel "
          f"{os.path.getsize(path) / 2**20:.1f} MiB, requires {requires}")
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
