"""Cell-embedding server: examples/single_cell's encoder behind LitServe, concurrent requests packed
by tokens (not by count) into one [total_tokens, H, D] batch for sigmoid_attention_varlen.

    python examples/serving/server.py                          # sigmoid_packed, port 8000
    python examples/serving/server.py --mode sdpa_padded       # baseline: softmax (SDPA), padded
    python examples/serving/server.py --mode sigmoid_padded    # baseline: sigmoid, padded + lengths

POST /predict with a cell, JSON:
    {"genes": [12, "CD3E", ...], "bins": [16, 15, ...]}     genes in rank order, bins 0..n_bins
    {"genes": [12, "CD3E", ...], "values": [2.7, 0.4, ...]}  log-normalized expression, any order
answers {"embedding": [dim floats], "tokens": n, "batch_cells": ..., ...}. GET /info gives the
model, the gene panel and the knobs; GET /health is 200 once the model is loaded.

The first start trains the mode's model on the bundled data (about 30 s per attention on 2 CPU
cores for --size small) and caches it under examples/serving/checkpoints/.
"""

import argparse
import json
import multiprocessing as mp
import os
import platform
import signal
import sys
from dataclasses import dataclass
from typing import Annotated, Optional, Union

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import litserve as ls  # noqa: E402
import torch  # noqa: E402
from fastapi import HTTPException, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

import checkpoint as C  # noqa: E402
from batching import TokenBudgetLoop  # noqa: E402
from packed_model import GraphedEncoder, PackedEncoder, linears_to, pack, pad  # noqa: E402
from transport import PipeTransport  # noqa: E402

MODES = tuple(C.KINDS)


class CellRequest(BaseModel):
    """One cell. genes: ids (0-based indices into the panel of GET /info) or symbols. With bins,
    the genes are in rank order (highest expression first) and each bin is 1..n_bins (0: not
    expressed); with values (log-normalized expression, as in the training data), the server
    drops zeros, ranks by value and bins with the training data's edges. Strict types: no
    numbers as strings, no booleans as numbers."""
    model_config = ConfigDict(strict=True, extra="forbid")
    genes: list[Union[int, str]]
    bins: Optional[list[int]] = None
    values: Optional[list[Annotated[float, Field(allow_inf_nan=False)]]] = None


@dataclass
class Cell:
    genes: np.ndarray  # int64 token ids (gene id + N_SPECIAL)
    bins: np.ndarray   # int64
    tokens: int


def bad(detail: str) -> HTTPException:
    return HTTPException(422, detail)


def tokenize_request(req: CellRequest, panel: dict, max_tokens: int) -> Cell:
    """The tokens data.tokenize would make of this cell; HTTPException 422 says what is wrong."""
    n, n_genes, n_bins = len(req.genes), len(panel["genes"]), panel["n_bins"]
    if n == 0:
        raise bad("empty cell: 'genes' has no entries")
    if (req.bins is None) == (req.values is None):
        raise bad(f"give exactly one of 'bins' (expression bins 0..{n_bins}, genes in rank order) "
                  "or 'values' (expression values)")
    name, given = ("bins", req.bins) if req.bins is not None else ("values", req.values)
    if len(given) != n:
        raise bad(f"'genes' has {n} entries but '{name}' has {len(given)}")
    if n > max_tokens:
        raise bad(f"cell too long: {n} genes, this server takes at most {max_tokens} "
                  "(--max-cell-tokens)")
    index = panel["index"]
    ids = np.array([index.get(g, -1) if isinstance(g, str) else g if 0 <= g < n_genes else -1
                    for g in req.genes], dtype=np.int64)
    if (ids < 0).any():
        i = int(np.flatnonzero(ids < 0)[0])
        raise bad(f"unknown gene {req.genes[i]!r} at position {i}: the panel has {n_genes} genes, "
                  f"ids 0..{n_genes - 1} or their symbols (GET /info)")
    if req.bins is not None:
        bins = np.asarray(req.bins, dtype=np.int64)
        if ((bins < 0) | (bins > n_bins)).any():
            i = int(np.flatnonzero((bins < 0) | (bins > n_bins))[0])
            raise bad(f"bin {req.bins[i]} at position {i} is outside 0..{n_bins}")
    else:
        v = np.asarray(req.values, dtype=np.float64)
        if (v < 0).any():
            i = int(np.flatnonzero(v < 0)[0])
            raise bad(f"negative expression value {req.values[i]} at position {i}")
        ids, v = ids[v > 0], v[v > 0]
        if len(ids) == 0:
            raise bad("empty cell: no gene has a positive expression value")
        order = np.lexsort((ids, -v))  # data.tokenize's order: by value, ties by gene id
        ids, v = ids[order], v[order]
        bins = 1 + np.searchsorted(panel["edges"], v, side="right")
    return Cell(ids + C.D.N_SPECIAL, bins, len(ids))


