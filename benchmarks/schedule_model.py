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
its length, head by head, then the tiles past the lengths, which only store zeros; packed: each
sequence's tiles, no tail), against a dynamic fetch (the next tile to the first free program)
and against schedules that split tiles by key blocks (--key-block keys; a tile that only stores
zeros is one unit), which sigmoid attention allows without rescaling (partial outputs summed):

  * stream-K: program p takes units [p U / P, (p + 1) U / P) of all U units in the walk's order;
  * hybrid even: the static walk for the whole rounds (tiles t < floor(n / P) P), the last
    partial round's units spread the same way over all P programs, after their whole tiles;
  * hybrid greedy: the same last-round units, the programs least loaded by their whole tiles
    first, each taking the next contiguous units up to one common finish time (the lowest at
    which the units run out);
  * rows even / rows greedy: the same over the last partial round of the tiles holding rows
    (t >= floor(V / P) P of the first V tiles), every other tile static (t mod P). Padded, the
    walk's last round is the zero tiles, so this is where a padded batch's split belongs; dense
    and packed batches have no zero tiles, and these equal the hybrid.

  * queue split: the queue (the dynamic fetch) for the tiles holding rows of the whole rounds,
    then the last partial round of those tiles cut into pieces of --piece key blocks, then the
    tiles past the lengths (padded), all taken from the one queue, the last piece of a tile to
    finish joining them (no owner waiting on a slow contributor).

