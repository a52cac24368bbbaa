"""The stream consumer: FastStream subscribers of group ``store`` on the events stream.

One subscriber reads new entries in batches; a second one, with ``min_idle_time``, takes over
entries that a dead consumer left pending (``XAUTOCLAIM``). Both hand each batch to
``TimelineService.ingest`` (one SQLite transaction), then write the dead letters and
acknowledge the whole batch in one ``MULTI``: an entry is acknowledged only once its event is
durably stored or its dead letter written. A projector task catches the projections up with
what was stored, beside the reading (``?wait=true`` waits for the projections' checkpoints). A store that cannot be written is retried with
backoff, never dead-lettered; the batch stays pending while it is.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Mapping
from typing import Any

import anyio
from faststream.middlewares import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisBatchStreamMessage
from faststream.redis.message import RedisBatchStreamMessage as BatchMessage
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from .service import IngestOutcome, TimelineService
from .settings import Settings

log = logging.getLogger("timeline.consumer")

GATHER_SECONDS = 1.0  # at most this long, the projector lets a backlog's batches pile up


async def ensure_group(redis: Redis, stream: str, group: str) -> None:
    """Create the group at ``0`` (and the stream), so nothing published before is skipped."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def _raw_parser(message: Mapping[str, Any]) -> BatchMessage:
    # Entries are handled as they are (the `event` field's bytes): no FastStream envelope.
    return BatchMessage(raw_message=message, body=b"", consumer=None, group=None)  # type: ignore[arg-type]


async def _raw_decoder(message: Any) -> None:
    return None


