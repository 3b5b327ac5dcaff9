"""Contention stress (GPU): 8 processes time-slicing one GPU launch the forward the library
dispatches by default, fresh random inputs every call, every output checked for NaN, unwritten
elements and agreement with a float32 reference (benchmarks/stress_contention.py). Races in
warp-specialized and persistent kernels show only like this: compute preemption in the middle of
a kernel; one process on a quiet GPU never showed the one that was found. The long runs (20,000+
calls per kernel) are benchmarks/gpu_check.sh stress; this is the suite's short version."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)

STRESS = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "stress_contention.py")


@pytest.mark.parametrize("case,dtype,seqlen", [
    ("dense", "bf16", 4096), ("padded", "fp16", 4096), ("causal", "fp16", 4096),
    ("varlen", "bf16", 4096)])
def test_default_forward_under_contention(case, dtype, seqlen):
    batch = 4 if seqlen <= 4096 else 2
    r = subprocess.run([sys.executable, STRESS, "--target", "lib", "--case", case, "--dtype",
                        dtype, "--procs", "8", "--calls", "30", "--batch", str(batch),
                        "--seqlen", str(seqlen)], capture_output=True, text=True, timeout=600)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert lines, r.stdout + r.stderr
    res = json.loads(lines[-1])
    assert res["failed_procs"] == 0, res
    assert res["calls"] == 8 * 30, res
    assert (res["nan_calls"], res["unwritten_calls"], res["wrong_calls"]) == (0, 0, 0), res
