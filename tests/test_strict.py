"""Strict mode: out-of-range lengths raise (opt-in) instead of being clamped (default)."""

import os
import subprocess
import sys

import pytest
import torch

from sigmoid_attn import sigmoid_attention

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_strict_argument(device):
    q = torch.randn(2, 8, 2, 32, device=device, dtype=torch.float32 if device == "cpu" else torch.bfloat16)
    ok = torch.tensor([8, 0], dtype=torch.int32, device=device)
    bad = torch.tensor([3, 9], dtype=torch.int32, device=device)
    neg = torch.tensor([-1, 2], dtype=torch.int32, device=device)
    sigmoid_attention(q, q, q, seq_lens_q=ok, seq_lens_k=ok, strict=True)  # in range: fine
    sigmoid_attention(q, q, q, seq_lens_k=bad)  # default: clamped, no error
    with pytest.raises(ValueError, match=r"seq_lens_k\[1\] = 9 is outside \[0, 8\]"):
        sigmoid_attention(q, q, q, seq_lens_k=bad, strict=True)
    with pytest.raises(ValueError, match=r"seq_lens_q\[0\] = -1 is outside \[0, 8\]"):
        sigmoid_attention(q, q, q, seq_lens_q=neg, strict=True)


def test_strict_environment_variable():
    code = ("import torch, sigmoid_attn as sa; q = torch.randn(1, 4, 1, 16); "
            "sa.sigmoid_attention(q, q, q, seq_lens_k=torch.tensor([5], dtype=torch.int32))")
    env = dict(os.environ, SIGMOID_ATTN_STRICT="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "seq_lens_k[0] = 5 is outside [0, 4]" in r.stderr
    env["SIGMOID_ATTN_STRICT"] = "0"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