A piece of a tile costs the constant, as a whole tile does, plus its keys (--whole-blocks: its
key blocks in full, a partial last block as a whole one, as the kernel computes it masked);
where a tile is split in several pieces each also costs --join key blocks (the partial's store
and the owner's sum). The pieces' extra constants and joins are not useful work. The model
ignores the wait of a tile's owner for its other pieces.

--spread s gives each program a speed of its own for a whole batch (its times scaled by a
factor uniform in [1 - s, 1 + s]): SMs that do not run at one speed. Nsight Compute on the
dense forward (T = 2k, 8.24 waves) read the SMs active 93.4% of the split kernel's time where
equal spans on equal SMs would leave almost none idle. The static, dynamic and queue split
columns take the spread; the static splits (stream-K, hybrid, rows) do not.

    python benchmarks/schedule_model.py --persistent --slots 132 [--join 0 0.5] [--key-block 128]
        [--whole-blocks]
"""

import argparse
import bisect
import heapq
import random
from collections import Counter

TOKENS, WIDTH = 16384, 2048
FIXED = 0.02  # a program's constant cost, in units of 1000 keys walked
SPLITS = ("stream-K", "hybrid even", "hybrid greedy", "rows even", "rows greedy")


def _queue(costs, speed, free=None):
    """List scheduling with program speeds: each cost, in order, to the program that frees
    first (its time scaled by speed[p]); returns every program's finish time."""
    heap = [(f, p) for p, f in enumerate(free or [0.0] * len(speed))]
    heapq.heapify(heap)
    fin = list(free or [0.0] * len(speed))
    for c in costs:
        f, p = heapq.heappop(heap)
        fin[p] = f + c * speed[p]
        heapq.heappush(heap, (fin[p], p))
    return fin


def _queue_split(tiles, keys, rows, speed, piece, kb, join, whole):
    """The queue for the first `rows` tiles' whole rounds, then their last partial round in
    pieces of `piece` key blocks (each costing the constant, its work and, where a tile has
    several, the join), then the tiles after `rows`, all from the same queue; the makespan."""
    P = len(speed)
    n_whole = rows // P * P
    costs = list(tiles[:n_whole])
    for t in range(n_whole, rows):
        n = _units(keys[t], kb)
        cuts = list(range(0, n, piece)) + [n]
        many = len(cuts) > 2
        for a, b in zip(cuts, cuts[1:]):
            costs.append(FIXED + (_work(keys[t], a, b, kb, whole) if keys[t] else 0)
                         + (join * kb / 1000 if many else 0))
    return max(_queue(costs + list(tiles[rows:]), speed))


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


def _units(L, kb):
    """Key-block units of a tile over L keys (a tile that only stores zeros, L = 0: one)."""
    return max(1, -(-L // kb))


def _work(L, a, b, kb, whole):
    """Time of units [a, b) of a tile over L keys, less the constant: its keys, or with `whole`
    its key blocks in full (the kernel computes a partial last block whole, masked)."""
    if whole:
        return max(0, min(b, -(-L // kb)) - a) * kb / 1000
    return max(0, min(b * kb, L) - a * kb) / 1000


def _pieces(keys, part, bounds, kb):
    """(program, tile, first unit, end unit) of the pieces that program p's contiguous range
    bounds[p] = [u0, u1) of the units of the tiles `part` (indices into keys, in order) covers."""
    starts = [0]
    for t in part:
        starts.append(starts[-1] + _units(keys[t], kb))
    out = []
    for p, (u0, u1) in bounds.items():
        i = bisect.bisect_right(starts, u0) - 1
        while u0 < u1:
            end = min(u1, starts[i + 1])
            out.append((p, part[i], u0 - starts[i], end - starts[i]))
            u0, i = end, i + 1
    return out


def _finish(base, pieces, keys, kb, join, whole):
    """Each program's finish time: base[p] (its whole tiles) plus its pieces, a piece costing the
    constant and its work, and the join where its tile has more than one piece."""
    n = Counter(t for _, t, _, _ in pieces)
    fin = list(base)
    for p, t, a, b in pieces:
        fin[p] += FIXED + _work(keys[t], a, b, kb, whole) + (join * kb / 1000 if n[t] > 1 else 0)
    return fin


def _even(part, keys, slots, kb):
    """Program p's range of the units of `part`: [p U / P, (p + 1) U / P)."""
    U = sum(_units(keys[t], kb) for t in part)
    return {p: (p * U // slots, (p + 1) * U // slots) for p in range(slots)}


def _greedy(base, part, keys, kb, join, whole):
    """Least loaded first: the programs in increasing base[p] take the next contiguous units while
    a unit's middle ends by a common level W (each range charged one piece's constant and join),
    W the lowest level (bisection) at which the units run out."""
    cost = []
    for t in part:
        n = _units(keys[t], kb)
        cost += [_work(keys[t], a, a + 1, kb, whole) if keys[t] else FIXED for a in range(n)]
    pre = [0.0]
    for c in cost:
        pre.append(pre[-1] + c)
    mid = [pre[k] + c / 2 for k, c in enumerate(cost)]
    order = sorted(range(len(base)), key=lambda p: base[p])
    ovh = FIXED + join * kb / 1000

    def fill(W):
        i, bounds = 0, {}
        for p in order:
            j = i
            if W - base[p] - ovh > 0:
                j = bisect.bisect_right(mid, pre[i] + W - base[p] - ovh, lo=i)
            bounds[p], i = (i, j), j
        return i == len(cost), bounds

    lo, hi = min(base), max(base) + pre[-1] + ovh
    for _ in range(60):
        if fill((lo + hi) / 2)[0]:
            hi = (lo + hi) / 2
        else:
            lo = (lo + hi) / 2
    return fill(hi)[1]


def persistent(T, D, slots, block, mode, trials, kb=128, joins=(0.0,), whole=False, spread=0.0,
               piece=4):
    """Useful shares of the persistent forward's programs (mean over random batches): static and
    dynamic whole tiles, then for each join cost (in key blocks per piece of a split tile)
    stream-K, the split of the walk's last partial round and of the rows' (even, greedy), and
    the queue split (pieces of `piece` key blocks). mode: dense, padded or packed; whole: a tile
    costs its key blocks in full, not its keys; spread: programs' speeds in [1 - s, 1 + s]."""
    H, B = WIDTH // D, TOKENS // T
    n_m = -(-T // block)
    res = {n: [] for n in ["static", "dynamic"] + [(s, j) for j in joins
                                                   for s in SPLITS + ("queue split",)]}
    for seed in range(trials):
        rnd = random.Random(seed)
        speed = [1 + spread * random.Random(seed * 7919 + p).uniform(-1, 1) for p in range(slots)]
        L = [rnd.randint(T // 2, T) if mode != "dense" else T for _ in range(B)]
        keys = []
        for b in range(B):  # tiles holding a valid row: sequence by sequence, head by head
            keys += [L[b]] * (H * -(-L[b] // block))
        rows = len(keys)
        if mode == "padded":  # then the tiles past the lengths, which only store zeros
            keys += [0] * sum(H * (n_m - -(-L[b] // block)) for b in range(B))
        tiles = [_work(k, 0, _units(k, kb), kb, whole) + FIXED for k in keys]
        useful = sum(tiles)
        static = [0.0] * slots
        for t, c in enumerate(tiles):
            static[t % slots] += c * speed[t % slots]
        res["static"].append(useful / slots / max(static))
        res["dynamic"].append(useful / slots / max(_queue(tiles, speed)))
        every = list(range(len(tiles)))
        parts = {"stream-K": every, "hybrid": every[len(tiles) // slots * slots:],
                 "rows": every[rows // slots * slots:rows]}
        for j in joins:
            for name, part in parts.items():
                base = [0.0] * slots
                if name != "stream-K":
                    split = set(part)
                    for t, c in enumerate(tiles):
                        if t not in split:
                            base[t % slots] += c
                for kind in ("even", "greedy"):
                    if name == "stream-K" and kind == "greedy":
                        continue
                    bounds = (_even(part, keys, slots, kb) if kind == "even"
                              else _greedy(base, part, keys, kb, j, whole))
                    fin = _finish(base, _pieces(keys, part, bounds, kb), keys, kb, j, whole)
                    key = name if name == "stream-K" else f"{name} {kind}"
                    res[(key, j)].append(useful / slots / max(fin))
            res[("queue split", j)].append(
                useful / slots / _queue_split(tiles, keys, rows, speed, piece, kb, j, whole))
    return {n: sum(r) / len(r) for n, r in res.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=264)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--group", type=int, default=1024, help="programs per group of heads")
    ap.add_argument("--persistent", action="store_true",
                    help="the persistent forward (one program per SM, set --slots 132)")
    ap.add_argument("--key-block", type=int, default=128,
                    help="--persistent: keys in a unit of the split schedules (BLOCK_N)")
    ap.add_argument("--join", type=float, nargs="+", default=[0.0],
                    help="--persistent: cost of each piece of a split tile, in key blocks "
                         "(one set of split columns per value)")
    ap.add_argument("--whole-blocks", action="store_true",
                    help="--persistent: a tile costs its key blocks in full (a partial last block "
                         "as a whole one, as the kernel computes it), not its keys")
    ap.add_argument("--spread", type=float, default=0.0,
                    help="--persistent: each program's speed uniform in [1 - s, 1 + s]")
    ap.add_argument("--piece", type=int, default=4,
                    help="--persistent: key blocks a piece of the queue split")
    args = ap.parse_args()
    if args.persistent:
        rows = {}
        for D, block in ((64, 192), (128, 128)):
            for T in (1024, 4096, 16384):
                for mode in ("dense", "padded", "packed"):
                    rows[D, block, T, mode] = persistent(T, D, args.slots, block, mode,
                                                         args.trials, args.key_block, args.join,
                                                         args.whole_blocks, args.spread,
                                                         args.piece)
        for j in args.join:
            print(f"join {j:g} key blocks a piece, a tile's cost in "
                  f"{'key blocks' if args.whole_blocks else 'keys'}")
            names = SPLITS + ("queue split",)
            print(f"{'':25s}static dynamic " + " ".join(names))
            for (D, block, T, mode), r in rows.items():
                print(f"hd{D:<3d} T={T:5d} {mode:6s} {block} rows {r['static']:6.3f} "
                      f"{r['dynamic']:7.3f}" + "".join(f" {r[(n, j)]:{len(n)}.3f}" for n in names))
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
