"""examples/serving end to end on the CPU: two LitServe servers (sigmoid_packed, sigmoid_padded)
on loopback ports with a tiny model; a few hundred cells through the load generator, each
embedding checked against the model run offline on the same cell; bad requests answered with a
clear 4xx, alone, while the good requests batched with them succeed; one response per request;
a clean stop. And the token-budget batching loop alone, on a queue of fake requests."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT

pytest.importorskip("litserve")
from fastapi import HTTPException  # noqa: E402  (litserve's dependency)

SERVING = os.path.join(ROOT, "examples", "serving")
sys.path.insert(0, SERVING)
import checkpoint as C  # noqa: E402
import load as L  # noqa: E402

D = C.D
MAX_TOKENS = 1024   # the servers' --max-cell-tokens (the tiny model has 2048 positions)
BUDGET = 4096       # --token-budget
MAX_BODY = 2**20    # --max-body-mb 1
REL_TOL = 1e-4      # fp32, the same math in another summation order (packed vs padded, B vs 1)


class FakeTransport:
    def __init__(self):
        self.sent = []

    def send(self, item, consumer_id):
        self.sent.append(item)


class FakeAPI:
    """decode_request: a payload is its token count, or a negative number for a bad request."""
    max_batch_size, request_timeout = 3, 30

    def decode_request(self, n):
        if n < 0:
            raise HTTPException(422, f"bad {n}")
        return type("Cell", (), {"tokens": n})()


def test_token_budget_loop_batches_by_tokens():
    """The batching loop alone: budget in real tokens (packed) or cells x longest (padded), a
    request that does not fit waits for the next batch, a longer-than-budget cell runs alone,
    max_batch_size caps the cells, a bad request is answered alone and never batched."""
    import queue

    from batching import TokenBudgetLoop
    from litserve.loops.base import _SENTINEL_VALUE

    def batches(padded, sizes):
        q, t = queue.Queue(), FakeTransport()
        past = time.monotonic() - 1.0  # every deadline passed: batches form from the backlog
        for i, n in enumerate(sizes):
            q.put((0, f"u{i}", past, n))
        q.put(_SENTINEL_VALUE)
        loop, out, stop = TokenBudgetLoop(1000, 0.005, padded), [], False
        while not stop:
            b, stop = loop.collect(FakeAPI(), q, t)
            if b:
                out.append([c[3].tokens for c in b])
        errors = [(uid, e.status_code, e.detail) for uid, (e, *_) in t.sent]
        return out, errors

    assert batches(False, [400, 500, 300, 2000, 50, -1, 10, 10, 10, 10]) == (
        [[400, 500], [300], [2000], [50, 10, 10], [10, 10]], [("u5", 422, "bad -1")])
    assert batches(True, [100, 100, 600, 300, 300, 300, 10]) == (
        [[100, 100], [600], [300, 300, 300], [10]], [])


def test_token_budget_loop_spins_only_after_a_batch():
    """spin_s: an idle worker polls its queue (get_nowait) while its last batch is under spin_s
    old, and takes a request that arrives meanwhile without a blocking read; a worker that has
    run no batch yet, or whose last one is older, reads blocking."""
    import queue
    import threading

    from batching import TokenBudgetLoop

    class CountingQueue(queue.Queue):
        def __init__(self):
            super().__init__()
            self.blocking, self.polls = 0, 0

        def get(self, block=True, timeout=None):
            if block:
                self.blocking += 1
            else:
                self.polls += 1
            return super().get(block, timeout)

    def one(loop):
        q = CountingQueue()
        threading.Timer(0.05, lambda: q.put((0, "u0", time.monotonic(), 7))).start()
        b, stop = loop.collect(FakeAPI(), q, FakeTransport())
        assert not stop and [c[3].tokens for c in b] == [7]
        return q

    spinning = TokenBudgetLoop(1000, 0.0, False, spin_s=5.0)
    q = one(spinning)  # no batch yet: a blocking read
    assert q.blocking == 1 and q.polls == 0
    spinning._active_at = time.monotonic()  # as run() sets it after a batch
    q = one(spinning)
    assert q.blocking == 0 and q.polls > 1
    spinning._active_at = time.monotonic() - 10.0  # the last batch is older than spin_s
    q = one(spinning)
    assert q.blocking == 1 and q.polls == 0


def test_pipe_frames_survive_any_split():
    """transport.Frames: the answers' length-prefixed messages come out whole and in order
    however the byte stream is cut into reads (one byte at a time, mid-header, several messages
    in one read), and a message cut short stays buffered until its rest arrives."""
    import random

    from transport import Frames

    rng = random.Random(0)
    msgs = [bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 7, 8, 9, 300, 5000])))
            for _ in range(60)]
    stream = b"".join(Frames.frame(m) for m in msgs)
    for sizes in ([1], [3, 8, 9], [len(stream)], [1000, 7, 1]):
        frames, got, pos, i = Frames(), [], 0, 0
        while pos < len(stream):
            n = sizes[i % len(sizes)]
            got += frames.feed(stream[pos:pos + n])
            pos, i = pos + n, i + 1
        assert got == msgs, sizes
    frames = Frames()
    cut = Frames.frame(b"abcdef")
    assert frames.feed(cut[:10]) == [] and frames.feed(cut[10:] + cut[:3]) == [b"abcdef"]
    assert frames.feed(cut[3:]) == [b"abcdef"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(mode: str, checkpoint: str, log_path: str, *extra: str):
    port = free_port()
    cmd = [sys.executable, os.path.join(SERVING, "server.py"), "--mode", mode, "--device", "cpu",
           "--checkpoint", checkpoint, "--port", str(port), "--threads", "1",
           "--token-budget", str(BUDGET), "--max-wait-ms", "20", "--max-cell-tokens",
           str(MAX_TOKENS), "--max-body-mb", "1", "--log-level", "error", *extra]
    log = open(log_path, "w")
    # Its own process group (setsid): the server's workers are its children, and teardown can check them all.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc, f"http://127.0.0.1:{port}"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def stop(procs: dict, logs: dict) -> None:
    """SIGTERM to each server; each, and every process it started, must be gone within 30 s."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    failures = []
    for name, proc in procs.items():
        try:
            rc = proc.wait(30)
            end = time.monotonic() + 15
            while group_alive(proc.pid) and time.monotonic() < end:
                time.sleep(0.2)
            leftover = group_alive(proc.pid)
        except subprocess.TimeoutExpired:
            rc, leftover = None, True
        finally:
            if group_alive(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
        if rc != 0 or leftover:
            failures.append((name, rc, leftover, open(logs[name]).read()[-3000:]))
    assert not failures, failures


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    path, ckpt = C.get_checkpoint("tiny", "sigmoid", torch.device("cpu"), str(tmp / "tiny.pt"))
    # (the default queues are the direct ones; the padded mode runs LitServe's own, and the
    # packed mode runs once more with an idle worker polling its queue for 20 ms after a batch)
    spec = {"sigmoid_packed": ("sigmoid_packed",),
            "sigmoid_padded": ("sigmoid_padded", "--queues", "litserve"),
            "direct": ("sigmoid_packed", "--queues", "direct", "--spin-ms", "20")}
    logs = {m: str(tmp / f"{m}.log") for m in spec}
    started = {m: start(spec[m][0], path, log, *spec[m][1:]) for m, log in logs.items()}
    try:
        for m, (proc, url) in started.items():
            try:
                L.wait_ready(url, 120, proc)
            except Exception:
                raise AssertionError(open(logs[m]).read()[-3000:])
        yield ckpt, {m: url for m, (_, url) in started.items()}
    finally:
        stop({m: proc for m, (proc, _) in started.items()}, logs)


@pytest.fixture(scope="module")
def cells(servers):
    """64 bundled cells (values) and 16 heavy-tailed synthetic ones (bins, up to MAX_TOKENS)."""
    info = L.get_json(servers[1]["sigmoid_packed"], "/info")["model"]
    assert info["max_cell_tokens"] == MAX_TOKENS and info["token_budget"] == BUDGET
    return L.data_cells(64, seed=1) + L.heavy_cells(16, len(info["genes"]), info["n_bins"],
                                                    MAX_TOKENS, seed=2)


def offline_embeddings(ckpt, cells) -> list:
    """Each cell alone through the trained CellTransformer's padded embed_cells, tokenized by
    data.tokenize (bundled cells) or as sent (bins)."""
    model = C.build_model(ckpt)
    edges = np.asarray(ckpt["bin_edges"])
    x = D.load().expression
    out = []
    with torch.no_grad():
        for body, n, row in cells:
            if row is not None:
                tok = D.tokenize(x[row:row + 1], edges)
                genes, bins = tok.genes, tok.bins
            else:
                genes = torch.tensor([body["genes"]]) + D.N_SPECIAL
                bins = torch.tensor([body["bins"]])
            assert genes.shape[1] == n
            out.append(model.embed_cells(genes, bins, torch.tensor([n], dtype=torch.int32))[0])
    return out


def rel(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), b.double()
    return float((a - b).norm() / b.norm())


def check_embeddings(records, cells, ref) -> dict:
    by_cell = {}
    for r in records:
        assert r["status"] == 200, r
        got = r["response"]
        assert got["tokens"] == cells[r["idx"]][1]
        assert got["batch_cells"] == 1 or got["batch_cost_tokens"] <= BUDGET, got
        err = rel(got["embedding"], ref[r["idx"]])
        assert err < REL_TOL, (r["idx"], cells[r["idx"]][1], err, got["batch_cells"])
        by_cell[r["idx"]] = torch.tensor(got["embedding"])
    return by_cell


def test_embeddings_match_offline_and_modes_agree(servers, cells):
    ckpt, urls = servers
    ref = offline_embeddings(ckpt, cells)
    packed, recs = L.run_step(urls["sigmoid_packed"], cells, None, 16, 30.0, 300, seed=3,
                              keep=True)
    assert packed["requests"] == packed["ok"] == 300 and not packed["errors"], packed
    got_packed = check_embeddings(recs, cells, ref)
    # Concurrent requests shared batches: packing happened.
    assert max(r["response"]["batch_cells"] for r in recs) > 1

    padded, recs = L.run_step(urls["sigmoid_padded"], cells, None, 16, 30.0, 120, seed=4,
                              keep=True)
    assert padded["requests"] == padded["ok"] == 120 and not padded["errors"], padded
    got_padded = check_embeddings(recs, cells, ref)
    common = set(got_packed) & set(got_padded)
    assert common
    for i in common:
        assert rel(got_packed[i], got_padded[i].double()) < REL_TOL


def bad_requests(n_genes: int) -> list:
    """(raw body, expected status, a phrase the message must contain)."""
    j = lambda o: json.dumps(o).encode()  # noqa: E731
    return [
        (b'{"genes": [1, 2], "bins": [3', 422, "JSON decode error"),
        (b"not json at all", 422, "JSON decode error"),
        (j([1, 2, 3]), 422, "valid dictionary"),
        (j({"genes": [0, n_genes], "bins": [1, 1]}), 422, f"unknown gene {n_genes} at position 1"),
        (j({"genes": [-1], "bins": [1]}), 422, "unknown gene -1"),
        (j({"genes": ["CD3E", "NOT_A_GENE"], "bins": [2, 1]}), 422, "unknown gene 'NOT_A_GENE'"),
        (j({"genes": [], "bins": []}), 422, "empty cell"),
        (j({"genes": [1, 2], "values": [0.0, 0.0]}), 422, "empty cell"),
        (j({"genes": list(range(MAX_TOKENS + 1)), "bins": [1] * (MAX_TOKENS + 1)}), 422,
         "cell too long"),
        (j({"genes": [1, "2", 3.5], "bins": [1, 1, 1]}), 422, "genes"),
        (j({"genes": [1, 2], "bins": ["1", True]}), 422, "bins"),
        (j({"genes": 7, "bins": [1]}), 422, "valid list"),
        (b'{"genes": [1], "values": [NaN]}', 422, "finite"),
        (j({"genes": [1], "values": [-0.5]}), 422, "negative expression value"),
        (j({"genes": [1, 2], "bins": [1]}), 422, "'bins' has 1"),
        (j({"genes": [1], "bins": [99]}), 422, "bin 99 at position 0 is outside"),
        (j({"genes": [1], "bins": [1], "values": [1.0]}), 422, "exactly one of"),
        (j({"genes": [1]}), 422, "exactly one of"),
        (j({"genes": [1], "bins": [1], "extra": 0}), 422, "extra"),
        (b'{"genes": [' + b"1," * (MAX_BODY // 2) + b'1], "bins": [1]}', 413, "request body over"),
    ]


def test_bad_requests_get_4xx_alone_and_the_server_keeps_serving(servers, cells):
    ckpt, urls = servers
    url = urls["sigmoid_packed"]
    bad = bad_requests(len(ckpt["genes"]))
    good = cells[:24]
    ref = offline_embeddings(ckpt, good)
    # One pool, bad bodies among good cells, sent concurrently so that they share batches.
    pool = good + [(b, 0, None) for b, _, _ in bad]
    s, records = L.run_step(url, pool, None, 12, 30.0, 240, seed=5, keep=True)
    assert s["requests"] == 240 and all(r.get("status") for r in records), \
        [r for r in records if not r.get("status")][:3]
    for r in records:
        if r["idx"] < len(good):
            assert r["status"] == 200, r
            assert rel(r["response"]["embedding"], ref[r["idx"]]) < REL_TOL
        else:
            _, status, phrase = bad[r["idx"] - len(good)]
            assert r["status"] == status, (bad[r["idx"] - len(good)][0][:80], r)
            assert phrase in json.dumps(r["response"]), (phrase, r["response"])
    # Each bad request once more, alone, in order (the pool draw may have missed some).
    for body, status, phrase in bad:
        s, rec = L.run_step(url, [(body, 0, None)], None, 1, 10.0, 1, keep=True)
        assert rec[0]["status"] == status and phrase in json.dumps(rec[0]["response"]), \
            (body[:80], rec[0])
    conn = http.client.HTTPConnection(*L.loopback(url), timeout=30)
    conn.request("POST", "/predict", json.dumps(good[0][0]), {"Content-Type": "text/plain"})
    r = conn.getresponse()
    assert r.status == 415 and b"Content-Type must be application/json" in r.read()
    conn.close()
    s, rec = L.run_step(url, good[:4], None, 2, 10.0, 8, keep=True)
    assert s["ok"] == 8


def test_direct_queues_serve_the_same_answers(servers, cells):
    """--queues direct (requests through multiprocessing queues, answers through pipes the HTTP
    event loop reads, in place of LitServe's Manager-proxied queues; the default with the
    LitServe version they are written for) with a spinning worker: every answer as offline,
    under concurrency, bad requests still answered alone with their 4xx, and (the fixture's
    teardown) a clean stop. The other servers run the default and LitServe's own queues."""
    ckpt, urls = servers
    url = urls["direct"]
    info = L.get_json(url, "/info")["model"]
    assert info["queues"] == "direct" and info["spin_ms"] == 20
    assert L.get_json(urls["sigmoid_packed"], "/info")["model"]["queues"] == "direct"
    assert L.get_json(urls["sigmoid_padded"], "/info")["model"]["queues"] == "litserve"
    ref = offline_embeddings(ckpt, cells)
    s, recs = L.run_step(url, cells, None, 16, 30.0, 200, seed=7, keep=True)
    assert s["requests"] == 200 and s["ok"] == 200, s
    check_embeddings(recs, cells, ref)
    for body, status, phrase in bad_requests(len(ckpt["genes"])):
        s, rec = L.run_step(url, [(body, 0, None)], None, 1, 10.0, 1, keep=True)
        assert rec[0]["status"] == status and phrase in json.dumps(rec[0]["response"]), \
            (body[:80], rec[0])


def test_load_report_and_help(servers, cells, tmp_path):
    """The CLI: --help documents the knobs; a short load run writes its JSON."""
    out = subprocess.run([sys.executable, os.path.join(SERVING, "server.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for knob in ("--mode", "--token-budget", "--max-wait-ms", "--port", "--device"):
        assert knob in out.stdout
    url = servers[1]["sigmoid_padded"]
    r = subprocess.run([sys.executable, os.path.join(SERVING, "load.py"), "--url", url,
                        "--mix", "data", "--rates", "50", "--duration", "1.5", "--cells", "32",
                        "--concurrency", "4", "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.load(open(tmp_path / "sigmoid_padded_data.json"))
    step = res["steps"][0]
    assert step["ok"] == step["requests"] > 0 and not step["errors"]
    assert step["latency_ms"]["p99"] >= step["latency_ms"]["p50"] > 0
    with pytest.raises(ValueError, match="loopback"):
        L.loopback("http://10.1.2.3:8000")


def test_overhead_probe_splits_the_latency(servers, tmp_path):
    """overhead.py: one client, requests one after another; every size answered, the server's
    compute and batch wait within the end-to-end latency; loopback only."""
    url = servers[1]["sigmoid_packed"]
    out = tmp_path / "overhead.json"
    r = subprocess.run([sys.executable, os.path.join(SERVING, "overhead.py"), "--url", url,
                        "--sizes", "8", "40", "--requests", "10", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.load(open(out))["rows"]
    assert [row["genes"] for row in rows] == [8, 40]
    for row in rows:
        assert row["p99_ms"] >= row["p50_ms"] > 0
        assert 0 < row["compute_p50_ms"] < row["p50_ms"]
        assert row["batch_wait_p50_ms"] >= 0
    r = subprocess.run([sys.executable, os.path.join(SERVING, "overhead.py"), "--url",
                        "http://10.1.2.3:8000"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "loopback" in r.stderr
