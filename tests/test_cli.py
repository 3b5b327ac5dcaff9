"""The main job, python -m sigmoid_attn, end to end in a subprocess."""

import json
import subprocess
import sys

import torch


def test_cli_quick_json(tmp_path):
    out = tmp_path / "cli.json"
    r = subprocess.run([sys.executable, "-m", "sigmoid_attn", "--quick", "--variants",
                        "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "device:" in r.stdout and "all checks passed" in r.stdout
    if torch.cuda.is_available():
        assert torch.cuda.get_device_name() in r.stdout
    else:
        assert "CPU (no CUDA device found)" in r.stdout
    data = json.loads(out.read_text())
    assert data["ok"] and len(data["checks"]) == 4
    assert all(c["pass"] and c["rel_err"] < c["tol"] and c["error"] is None
               for c in data["checks"])
    assert data["setup"]["dtype"] == ("bfloat16" if torch.cuda.is_available() else "float32")
    assert {t["provider"] for t in data["timings"]} >= {"sigmoid_attn", "reference"}
    assert all(t["ms"] and t["ms"] > 0 for t in data["timings"] if t["provider"] == "sigmoid_attn")
    assert "fwd_bf16_d128_m" in r.stdout  # --variants lists the compiled kernels
