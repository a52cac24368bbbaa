"""Wiring: settings → Redis (given or embedded) → service → consumer. Nothing runs at import.

``Runtime`` is what ``timeline serve`` and ``timeline demo`` run, and what the API's handlers
call to publish, to wait for events to settle (``?wait=true``) and to report health.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from redis.asyncio import Redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError, TimeoutError

from events.ids import content_hash
from projections.engine import RebuildError

from .consumer import StreamConsumer
from .embedded_redis import EmbeddedRedis
from .lag import Observation, Progress, Backlog, projection_lags
from .metrics import Metrics
from .publisher import AsyncPublisher
from .redis_ready import wait_until_ready
from .readers import Readers
from .service import READ_ONLY_REFUSAL, ReadOnlyNode, TimelineService
from .settings import Settings

if TYPE_CHECKING:
    from .tracing import Tracing

log = logging.getLogger("timeline")

T = TypeVar("T")
HEALTH_PING_SECONDS = 2.0
BACKLOG_SECONDS = 1.0  # /health's backlog is at most this old
BACKLOG_FRESH_SECONDS = 0.1  # ... and this old while the consumer settles entries
READ_ONLY_WAIT_POLL = 0.1  # a read-only node's ?wait=true reads the writer's progress this often
LEASE_WATCH_SECONDS = 1.0  # PostgreSQL: how often a node looks for rebuilds that are its to run
LAG_READ_SECONDS = 2.0  # the projections' lag is left out of /health and /metrics if slower to read
Outcome = tuple[str, Any, Any] | None  # ("stored", position, None) | ("dead", reason, error) | None


class Runtime:
    def __init__(self, settings: Settings, *, consume: bool = True, tracing: Tracing | None = None) -> None:
        self.settings = settings
        #: a read-only node (TIMELINE_READ_ONLY, ``timeline serve --read-only``): no consumer,
        #: trimmer, projector, migrations or rebuilds; the store and projections opened read-only
        self.read_only = settings.read_only
        self.consume = consume and not self.read_only
        self.service = TimelineService(settings)
        self.readers = Readers(self.service.queries, settings.readers, settings.read_timeout_seconds)
        self.embedded: EmbeddedRedis | None = None
        self.redis_url: str | None = settings.redis_url
        self._redis_ready = False
        self.redis: Redis | None = None
        self.health_redis: Redis | None = None
        self.consumer: StreamConsumer | None = None
        self.rebuilds: set[asyncio.Task[None]] = set()
        self._backlog_known: tuple[float, Backlog, int] | None = None  # (when, value, settled)
        self._backlog_task: asyncio.Future[Backlog] | None = None
        self.progress = Progress(settings.stuck_seconds)
        self.metrics = Metrics(self)  # this runtime's registry: several in one process do not collide
        self.service.store.observers.append(self.metrics.appended)
        #: OpenTelemetry (timeline.tracing), only when TIMELINE_OTLP_ENDPOINT is set: not imported otherwise
        self.tracing = tracing if tracing is not None else _tracing(settings)
        if self.tracing is not None:
            self.service.store.observers.append(self.tracing.appended)
        self.rebuilding: set[str] = set()  # projections a rebuild of this process is running for
        self._lease_watch: asyncio.Task[None] | None = None  # PostgreSQL: rebuilds to take over

    def connect_redis(self) -> str:
        """Start the embedded Redis when there is no ``REDIS_URL``, then wait (at most
        ``TIMELINE_REDIS_READY_SECONDS``) until Redis accepts connections and has loaded its
        data; returns its URL. Idempotent. Raises :class:`RedisNotReady` (one-line message)."""
        if self._redis_ready:
            assert self.redis_url is not None
            return self.redis_url
        if self.redis_url is None and self.read_only:
            # The writer's embedded Redis, if one runs for the data folder: a read-only node
            # starts none (it would write Redis's files, and stop it under the writer).
            self.redis_url = EmbeddedRedis.for_settings(self.settings).running_url()
            if self.redis_url is None:
                raise ReadOnlyNode(
                    "no REDIS_URL and no embedded Redis running for the data folder: a read-only node starts"
                    " none; set REDIS_URL, or start the writer (timeline serve) first"
                )
        if self.redis_url is None:
            self.embedded = EmbeddedRedis.for_settings(self.settings)
            self.redis_url = self.embedded.start()
            log.info("embedded Redis at %s (data in %s)", self.redis_url, self.settings.redis_dir)
        try:
            wait_until_ready(self.redis_url, self.settings.redis_ready_seconds)
        except BaseException:
            if self.embedded is not None:  # started here: not left behind
                self.embedded.stop()
                self.embedded, self.redis_url = None, None
            raise
        self._redis_ready = True
        return self.redis_url

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self.connect_redis)
        assert self.redis_url is not None
        # API publishing retries a lost connection briefly; /health must notice at once instead.
        self.redis = Redis.from_url(
            self.redis_url,
            retry=AsyncRetry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries=5),
            retry_on_error=[ConnectionError, TimeoutError, OSError],
            socket_connect_timeout=2.0,
        )
        self.health_redis = Redis.from_url(
            self.redis_url, retry=AsyncRetry(NoBackoff(), 0), socket_connect_timeout=HEALTH_PING_SECONDS
        )
        if self.consume:
            self.consumer = StreamConsumer(self.settings, self.service, self.redis_url, self.tracing)
            self.consumer.on_dead_letters = self.metrics.dead_lettered
            await self.consumer.start()
            await anyio.to_thread.run_sync(self.service.project)
            await self.observe()  # the first look: "not moved" is counted from here at the latest
            # A new projection version, or a rebuild that died with its process: rebuild in the
            # background while the live tables keep answering.
            engine = self.service.writer()
            outdated = self.service.outdated
            if self.service.on_postgres:  # the lease holder rebuilds (the others wait for its swap)
                outdated = [n for n in outdated if engine.lease(n)]  # type: ignore[attr-defined]
            resume = sorted(set(outdated) | set(engine.abandoned_rebuilds()))
            if resume:
                await self.rebuild(resume, force=True)
            if self.service.on_postgres:
                self._lease_watch = asyncio.create_task(self._watch_leases(), name="lease watch")

    async def _watch_leases(self) -> None:
        """PostgreSQL, many nodes: every ``LEASE_WATCH_SECONDS``, take over the rebuilds of the
        projections whose lease this node holds and that no rebuild of this node runs: one asked
        for on another node (recorded in the checkpoint, for the holder to run), one whose node
        died (this node took the lease over at its projector's last step), or one this code's
        version needs (``_rebuilds_to_take_over``). Reads keep answering from the live tables
        until the swap, on every node."""
        while True:
            await asyncio.sleep(LEASE_WATCH_SECONDS)
            try:
                names = await anyio.to_thread.run_sync(self._rebuilds_to_take_over)
                if names:
                    log.info("taking over the rebuild of %s (this node holds the lease)", ", ".join(names))
                    await self.rebuild(names, force=True)
            except Exception as exc:  # noqa: BLE001 - looked at again in a moment
                log.warning("rebuilds to take over not read: %s", _describe(exc))

    def _rebuilds_to_take_over(self) -> list[str]:
        """Of the projections this node holds the lease of: the rebuilds recorded and not run
        here, and those whose tables are of another version than this code's with no rebuild to
        this version under way (a node of a newer version that took the lease over from an older
        one, during a rolling upgrade)."""
        engine = self.service.writer()
        names = set(engine.abandoned_rebuilds())
        for name, cp in engine.checkpoints().items():
            version = engine.projections[name].version
            behind = cp.version != version and (cp.rebuild is None or cp.rebuild.version != version)
            if behind and name not in self.rebuilding and engine.lease(name):
                names.add(name)
        return sorted(names)

    async def rebuild(self, names: list[str] | None = None, *, force: bool = False) -> list[str]:
        """Start a rebuild (state ``rebuilding`` on return) and run it in the background.

        ``RebuildError`` if one of them is being rebuilt already: a second request does not
        start it again (``force`` does, for a rebuild that died with its process)."""
        if self.read_only:
            raise ReadOnlyNode(READ_ONLY_REFUSAL.format(what="rebuild projections"))
        wanted = set(names or self.service.projection_names)
        busy = sorted(wanted & self.rebuilding)
        if busy and not force:
            raise RebuildError(
                f"{', '.join(busy)} {'is' if len(busy) == 1 else 'are'} already being rebuilt;"
                " GET /projections shows when it is live again"
            )
        self.rebuilding |= wanted  # before the first await: a request arriving meanwhile sees it
        try:
            started = await anyio.to_thread.run_sync(lambda: self.service.start_rebuild(names, force=force))
        except BaseException:
            self.rebuilding -= wanted
            raise
        task = asyncio.create_task(self._run_rebuild(started), name=f"rebuild {','.join(started)}")
        self.rebuilds.add(task)
        task.add_done_callback(self.rebuilds.discard)
        task.add_done_callback(lambda _: self.rebuilding.difference_update(wanted))
        return started

    async def _run_rebuild(self, names: list[str]) -> None:
        started = time.monotonic()
        try:
            while True:
                position, head, done = await anyio.to_thread.run_sync(self.service.rebuild_step, names)
                if done:
                    log.info("rebuilt %s: %d events in %.1fs", ", ".join(names), head, time.monotonic() - started)
                    return
        except RebuildError as exc:
            log.warning("rebuild of %s stopped: %s", ", ".join(names), exc)
        except Exception:
            log.exception("rebuild of %s failed; the live tables keep answering", ", ".join(names))

    def stop_reading_soon(self) -> None:
        """From a signal handler: stop taking new batches now; the app's shutdown does the rest."""
        consumer = self.consumer
        if consumer is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon_threadsafe(lambda: loop.create_task(consumer.stop_reading()))

    async def stop(self) -> None:
        watch, self._lease_watch = self._lease_watch, None
        if watch is not None:
            watch.cancel()
        for task in list(self.rebuilds):
            task.cancel()
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        for client in (self.redis, self.health_redis):
            if client is not None:
                await client.aclose()
        self.redis = self.health_redis = None
        if self.embedded is not None:
            await anyio.to_thread.run_sync(self.embedded.stop)
            self.embedded = None
            self.redis_url = None
        self._redis_ready = False
        await anyio.to_thread.run_sync(self.readers.close)
        self.service.close()
        if self.tracing is not None:
            await anyio.to_thread.run_sync(self.tracing.shutdown)

    async def __aenter__(self) -> "Runtime":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A read for the API, on the reader threads, within TIMELINE_READ_TIMEOUT_SECONDS."""
        return await self.readers.run(fn, *args, **kwargs)

    # --- publishing and waiting ----------------------------------------------------------

    async def publish(self, entries: list[bytes]) -> list[str]:
        """XADD each (validated) event as its own entry, pipelined; return the entry ids."""
        assert self.redis is not None, "runtime not started"
        fields = self.tracing.entry_fields() if self.tracing is not None else None
        return await AsyncPublisher(self.redis_url or "", self.settings.stream, client=self.redis).send(entries, fields)

    async def wait_for(self, items: list[tuple[str, str, bytes]]) -> list[Outcome]:
        """Wait until each (event id, entry id, bytes) is stored and projected, or dead-lettered."""
        outcomes: list[Outcome] = [None] * len(items)
        hashes = [content_hash(json.loads(data)) for _, _, data in items]
        deadline = time.monotonic() + self.settings.wait_timeout_seconds
        while True:
            open_ = [i for i, o in enumerate(outcomes) if o is None]
            if not open_:
                return outcomes
            found = await anyio.to_thread.run_sync(self._settled, [(items[i][0], hashes[i]) for i in open_])
            for i, outcome in zip(open_, found):
                outcomes[i] = outcome
            still = [i for i in open_ if outcomes[i] is None]
            if still:
                dead = await self._dead_letters({items[i][1] for i in still})
                for i in still:
                    if items[i][1] in dead:
                        outcomes[i] = dead[items[i][1]]
            if all(o is not None for o in outcomes) or time.monotonic() > deadline:
                return outcomes
            if self.consumer is not None:
                await self.consumer.wait_for_change(0.05)
            else:  # a read-only node: the writer's projections are read again, a few times a second
                await asyncio.sleep(READ_ONLY_WAIT_POLL if self.read_only else 0.05)

    def _settled(self, wanted: list[tuple[str, str]]) -> list[Outcome]:
        queries = self.service.queries
        with queries.snapshot() as conn:
            found = queries.store.hashes([event_id for event_id, _ in wanted])
            projected = queries.projected(conn)
        out: list[Outcome] = []
        for event_id, digest in wanted:
            hit = found.get(event_id)
            if hit is not None and hit.content_hash == digest and hit.position <= projected:
                out.append(("stored", hit.position, None))
            else:
                out.append(None)
        return out

    async def _dead_letters(self, entry_ids: set[str]) -> dict[str, Outcome]:
        assert self.redis is not None
        start = min(entry_ids, key=lambda e: tuple(int(p) for p in e.split("-"))).split("-")[0]
        found: dict[str, Outcome] = {}
        for _, fields in await self.redis.xrange(self.settings.dead_stream, min=f"{start}-0", count=50_000):
            source = fields.get(b"source_id", b"").decode()
            if source in entry_ids:
                found[source] = ("dead", fields.get(b"reason", b"").decode(), fields.get(b"error", b"").decode())
        return found

    # --- health --------------------------------------------------------------------------

    async def _backlog(self, consumer: StreamConsumer) -> Backlog:
        """The consumer's backlog, computed once at a time and kept ``BACKLOG_SECONDS`` while
        this consumer settles nothing (``BACKLOG_FRESH_SECONDS`` while it does, so a drained
        stream does not answer a backlog it had a moment ago): any number of /health calls cost
        Redis at most one computation that often."""
        loop = asyncio.get_running_loop()
        known = self._backlog_known
        if known is not None:
            age = loop.time() - known[0]
            if age < BACKLOG_FRESH_SECONDS or (age < BACKLOG_SECONDS and known[2] == consumer.entries):
                return known[1]
        task = self._backlog_task
        if task is None or task.done():
            task = self._backlog_task = asyncio.ensure_future(consumer.backlog())
        settled = consumer.entries
        value = await asyncio.shield(task)  # a caller that times out leaves it to the others
        self._backlog_known = (loop.time(), value, settled)
        return value

    async def observe(self, backlog: Backlog | None = None, *, read_backlog: bool = True) -> Observation:
        """The stream's backlog (read unless the caller has it or says not to; None when Redis
        cannot be read) and each projection's lag, each judged caught up, lagging or stuck
        (timeline.lag)."""
        consumer = self.consumer
        if backlog is None and consumer is not None and read_backlog:
            try:
                backlog = await asyncio.wait_for(self._backlog(consumer), 5.0)
            except Exception as exc:  # noqa: BLE001 - reported as unknown; /health names the failure
                log.debug("backlog not read: %s", _describe(exc))
        try:  # on the reader threads (their connections are open), briefly: /health must answer
            lags = await asyncio.wait_for(self.read(projection_lags, self.service.queries), LAG_READ_SECONDS)
        except Exception as exc:  # noqa: BLE001 - absent from this look; the next one reads again
            log.warning("projection lag not read: %s", _describe(exc))
            lags = []
        stream = None
        if consumer is not None and backlog is not None:
            stream = self.progress.judge("stream", consumer.entries, backlog.total > 0, backlog.seconds)
        judged = [
            (lag, self.progress.judge(f"projection:{lag.name}", lag.position, lag.lag_events > 0, lag.lag_seconds))
            for lag in lags
        ]
        return Observation(backlog, stream, judged)

    async def health(self) -> dict[str, Any]:
        checks: dict[str, str] = {}
        backlog: Backlog | None = None
        try:
            # Its own client, without the publishing client's retries: what failed is named, not
            # hidden behind a timeout.
            assert self.health_redis is not None
            await asyncio.wait_for(self.health_redis.ping(), HEALTH_PING_SECONDS)
            checks["redis"] = "ok"
        except asyncio.TimeoutError:
            checks["redis"] = f"not answering: no answer to PING within {HEALTH_PING_SECONDS:g} s"
        except Exception as exc:  # noqa: BLE001 - any failure means Redis is not answering
            checks["redis"] = f"not answering: {_describe(exc)}"
        replication: dict[str, Any] | None = None
        try:
            await anyio.to_thread.run_sync(self.service.queries.store.head)
            checks["store"] = "ok"
            if self.read_only:  # on PostgreSQL, a node may read a replica: how far it trails
                replication = await anyio.to_thread.run_sync(self.service.queries.store.replication)
        except Exception as exc:  # noqa: BLE001
            checks["store"] = f"cannot be read: {exc}"
        consumer = self.consumer
        if self.read_only:
            pass  # nothing to consume: what it serves is as far as the writer's projections have got
        elif consumer is None:
            checks["consumer"] = "not running"
        elif consumer.store_failing:
            checks["store"] = consumer.store_failing
            checks["consumer"] = "ok" if consumer.running else "not running"
        else:
            checks["consumer"] = "ok" if consumer.running else "not running"
        if consumer is not None:
            failing = self.service.failures()
            checks["projections"] = consumer.projection_failing or "; ".join(
                f"{name} cannot catch up since {f['since']} ({f['attempts']} attempts, the others go on): {f['error']}"
                for name, f in failing.items()
            ) or "ok"
        if checks["redis"] == "ok" and consumer is not None:
            for attempt in range(2):  # the first command after a reconnect may meet a stale connection
                try:
                    backlog = await asyncio.wait_for(self._backlog(consumer), 5.0)
                    break
                except Exception as exc:  # noqa: BLE001
                    if attempt:
                        checks["redis"] = f"cannot read the stream's backlog: {_describe(exc)}"
        failing = [name for name, state in checks.items() if state != "ok"]
        report: dict[str, Any] = {
            "status": "ok" if not failing else "unavailable",
            "node": "read-only" if self.read_only else "writer",
            "backlog": backlog.total if backlog is not None else None,
            "backlog_exact": backlog.exact if backlog is not None else True,
            "checks": checks,
        }
        if checks["store"] == "ok":  # lag in seconds, and lagging told from stuck (timeline.lag)
            observation = await self.observe(backlog, read_backlog=False)
            report["lag"], report["stuck"] = observation.report(), observation.stuck()
            if self.read_only:  # how far what this node answers is behind the store (the writer's projections)
                lags = [lag for lag, _ in observation.projections]
                report["behind"] = {
                    "events": max((lag.lag_events for lag in lags), default=None),
                    "seconds": round(max((lag.lag_seconds for lag in lags), default=0.0), 3) if lags else None,
                }
                if replication is not None:  # PostgreSQL: behind counts against this copy of the store
                    report["replication"] = replication
        if consumer is not None:
            report["consumer"] = {
                "name": self.settings.consumer, "batches": consumer.batches, "entries": consumer.entries,
                # of them, taken over from consumers that left them pending (timeline.consumer)
                "claimed": {"batches": consumer.claims, "entries": consumer.claimed},
            }
        if self.service.on_postgres and consumer is not None:
            # Many nodes: the projections this node advances (it holds their leases); another
            # node advances the rest (docs/postgresql-nodes.md)
            report["leases"] = self.service.writer().leases()  # type: ignore[attr-defined]
        if failing:
            report["error"] = "; ".join(f"{name}: {checks[name]}" for name in failing)
            report["failing"] = failing
        return report


def _tracing(settings: Settings) -> Tracing | None:
    if settings.otlp_endpoint is None:
        return None
    try:
        from .tracing import Tracing
    except ImportError as exc:
        raise RuntimeError(
            f"TIMELINE_OTLP_ENDPOINT is set but OpenTelemetry is not installed ({exc}):"
            " pip install 'news-timeline[otel]'"
        ) from None
    return Tracing.to_endpoint(settings.otlp_endpoint)


def _describe(exc: BaseException) -> str:
    """An exception as a sentence that says what happened, even when its message is empty."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and not str(exc):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
