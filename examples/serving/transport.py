"""Answers from the inference workers to the HTTP processes without a thread in between: each
HTTP process has a pipe of its own that the workers write length-prefixed pickles into and that
its event loop reads when the pipe turns readable. server.py's --queues direct installs it."""

from __future__ import annotations

import asyncio
import os
import pickle
import struct
from typing import Optional

from litserve.transport.base import MessageTransport


class Frames:
    """Messages in a byte stream: each an 8-byte big-endian length, then that many bytes. feed()
    takes whatever a read returned and gives back the messages it completed; a message split
    across reads waits in the buffer, so a reader never blocks on the rest of one."""

    HEAD = struct.Struct("!Q")

    def __init__(self):
        self._buf = bytearray()

    @classmethod
    def frame(cls, payload: bytes) -> bytes:
        return cls.HEAD.pack(len(payload)) + payload

    def feed(self, chunk: bytes) -> list:
        buf = self._buf
        buf += chunk
        out, pos, head = [], 0, self.HEAD.size
        while len(buf) - pos >= head:
            (n,) = self.HEAD.unpack_from(buf, pos)
            if len(buf) - pos - head < n:
                break
            out.append(bytes(buf[pos + head:pos + head + n]))
            pos += head + n
        del buf[:pos]
        return out


class PipeTransport(MessageTransport):
    """LitServe's answer transport (MessageTransport: send from a worker, areceive in an HTTP
    process) over one pipe per HTTP process. A worker writes each answer itself (no feeder
    thread to wake), under a lock since several workers may answer one HTTP process; the HTTP
    process's event loop reads the pipe without blocking when it turns readable (`add_reader`)
    and queues the completed answers for the coroutine that waits for them. LitServe's queue
    transport reads each answer in a thread-pool thread (`asyncio.to_thread`) and hands it to the
    loop, and the queue's feeder thread writes it: two thread hops on every answer.

    A worker blocks on a full pipe until the HTTP process reads it; that process never blocks on
    a worker (its requests go through multiprocessing queues, whose feeder thread writes, and it
    reads answers only as far as they have arrived), so the two cannot wait on each other."""

    def __init__(self, readers: list, writers: list, locks: list):
        self._readers, self._writers, self._locks = readers, writers, locks
        self._inboxes = {}  # consumer_id -> asyncio.Queue, in the reading HTTP process
        self._closed = False

    @classmethod
    def create(cls, ctx, consumers: int) -> "PipeTransport":
        """ctx: the multiprocessing context LitServe starts its workers with."""
        pipes = [ctx.Pipe(duplex=False) for _ in range(consumers)]
        return cls([r for r, _ in pipes], [w for _, w in pipes], [ctx.Lock() for _ in pipes])

    def __reduce__(self):  # to a spawned worker: the pipes and locks, not this process's inboxes
        return PipeTransport, (self._readers, self._writers, self._locks)

    def send(self, item, consumer_id: int) -> None:
        view = memoryview(Frames.frame(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)))
        fd = self._writers[consumer_id].fileno()
        with self._locks[consumer_id]:
            while view:
                view = view[os.write(fd, view):]

    def _inbox(self, consumer_id: int) -> asyncio.Queue:
        inbox = self._inboxes.get(consumer_id)
        if inbox is None:
            inbox = self._inboxes[consumer_id] = asyncio.Queue()
            fd, loop, frames = self._readers[consumer_id].fileno(), asyncio.get_running_loop(), \
                Frames()
            os.set_blocking(fd, False)

            def readable():
                while True:
                    try:
                        chunk = os.read(fd, 1 << 20)
                    except BlockingIOError:
                        return
                    except OSError:
                        chunk = b""
                    if not chunk:  # every writer gone
                        loop.remove_reader(fd)
                        return
                    for payload in frames.feed(chunk):
                        inbox.put_nowait(pickle.loads(payload))

            loop.add_reader(fd, readable)
        return inbox

    async def areceive(self, consumer_id: int, timeout: Optional[float] = None,
                       block: bool = True):
        if self._closed:
            raise asyncio.CancelledError("transport closed")
        inbox = self._inbox(consumer_id)
        if timeout is None:
            return await inbox.get()
        try:
            return await asyncio.wait_for(inbox.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def close(self, send_sentinel: bool = True) -> None:
        # No sentinel: no reader sits in a blocking read (LitServe's lifespan cancels the
        # reading task), and a write into a full pipe nobody reads any more would hang the stop.
        self._closed = True