async def no_auth() -> None:
    """No authentication, checked on the event loop."""


class CellEmbeddingAPI(ls.LitAPI):
    def __init__(self, mode: str, checkpoint_path: str, max_cell_tokens: int, token_budget: int,
                 max_wait_s: float, max_cells: int, threads: int, graph_tokens: int = 0,
                 spin_s: float = 0.0):
        super().__init__(max_batch_size=max_cells, loop=TokenBudgetLoop(
            token_budget, max_wait_s, padded=mode != "sigmoid_packed", spin_s=spin_s))
        self.mode, self.checkpoint_path = mode, checkpoint_path
        self.max_cell_tokens, self.threads = max_cell_tokens, threads
        self.graph_tokens, self.max_cells = graph_tokens, max_cells
        if not os.environ.get("LIT_SERVER_API_KEY"):
            # LitServe's authorize hook. Its default (no key set) is a plain function, which
            # FastAPI runs in its thread pool: a thread hop on every request, about 0.1 ms.
            # With the key set, LitServe's own X-API-Key check stays.
            self.authorize = no_auth

    def setup(self, device):
        self.torch_device = torch.device(device)
        threads = self.threads
        if not threads and self.torch_device.type == "cpu":
            # One core left to the HTTP server: intra-op threads on every core stall whenever it
            # (or a client on the same host) takes one. On 2 cores, sdpa_padded at 96 cells/s:
            # p50 11 ms with 1 thread, 740 ms with 2; at 192 cells/s, 1 thread kept up and 2 fell
            # to 75 cells/s with p50 5.8 s.
            threads = max(1, len(os.sched_getaffinity(0)) - 1)
        if threads:
            torch.set_num_threads(threads)
        ckpt = C.load_checkpoint(self.checkpoint_path)
        self.panel = C.panel(ckpt)
        model = C.build_model(ckpt).to(self.torch_device)
        self.packed = self.mode == "sigmoid_packed"
        self.encoder = PackedEncoder(model) if self.packed else model
        # bf16 on CUDA as in training (the CUDA kernels take fp16/bf16); fp32 on the CPU.
        self.dtype = torch.bfloat16 if self.torch_device.type == "cuda" else None
        if self.dtype is not None:
            linears_to(model, self.dtype)  # (no casts per call under autocast)
        self.graphed = None
        if self.graph_tokens and self.packed and self.torch_device.type == "cuda":
            # every bucket captured now, so no request pays a capture
            self.graphed = GraphedEncoder(self.encoder, self.torch_device, self.dtype,
                                          max_tokens=self.graph_tokens,
                                          max_cells=min(self.max_cells, self.graph_tokens))
            self.graphed.capture_all()
        g = np.arange(C.D.N_SPECIAL, C.D.N_SPECIAL + 8)
        self.predict(self.batch([Cell(g[:3], np.ones(3, np.int64), 3),
                                 Cell(g, np.ones(8, np.int64), 8)]))  # loads the kernels

    def decode_request(self, request: CellRequest):
        return tokenize_request(request, self.panel, self.max_cell_tokens)

    def batch(self, cells: list):
        pairs = [(c.genes, c.bins) for c in cells]
        return pack(pairs) if self.packed else pad(pairs)

    @torch.inference_mode()
    def predict(self, x):
        dev = self.torch_device
        with torch.autocast(dev.type, dtype=self.dtype, enabled=self.dtype is not None):
            if self.graphed is not None and self.graphed.covers(x):
                emb = self.graphed.embed_cells(x)
                tokens = x.lens.int().tolist()
            elif self.packed:
                emb = self.encoder.embed_cells(x.to(dev))
                tokens = x.lens.int().tolist()
            else:
                emb = self.encoder.embed_cells(*(t.to(dev, non_blocking=True) for t in x))
                tokens = x[2].tolist()
        return emb.float().cpu(), tokens

    def unbatch(self, output, stats: dict) -> list:
        emb, tokens = output
        return [(row, n, stats) for row, n in zip(emb, tokens)]

    def encode_response(self, output):
        """The HTTP answer itself, JSON rendered here in the inference worker: FastAPI passes a
        Response through as it is, where a dict would go through its jsonable_encoder (a Python
        walk over every float) in the HTTP process, on the request's path."""
        row, n, stats = output
        return JSONResponse({"embedding": row.tolist(), "tokens": n, **stats})


