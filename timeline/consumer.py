"""The stream consumer of group ``store`` on the events stream.

A FastStream subscriber reads new entries in batches; a claimer task takes over, in batches
too, entries that a dead consumer left pending past ``TIMELINE_CLAIM_IDLE_SECONDS``
(``XAUTOCLAIM ... COUNT <batch size>``: FastStream's ``min_idle_time`` subscriber claims one entry
a call, and its ``claim_min_idle_time`` needs Redis 8.4). Both validate each batch and queue it
(a short queue, so the next batch is read and validated meanwhile). A writer task
appends each queued batch in one SQLite transaction (``TimelineService.append``), then writes
its dead letters and acknowledges the whole batch in one ``MULTI``: an entry is acknowledged
only once its event is durably stored or its dead letter written. A store that cannot be
written is retried with backoff, never dead-lettered; the batch stays pending while it is. A
projector task catches the projections up with what was stored (``?wait=true`` waits for the
projections' checkpoints).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import psycopg
from faststream.middlewares import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisBatchStreamMessage
from faststream.redis.message import RedisBatchStreamMessage as BatchMessage
from redis.asyncio import Redis

from .backlog import StreamBacklog
from .entries import keep_repeated_fields
from .lag import Backlog
from .service import DeadLetter, IngestOutcome, Prepared, TimelineService
from .settings import Settings
from .settling import SETTLE_SCRIPT, settle
from .trimming import TRIM_SCRIPT, trim_acknowledged

if TYPE_CHECKING:
    from .tracing import Tracing

log = logging.getLogger("timeline.consumer")

#: what a store or projection write raises when the database cannot take it now (a locked or full
#: disk, a PostgreSQL server that restarts or drops the connection): retried, never dead-lettered
STORE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, psycopg.Error)

GATHER_SECONDS = 1.0  # at most this long, the projector lets a backlog's batches pile up
TRIM_SECONDS = 1.0  # how often the stream is trimmed of what every group has acknowledged
IDLE_TRIM_SECONDS = 10.0  # the same while this consumer settles nothing
# A stop stores and acknowledges the batches in hand within this long, whatever Redis does (a
# Redis killed or hung meanwhile: its commands fail or time out); what is left stays pending,
# for the next start (or another consumer) to take over. FastStream waits at most
# HANDLERS_STOP_SECONDS of it for the batches being validated.
STOP_SECONDS = 15.0
HANDLERS_STOP_SECONDS = 10.0


async def _raw_parser(message: Mapping[str, Any]) -> BatchMessage:
    # Entries are handled as they are (the `event` field's bytes): no FastStream envelope.
    return BatchMessage(raw_message=message, body=b"", consumer=None, group=None)  # type: ignore[arg-type]


async def _traced_parser(message: Mapping[str, Any]) -> BatchMessage:
    # The same, with the ``traceparent`` the entries carry as FastStream's headers (timeline.tracing).
    from .tracing import batch_headers

    return BatchMessage(  # type: ignore[arg-type]
        raw_message=message, body=b"", consumer=None, group=None, **batch_headers(message["data"])
    )


async def _raw_decoder(message: Any) -> None:
    return None


class StreamConsumer:
    def __init__(
        self, settings: Settings, service: TimelineService, redis_url: str, tracing: Tracing | None = None
    ) -> None:
        self.settings = settings
        self.service = service
        self.redis = keep_repeated_fields(Redis.from_url(redis_url))
        self.traced = tracing is not None
        middlewares = (tracing.broker_middleware(),) if tracing is not None else ()
        self.broker = RedisBroker(
            redis_url, logger=log, graceful_timeout=HANDLERS_STOP_SECONDS, middlewares=middlewares
        )
        self.tracing = tracing
        self.store_failing: str | None = None
        self.projection_failing: str | None = None  # the projector's last error, until it succeeds
        self.batches = 0
        self.entries = 0  # entries this process has settled (stored, duplicate or dead-lettered)
        self.claims = 0  # batches this process has taken over from other consumers (or its own past run)
        self.claimed = 0  # the entries in them
        self._in_hand: set[bytes] = set()  # ids of the entries being validated, queued or written
        self._claimer: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._stored = asyncio.Event()
        self._stored_position = 0  # the last store position this consumer appended
        self._projected = 0  # the lowest projection checkpoint after the projector's last run
        self._draining = False  # the last batch was full: the stream has more waiting
        self._projector: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Prepared] = asyncio.Queue(maxsize=1)
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop_task: asyncio.Future[None] | None = None
        self._trim_script = self.redis.register_script(TRIM_SCRIPT)
        self.counts = StreamBacklog(self.redis, settings.stream, settings.group)
        self._settle_script = self.redis.register_script(SETTLE_SCRIPT)
        self._trimmer: asyncio.Task[None] | None = None
        self.trimmed = 0  # entries this process has trimmed from the stream
        #: told of the dead letters this process wrote (timeline.metrics counts them)
        self.on_dead_letters: Callable[[Sequence[DeadLetter]], None] = lambda letters: None
        common: dict[str, Any] = dict(
            parser=_traced_parser if self.traced else _raw_parser, decoder=_raw_decoder,
            ack_policy=AckPolicy.MANUAL, no_reply=True,
        )
        self.reader = self.broker.subscriber(
            stream=StreamSub(
                settings.stream,
                group=settings.group,
                consumer=settings.consumer,
                batch=True,
                max_records=settings.batch_size,
                polling_interval=100,
            ),
            **common,
        )
        self.reader(self._handle_new)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self.service.validators.start()
        await self.counts.ensure_group()
        self._projector = asyncio.create_task(self._project_forever(), name="projector")
        self._writer = asyncio.create_task(self._write_forever(), name="writer")
        self._trimmer = asyncio.create_task(self._trim_forever(), name="trimmer")
        # FastStream's client, made here (``start`` then uses it): reading an entry that names a
        # field twice, both subscribers see each value (timeline.entries), not the last only.
        keep_repeated_fields(await self.broker.connect())
        await self.broker.start()
        self._claimer = asyncio.create_task(self._claim_forever(), name="claimer")

    async def stop_reading(self) -> None:
        """Stop reading, store and acknowledge the batches in hand, stop writing (idempotent)."""
        self._stopping = True
        if self._stop_task is None:
            self._stop_task = asyncio.ensure_future(self._stop_reading())
        await asyncio.shield(self._stop_task)  # a second caller waits for the same stop

    async def _stop_reading(self) -> None:
        deadline = asyncio.get_running_loop().time() + STOP_SECONDS
        # both at once; the batch FastStream's reader is validating is queued before they return
        await asyncio.gather(self._stop_claimer(), self.broker.stop())
        if self._writer is None:
            return
        try:
            async with asyncio.timeout_at(deadline):
                await self._queue.join()
                await self._stop_writer()
                await self._settle_own_pending()
        except TimeoutError:
            log.warning(
                "stopping: the batches in hand were not all stored and acknowledged within %g s"
                " (is Redis answering?); they stay pending and are taken over at the next start",
                STOP_SECONDS,
            )
        await self._stop_writer()

    async def _stop_claimer(self) -> None:
        """Cancel the claimer wherever it is: a claim cut short leaves its entries pending for
        this consumer, settled below (``_settle_own_pending``). Waited for at most
        HANDLERS_STOP_SECONDS, beside FastStream's stop: should the cancellation not end it (a
        stop once waited past 40 s with Redis hung, FastStream never stopped, the claimer
        cancelled first and awaited without a bound; the cause was not pinned down), its loop
        ends at its next turn, on ``_stopping``, within a Redis socket timeout."""
        claimer = self._claimer
        if claimer is None or claimer.done():
            return
        claimer.cancel()
        await asyncio.wait({claimer}, timeout=HANDLERS_STOP_SECONDS)

    async def _stop_writer(self) -> None:
        """Cancel the writer (a batch being appended is committed or rolled back first: the
        SQLite transaction runs in a thread, which a cancellation waits for)."""
        await _cancel(self._writer)

    async def _settle_own_pending(self) -> None:
        """Store what this consumer was given but never handled.

        FastStream cancels a read in flight when it stops, and the claimer is cancelled wherever
        it is: entries Redis had already delivered or claimed then stay pending for this consumer,
        for a claimer to take over after the idle time. Reading the group from ``0`` returns them
        at once; settle them before exiting.
        """
        stream, group, consumer = self.settings.stream, self.settings.group, self.settings.consumer
        while True:
            try:
                reply = await self.redis.xreadgroup(group, consumer, {stream: "0"}, count=self.settings.batch_size)
                entries = list(reply[0][1]) if reply else []
                if not entries:
                    return
                prepared = await anyio.to_thread.run_sync(self.service.prepare, entries)
                await self._write(prepared)
            except Exception:  # noqa: BLE001 - left pending: the claimer takes them over
                log.exception("entries left pending at stop")
                return

    async def stop(self) -> None:
        await self.stop_reading()
        trimmer, self._trimmer = self._trimmer, None
        await _cancel(trimmer)
        projector, self._projector = self._projector, None
        if projector is not None:
            projector.cancel()  # waits for a projection batch in progress to commit
            try:
                await projector
            except asyncio.CancelledError:
                pass
            try:  # what the last batches stored, so that a clean stop leaves nothing behind
                await anyio.to_thread.run_sync(self.service.project)
            except STORE_ERRORS as exc:
                log.warning("projection failed at stop, will catch up at start: %s", exc)
        await self.redis.aclose()

    @property
    def running(self) -> bool:
        tasks = [self._projector, self._writer, self._claimer]
        alive = all(task is not None and not task.done() for task in tasks)
        return bool(self.reader.running) and alive and not self._stopping

    async def wait_for_change(self, timeout: float) -> None:
        """Wake up when a batch has been handled (or after ``timeout``)."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    # --- the handler ---------------------------------------------------------------------

    async def _handle_new(self, message: RedisBatchStreamMessage) -> None:
        """A batch of entries given to the group for the first time: counted for /health's
        backlog at once (before anything can fail), then handled like any other."""
        try:
            await self.counts.delivered(message.raw_message["message_ids"])
        except Exception as exc:  # noqa: BLE001 - the backlog reads high until the group catches up
            log.warning("a batch was not counted as delivered: %s", exc)
        await self._handle(message)

    async def _handle(self, message: RedisBatchStreamMessage) -> None:
        raw = message.raw_message
        await self._queue_batch(list(zip(raw["message_ids"], raw["data"])))

    async def _queue_batch(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Validate a batch and queue it for the writer: the next batch is read while this one
        waits for the store (the queue is short, so memory stays bounded). Its entries are in
        hand until the writer is done with them: the claimer leaves them alone meanwhile."""
        ids = [entry_id for entry_id, _ in entries]
        self._in_hand.update(ids)
        try:
            prepared = await anyio.to_thread.run_sync(self.service.prepare, entries)
            if self.traced:  # the batch's span stays current for its append (timeline.tracing)
                prepared.context = contextvars.copy_context()
            await self._queue.put(prepared)
        except BaseException:
            self._in_hand.difference_update(ids)
            raise

    async def _claim_forever(self) -> None:
        """Take over the entries other consumers left pending past the idle time, a batch at a
        time: ``XAUTOCLAIM`` with ``COUNT`` the batch size, its cursor walking the group's pending
        list; each batch claimed is validated, queued, appended and settled like a batch read.

        Entries this process has in hand (read, or claimed, and not yet settled: a slow store)
        are left to the handling under way rather than appended twice; once settled they are no
        longer pending, and if that handling failed they are claimed again at the next pass.
        The whole pending list walked without finding an entry to take, it waits a quarter of
        the idle time (at least 0.1 s) before the next pass.
        """
        stream, group, consumer = self.settings.stream, self.settings.group, self.settings.consumer
        idle_ms = int(self.settings.claim_idle_seconds * 1000)
        pause = max(0.1, self.settings.claim_idle_seconds / 4)
        cursor: bytes | str = b"0-0"
        failing: str | None = None
        gone_told = False
        while not self._stopping:
            try:
                cursor, claimed, *_ = await self.redis.xautoclaim(
                    stream, group, consumer, idle_ms, start_id=cursor, count=self.settings.batch_size
                )
                # Redis 6.2 answers an entry deleted from the stream (XDEL) as nil, without its id,
                # and keeps it pending; Redis 7 drops it from the pending list and names it apart.
                if any(i is None for i, _ in claimed) and not gone_told:
                    gone_told = True
                    log.warning(
                        "entries pending in group %s were deleted from %s: Redis < 7 keeps them pending"
                        " (XPENDING lists their ids; XACK them, nothing is left of them to store)", group, stream,
                    )
                entries = [(i, f) for i, f in claimed if i is not None and i not in self._in_hand]
                failing = None
                if entries:
                    if self.tracing is None:
                        await self._queue_batch(entries)
                    else:
                        with self.tracing.claim_span(stream, [f for _, f in entries]):
                            await self._queue_batch(entries)
                    self.claims += 1
                    self.claimed += len(entries)
            except Exception as exc:  # noqa: BLE001 - Redis away or a batch not queued: they stay pending
                if str(exc) != failing:
                    log.warning("cannot take over pending entries (will retry): %s", exc)
                failing, cursor, entries = str(exc), b"0-0", []
            if not entries and cursor in (b"0-0", "0-0") and not self._stopping:
                await asyncio.sleep(pause)

    async def _write_forever(self) -> None:
        """Append the queued batches in stream order; acknowledge each once stored."""
        while True:
            prepared = await self._queue.get()
            try:
                if prepared.context is None:
                    await self._write(prepared)
                else:
                    await asyncio.create_task(self._write(prepared), context=prepared.context)
            except Exception:  # noqa: BLE001 - the entries stay pending; the claimer brings them back
                log.exception("a batch of %d entries was not settled; it stays pending", len(prepared.ids))
            finally:
                self._in_hand.difference_update(prepared.ids)
                self._queue.task_done()

    async def _write(self, prepared: Prepared) -> None:
        outcome = await self._append(prepared)
        # Dead letters and the acknowledgement in one script: a dead letter only for an entry
        # this call acknowledged, so a batch handled twice (claimed while still in hand) is
        # dead-lettered once.
        written = await settle(
            self._settle_script, self.settings.stream, self.settings.dead_stream, self.settings.group,
            prepared.ids, outcome.dead,
        )
        if written:
            self.on_dead_letters(written)
        self.batches += 1
        self.entries += len(prepared.ids)
        self._draining = len(prepared.ids) >= self.settings.batch_size  # a full batch: more is waiting
        if outcome.stored:
            self._stored_position = max(self._stored_position, outcome.last_position)
            self._stored.set()  # the projector catches up while the next batches are appended
        async with self._changed:
            self._changed.notify_all()

    async def _trim_forever(self) -> None:
        """Trim the stream of the entries every group has acknowledged (beyond
        ``TIMELINE_STREAM_KEEP``): one script call, beside ingest, never in its way. Every
        ``TRIM_SECONDS`` while this consumer settles entries or the last trim removed some (Redis
        removes at most 100 of its internal nodes a call: a backlog takes several); otherwise
        every ``IDLE_TRIM_SECONDS``, for what other groups acknowledged meanwhile."""
        failing: str | None = None
        settled = 0  # self.entries at the last trim
        removed = 1  # trim at start: what other groups acknowledged meanwhile
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(TRIM_SECONDS)
            if self.entries == settled and not removed and loop.time() - last < IDLE_TRIM_SECONDS:
                continue  # nothing settled here, nothing left over: only other groups may have moved
            settled, last = self.entries, loop.time()
            try:
                removed, _ = await trim_acknowledged(
                    self._trim_script, self.settings.stream, self.settings.stream_keep, self.counts.counts
                )
            except Exception as exc:  # noqa: BLE001 - Redis away: reading fails too; trim later
                if str(exc) != failing:
                    log.warning("cannot trim the stream %s (will retry): %s", self.settings.stream, exc)
                failing, removed = str(exc), 1
                continue
            failing = None
            self.trimmed += removed

    async def _project_forever(self) -> None:
        """Catch the projections up with the store whenever a batch has been stored.

        Decoupled from reading: a projection batch covers whatever was stored since the last
        one (up to the engine's batch size), so under load batches grow and their cost per
        event falls, and appending the next stream batches overlaps with projecting this one.
        One step at a time (each projection one batch, side by side), then gather again.
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
                self._projected, head = await anyio.to_thread.run_sync(self.service.project_step)
                self.projection_failing = None
                delay = 0.1
                if self._projected < head:
                    self._stored.set()  # still behind: gather again (under load) or go on at once
            except Exception as exc:  # the events are safe in the store; whatever failed, catch up later
                self.projection_failing = f"projections cannot catch up: {type(exc).__name__}: {exc}"
                log.exception("projection failed, retrying in %.1fs", delay)
                self._stored.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            async with self._changed:
                self._changed.notify_all()

    async def _append(self, prepared: Prepared) -> IngestOutcome:
        delay = 0.1
        while True:
            try:
                outcome = await anyio.to_thread.run_sync(self.service.append, prepared)
                self.store_failing = None
                return outcome
            except STORE_ERRORS as exc:
                self.store_failing = f"store cannot be written: {exc}"
                log.error("%s; retrying in %.1fs (%d entries stay pending)", self.store_failing, delay, len(prepared.ids))
                if self._stopping:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # --- health --------------------------------------------------------------------------

    async def backlog(self) -> Backlog:
        """Entries in the stream not yet stored: pending in the group (delivered, not yet
        acknowledged) and not yet delivered, whether that count is exact (see
        ``timeline.backlog``: no stream entry is read, on any Redis version), and when the oldest
        of them was added."""
        pending, undelivered, exact, last = await self.counts.parts()
        return Backlog(pending, undelivered, exact, await self._oldest_unsettled(pending, undelivered, last))

    async def _oldest_unsettled(self, pending: int, undelivered: int, last: str) -> int | None:
        """When (Unix ms, from its entry id) the oldest entry not yet settled was added: the
        group's oldest pending entry (XPENDING's summary), else the first one after the last
        delivered (the one entry read, for its id); None when there is none."""
        stream, group = self.settings.stream, self.settings.group
        if pending:
            oldest = (await self.redis.xpending(stream, group)).get("min")
            return _entry_ms(oldest) if oldest else None
        if undelivered:
            first = await self.redis.xrange(stream, f"({last}", "+", count=1)
            return _entry_ms(first[0][0]) if first else None
        return None


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def _entry_ms(entry_id: bytes | str) -> int:
    """The time part of a stream entry id (Unix ms)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(text.partition("-")[0])
