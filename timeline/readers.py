"""The API's reads: off the event loop, on a bounded pool of threads, each within a time limit.

The event loop serves every request and runs the stream consumer; a read that ran on it would
hold all of them for as long as it takes. Reads run instead on ``TIMELINE_READERS`` threads of
their own (each with its own SQLite connections, see ``Queries``) and stop at
``TIMELINE_READ_TIMEOUT_SECONDS`` after the request asked: a read still waiting for a thread
then does not start, and a statement still running is interrupted inside SQLite. Either way the
request is answered ``503`` (``ReadTimeout``).

A read whose connection was lost under it (PostgreSQL restarted, ended the session, or the
network dropped: ``ConnectionLost``) is read once more, on a new connection, within the same
time limit: each reader thread would otherwise answer one ``503`` after every such cut. The
store still down, that second read answers ``503`` (``StoreUnreachable``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from projections.queries import ConnectionLost, Queries

T = TypeVar("T")

REINTERRUPT_SECONDS = 0.05  # an interrupt between two statements is lost: sent again this often


class _Read:
    """One read's stop switch, shared by its thread and the loop's timer."""

    __slots__ = ("lock", "stop", "timer")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stop: Callable[[], None] | None = None  # set while the read runs
        self.timer: asyncio.TimerHandle | None = None


class Readers:
    def __init__(self, queries: Queries, threads: int, timeout: float) -> None:
        self.queries = queries
        self.timeout = timeout
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on a reader thread; ``ReadTimeout`` once past the time limit."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout  # the loop's clock is time.monotonic()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="reader")
        read = _Read()
        read.timer = loop.call_at(deadline, self._interrupt, loop, read)
        try:
            return await loop.run_in_executor(self._pool, self._read, read, deadline, fn, args, kwargs)
        finally:
            read.timer.cancel()

    def _read(
        self, read: _Read, deadline: float, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        try:
            return self._read_once(read, deadline, fn, args, kwargs)
        except ConnectionLost:
            if time.monotonic() >= deadline:
                raise
            return self._read_once(read, deadline, fn, args, kwargs)  # the thread's connection is new

    def _read_once(
        self, read: _Read, deadline: float, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        with self.queries.time_limit(deadline) as stop:
            with read.lock:
                read.stop = stop
            try:
                return fn(*args, **kwargs)
            finally:
                with read.lock:  # from here on, an interrupt would hit this thread's next read
                    read.stop = None

    def _interrupt(self, loop: asyncio.AbstractEventLoop, read: _Read) -> None:
        with read.lock:
            if read.stop is None:
                return
            read.stop()
        read.timer = loop.call_later(REINTERRUPT_SECONDS, self._interrupt, loop, read)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
