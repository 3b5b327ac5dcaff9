"""The loops of the library's Gluon kernels in SASS, by instruction mix: what a kernel issues per
key block (forward) or query tile (backward), compared across variants without a GPU.

Compiles the variants of triton_src/variants.py that match (aot.py, Triton 3.8, sm_90), runs
Triton's bundled nvdisasm on each cubin, finds every loop that issues wgmma (a branch back to
an earlier label) and counts its instructions by opcode. Where two variants of one kernel differ
per block (dense against padded, one consumer against another), the counts say where, e.g. the
byte permutes (PRMT) that the hd64 forward carried on two consumers' critical path, or the
predicated selects of the padded backward.

    python benchmarks/sass_loops.py --kind fwd_gluon --head-dim 64
    python benchmarks/sass_loops.py --kind bwd_gluon_padded --head-dim 128 --dtype bf16
    python benchmarks/sass_loops.py --kind fwd_gluon_padded --head-dim 128 --dump 500
    python benchmarks/sass_loops.py --kind bwd_gluon_padded --partitions

--partitions adds each warp partition's code (the spans that begin at a register reallocation,
USETMAXREG, named by the registers it takes): its instruction count and its spills (LDL, STL),
which tell whose registers ran out, e.g. a producer's at 24.
"""

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OPCODES = ("HGMMA", "MUFU", "FFMA", "FSEL", "PRMT", "F2FP", "SYNCS", "BAR", "LDS", "STS", "LDL",
           "STL")


def nvdisasm():
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    if not path.exists():
        raise SystemExit(f"no nvdisasm at {path} (Triton's NVIDIA backend ships it)")
    return path


def instructions(sass):
    """(instruction lines in order, {label: index of the instruction it precedes})."""
    seq, label_at = [], {}
    for line in sass.splitlines():
        m = re.match(r"\s*\.(L_x_\d+):", line)
        if m:
            label_at[m.group(1)] = len(seq)
        elif re.search(r"/\*[0-9a-f]{4,}\*/", line):
            seq.append(line.strip())
    return seq, label_at


def opcode(line):
    m = re.search(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]+)", line)
    return m.group(1) if m else "?"


def wgmma_loops(sass):
    """Each loop that issues wgmma: (first, last) instruction indices and its opcode counts."""
    seq, label_at = instructions(sass)
    loops = []
    for i, line in enumerate(seq):
        m = re.search(r"BRA[^`]*`\(\.(L_x_\d+)\)", line)
        if m and label_at.get(m.group(1), i) < i:
            body = seq[label_at[m.group(1)]:i + 1]
            counts = collections.Counter(opcode(x) for x in body)
            # (a span holding EXIT is not a loop but a partition's way out and back in)
            if counts["HGMMA"] and not counts["EXIT"]:
                loops.append((label_at[m.group(1)], i, counts))
    return loops


def partitions(sass):
    """The kernel's spans between register reallocations (USETMAXREG): (first index, the
    registers the span's first instruction asks for, instruction count, LDL, STL)."""
    seq, _ = instructions(sass)
    cuts = [i for i, x in enumerate(seq) if "USETMAXREG" in x] + [len(seq)]
    out = [(0, "launch", cuts[0], 0, 0)] if cuts[0] > 0 else []
    for a, b in zip(cuts, cuts[1:]):
        m = re.search(r"USETMAXREG\.(\w+)\S*\s+(?:U?P\w+,\s*)?(0x[0-9a-f]+)", seq[a])
        regs = f"{m.group(1).lower()} {int(m.group(2), 16)}" if m else "?"
        ops = collections.Counter(opcode(x) for x in seq[a:b])
        out.append((a, regs, b - a, ops["LDL"], ops["STL"]))
    return out


def dump(sass, length):
    """The opcodes, in order, of the wgmma loop of `length` instructions (runs of one opcode
    folded: FFMAx32)."""
    seq, _ = instructions(sass)
    for first, last, _ in wgmma_loops(sass):
        if last - first + 1 == length:
            ops = [opcode(x) for x in seq[first:last + 1]]
            out, run = [], 1
            for a, b in zip(ops, ops[1:] + [None]):
                if a == b:
                    run += 1
                    continue
                out.append(f"{a}x{run}" if run > 1 else a)
                run = 1
            return " | ".join(out)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", default="fwd_gluon")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--dump", type=int, default=0,
                    help="print the opcodes of the loop of this many instructions")
    ap.add_argument("--partitions", action="store_true",
                    help="each register reallocation's span: instructions and spills")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent / "triton_src"))
    import aot
    import triton
    import variants as V

    tool = nvdisasm()
    found = [v for v in V.variants(triton.__version__) if v.kind == args.kind
             and v.head_dim == args.head_dim and v.dtype == args.dtype]
    if not found:
        raise SystemExit(f"no {args.kind} variant at hd{args.head_dim} {args.dtype} in this build")
    compile_kind = aot.compile_gluon_bwd if args.kind.startswith("bwd") else aot.compile_gluon
    for var in found:
        ck, _ = compile_kind(var, 90)
        with tempfile.TemporaryDirectory() as tmp:
            cubin = os.path.join(tmp, "k.cubin")
            Path(cubin).write_bytes(ck.asm["cubin"])
            sass = subprocess.run([str(tool), "-c", cubin], capture_output=True, text=True,
                                  check=True).stdout
        print(var.name)
        seen = set()
        # (innermost first: the key loop of a forward consumer, the tile loop of a backward one)
        for first, last, counts in sorted(wgmma_loops(sass), key=lambda lp: lp[1] - lp[0]):
            key = (last - first + 1,) + tuple(counts[o] for o in OPCODES)
            if key in seen:
                continue
            seen.add(key)
            print(f"  loop of {last - first + 1:5d}: "
                  + " ".join(f"{o}={counts[o]}" for o in OPCODES if counts[o]))
        if args.partitions:
            for first, regs, n, ldl, stl in partitions(sass):
                print(f"  from {first:5d} ({regs}): {n:5d} instructions, LDL={ldl} STL={stl}")
        if args.dump:
            print(dump(sass, args.dump) or f"  (no wgmma loop of {args.dump} instructions)")


if __name__ == "__main__":
    main()