class StreamConsumer:
    def __init__(self, settings: Settings, service: TimelineService, redis_url: str) -> None:
        self.settings = settings
        self.service = service
        self.redis = Redis.from_url(redis_url)
        self.broker = RedisBroker(redis_url, logger=log, graceful_timeout=30.0)
        self.store_failing: str | None = None
        self.batches = 0
        self.entries = 0  # entries this process has settled (stored, duplicate or dead-lettered)
        self._changed = asyncio.Condition()
        self._stored = asyncio.Event()
        self._stored_position = 0  # the last store position this consumer appended
        self._projected = 0  # the lowest projection checkpoint after the projector's last run
        self._draining = False  # the last batch was full: the stream has more waiting
        self._projector: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop_task: asyncio.Future[None] | None = None
        common: dict[str, Any] = dict(
            parser=_raw_parser, decoder=_raw_decoder, ack_policy=AckPolicy.MANUAL, no_reply=True
        )
        def subscriber(**claim: int) -> Any:
            return self.broker.subscriber(
                stream=StreamSub(
                    settings.stream,
                    group=settings.group,
                    consumer=settings.consumer,
                    batch=True,
                    max_records=settings.batch_size,
                    **claim,
                ),
                **common,
            )

        idle_ms = int(settings.claim_idle_seconds * 1000)
        self.reader = subscriber(polling_interval=100)
        # Takes over entries another (dead) consumer left pending for longer than the idle time.
        self.claimer = subscriber(min_idle_time=idle_ms, polling_interval=max(100, idle_ms // 4))
        self.reader(self._handle)
        self.claimer(self._handle)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await ensure_group(self.redis, self.settings.stream, self.settings.group)
        self._projector = asyncio.create_task(self._project_forever(), name="projector")
        await self.broker.start()

    async def stop_reading(self) -> None:
        """Finish the batch in hand, acknowledge it, then stop reading (idempotent)."""
        self._stopping = True
        if self._stop_task is None:
            self._stop_task = asyncio.ensure_future(self.broker.stop())
        await asyncio.shield(self._stop_task)  # a second caller waits for the same stop

    async def stop(self) -> None:
        await self.stop_reading()
        projector, self._projector = self._projector, None
        if projector is not None:
            projector.cancel()  # waits for a projection batch in progress to commit
            try:
                await projector
            except asyncio.CancelledError:
                pass
            try:  # what the last batches stored, so that a clean stop leaves nothing behind
                await anyio.to_thread.run_sync(self.service.project)
            except sqlite3.Error as exc:
                log.warning("projection failed at stop, will catch up at start: %s", exc)
        await self.redis.aclose()

    @property
    def running(self) -> bool:
        projecting = self._projector is not None and not self._projector.done()
        return bool(self.reader.running and self.claimer.running) and projecting and not self._stopping

    async def wait_for_change(self, timeout: float) -> None:
        """Wake up when a batch has been handled (or after ``timeout``)."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    # --- the handler ---------------------------------------------------------------------

    async def _handle(self, message: RedisBatchStreamMessage) -> None:
        raw = message.raw_message
        ids: list[bytes] = list(raw["message_ids"])
        data: list[dict[bytes, bytes] | None] = list(raw["data"])
        outcome = await self._ingest(list(zip(ids, data)))
        async with self.redis.pipeline(transaction=True) as pipe:
            for dead in outcome.dead:
                pipe.xadd(self.settings.dead_stream, dead.fields())  # type: ignore[arg-type]
            pipe.xack(self.settings.stream, self.settings.group, *ids)
            await pipe.execute()
        self.batches += 1
        self.entries += len(ids)
        self._draining = len(ids) >= self.settings.batch_size  # a full batch: more is waiting
        if outcome.stored:
            self._stored_position = max(self._stored_position, outcome.last_position)
            self._stored.set()  # the projector catches up while the next batch is read and parsed
        async with self._changed:
            self._changed.notify_all()

    async def _project_forever(self) -> None:
        """Catch the projections up with the store whenever a batch has been stored.

        Decoupled from reading: a projection batch covers whatever was stored since the last
        one (up to the engine's batch size), so under load batches grow and their cost per
        event falls, and parsing the next stream batch overlaps with projecting this one.
        """
        delay = 0.1
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._stored.wait(), 1.0)  # a timeout: another writer's events too
            except asyncio.TimeoutError:
                pass
            self._stored.clear()
            # While the stream has a backlog (full batches), let stored batches pile up to one
            # projection batch (or GATHER_SECONDS): it then costs far less per event. A stream
            # that is drained is projected at once, so ``?wait=true`` answers quickly.
            deadline = loop.time() + GATHER_SECONDS
            while (
                self._draining
                and self._stored_position - self._projected < self.service.engine.batch_size
                and loop.time() < deadline
            ):
                try:
                    await asyncio.wait_for(self._stored.wait(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
                self._stored.clear()
            try:
                self._projected = await anyio.to_thread.run_sync(self.service.project)
                delay = 0.1
            except Exception:  # the events are safe in the store; whatever failed, catch up later
                log.exception("projection failed, retrying in %.1fs", delay)
                self._stored.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            async with self._changed:
                self._changed.notify_all()

    async def _ingest(self, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> IngestOutcome:
        delay = 0.1
        while True:
            try:
                outcome = await anyio.to_thread.run_sync(self.service.ingest, entries)
                self.store_failing = None
                return outcome
            except sqlite3.Error as exc:
                self.store_failing = f"store cannot be written: {exc}"
                log.error("%s; retrying in %.1fs (%d entries stay pending)", self.store_failing, delay, len(entries))
                if self._stopping:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # --- health --------------------------------------------------------------------------

    async def backlog(self) -> int:
        """Entries in the stream not yet stored: pending in the group plus not yet delivered."""
        groups = await self.redis.xinfo_groups(self.settings.stream)
        for group in groups:
            name = group.get("name")
            if (name.decode() if isinstance(name, bytes) else name) != self.settings.group:
                continue
            pending = int(group.get("pending") or 0)
            lag = group.get("lag")
            if lag is None:  # Redis < 7 has no lag: count what lies after the last delivered id
                last = group.get("last-delivered-id")
                last = last.decode() if isinstance(last, bytes) else last
                lag = len(await self.redis.xrange(self.settings.stream, f"({last}", "+", count=100_000))
            return pending + int(lag)
        return await self.redis.xlen(self.settings.stream)
