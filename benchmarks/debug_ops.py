"""Run small op calls one per subprocess and report which ones crash (device triage helper)."""
import subprocess
import sys

CASES = {
    "cpu_valid": "q=torch.randn(2,5,2,32); print(sa.sigmoid_attention(q,q,q).shape)",
    "cpu_error": "q=torch.randn(2,5,2,32)\ntry: sa.sigmoid_attention(q[0],q,q)\nexcept RuntimeError as e: print('caught', e)",
    "meta_valid": "q=torch.empty(2,5,2,32,device='meta'); print(sa.sigmoid_attention(q,q,q).shape)",
    "cuda_valid": "q=torch.randn(2,5,2,64,device='cuda',dtype=torch.bfloat16); print(sa.sigmoid_attention(q,q,q).float().norm())",
    "cuda_error": "q=torch.randn(2,5,2,64,device='cuda')\ntry: sa.sigmoid_attention(q,q,q)\nexcept RuntimeError as e: print('caught', e)",
}
for name, body in CASES.items():
    code = "import torch, sigmoid_attn as sa\n" + body
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    print(f"== {name}: rc={r.returncode} {r.stdout.strip()[:300]} {r.stderr.strip()[-300:] if r.returncode else ''}")
