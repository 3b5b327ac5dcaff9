"""Load generator for examples/serving/server.py: loopback only, bounded in requests and in time.

    python examples/serving/load.py          # the server on :8000: its capacity, then a sweep
    python examples/serving/load.py --mix heavy --rates 2 4 8 max --duration 20

N client threads, each with a keep-alive connection, serve a Poisson arrival process at each
offered rate. It is an open loop: a request's latency counts from its scheduled arrival, so when
all N clients are busy the backlog shows up as latency, not as a lower offered rate. 'max' is a
closed loop (each client sends its next request when the last one returns); 'auto' measures that
first and then offers 25..110% of it. Cells come from a length mix: 'data', the bundled
pbmc68k_reduced cells (183-409 tokens, sent as expression values); 'heavy', synthetic cells with
truncated-Pareto lengths in 200..16384 tokens (capped at the server's max cell length; genes drawn
with replacement from the panel, sent as bins); 'both', half each. Writes <out>/<mode>_<mix>.json
(default $TMPDIR/sigmoid_attn_serving/<device>) and latency-vs-throughput PNGs (matplotlib
permitting), and prints a table.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "single_cell"))

HEAVY_RANGE = (200, 16384)
HEAVY_ALPHA = 1.0  # Pareto tail index: median ~2x the minimum, 1% of cells over ~9k tokens


def loopback(url: str) -> tuple:
    """(host, port) of url, which must resolve to a loopback address only."""
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise ValueError(f"{url}: expected http://<loopback host>:<port>")
    addrs = {a[4][0] for a in socket.getaddrinfo(u.hostname, u.port or 80,
                                                 proto=socket.IPPROTO_TCP)}
    if not addrs or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs):
        raise ValueError(f"{url} resolves to {sorted(addrs)}: this load generator only targets "
                         "loopback addresses")
    return u.hostname, u.port or 80


def get_json(url: str, path: str, timeout: float = 10.0) -> dict:
    host, port = loopback(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
        return json.loads(body)
    finally:
        conn.close()


def wait_ready(url: str, timeout: float = 120.0, proc=None) -> None:
    """Polls GET /health until 200; raises if proc (the server) exits or time runs out."""
    host, port = loopback(url)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it was ready")
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} was not ready within {timeout} s")


def data_cells(n: int | None = None, seed: int = 0) -> list:
    """The bundled cells as requests: (body, tokens, row) with expressed genes and their values."""
    import data as D

    x = D.load().expression
    rows = np.arange(len(x)) if n is None else np.random.default_rng(seed).integers(0, len(x), n)
    out = []
    for r in rows:
        g = np.flatnonzero(x[r] > 0)
        out.append(({"genes": g.tolist(), "values": [float(v) for v in x[r, g]]}, len(g), int(r)))
    return out


def heavy_cells(n: int, n_genes: int, n_bins: int, cap: int, seed: int = 0) -> list:
    """Synthetic cells of truncated-Pareto lengths in HEAVY_RANGE (at most cap), as bins: a
    stand-in for whole-transcriptome panels, whose cells express hundreds to many thousands of
    genes. (body, tokens, None)."""
    rng = np.random.default_rng(seed)
    lo, hi = HEAVY_RANGE[0], min(HEAVY_RANGE[1], cap)
    u = rng.random(n)
    lens = lo * (1 - u * (1 - (lo / hi) ** HEAVY_ALPHA)) ** (-1 / HEAVY_ALPHA)
    out = []
    for L in np.minimum(lens.astype(int), hi):
        genes = rng.integers(0, n_genes, L)
        bins = n_bins - (np.arange(L) * n_bins // L)  # ranked: highest bin first
        out.append(({"genes": genes.tolist(), "bins": bins.tolist()}, int(L), None))
    return out


def make_cells(mix: str, n: int, info: dict, seed: int = 0) -> list:
    cap = info["max_cell_tokens"]
    heavy = lambda k: heavy_cells(k, len(info["genes"]), info["n_bins"], cap, seed)  # noqa: E731
    if mix == "data":
        return data_cells(n, seed)
    if mix == "heavy":
        return heavy(n)
    cells = data_cells(n - n // 2, seed) + heavy(n // 2)
    order = np.random.default_rng(seed + 1).permutation(len(cells))
    return [cells[i] for i in order]


class Client(threading.Thread):
    """One connection; takes arrivals from a shared schedule until it is exhausted."""

    def __init__(self, host, port, schedule, bodies, records, timeout, keep):
        super().__init__(daemon=True)
        self.host, self.port, self.schedule, self.bodies = host, port, schedule, bodies
        self.records, self.timeout, self.keep = records, timeout, keep
        self.conn = None

    def send(self, body: bytes) -> tuple:
        for attempt in (0, 1):  # a keep-alive connection the server closed: reconnect once
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.conn.close()
                self.conn = None
                if attempt:
                    raise e
            except Exception:
                self.conn.close()
                self.conn = None
                raise

    def run(self):
        while True:
            item = self.schedule.next()
            if item is None:
                break
            due, idx = item
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            start = time.perf_counter()
            rec = {"idx": idx, "due": due, "start": start}
            try:
                status, data = self.send(self.bodies[idx])
                rec["status"] = status
                if status == 200 or self.keep:
                    try:
                        rec["response"] = json.loads(data)
                    except ValueError:
                        rec["response"] = data.decode(errors="replace")
            except Exception as e:
                rec["status"], rec["error"] = None, f"{type(e).__name__}: {e}"
            rec["done"] = time.perf_counter()
            if not self.keep and rec.get("status") == 200:
                r = rec.pop("response")
                rec["batch_cells"], rec["batch_tokens"] = r["batch_cells"], r["batch_tokens"]
                rec["batch_wait_ms"], rec["compute_ms"] = r["batch_wait_ms"], r["compute_ms"]
            self.records.append(rec)
        if self.conn is not None:
            self.conn.close()


class Schedule:
    """Arrival times (perf_counter seconds) and cell indices; None when done. Open loop: Poisson
    at rate; closed loop (rate None): due now, until the count or the duration runs out."""

    def __init__(self, n_cells, rate, duration, max_requests, seed):
        self.lock, self.sent, self.rate = threading.Lock(), 0, rate
        self.max_requests, self.rng = max_requests, np.random.default_rng(seed)
        self.n_cells = n_cells
        self.t0 = time.perf_counter()
        self.end = self.t0 + duration
        self.t = self.t0

    def next(self):
        with self.lock:
            if self.sent >= self.max_requests:
                return None
            if self.rate is None:
                due = time.perf_counter()
            else:
                self.t += self.rng.exponential(1.0 / self.rate)
                due = self.t
            if due > self.end:
                return None
            self.sent += 1
            return due, int(self.rng.integers(self.n_cells))


def percentile(x, q):
    return float(np.percentile(x, q)) if len(x) else None


def run_step(url: str, cells: list, rate: float | None, concurrency: int, duration: float,
             max_requests: int, seed: int = 0, timeout: float = 120.0, keep: bool = False) -> tuple:
    """Offers cells at rate (None: closed loop) for at most duration seconds and max_requests
    requests. cells: (body, tokens, row), body a dict or raw bytes. Returns (summary, records);
    with keep, each record holds the parsed response."""
    host, port = loopback(url)
    bodies = [b if isinstance(b, bytes) else json.dumps(b).encode() for b, _, _ in cells]
    records: list = []
    sched = Schedule(len(cells), rate, duration, max_requests, seed)
    clients = [Client(host, port, sched, bodies, records, timeout, keep)
               for _ in range(concurrency)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(duration + timeout + 10)  # a client is bounded by its socket timeout per request
    hung = sum(c.is_alive() for c in clients)
    summary = summarize(records, cells, rate, concurrency, sched.t0, hung)
    # Host load at the step's end, this server and client included: on a shared machine, a
    # step far above the cores' count was measured with others' work in the way.
    summary["host_load_1min"] = os.getloadavg()[0]
    return summary, records


def summarize(records, cells, rate, concurrency, t0, hung=0) -> dict:
    ok = [r for r in records if r.get("status") == 200]
    errors: dict = {}
    for r in records:
        if r.get("status") != 200:
            key = str(r["status"]) if r.get("status") else r["error"].split(":")[0]
            errors[key] = errors.get(key, 0) + 1
    end = max((r["done"] for r in records), default=t0)
    wall = max(end - t0, 1e-9)
    lat = np.array([1e3 * (r["done"] - r["due"]) for r in ok])
    tokens = sum(cells[r["idx"]][1] for r in ok)

    def mean_of(key):
        v = [r[key] if key in r else r.get("response", {}).get(key) for r in ok]
        v = [x for x in v if x is not None]
        return float(np.mean(v)) if v else None

    return {
        "offered_rate": rate if rate is not None else "max", "concurrency": concurrency,
        "requests": len(records), "ok": len(ok), "errors": errors, "unfinished_clients": hung,
        "wall_s": wall, "cells_per_s": len(ok) / wall, "tokens_per_s": tokens / wall,
        "mean_tokens_per_cell": tokens / max(len(ok), 1),
        "latency_ms": {"p50": percentile(lat, 50), "p95": percentile(lat, 95),
                       "p99": percentile(lat, 99), "mean": float(lat.mean()) if len(lat) else None,
                       "max": float(lat.max()) if len(lat) else None},
        "server": {"mean_batch_cells": mean_of("batch_cells"),
                   "mean_batch_tokens": mean_of("batch_tokens"),
                   "mean_batch_wait_ms": mean_of("batch_wait_ms"),
                   "mean_compute_ms": mean_of("compute_ms")},
    }


def device_tag(info: dict) -> str:
    return "cpu" if info["device_type"] == "cpu" else info["device"].replace(" ", "_")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def row(s: dict) -> str:
    lat, srv = s["latency_ms"], s["server"]
    f = lambda v, w=8, p=1: (f"{v:{w}.{p}f}" if v is not None else " " * (w - 1) + "-")  # noqa
    return (f"{str(s['offered_rate']):>8s} {s['ok']:6d} {sum(s['errors'].values()):5d} "
            f"{f(s['cells_per_s'])} {f(s['tokens_per_s'], 10, 0)} {f(lat['p50'])} {f(lat['p95'])} "
            f"{f(lat['p99'])} {f(srv['mean_batch_cells'], 7)} {f(srv['mean_batch_tokens'], 8, 0)} "
            f"{f(s.get('host_load_1min'), 5)}")


HEADER = (f"{'offered':>8s} {'ok':>6s} {'err':>5s} {'cells/s':>8s} {'tokens/s':>10s} "
          f"{'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'batch':>7s} {'b.tok':>8s} {'load':>5s}")


def plot(out_dir: str, mix: str) -> None:
    """One PNG per result file, and one with every mode of this mix measured in out_dir."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plots")
        return
    runs = []
    for name in sorted(os.listdir(out_dir)):
        if name.endswith(f"_{mix}.json"):
            with open(os.path.join(out_dir, name)) as f:
                runs.append(json.load(f))
    colors = {"sigmoid_packed": "tab:red", "sigmoid_padded": "tab:orange",
              "sdpa_padded": "tab:blue"}

    def draw(ax, r, label_prefix=""):
        # In offered-rate order, the closed loop last: past capacity the line turns back.
        steps = sorted(r["steps"], key=lambda s: (s["offered_rate"] == "max",
                                                 0 if s["offered_rate"] == "max"
                                                 else s["offered_rate"]))
        x = [s["cells_per_s"] for s in steps]
        c = colors.get(r["info"]["mode"])
        for q, ls in (("p50", "-"), ("p99", "--")):
            ax.plot(x, [s["latency_ms"][q] for s in steps], ls, marker="o", ms=3, color=c,
                    label=f"{label_prefix}{q}")

    for r in runs:
        fig, ax = plt.subplots(figsize=(6, 4))
        draw(ax, r)
        ax.set(xlabel="throughput (cells/s)", ylabel="latency (ms)", yscale="log",
               title=f"{r['info']['mode']}, {mix} mix, {r['info']['device']}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, f"{r['info']['mode']}_{mix}.png"), dpi=110)
        plt.close(fig)
    if len(runs) > 1:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in runs:
            draw(ax, r, f"{r['info']['mode']} ")
        ax.set(xlabel="throughput (cells/s)", ylabel="latency (ms)", yscale="log",
               title=f"latency vs throughput, {mix} mix; {runs[0]['info']['device']}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, f"latency_vs_throughput_{mix}.png"), dpi=110)
        plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="a loopback address only")
    ap.add_argument("--mix", choices=["data", "heavy", "both"], default="both",
                    help="data: the bundled cells; heavy: synthetic, Pareto lengths in "
                         "200..16384 (capped at the server's max); both: half each")
    ap.add_argument("--rates", nargs="+", default=["auto"],
                    help="offered cells/s per step, 'max' (closed loop) or 'auto'")
    ap.add_argument("--concurrency", type=int, default=32, help="client connections")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds of arrivals per step")
    ap.add_argument("--max-requests", type=int, default=5000, help="requests per step at most")
    ap.add_argument("--cells", type=int, default=512, help="distinct cells in the pool")
    ap.add_argument("--timeout", type=float, default=120.0, help="per-request socket timeout")
    ap.add_argument("--seed", type=int, default=0, help="for the cell pool and the arrivals")
    ap.add_argument("--out", "--out-dir", dest="out_dir",
                    help="default: $TMPDIR/sigmoid_attn_serving/<device>, outside the source "
                         "tree; the committed results come from --out examples/serving/results/<device>")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()  # other work on the host skews a CPU measurement: record it
    info = get_json(args.url, "/info")["model"]
    cells = make_cells(args.mix, args.cells, info, args.seed)
    lens = np.array([t for _, t, _ in cells])
    print(f"{info['mode']} on {info['device']}: {args.mix} mix, {len(cells)} cells of "
          f"{lens.min()}-{lens.max()} tokens (median {int(np.median(lens))}, mean "
          f"{lens.mean():.0f}), {args.concurrency} clients", flush=True)
    run_step(args.url, cells, None, min(4, args.concurrency), 2.0, 20, args.seed)  # warm-up

    rates = []
    for r in args.rates:
        rates += ["max"] if r in ("max", "auto") else [float(r)]
    steps = []
    print(HEADER, flush=True)
    for i, r in enumerate(rates):
        s, _ = run_step(args.url, cells, None if r == "max" else r, args.concurrency,
                        args.duration, args.max_requests, args.seed + i, args.timeout)
        steps.append(s)
        print(row(s), flush=True)
        if args.rates == ["auto"] and r == "max":
            cap = s["cells_per_s"]
            for frac in (0.25, 0.5, 0.75, 0.9, 1.1):
                rates.append(round(frac * cap, 3 if cap < 10 else 1))

    out_dir = args.out_dir or os.path.join(tempfile.gettempdir(), "sigmoid_attn_serving",
                                           device_tag(info))
    os.makedirs(out_dir, exist_ok=True)
    meta = {k: v for k, v in info.items() if k != "genes"}
    result = {"info": meta, "mix": args.mix, "commit": git_commit(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "load": {"concurrency": args.concurrency, "duration_s": args.duration,
                       "max_requests": args.max_requests, "cells": len(cells),
                       "tokens_per_cell": [int(lens.min()), int(np.median(lens)),
                                           float(lens.mean()), int(lens.max())],
                       "heavy_range": HEAVY_RANGE, "heavy_alpha": HEAVY_ALPHA,
                       "client_host_cores": os.cpu_count(),
                       "host_load_average_1min": {"before": load_before[0],
                                                  "after": os.getloadavg()[0]}},
              "steps": steps}
    path = os.path.join(out_dir, f"{info['mode']}_{args.mix}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1, default=lambda o: None if isinstance(o, float)
                  and not math.isfinite(o) else str(o))
    plot(out_dir, args.mix)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
