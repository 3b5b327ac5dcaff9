"""python -m sigmoid_attn: what is installed, a correctness check on this machine's device, and
timings against the reference (and, on a GPU, PyTorch SDPA and triton-sigmoid when importable).

    python -m sigmoid_attn [--quick] [--variants] [--json PATH]

Exit status 0 when every check passes. Never imports Triton itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

import sigmoid_attn
from sigmoid_attn import sigmoid_attention, sigmoid_attention_reference

TOL = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 2e-2}


class Progress:
    """A one-line progress bar on stderr (no dependency); silent when stderr is not a tty."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.tty = sys.stderr.isatty()

    def step(self, label: str):
        self.done += 1
        if self.tty:
            filled = int(30 * self.done / self.total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] "
                             f"{self.done}/{self.total} {label:<40.40s}")
            sys.stderr.flush()
        else:
            sys.stderr.write(f"[{self.done}/{self.total}] {label}\n")

    def close(self):
        if self.tty:
            sys.stderr.write("\n")


def rel_err(out, ref) -> float:
    out, ref = out.double(), ref.double()
    if torch.isnan(out).any():
        return float("inf")
    den = ref.norm().item()
    return (out - ref).norm().item() / den if den > 0 else (out - ref).norm().item()


def check_cases(device, dtype, B, T, H, D):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, T, H, D, generator=g).to(device, dtype) for _ in range(3))
    lens = torch.randint(T // 4, T + 1, (B,), generator=g, dtype=torch.int32).to(device)
    mod = torch.randn(B, T, generator=g).to(device)
    return (q, k, v), [
        ("dense", {}),
        ("causal", {"is_causal": True}),
        ("padded lengths", {"seq_lens_q": lens, "seq_lens_k": lens}),
        ("score_mod + bias", {"score_mod": mod, "sigmoid_bias": -2.0}),
    ]


def as64(kw):
    return {k: (v.double() if torch.is_tensor(v) and v.is_floating_point() else v)
            for k, v in kw.items()}


def timer(device):
    """Returns time_ms(fn, reps) -> median milliseconds, with device events on CUDA."""
    def time_ms(fn, reps):
        fn()  # warm-up: module load, allocator
        samples = []
        for _ in range(reps):
            if device == "cuda":
                start, end = torch.cuda.Event(True), torch.cuda.Event(True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(samples)
    return time_ms


def providers(device, q, k, v, causal):
    out = {"sigmoid_attn": lambda: sigmoid_attention(q, k, v, is_causal=causal),
           "reference": lambda: sigmoid_attention_reference(q, k, v, is_causal=causal)}
    if device == "cuda":
        qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))
        out["sdpa (softmax)"] = lambda: torch.nn.functional.scaled_dot_product_attention(
            qt, kt, vt, is_causal=causal)
        try:
            import triton_sigmoid  # optional peer; imports Triton itself

            out["triton_sigmoid"] = lambda: triton_sigmoid.sigmoid_attention(q, k, v,
                                                                             is_causal=causal)
        except Exception:  # noqa: BLE001 - not installed, or no usable GPU for it
            pass
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sigmoid_attn", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    ap.add_argument("--variants", action="store_true", help="list every compiled kernel")
    ap.add_argument("--json", metavar="PATH", help="write all results as JSON")
    args = ap.parse_args(argv)

    info = sigmoid_attn.info()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    print(f"sigmoid_attn {info['version']}")
    print(f"  built with torch {info['torch_build']}, Triton {info['triton_build']}, "
          f"CUDA headers {info['cuda_build']}, for {info['arch']}; "
          f"{len(info['variants'])} compiled kernels")
    print(f"  running on torch {info['torch_runtime']}")
    print("  device: " + (f"{info['device']} (CUDA)" if cuda
                          else "CPU (no CUDA device found): running the C++ CPU path"))
    if args.variants:
        print(f"\n  {'kernel':44s} {'tiles':>10s} {'warps':>5s} {'stages':>6s} {'smem':>7s} {'cubin':>7s}")
        for kv in info["variants"]:
            print(f"  {kv['name']:44s} {kv['block_m']:>4d}x{kv['block_n']:<5d} {kv['num_warps']:>5d} "
                  f"{kv['num_stages']:>6d} {kv['shared_bytes']:>7d} {kv['cubin_bytes']:>7d}")

    if cuda:
        dtype, shape = torch.bfloat16, ((2, 512, 8, 128) if args.quick else (2, 1024, 8, 128))
        time_shape = (4, 1024, 16, 128) if args.quick else (4, 4096, 16, 128)
    else:
        dtype, shape = torch.float32, ((2, 64, 2, 32) if args.quick else (2, 128, 4, 64))
        time_shape = (1, 128, 4, 64) if args.quick else (2, 256, 4, 64)
    reps = 5 if args.quick else 20

    (q, k, v), cases = check_cases(device, dtype, *shape)
    tq, tk, tv = (torch.randn(*time_shape, device=device, dtype=dtype) for _ in range(3))
    timing_plan = [(causal, name) for causal in (False, True)
                   for name in providers(device, tq, tk, tv, causal)]
    bar = Progress(len(cases) + len(timing_plan))

    checks = []
    for label, kw in cases:
        out = sigmoid_attention(q, k, v, **kw)
        ref = sigmoid_attention_reference(q.double(), k.double(), v.double(), **as64(kw))
        err = rel_err(out, ref)
        checks.append({"case": label, "rel_err": err, "tol": TOL[dtype], "pass": err < TOL[dtype]})
        bar.step(f"check {label}")

    time_ms = timer(device)
    B, T, H, D = time_shape
    timings = []
    for causal, name in timing_plan:
        fn = providers(device, tq, tk, tv, causal)[name]
        try:
            ms = time_ms(fn, reps)
        except Exception as e:  # noqa: BLE001 - a peer may fail; say so, don't abort
            ms = None
            sys.stderr.write(f"\n{name}: {type(e).__name__}: {e}\n")
        flops = 4.0 * B * H * D * T * T * (0.5 if causal else 1.0)
        timings.append({"provider": name, "causal": causal, "ms": ms,
                        "tflops": flops / ms / 1e9 if ms else None})
        bar.step(f"time {name}{' causal' if causal else ''}")
    bar.close()

    print(f"\ncorrectness vs float64 reference ({device}, {str(dtype).replace('torch.', '')}, "
          f"B,T,H,D={shape})")
    for c in checks:
        print(f"  {c['case']:20s} rel err {c['rel_err']:.2e}  (tol {c['tol']:.0e})  "
              f"{'PASS' if c['pass'] else 'FAIL'}")
    print(f"\ntimings ({device}, B,T,H,D={time_shape}, median of {reps})")
    print(f"  {'provider':18s} {'causal':>6s} {'ms':>10s} {'TFLOPS':>8s} {'vs ours':>8s}")
    ours = {t["causal"]: t["ms"] for t in timings if t["provider"] == "sigmoid_attn"}
    for t in timings:
        ms = f"{t['ms']:10.3f}" if t["ms"] else f"{'failed':>10s}"
        tf = f"{t['tflops']:8.2f}" if t["tflops"] else f"{'-':>8s}"
        ratio = f"{t['ms'] / ours[t['causal']]:7.2f}x" if t["ms"] and ours.get(t["causal"]) else ""
        print(f"  {t['provider']:18s} {str(t['causal']):>6s} {ms} {tf} {ratio:>8s}")

    ok = all(c["pass"] for c in checks)
    print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "device": device, "checks": checks, "timings": timings,
                       "ok": ok}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
