"""python -m sigmoid_attn: what is installed, a correctness check on this machine's device, and
timings against the reference and PyTorch SDPA (and, on a GPU, triton-sigmoid when importable).

    python -m sigmoid_attn [--quick] [--variants] [--json PATH]

Exit status 0 when every check passes. Never imports Triton itself.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

import sigmoid_attn
from sigmoid_attn import sigmoid_attention, sigmoid_attention_reference

TOL = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 2e-2}
DESCRIPTION = (
    "Print what is installed, check sigmoid_attention against a float64 reference on this "
    "machine's device (CUDA if available, else the C++ CPU path), and time it against the "
    "pure-torch reference and PyTorch SDPA (on a GPU also triton-sigmoid, when installed). "
    "Exit status 0 when every check passes.")
CPU_NOTE = "CPU (no CUDA device found): running the C++ CPU path"


class Progress:
    """A one-line progress bar on stderr (no dependency); one line per step when not a tty,
    so logs stay readable."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.tty = sys.stderr.isatty()

    def start(self, label: str):
        # Drawn before the step runs, so a slow step shows what it is waiting on.
        if self.tty:
            filled = 30 * self.done // self.total
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] "
                             f"{self.done}/{self.total} {label:<40.40s}")
        else:
            sys.stderr.write(f"[{self.done + 1}/{self.total}] {label}\n")
        sys.stderr.flush()
        self.done += 1

    def close(self):
        if self.tty:
            sys.stderr.write(f"\r[{'#' * 30}] {self.total}/{self.total} {'done':<40s}\n")


def plan(device: str, quick: bool) -> dict:
    """Sizes per device: a GPU gets realistic shapes; 2 CPU cores must finish in seconds."""
    if device == "cuda":
        return {"dtype": torch.bfloat16, "reps": 5 if quick else 20,
                "check_shape": (2, 512, 8, 128) if quick else (2, 1024, 8, 128),
                "time_shape": (4, 1024, 16, 128) if quick else (4, 4096, 16, 128)}
    return {"dtype": torch.float32, "reps": 5 if quick else 20,
            "check_shape": (2, 64, 2, 32) if quick else (2, 128, 4, 64),
            "time_shape": (1, 128, 4, 64) if quick else (2, 256, 4, 64)}


def print_info(info: dict, cuda: bool):
    print(f"sigmoid_attn {info['version']}")
    print(f"  built with torch {info['torch_build']}, Triton {info['triton_build']}, "
          f"CUDA headers {info['cuda_build']}, for {info['arch']}; "
          f"{len(info['variants'])} compiled kernels")
    print(f"  running on torch {info['torch_runtime']}")
    print("  device: " + (f"{info['device']} (CUDA)" if cuda else CPU_NOTE))


def print_variants(variants: list):
    print(f"\n  {'kernel':44s} {'tiles':>8s} {'warps':>5s} {'stages':>6s} {'smem':>7s} {'cubin':>7s}")
    for kv in variants:
        tiles = f"{kv['block_m']}x{kv['block_n']}"
        print(f"  {kv['name']:44s} {tiles:>8s} {kv['num_warps']:>5d} {kv['num_stages']:>6d} "
              f"{kv['shared_bytes']:>7d} {kv['cubin_bytes']:>7d}")


def rel_err(out, ref) -> float:
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return math.inf
    den = ref.norm().item()
    return (out - ref).norm().item() / den if den > 0 else (out - ref).norm().item()


def check_cases(device, dtype, B, T, H, D):
    g = torch.Generator().manual_seed(0)  # CPU generator: same inputs on every device
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


def run_check(q, k, v, kw, tol) -> dict:
    # An exception is a failed check, not a crash: the table and JSON must still come out.
    try:
        out = sigmoid_attention(q, k, v, **kw)
        ref = sigmoid_attention_reference(q.double(), k.double(), v.double(), **as64(kw))
        err, error = rel_err(out, ref), None
    except Exception as e:  # noqa: BLE001
        err, error = math.inf, f"{type(e).__name__}: {e}"
    return {"rel_err": err, "tol": tol, "pass": err < tol, "error": error}


def timer(device, warmup):
    """Returns time_ms(fn, reps) -> median milliseconds, with device events on CUDA."""
    def once(fn):
        if device != "cuda":
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        start, end = torch.cuda.Event(True), torch.cuda.Event(True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    def time_ms(fn, reps):
        for _ in range(warmup):  # module load, JIT compile (triton_sigmoid), allocator
            fn()
        return statistics.median(once(fn) for _ in range(reps))
    return time_ms


def providers(device, q, k, v, causal):
    qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))
    out = {"sigmoid_attn": lambda: sigmoid_attention(q, k, v, is_causal=causal),
           "reference": lambda: sigmoid_attention_reference(q, k, v, is_causal=causal),
           # (softmax: the speed bar of attention on this device, not the same function)
           "sdpa (softmax)": lambda: torch.nn.functional.scaled_dot_product_attention(
               qt, kt, vt, is_causal=causal)}
    if device == "cuda":
        try:
            import triton_sigmoid  # optional peer; imports Triton itself

            out["triton_sigmoid"] = lambda: triton_sigmoid.sigmoid_attention(q, k, v,
                                                                             is_causal=causal)
        except Exception:  # noqa: BLE001 - not installed, or no usable GPU for it
            pass
    return out


