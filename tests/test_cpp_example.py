"""examples/cpp: a TorchScript model and a torch.export/AOTInductor package saved in Python,
loaded and run by libtorch C++ programs (no Python), outputs compared with Python's, and the
direct C++ API compared with the op. CPU here; CPU and CUDA on a GPU machine."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None,
                    reason="needs cmake and a C++ compiler")
def test_cpp_client_runs_scripted_model(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, AOTI="1")
    r = subprocess.run(["bash", os.path.join(ROOT, "examples", "cpp", "run.sh"),
                        str(tmp_path / "build")], capture_output=True, text=True, env=env,
                       timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "device cpu, dtype Float: C++ output vs Python" in r.stdout and "MISMATCH" not in r.stdout
    assert r.stdout.count("MATCH") >= 1
    # the direct C++ API (sigmoid_attn/sigmoid_attn.h, no dispatcher) is the op, bit for bit,
    # and turns bad input into a c10::Error naming the argument
    assert "direct C++ API (sigmoid_attn::forward) vs the dispatcher op on cpu: bitwise MATCH" \
        in r.stdout
    assert ("direct C++ API on a negated view (Tensor::is_neg) vs its values on cpu: "
            "bitwise MATCH") in r.stdout, r.stdout[-3000:]
    assert ("direct C++ API refuses an input that requires grad (c10::Error): "
            "sigmoid_attn::forward: q requires grad") in r.stdout, r.stdout[-3000:]
    assert "direct C++ API into a buffer (sigmoid_attn::forward_out) on cpu: bitwise MATCH" \
        in r.stdout
    assert ("direct C++ API rejects bad input as it should (c10::Error): sigmoid_attention: "
            "q, k and v must have the same head_dim") in r.stdout
    assert "AOTInductor package on cpu: C++ output vs Python" in r.stdout
    import torch

    if torch.cuda.is_available():  # the GPU machine: the same programs on CUDA tensors
        assert "dtype BFloat16: C++ output vs Python" in r.stdout, r.stdout[-3000:]
        assert "AOTInductor package on cuda" in r.stdout, r.stdout[-3000:]
        assert "dispatcher op on cuda:0: bitwise MATCH" in r.stdout, r.stdout[-3000:]
    print(r.stdout[-2500:])
