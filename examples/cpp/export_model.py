"""Script and save a model that uses sigmoid attention, plus its inputs and Python's output,
for run_model.cpp to load without Python.

    python export_model.py --out-dir build --device cpu|cuda
"""

import argparse
import os

import torch

from sigmoid_attn.nn import SigmoidMultiheadAttention


class Encoder(torch.nn.Module):
    def __init__(self, dim=128, heads=4, kv_heads=2):
        super().__init__()
        self.attn = SigmoidMultiheadAttention(dim, heads, kv_heads)
        self.norm = torch.nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, seq_lens: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm(x), seq_lens=seq_lens, is_causal=False)


class Tensors(torch.nn.Module):
    """A TorchScript container: C++ reads its buffers with module.attr(name)."""

    def __init__(self, **tensors):
        super().__init__()
        for name, t in tensors.items():
            self.register_buffer(name, t)

    def forward(self) -> int:
        return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", default="build")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--aoti", action="store_true", help="also export an AOTInductor .pt2")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    torch.manual_seed(0)
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    model = Encoder().to(args.device, dtype).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 50, 128, device=args.device, dtype=dtype)
    lens = torch.tensor([50, 23], dtype=torch.int32, device=args.device)
    with torch.no_grad():
        expected = scripted(x, lens)
    scripted.save(os.path.join(args.out_dir, f"model_{args.device}.pt"))
    torch.jit.script(Tensors(x=x, seq_lens=lens, expected=expected)).save(
        os.path.join(args.out_dir, f"io_{args.device}.pt"))
    print(f"saved model_{args.device}.pt and io_{args.device}.pt to {args.out_dir}")
    if args.aoti:
        # torch.export -> AOTInductor package: compiled C++ that calls the op, no TorchScript.
        with torch.no_grad():
            ep = torch.export.export(model, (x, lens))
            path = torch._inductor.aoti_compile_and_package(
                ep, package_path=os.path.join(args.out_dir, f"model_{args.device}.pt2"))
        print(f"saved {os.path.basename(path)} (AOTInductor)")


if __name__ == "__main__":
    main()
