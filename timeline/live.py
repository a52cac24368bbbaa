"""Live streams over HTTP: server-sent events of a timeline's changes (docs/live.md).

Each stream reads its changes from the timelines projection (``projections.live``), a page at a
time, on the reader threads, so what it sends never waits in memory and a client resuming after
any position reads on from there. Streams do not poll: one watcher in the process wakes when the
consumer has handled or projected a batch (``StreamConsumer.wait_for_change``; every
``POLL_SECONDS`` too, for a projection that another process advances; on a read-only node,
which projects nothing, every ``READ_ONLY_POLL_SECONDS``), reads the timelines
checkpoint (and the last erasure told to streams: ``projections.live``) once, and wakes every
stream waiting for a later one (``Notifier``).

``sse-starlette`` frames the messages and keeps the connection: heartbeat comments, a time
limit on each send (a client whose socket does not drain is disconnected), the client's
disconnect noticed at once, and streams ended when the server shuts down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from events.ids import compact_json
from projections.live import ChangePage, NotLive, StreamCursor, StreamFilter, changes, checkpoint, opening
from projections.queries import ReadTimeout

from .runtime import Runtime

log = logging.getLogger("timeline")

PAGE = 50  # messages read at a time: a stream holds at most one page (an entry is at most 256 KiB)
POLL_SECONDS = 1.0  # the watcher reads the checkpoint at least this often while streams are open
READ_ONLY_POLL_SECONDS = 0.25  # ... and this often on a read-only node, where only the writer's commits move it
RETRY_AFTER_SECONDS = 5  # told to a client refused for the cap, or while the change log is rebuilt


class Notifier:
    """The timelines checkpoint and last erasure told to streams as last read, and a wake-up for
    every stream waiting beyond them."""

    def __init__(self) -> None:
        self.mark = (0, 0)
        self._moved = asyncio.Event()

    def advance(self, mark: tuple[int, int]) -> None:
        if mark[0] > self.mark[0] or mark[1] > self.mark[1]:
            self.mark = (max(mark[0], self.mark[0]), max(mark[1], self.mark[1]))
            self._moved.set()
            self._moved = asyncio.Event()

    async def wait_beyond(self, mark: tuple[int, int]) -> None:
        while self.mark[0] <= mark[0] and self.mark[1] <= mark[1]:
            await self._moved.wait()


class LiveStreams:
    """The open streams of a process: how many (capped), the watcher and the notifier."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.notifier = Notifier()
        self.open = 0
        self._watcher: asyncio.Task[None] | None = None

    def reserve(self) -> bool:
        """Take a place for a stream (False: ``TIMELINE_STREAM_MAX_CLIENTS`` are taken); given
        back by the stream's response however it ends, or by ``release`` if none is made."""
        if self.open >= self.settings.stream_max_clients:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    async def opening(self, entity_id: str | None) -> tuple[int, int]:
        """Check a stream can open (the entity exists, the change log is there): the timelines
        checkpoint and the store's head."""
        return await self.runtime.read(opening, self.runtime.service.queries, entity_id)

    def response(self, entity_id: str | None, start: int, filters: StreamFilter, announce: bool) -> "LiveResponse":
        """The stream of a place taken with ``reserve``."""
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="live streams' watcher")
        return LiveResponse(
            self._messages(entity_id, start, filters, announce),
            release=self.release,
            ping=self.settings.stream_heartbeat_seconds,
            ping_message_factory=lambda: ServerSentEvent(comment="keepalive"),
            send_timeout=self.settings.stream_send_timeout_seconds,
        )

    async def _watch(self) -> None:
        """While streams are open: wake them when the timelines checkpoint moves or an erasure is
        told to streams."""
        queries = self.runtime.service.queries
        while self.open > 0:
            consumer = self.runtime.consumer
            if consumer is not None:
                await consumer.wait_for_change(POLL_SECONDS)
            else:
                await asyncio.sleep(READ_ONLY_POLL_SECONDS if self.runtime.read_only else POLL_SECONDS)
            try:
                self.notifier.advance(await self.runtime.read(checkpoint, queries))
            except Exception as exc:  # noqa: BLE001 - the next change (or poll) reads it again
                log.warning("live streams: cannot read the timelines checkpoint: %s", exc)
                await asyncio.sleep(POLL_SECONDS)

    async def _messages(
        self, entity_id: str | None, start: int, filters: StreamFilter, announce: bool
    ) -> AsyncIterator[ServerSentEvent]:
        queries = self.runtime.service.queries
        cursor = StreamCursor(start)
        if announce:  # an id alone dispatches nothing: the client's Last-Event-ID starts here
            # Starting now: the page the client reads once it has the id shows no entry erased
            # before (a client resuming is told of those made once the tables had reached its id).
            try:
                _, erased = await self.runtime.read(checkpoint, queries)
            except ReadTimeout as exc:
                yield ServerSentEvent(data=compact_json({"error": str(exc)}), event="error")
                return
            cursor = StreamCursor(start, seen=erased)
            yield ServerSentEvent(id=str(start))
        while True:
            try:
                page: ChangePage = await self.runtime.read(changes, queries, entity_id, cursor, filters, PAGE)
            except (ReadTimeout, NotLive) as exc:
                # Ended with the reason; the client reconnects with its Last-Event-ID.
                yield ServerSentEvent(data=compact_json({"error": str(exc)}), event="error")
                return
            for message in page.messages:
                yield ServerSentEvent(data=message.data, event=message.kind, id=str(message.position))
            cursor = page.cursor
            if not page.more:
                await self.notifier.wait_beyond((page.upto, page.erased))


class LiveResponse(EventSourceResponse):
    """An event stream that gives its place back (``release``) however it ends, and says why a
    client was disconnected for not reading (its socket did not drain within the send timeout:
    nothing more can be written to it, so the reason goes to the log)."""

    def __init__(self, content: AsyncIterator[ServerSentEvent], *, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            client = scope.get("client") or ("?", 0)
            log.warning(
                "live stream %s to %s:%s disconnected: the client did not read for %g s"
                " (TIMELINE_STREAM_SEND_TIMEOUT_SECONDS)",
                scope.get("path"), client[0], client[1], self.send_timeout,
            )
        finally:
            self._release()