class RequestGate:
    """Answers 415 to a POST whose Content-Type is not JSON, and 413 to a body over max_bytes,
    before the app sees either. An oversized body is read (drained, up to a cap) before the 413:
    a server that answers and closes while the client is still sending resets the connection,
    and the client sees a broken pipe instead of the answer."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    @staticmethod
    async def answer(send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        ctype = dict(scope["headers"]).get(b"content-type", b"application/json").decode("latin-1")
        if ctype.split(";")[0].strip().lower() != "application/json":
            return await self.answer(send, 415, f"Content-Type must be application/json, got "
                                                f"{ctype!r}")
        chunks, size, more = [], 0, True
        while more and size <= 16 * self.max_bytes:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            more = msg.get("more_body", False)
            size += len(msg.get("body", b""))
            if size <= self.max_bytes:
                chunks.append(msg.get("body", b""))
        if size > self.max_bytes:
            return await self.answer(send, 413, f"request body over {self.max_bytes} bytes "
                                                "(--max-body-mb)")
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


class DirectQueueServer(ls.LitServer):
    """--queues direct: LitServe's queues between its HTTP processes and the inference worker
    replaced: requests through plain multiprocessing queues (pipes between the two processes)
    instead of proxies of its Manager process, and answers through PipeTransport, so a request
    and its answer each cross one pipe rather than making round trips through a third process,
    and an answer reaches its coroutine without a thread hop. This overrides a private LitServe
    method (_init_manager) and replaces what it built (litapi_request_queues, _transport), so it
    is tied to the LitServe version checked below; fast_queue (ZeroMQ answers) is not combined."""

    def _init_manager(self, num_api_servers: int):
        manager = super()._init_manager(num_api_servers)
        ctx = mp.get_context("spawn")  # LitServe spawns its inference workers
        for path in self.litapi_request_queues:
            self.litapi_request_queues[path] = ctx.Queue()
        self._transport = PipeTransport.create(ctx, num_api_servers)
        return manager


DIRECT_QUEUES_LITSERVE = "0.2.19"  # the version whose internals DirectQueueServer was written for


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 without the echo of each bad input: a cell can be 16k entries long, and a
    NaN in it made the default answer itself fail (a 500: NaN is not JSON)."""
    detail = [{k: e[k] for k in ("type", "loc", "msg") if k in e}
              | ({"ctx": {k: str(v) for k, v in e["ctx"].items()}} if e.get("ctx") else {})
              for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU ({model}, {os.cpu_count()} cores)"


MAIN_PID = os.getpid()


def interrupt(signum, frame):
    """SIGTERM (docker stop, a test's teardown) shuts down like Ctrl+C: LitServe's graceful path.
    The HTTP servers are forked with this handler, and uvicorn re-raises the signal once it has
    stopped: there it only ends the process."""
    if os.getpid() != MAIN_PID:
        raise SystemExit(0)
    raise KeyboardInterrupt


def parse_args(argv=None):
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(
        description="Cell-embedding server (LitServe): requests packed by tokens into one "
                    "sigmoid_attention_varlen batch, or a padded baseline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--mode", choices=MODES, default="sigmoid_packed",
                    help="sigmoid_packed: cells concatenated, cu_seqlens, no padding; "
                         "sigmoid_padded: [B, T] batch + lengths; sdpa_padded: softmax via SDPA "
                         "with a key-padding mask (a softmax-trained checkpoint)")
    ap.add_argument("--device", default="cuda" if cuda else "cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--port", type=int, default=8000, help="HTTP port")
    ap.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "0.0.0.0", "::"],
                    help="address to listen on (LitServe takes these three)")
    ap.add_argument("--token-budget", type=int, default=65536 if cuda else 8192,
                    help="tokens per batch: real tokens when packed, cells x longest when padded "
                         "(a longer cell still runs, alone)")
    ap.add_argument("--max-wait-ms", type=float, default=5.0,
                    help="longest a request waits for others to share its batch")
    ap.add_argument("--max-cells", type=int, default=1024, help="cells per batch at most")
    ap.add_argument("--max-cell-tokens", type=int,
                    help="longest cell accepted (None: the model's max positions)")
    ap.add_argument("--max-body-mb", type=float, default=4.0, help="request body limit")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="seconds a request may wait in the queue before a 504")
    ap.add_argument("--size", choices=list(C.SIZES), default="small",
                    help="model size to train at first start and cache")
    ap.add_argument("--checkpoint", help="checkpoint file, trained there if missing (None: "
                                         "checkpoints/<size>_<attention>.pt)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads of the inference worker (0: all cores but one on the "
                         "CPU, torch's default on CUDA)")
    ap.add_argument("--cuda-graphs", type=int, default=0, metavar="TOKENS",
                    help="sigmoid_packed on CUDA: replay batches of up to TOKENS tokens from CUDA "
                         "graphs captured at start, one per (token, cell) bucket of powers of two "
                         "(0: off)")
    ap.add_argument("--api-servers", type=int, default=1, help="HTTP server processes")
    ap.add_argument("--queues", choices=["auto", "direct", "litserve"], default="auto",
                    help="between the HTTP and inference processes: direct (requests through "
                         "multiprocessing queues, answers through pipes the HTTP event loop "
                         "reads; overrides a LitServe internal, litserve "
                         f"{DIRECT_QUEUES_LITSERVE} only; on an H200 1.8x the packed capacity) "
                         "or LitServe's own (proxies of its Manager process); auto: direct on "
                         f"litserve {DIRECT_QUEUES_LITSERVE}, LitServe's own otherwise")
    ap.add_argument("--spin-ms", type=float, default=0.0,
                    help="an idle inference worker polls its queue for this long after its last "
                         "batch instead of sleeping (one core kept busy): the next request skips "
                         "the worker's wake-up; for low-latency serving on a GPU with the direct "
                         "queues (LitServe's own make each poll a round trip)")
    ap.add_argument("--http", choices=["auto", "httptools", "h11"], default="auto",
                    help="uvicorn's HTTP parser (auto: httptools when installed, as "
                         "uvicorn[standard], which LitServe depends on, installs it)")
    ap.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                    help="uvicorn's event loop (auto: uvloop when installed)")
    ap.add_argument("--log-level", default="warning", help="uvicorn/LitServe log level")
    return ap.parse_args(argv)


