"""Batching by tokens, not requests: a LitServe loop that fills a batch with decoded cells until
their tokens reach a budget or the oldest request has waited max_wait, then runs it.

LitServe's own BatchedLoop counts requests (max_batch_size) and decodes the whole batch in one
go, so one bad request fails all of it; here each request is decoded on arrival, a bad one is
answered alone with its 4xx, and every request dequeued gets exactly one response: its result,
its own error, a 504 if it outwaited the server's timeout, or the batch's 500.
"""

from __future__ import annotations

import logging
import time
from queue import Empty

from fastapi import HTTPException
from litserve.loops.base import _SENTINEL_VALUE, LitLoop
from litserve.utils import LitAPIStatus, LoopResponseType, PickleableHTTPException

logger = logging.getLogger(__name__)


class TokenBudgetLoop(LitLoop):
    """lit_api must provide decode_request (-> an object with a .tokens count, raising
    HTTPException for a bad request), batch(list) -> x, predict(x) -> y, unbatch(y, stats) -> list
    and encode_response. max_batch_size caps the cells per batch."""

    def __init__(self, token_budget: int, max_wait_s: float, padded: bool, spin_s: float = 0.0):
        super().__init__()
        self.token_budget = token_budget
        self.max_wait_s = max_wait_s
        # For spin_s after its last batch an idle worker polls its queue instead of sleeping in
        # a blocking read: its core stays awake, and the next request is taken without the
        # thread's wake-up (a core's exit from its idle state), at the price of that core.
        self.spin_s = spin_s
        self._active_at = float("-inf")  # when the last batch ended
        # A padded batch occupies cells x longest tokens, and that is what the budget bounds:
        # one long cell among short ones makes a padded batch small, never a huge tensor.
        self.padded = padded
        self._carry = None  # a decoded request that did not fit the last batch

    def cost(self, n_cells: int, longest: int, total: int) -> int:
        return n_cells * longest if self.padded else total

    def _reply(self, transport, rq, uid, data, status=LitAPIStatus.OK):
        self.put_response(transport, rq, uid, data, status, LoopResponseType.REGULAR)

    def _error(self, transport, rq, uid, code: int, detail: str):
        self._reply(transport, rq, uid, PickleableHTTPException(code, detail), LitAPIStatus.ERROR)

    def collect(self, lit_api, request_queue, transport) -> tuple:
        """Returns (batch, stop): batch is a list of (rq, uid, arrived, cell)."""
        batch, longest, total, deadline = [], 0, 0, None
        idle_from = None  # when the worker began waiting on an empty queue for this batch
        while True:
            if self._carry is not None:
                item, self._carry = self._carry, None
            else:
                try:
                    if not batch:
                        idle_from = time.monotonic()
                        raw = self._next(request_queue)
                    else:
                        left = deadline - time.monotonic()
                        if left <= 0 and idle_from is not None and batch[0][2] >= idle_from:
                            # Past the deadline, and the oldest request came to a worker waiting
                            # on an empty queue: no backlog behind it, so run now. Looking costs
                            # a round trip to LitServe's queue process (~0.1 ms at low load).
                            return batch, False
                        # Past the deadline, still take what is already queued (up to the budget):
                        # under load the batch fills from the backlog without waiting.
                        raw = request_queue.get(timeout=left) if left > 0 else \
                            request_queue.get_nowait()
                except Empty:
                    return batch, False
                if raw == _SENTINEL_VALUE:
                    return batch, True
                item = self._decode(lit_api, transport, raw)
                if item is None:
                    continue
            n = item[3].tokens
            cost = self.cost(len(batch) + 1, max(longest, n), total + n)
            if batch and (cost > self.token_budget or len(batch) >= lit_api.max_batch_size):
                self._carry = item
                return batch, False
            batch.append(item)
            longest, total = max(longest, n), total + n
            if deadline is None:
                deadline = item[2] + self.max_wait_s
            if cost >= self.token_budget or len(batch) >= lit_api.max_batch_size:
                return batch, False

    def _next(self, request_queue):
        """The next request on an empty queue: polled while the last batch is under spin_s old,
        then a blocking read (Empty after a second, so that the caller can look again)."""
        while time.monotonic() - self._active_at < self.spin_s:
            try:
                return request_queue.get_nowait()
            except Empty:
                pass
        return request_queue.get(timeout=1.0)

    def _decode(self, lit_api, transport, raw):
        rq, uid, arrived, payload = raw
        timeout = lit_api.request_timeout
        if timeout not in (None, False, -1) and time.monotonic() - arrived > timeout:
            self._error(transport, rq, uid, 504, f"request waited over {timeout} s in the queue")
            return None
        try:
            return rq, uid, arrived, lit_api.decode_request(payload)
        except HTTPException as e:
            self._error(transport, rq, uid, e.status_code, e.detail)
        except Exception as e:
            logger.exception("decoding request %s failed", uid)
            self._error(transport, rq, uid, 500, f"could not decode the request: {e}")
        return None

    def run_batch(self, lit_api, batch: list, transport) -> None:
        start = time.monotonic()
        cells = [cell for _, _, _, cell in batch]
        try:
            y = lit_api.predict(lit_api.batch(cells))
            stats = {"batch_cells": len(cells), "batch_tokens": sum(c.tokens for c in cells),
                     "batch_cost_tokens": self.cost(len(cells), max(c.tokens for c in cells),
                                                    sum(c.tokens for c in cells)),
                     "batch_wait_ms": 1e3 * (start - min(a for _, _, a, _ in batch)),
                     "compute_ms": 1e3 * (time.monotonic() - start)}
            outputs = lit_api.unbatch(y, stats)
            if len(outputs) != len(batch):
                raise RuntimeError(f"{len(outputs)} outputs for {len(batch)} cells")
            replies = [lit_api.encode_response(o) for o in outputs]
        except Exception as e:
            logger.exception("a batch of %d cells failed", len(batch))
            for rq, uid, _, _ in batch:
                self._error(transport, rq, uid, 500, f"inference failed: {type(e).__name__}: {e}")
            return
        for (rq, uid, _, _), reply in zip(batch, replies):
            self._reply(transport, rq, uid, reply)

    def __call__(self, lit_api, device, worker_id, request_queue, transport, workers_setup_status,
                 callback_runner):
        try:
            while True:
                batch, stop = self.collect(lit_api, request_queue, transport)
                if batch:
                    self.run_batch(lit_api, batch, transport)
                    self._active_at = time.monotonic()
                if stop:
                    if self._carry is not None:
                        rq, uid, _, _ = self._carry
                        self._error(transport, rq, uid, 503, "the server is shutting down")
                    return
        except KeyboardInterrupt:  # Ctrl+C reaches the whole process group; the server stops us
            return
