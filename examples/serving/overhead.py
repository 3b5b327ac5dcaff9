"""Server overhead at low load: one client on one keep-alive connection sends cells of a few sizes
one after another (nothing else in flight), and the end-to-end latency is split into what the
server reports (compute, the batch's wait for batch-mates) and the rest (HTTP, JSON, LitServe's
queues). Loopback only, bounded by --requests per size.

    python examples/serving/server.py --max-wait-ms 0 &     # (or the default 5 ms)
    python examples/serving/overhead.py --url http://127.0.0.1:8000 --out overhead.json
"""

import argparse
import http.client
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load as L  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000", help="a loopback address only")
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256],
                    help="genes per cell (capped at the panel and the server's maximum)")
    ap.add_argument("--requests", type=int, default=200, help="per size, after 20 warm-up ones")
    ap.add_argument("--out", help="JSON of the figures (default: print only)")
    args = ap.parse_args(argv)
    try:
        host, port = L.loopback(args.url)
    except ValueError as e:
        raise SystemExit(f"overhead.py: {e}")
    info = L.get_json(args.url, "/info", timeout=30)
    genes = info["model"]["genes"]
    limit = min(len(genes), info["model"]["max_cell_tokens"])
    conn = http.client.HTTPConnection(host, port, timeout=60)
    rows = []
    for n in sorted({min(s, limit) for s in args.sizes}):
        body = json.dumps({"genes": genes[:n], "bins": [1] * n}).encode()
        wall, compute, wait = [], [], []
        for i in range(20 + args.requests):
            t = time.perf_counter()
            conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            d = json.loads(r.read())
            if r.status != 200:
                raise SystemExit(f"overhead.py: HTTP {r.status}: {d}")
            if i >= 20:
                wall.append((time.perf_counter() - t) * 1e3)
                compute.append(d["compute_ms"])
                wait.append(d["batch_wait_ms"])
        med = statistics.median
        row = {"genes": n, "p50_ms": med(wall), "p99_ms": sorted(wall)[int(0.99 * len(wall))],
               "compute_p50_ms": med(compute), "batch_wait_p50_ms": med(wait),
               "rest_p50_ms": med(w - c - q for w, c, q in zip(wall, compute, wait))}
        rows.append(row)
        print(f"{n:6d} genes: p50 {row['p50_ms']:.2f} ms (compute {row['compute_p50_ms']:.2f}, "
              f"batch wait {row['batch_wait_p50_ms']:.2f}, HTTP/JSON/queues "
              f"{row['rest_p50_ms']:.2f}), p99 {row['p99_ms']:.2f} ms", flush=True)
    meta = {k: v for k, v in info["model"].items() if k != "genes"}
    result = {"server": meta, "commit": L.git_commit(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "requests_per_size": args.requests,
              "client": "one keep-alive connection, requests one after another", "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
