"""A list-scheduling model of the forward grid: what share of the SMs' time does useful work,
for a given program order? No GPU; the figures in docs/performance.md ("Program order") come
from here.

Programs are assigned, in launch order, to the first free of `slots` resident-CTA slots
(132 SMs x CTAs per SM). A program's time is proportional to the keys it walks, plus a small
constant; a program past its sequence's length costs only the constant. The model ignores that
a CTA alone on an SM runs faster than two sharing it, so it overstates every tail effect.

    python benchmarks/schedule_model.py [--slots 264] [--block 128] [--trials 10] [--group 1024]

--persistent models the persistent Gluon forward instead: one program per SM (--slots 132), tile
t to program t mod 132 in the kernel's order (padded: each sequence's tiles holding a row below
its length, head by head, then the tiles past the lengths, which only store zeros), against a
dynamic fetch (the next tile to the first free program) and against the bound any split of the
work reaches (stream-K: the key blocks spread evenly over the programs, partial outputs summed,
which sigmoid attention allows without rescaling).
"""

import argparse
import heapq
import random

TOKENS, WIDTH = 16384, 2048
FIXED = 0.02  # a program's constant cost, in units of 1000 keys walked


def makespan(times, slots):
    free = [0.0] * slots
    for t in times:
        heapq.heappush(free, heapq.heappop(free) + t)
    return max(free)


def efficiency(T, D, slots, block, order, causal, padded, trials, group=1024):
    """Mean over random batches of useful time / (slots x makespan)."""
    H, B = WIDTH // D, TOKENS // T
    n_m = -(-T // block)
    out = []
    for seed in range(trials):
        rnd = random.Random(seed)
        L = [rnd.randint(T // 2, T) if padded else T for _ in range(B)]
        heads = [(b, h) for b in range(B) for h in range(H)]
        if order == "longest sequence first":
            heads.sort(key=lambda bh: -L[bh[0]])
        if order == "descending, all heads":
            progs = [(m, bh) for m in reversed(range(n_m)) for bh in heads]
        elif order == "descending, groups of heads":
            # as sigmoid_attn_fwd._longest_first: the remainder group first, full groups after
            G = min(max(-(-group // n_m), 1), len(heads))
            cuts = [0] + list(range(len(heads) % G, len(heads) + 1, G))
            progs = [(m, bh) for c0, c1 in zip(cuts, cuts[1:])
                     for m in reversed(range(n_m)) for bh in heads[c0:c1]]
        elif order == "reversed inside each head":
            progs = [(m, bh) for bh in heads for m in reversed(range(n_m))]
        else:  # launch order, or the sorted heads
            progs = [(m, bh) for bh in heads for m in range(n_m)]
        times, useful = [], 0.0
        for m, (b, _) in progs:
            if m * block >= L[b]:
                times.append(FIXED)
                continue
            keys = min(L[b], (m + 1) * block) if causal else L[b]
            times.append(keys / 1000 + FIXED)
            useful += keys / 1000 + FIXED
        out.append(useful / slots / makespan(times, slots))
    return sum(out) / len(out)


def persistent(T, D, slots, block, padded, trials):
    """(static, dynamic) useful shares of the persistent forward's programs (a split of the key
    blocks over every program reaches 1 by construction)."""
    H, B = WIDTH // D, TOKENS // T
    n_m = -(-T // block)
    res = [[], []]
    for seed in range(trials):
        rnd = random.Random(seed)
        L = [rnd.randint(T // 2, T) if padded else T for _ in range(B)]
        tiles = []
        for b in range(B):  # tiles holding a valid row: sequence by sequence, head by head
            tiles += [L[b] / 1000 + FIXED] * (H * -(-L[b] // block))
        tiles += [FIXED] * sum(H * (n_m - -(-L[b] // block)) for b in range(B))
        useful = sum(tiles)
        static = [0.0] * slots
        for t, c in enumerate(tiles):
            static[t % slots] += c
        res[0].append(useful / slots / max(static))
        res[1].append(useful / slots / makespan(tiles, slots))
    return [sum(r) / len(r) for r in res]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=264)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--group", type=int, default=1024, help="programs per group of heads")
    ap.add_argument("--persistent", action="store_true",
                    help="the persistent forward (one program per SM, set --slots 132)")
    args = ap.parse_args()
    if args.persistent:
        for D, block in ((64, 192), (128, 128)):
            for T in (1024, 4096, 16384):
                for padded in (False, True):
                    st, dyn = persistent(T, D, args.slots, block, padded, args.trials)
                    print(f"hd{D} T={T:5d} {'padded' if padded else 'dense':6s} tiles of "
                          f"{block} rows: static {st:.3f}  dynamic {dyn:.3f}  split bound 1.000")
        return
    orders = {"causal": ["launch", "reversed inside each head", "descending, all heads",
                         "descending, groups of heads"],
              "padded": ["launch", "longest sequence first"], "dense": ["launch"]}
    for D in (64, 128):
        for T in (1024, 4096, 16384):
            for mode, names in orders.items():
                eff = [efficiency(T, D, args.slots, args.block, o, mode == "causal",
                                  mode == "padded", args.trials, args.group) for o in names]
                print(f"hd{D} T={T:5d} {mode:6s} " + "  ".join(
                    f"{o}: {e:.3f}" for o, e in zip(names, eff)))


if __name__ == "__main__":
    main()