def uvicorn_impl(http: str, loop: str) -> dict:
    """The HTTP parser and event loop uvicorn runs with these settings ("auto" takes httptools
    and uvloop where they import, else h11 and asyncio): the results record them, since they
    set much of a small request's time."""
    import importlib.util

    def have(mod):
        return importlib.util.find_spec(mod) is not None
    return {"http": http if http != "auto" else ("httptools" if have("httptools") else "h11"),
            "loop": loop if loop != "auto" else ("uvloop" if have("uvloop") else "asyncio")}


def queues(choice: str) -> str:
    """--queues resolved: "direct" or "litserve"."""
    if choice == "auto":
        if ls.__version__ == DIRECT_QUEUES_LITSERVE:
            return "direct"
        print(f"server.py: litserve {ls.__version__} (the direct queues are written for "
              f"{DIRECT_QUEUES_LITSERVE}): LitServe's own queues", file=sys.stderr, flush=True)
        return "litserve"
    if choice == "direct" and ls.__version__ != DIRECT_QUEUES_LITSERVE:
        raise SystemExit(f"--queues direct overrides internals of litserve "
                         f"{DIRECT_QUEUES_LITSERVE}, this is {ls.__version__}")
    return choice


def main(argv=None) -> None:
    args = parse_args(argv)
    kind = C.KINDS[args.mode]
    device = torch.device(args.device)
    path, ckpt = C.get_checkpoint(args.size, kind, device, args.checkpoint)
    cfg = ckpt["config"]
    max_cell_tokens = min(args.max_cell_tokens or cfg["max_positions"], cfg["max_positions"])
    api = CellEmbeddingAPI(args.mode, path, max_cell_tokens, args.token_budget,
                           args.max_wait_ms / 1e3, args.max_cells, args.threads,
                           args.cuda_graphs, args.spin_ms / 1e3)
    info = {"mode": args.mode, "attention": kind, "device": device_name(args.device),
            "device_type": device.type, "checkpoint": os.path.relpath(path, HERE),
            "model": cfg, "trained": ckpt["trained"], "token_budget": args.token_budget,
            "max_wait_ms": args.max_wait_ms, "max_cells": args.max_cells,
            "max_cell_tokens": max_cell_tokens, "max_body_bytes": int(args.max_body_mb * 2**20),
            "cuda_graph_tokens": args.cuda_graphs, "queues": queues(args.queues),
            "spin_ms": args.spin_ms,
            "inference_threads": args.threads or (
                max(1, len(os.sched_getaffinity(0)) - 1) if device.type == "cpu" else None),
            "n_bins": cfg["n_bins"], "genes": ckpt["genes"],
            "uvicorn": uvicorn_impl(args.http, args.loop),
            "litserve": ls.__version__, "torch": torch.__version__}
    if info["uvicorn"]["loop"] == "asyncio":
        # (measured on loopback, 2 CPU cores: p50 48 ms a request on a keep-alive connection
        # under asyncio's loop, h11 or httptools alike, against 1.8-4.9 ms under uvloop:
        # results/cpu/uvicorn/)
        print("server.py: uvicorn runs asyncio's event loop (uvloop not installed, or --loop "
              "asyncio): requests on a keep-alive connection then take ~40 ms more here; "
              "uvloop comes with LitServe's uvicorn[standard]", file=sys.stderr, flush=True)
    server = (DirectQueueServer if info["queues"] == "direct" else ls.LitServer)(
        api, accelerator=device.type,
        devices=[device.index or 0] if device.type == "cuda" else "auto",
        timeout=args.timeout, model_metadata=info,
        middlewares=[(RequestGate, {"max_bytes": info["max_body_bytes"]})])
    server.app.add_exception_handler(RequestValidationError, validation_error)
    signal.signal(signal.SIGTERM, interrupt)
    print(f"serving {args.mode} ({kind} {ckpt['size']} model, {info['device']}) on "
          f"http://{args.host}:{args.port}/predict; token budget {args.token_budget}, max wait "
          f"{args.max_wait_ms} ms, cells up to {max_cell_tokens} tokens", flush=True)
    server.run(host=args.host, port=args.port, num_api_servers=args.api_servers,
               log_level=args.log_level, generate_client_file=False, http=args.http,
               loop=args.loop)


if __name__ == "__main__":
    main()