def print_checks(checks, device, p):
    print(f"\ncorrectness vs float64 reference ({device}, {str(p['dtype']).replace('torch.', '')}, "
          f"B,T,H,D={p['check_shape']})")
    for c in checks:
        print(f"  {c['case']:20s} rel err {c['rel_err']:.2e}  (tol {c['tol']:.0e})  "
              f"{'PASS' if c['pass'] else 'FAIL'}" + (f"  {c['error']}" if c["error"] else ""))


def print_timings(timings, device, p):
    # CPU rates are a few GFLOP/s: TFLOPS would print as 0.00.
    unit, div = ("TFLOPS", 1e12) if device == "cuda" else ("GFLOP/s", 1e9)
    print(f"\ntimings ({device}, B,T,H,D={p['time_shape']}, median of {p['reps']})")
    print(f"  {'provider':18s} {'causal':>6s} {'ms':>10s} {unit:>8s}  sigmoid_attn is")
    ours = {t["causal"]: t["ms"] for t in timings if t["provider"] == "sigmoid_attn"}
    for t in timings:
        ms = f"{t['ms']:10.3f}" if t["ms"] else f"{'failed':>10s}"
        rate = f"{t['flops'] / (t['ms'] * 1e-3) / div:8.2f}" if t["ms"] else f"{'-':>8s}"
        print(f"  {t['provider']:18s} {str(t['causal']):>6s} {ms} {rate}  "
              f"{relative(ours.get(t['causal']), t['ms'], t['provider'])}")


def relative(ours_ms, peer_ms, provider) -> str:
    """sigmoid_attn's speed against one provider, in words: "2.50x faster" means the provider
    takes 2.5 times as long as sigmoid_attn; "6.00x slower" that it takes a sixth."""
    if provider == "sigmoid_attn":
        return "(this row)"
    if not ours_ms or not peer_ms:
        return ""
    if peer_ms >= ours_ms:
        return f"{peer_ms / ours_ms:.2f}x faster"
    return f"{ours_ms / peer_ms:.2f}x slower"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sigmoid_attn", description=DESCRIPTION)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    ap.add_argument("--variants", action="store_true", help="list every compiled kernel")
    ap.add_argument("--json", metavar="PATH", help="write all results as JSON")
    args = ap.parse_args(argv)

    info = sigmoid_attn.info()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    print_info(info, cuda)
    if args.variants:
        print_variants(info["variants"])

    p = plan(device, args.quick)
    dtype = p["dtype"]
    (q, k, v), cases = check_cases(device, dtype, *p["check_shape"])
    tq, tk, tv = (torch.randn(*p["time_shape"], device=device, dtype=dtype) for _ in range(3))
    timing_plan = [(causal, name) for causal in (False, True)
                   for name in providers(device, tq, tk, tv, causal)]
    bar = Progress(len(cases) + len(timing_plan))

    checks = []
    for label, kw in cases:
        bar.start(f"check {label}")
        checks.append({"case": label, **run_check(q, k, v, kw, TOL[dtype])})

    time_ms = timer(device, warmup=3 if cuda else 1)
    B, T, H, D = p["time_shape"]
    timings = []
    for causal, name in timing_plan:
        bar.start(f"time {name}{' causal' if causal else ''}")
        fn = providers(device, tq, tk, tv, causal)[name]
        try:
            ms = time_ms(fn, p["reps"])
        except Exception as e:  # noqa: BLE001 - a peer may fail; say so, don't abort
            ms = None
            sys.stderr.write(("\n" if bar.tty else "")  # keep the bar's line intact
                             + f"{name}: {type(e).__name__}: {e}\n")
        flops = 4.0 * B * H * D * T * T * (0.5 if causal else 1.0)
        timings.append({"provider": name, "causal": causal, "ms": ms, "flops": flops,
                        "tflops": flops / ms / 1e9 if ms else None})
    bar.close()

    print_checks(checks, device, p)
    print_timings(timings, device, p)
    ok = all(c["pass"] for c in checks)
    print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
    if args.json:
        write_json(args.json, info, device, p, checks, timings, ok)
    return 0 if ok else 1


def write_json(path, info, device, p, checks, timings, ok):
    # Strict JSON has no Infinity: a failed check's error is null there.
    checks = [{**c, "rel_err": c["rel_err"] if math.isfinite(c["rel_err"]) else None}
              for c in checks]
    setup = {"dtype": str(p["dtype"]).replace("torch.", ""), "reps": p["reps"],
             "check_shape": p["check_shape"], "time_shape": p["time_shape"]}
    with open(path, "w") as f:
        json.dump({"info": info, "device": device, "setup": setup, "checks": checks,
                   "timings": timings, "ok": ok}, f, indent=1, allow_nan=False)


if __name__ == "__main__":
    sys.exit(main())
