"""Check a built wheel's contents and metadata.

    python wheels/verify_wheel.py dist/sigmoid_attn-*.whl
"""

import json
import re
import sys
import zipfile


def main(path):
    z = zipfile.ZipFile(path)
    names = z.namelist()
    problems = []

    def need(pattern, what):
        if not any(re.search(pattern, n) for n in names):
            problems.append(f"missing {what} ({pattern})")

    need(r"^sigmoid_attn/libsigmoid_attn_ops\.so$", "the ops library")
    need(r"^sigmoid_attn/_C\..*\.so$", "the pybind11 module")
    need(r"^sigmoid_attn/catalog\.json$", "the kernel catalog")
    need(r"^sigmoid_attn/__init__\.py$", "the Python package")
    bundled = [n for n in names if re.search(r"\.libs/.*(torch|c10|cuda)", n)]
    if bundled:
        problems.append(f"torch/CUDA libraries bundled: {bundled}")
    meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [l.split(":", 1)[1].strip() for l in meta.splitlines()
                if l.startswith("Requires-Dist:") and "extra ==" not in l]
    if requires != ["torch>=2.10"]:
        problems.append(f"run-time requirements must be exactly torch>=2.10, got {requires}")
    if "triton" in " ".join(requires).lower():
        problems.append("triton must not be a run-time requirement")
    catalog = json.loads(z.read("sigmoid_attn/catalog.json"))
    ops = z.getinfo("sigmoid_attn/libsigmoid_attn_ops.so")
    cubin_bytes = sum(k["cubin_bytes"] for k in catalog["kernels"])
    if ops.file_size < cubin_bytes:
        problems.append(f"ops library ({ops.file_size} B) smaller than its cubins ({cubin_bytes} B)")
    version = re.search(r"^Version: (.+)$", meta, re.M).group(1)
    print(f"{path}: version {version}, {len(catalog['kernels'])} kernels "
          f"(Triton {catalog['triton']}, sm_{catalog['arch']}), ops library "
          f"{ops.file_size / 2**20:.1f} MiB, wheel {sum(i.compress_size for i in z.infolist()) / 2**20:.1f} MiB "
          f"compressed, requires {requires}")
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
