"""The one service object that the stream consumer, the HTTP API and the CLI share.

It owns the store's writer connection, the projection engine (a connection per projection) and
the readers. Appends happen on one thread at a time (``_append_lock``), each projection's batches
on one thread at a time (the engine's locks); appends and projection batches run side by side.
Reads run on any thread, each with its own connection.

``TIMELINE_DB`` picks the backend (``events.backend``): a SQLite path opens the SQLite store, the
projection engine with a file per projection and the SQLite read side; a ``postgresql://`` URL
opens the PostgreSQL store, the PostgreSQL engine (``projections.pg``: tables beside the store's,
each projection advanced by the node that holds its lease) and the PostgreSQL read side. Nothing
else in the service differs: the consumer, the API and the CLI call the same methods.
"""

from __future__ import annotations

import contextvars
import json
import logging
import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from events.backend import is_postgres, open_store
from events.models import NEWS_KINDS, EventRejected, ParsedEvent, parse_event_bytes, writable
from events.store import Candidate, EventStore
from projections import default_projections, open_engine, open_queries
from projections.backend import Engine
from projections.engine import RebuildStep

from .entries import RepeatedFields, repeated_event
from .settings import Settings

log = logging.getLogger("timeline.service")

#: on PostgreSQL, how long a node that waits for another node's work (a rebuild that the lease
#: holder runs) sleeps between looks
LEASE_POLL_SECONDS = 0.5
PROJECTION_RETRY_SECONDS = 0.1  # a failing projection's first retry; each failure doubles it
PROJECTION_RETRY_MAX_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class ProjectionFailure:
    """A projection whose batches fail: the last error, since when (Unix time), how many
    attempts, the delay before the next one and when it is due (``time.monotonic``)."""

    error: str
    since: float
    attempts: int
    delay: float
    retry_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "since": datetime.fromtimestamp(self.since, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "attempts": self.attempts,
            "retry_in_seconds": round(max(self.retry_at - time.monotonic(), 0.0), 3),
        }


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A stream entry that cannot be stored, with the fields of docs/contract.md §3."""

    source_id: bytes
    event: bytes
    reason: str
    error: str

    def fields(self) -> dict[str, bytes]:
        """The fields as Redis takes them: never fails, whatever the message quotes."""
        return {
            "event": self.event,
            "reason": self.reason.encode(),
            "error": self.error.encode("utf-8", "backslashreplace"),  # a lone surrogate as its escape
            "source_id": self.source_id,
        }


@dataclass(slots=True)
class IngestOutcome:
    stored: int = 0
    duplicates: int = 0
    dead: list[DeadLetter] = field(default_factory=list)
    last_position: int = 0


@dataclass(slots=True)
class Prepared:
    """A batch of stream entries, validated: the events to append and the dead letters so far."""

    ids: list[bytes]  # every entry of the batch, to acknowledge
    candidates: list[Candidate] = field(default_factory=list)
    sources: list[bytes] = field(default_factory=list)  # the entry id of each candidate
    dead: list[DeadLetter] = field(default_factory=list)
    context: contextvars.Context | None = None  # with tracing: the context its append runs in


def _fields_as_json(fields: dict[bytes, bytes]) -> bytes:
    """An entry's fields as a JSON object, each pair in the entry's order: a repeated name is
    written as often as the entry holds it (``RepeatedFields``), so that no byte is lost (JSON
    allows it; a dict cannot hold it, hence one member at a time)."""

    def text(value: bytes) -> str:
        return json.dumps(value.decode("utf-8", errors="backslashreplace"), ensure_ascii=False)

    pairs = fields.pairs if isinstance(fields, RepeatedFields) else fields.items()
    return ("{" + ", ".join(f"{text(k)}: {text(v)}" for k, v in pairs) + "}").encode()


def classify(entry_id: bytes, fields: dict[bytes, bytes] | None) -> Candidate | DeadLetter:
    """One stream entry: an event to append, or a dead letter (``no_event`` … ``schema``).

    An entry with more than one ``event`` field (read as ``RepeatedFields``) holds no one event:
    ``schema``, its fields kept as ``no_event`` keeps them (docs/contract.md §3)."""
    if isinstance(fields, RepeatedFields):
        events = fields.count(b"event")
        if events > 1:
            return DeadLetter(entry_id, _fields_as_json(fields), "schema", repeated_event(events))
    if not fields or b"event" not in fields:
        return DeadLetter(
            entry_id, _fields_as_json(fields or {}), "no_event", "event: the entry has no 'event' field"
        )
    raw = fields[b"event"]
    try:
        return Candidate(parse_event_bytes(raw), raw)
    except EventRejected as exc:
        return DeadLetter(entry_id, raw, exc.reason, exc.error)
    except MemoryError:  # the machine's state, not the entry's: retried, not dead-lettered
        raise
    except Exception as exc:  # noqa: BLE001 - judging one entry must not fail its batch
        # (parse_event_bytes rejects rather than raise; this covers what builds the candidate)
        log.warning("entry %r could not be judged: %s: %s", entry_id, type(exc).__name__, exc, exc_info=True)
        return DeadLetter(entry_id, raw, "schema", writable(f"event: cannot be validated ({type(exc).__name__}: {exc})"))


Flat = tuple[Any, ...]


def classify_flat(entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> list[Flat]:
    """``classify`` each entry, as flat tuples of strings and bytes: what a validating process
    sends back (cheap to pickle; a news event goes without its body, which the store needs only
    as ``Candidate.facts`` and ``body_json``, and a candidate without its entry id and raw bytes,
    which the sender holds already). ``restore_flat`` makes the same candidates."""
    out: list[Flat] = []
    for entry_id, fields in entries:
        item = classify(entry_id, fields)
        if isinstance(item, DeadLetter):
            out.append((False, item.source_id, item.event, item.reason, item.error))
            continue
        event = item.event
        body = None if event.kind in NEWS_KINDS else event.body
        out.append(
            (True, event.id, event.kind, event.content_hash, event.plain, body, item.body_json, item.digests,
             item.facts)
        )
    return out


def restore_flat(ids: list[bytes], flat: list[Flat], raws: list[bytes | None]) -> Prepared:
    """The candidates and dead letters of ``classify_flat``'s answer for entries of these ids
    whose ``event`` fields were ``raws`` (one item an entry, in order)."""
    prepared = Prepared(ids=ids)
    for entry_id, raw, item in zip(ids, raws, flat, strict=True):
        if not item[0]:
            prepared.dead.append(DeadLetter(*item[1:]))
            continue
        _, event_id, kind, content_hash, plain, body, body_json, row_digests, facts = item
        event = ParsedEvent(event_id, kind, content_hash, body, plain)
        prepared.candidates.append(Candidate.restore(event, raw, body_json, row_digests, facts))  # type: ignore[arg-type]
        prepared.sources.append(entry_id)
    return prepared


VALIDATE_CHUNK = 250  # entries a validating process takes at a time


def _ready() -> bool:
    return True


def _follow_parent(parent: int) -> None:
    """In a validating process: exit once the service is gone (killed, say), rather than live on."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()


class Validators:
    """Processes that validate stream batches, so that the service's own interpreter (one
    core, under its lock) is left to appending, projecting and Redis.

    A batch's answer is the same wherever it is computed; if the processes cannot give it (one
    was killed, say), the batch is validated in the service's thread instead and the processes
    are started again for the next one.
    """

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the processes now (they take a moment to import the models), not at the first batch."""
        if self.processes > 0:
            self._executor().submit(_ready)

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_follow_parent,
                    initargs=(os.getpid(),),
                )
            return self._pool

    def prepare(self, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> Prepared:
        if self.processes <= 0:
            return prepare_here(entries)
        pool = self._executor()
        try:
            # In chunks: the process's memory holds one chunk's models at a time, not a batch's.
            chunks = [entries[i : i + VALIDATE_CHUNK] for i in range(0, len(entries), VALIDATE_CHUNK)]
            flat = [item for part in pool.map(classify_flat, chunks) for item in part]
        except BrokenProcessPool as exc:  # one was killed, say: the same answer, computed here
            log.warning("a validating process failed (%s: %s); validating this batch in process", type(exc).__name__, exc)
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            return prepare_here(entries)
        except Exception as exc:  # noqa: BLE001 - the answer could not travel back (classify_flat
            # itself judges every entry): computed here; the processes are fine and stay
            log.warning("a batch validated elsewhere did not come back (%s: %s); validating it in process",
                        type(exc).__name__, exc)
            return prepare_here(entries)
        return restore_flat(
            [entry_id for entry_id, _ in entries], flat, [fields.get(b"event") if fields else None for _, fields in entries]
        )

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def prepare_here(entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> Prepared:
    """Validate a batch of stream entries in this thread."""
    prepared = Prepared(ids=[entry_id for entry_id, _ in entries])
    for entry_id, fields in entries:
        item = classify(entry_id, fields)
        if isinstance(item, DeadLetter):
            prepared.dead.append(item)
        else:
            prepared.candidates.append(item)
            prepared.sources.append(entry_id)
    return prepared


class ReadOnlyNode(RuntimeError):
    """A write asked of a read-only node (``TIMELINE_READ_ONLY``), or a store it cannot serve yet."""


READ_ONLY_REFUSAL = (
    "this is a read-only node (timeline serve --read-only, TIMELINE_READ_ONLY): it does not {what};"
    " ask the node that writes (timeline serve without --read-only)"
)


class TimelineService:
    def __init__(self, settings: Settings, *, lock_wait: float | None = None) -> None:
        """``lock_wait``: seconds the projections' write transactions wait for another process's
        lock (on SQLite; None: 30 s), as ``open_for_reading`` asks."""
        self.settings = settings
        #: a read-only node's service: the store and the projections' files opened so that they
        #: cannot be written, no projection engine (nothing set up, migrated, projected or rebuilt)
        self.read_only = settings.read_only
        self._append_lock = threading.Lock()
        self.validators = Validators(0 if self.read_only else settings.validators)
        self.engine: Engine | None = None
        self.outdated: list[str] = []
        if self.read_only:
            self.store = _served_store(settings)
            self.projection_names = [p.name for p in default_projections()]
        else:
            self.store = open_store(settings.db)
            try:
                # Live catch-up batches of up to 20,000 events: under load, the projector takes
                # what was stored meanwhile in one transaction (a page of a projection table is
                # written once per batch, so the cost per event falls as batches grow;
                # docs/performance.md has the figures).
                self.engine = open_engine(self.store, batch_size=20_000, lock_wait=lock_wait)
                #: projections whose code version differs from their tables': rebuilt in the background
                self.outdated = self._setup(self.engine)
            except BaseException:
                if self.engine is not None:
                    self.engine.close()
                self.store.close()
                raise
            self.projection_names = list(self.engine.projections)
        self.queries = open_queries(str(settings.db), names=self.projection_names, read_only=self.read_only)
        #: the projections whose last batch failed (``project_step``): each retried on its own backoff
        self.failing: dict[str, ProjectionFailure] = {}

    def writer(self) -> Engine:
        """The projection engine, on a node that writes; ``ReadOnlyNode`` on a read-only one."""
        if self.engine is None:
            raise ReadOnlyNode(READ_ONLY_REFUSAL.format(what="project or rebuild"))
        return self.engine

    def _setup(self, engine: Engine) -> list[str]:
        """The engine's ``setup``, except on a PostgreSQL store where every projection is set up
        already (another node did): its checkpoints are read without the projections' write
        locks, so a node starting beside busy ones does not wait for their batches to commit."""
        if self.store.backend == "postgres":
            checkpoints = engine.checkpoints()
            if set(checkpoints) == set(engine.projections):
                return [n for n, cp in checkpoints.items() if not engine.is_current(cp)]
        return engine.setup()

    @property
    def on_postgres(self) -> bool:
        return self.store.backend == "postgres"

    @property
    def append_lock(self) -> threading.Lock:
        """Held while this process writes the store through its writer connection."""
        return self._append_lock

    def close(self) -> None:
        self.validators.close()
        self.queries.close()
        if self.engine is not None:
            self.engine.close()
        self.store.close()

    def prepare(self, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> Prepared:
        """Validate a batch of stream entries (no lock: runs beside another batch's append), in
        the validating processes (``TIMELINE_VALIDATORS``) or, with none, in this thread."""
        return self.validators.prepare(entries)

    def append(self, prepared: Prepared) -> IngestOutcome:
        """Append a prepared batch in one transaction; what was stored, duplicated or refused."""
        outcome = IngestOutcome(dead=list(prepared.dead))
        if self.read_only:
            raise ReadOnlyNode(READ_ONLY_REFUSAL.format(what="store events"))
        with self._append_lock:
            # A lost PostgreSQL connection fails this batch (it stays pending, the consumer
            # retries) and the store opens a new one at the next try (PgEventStore.revive).
            results = self.store.append(prepared.candidates)
        for source_id, candidate, result in zip(prepared.sources, prepared.candidates, results):
            if result.status == "stored":
                outcome.stored += 1
                outcome.last_position = max(outcome.last_position, result.position or 0)
            elif result.status == "duplicate":
                outcome.duplicates += 1
            else:
                outcome.dead.append(DeadLetter(source_id, candidate.raw, result.reason or "schema", result.error or ""))
        return outcome

    def project(self) -> int:
        """Bring every projection up to the store's head; return the lowest checkpoint.

        Each projection catches up in a thread of its own, a committed batch at a time, beside
        the appends."""
        return self.writer().catch_up()

    def project_step(self) -> tuple[int, int]:
        """One batch (up to the engine's batch size) for each projection behind, side by side;
        return the lowest checkpoint of the projections this process advances, and the store's
        head. Under load the caller lets the store get a full batch ahead between steps: a batch
        costs less per event the larger it is.

        On PostgreSQL a projection is advanced by the node that holds its lease: the others'
        checkpoints are not this node's to wait for (it would step again at once, for nothing),
        so a node holding no lease answers the head; it tries the leases again at its next step
        (at least every second), which is how it takes over from a node that died."""
        engine = self.writer()
        now = time.monotonic()
        due = [name for name in engine.projections if name not in self.failing or self.failing[name].retry_at <= now]
        errors: dict[str, Exception] = {}
        engine.step(only=due, errors=errors)
        self._judge(due, errors)
        head = engine.head()
        checkpoints = engine.checkpoints()
        # A failing projection waits for its retry: the others' checkpoints decide whether to step again.
        mine = [cp for name, cp in checkpoints.items()
                if self._advances(name) and engine.is_current(cp) and name not in self.failing]
        return (min(cp.position for cp in mine) if mine else head), head

    def _judge(self, tried: list[str], errors: dict[str, Exception]) -> None:
        """Record each tried projection's outcome: a failure is logged (once per new error; its
        traceback the first time) and retried after a delay that doubles up to
        ``PROJECTION_RETRY_MAX_SECONDS``; a success ends it."""
        for name in tried:
            exc = errors.get(name)
            before = self.failing.get(name)
            if exc is None:
                if before is not None:
                    log.warning("projection %s catches up again after %d failed attempts", name, before.attempts)
                    del self.failing[name]
                continue
            error = f"{type(exc).__name__}: {exc}"
            delay = PROJECTION_RETRY_SECONDS if before is None else min(before.delay * 2, PROJECTION_RETRY_MAX_SECONDS)
            failure = ProjectionFailure(
                error, before.since if before else time.time(), (before.attempts if before else 0) + 1, delay,
                time.monotonic() + delay,
            )
            self.failing[name] = failure
            if before is None:
                log.error("projection %s cannot catch up (the others go on; retrying in %.1f s): %s",
                          name, delay, error, exc_info=exc)
            elif before.error != error:
                log.error("projection %s still cannot catch up (retrying in %.1f s): %s", name, delay, error)

    def failures(self) -> dict[str, dict[str, Any]]:
        """The failing projections, as ``/projections`` and ``/health`` show them."""
        return {name: f.as_dict() for name, f in sorted(self.failing.items())}

    def _advances(self, name: str) -> bool:
        """Whether this process advances the projection (always on SQLite; on PostgreSQL, while
        it holds the projection's lease)."""
        return name in self.writer().leases()

    def start_rebuild(self, names: list[str] | None = None, *, force: bool = False) -> list[str]:
        return self.writer().start_rebuild(names, force=force)

    def rebuild_step(self, names: list[str]) -> RebuildStep:
        """One committed batch of each rebuild, between live batches.

        On PostgreSQL only the lease holder fills a projection's rebuild: a rebuild asked for on
        another node was recorded in the checkpoint (``start_rebuild``), the holder takes it over
        (``Runtime``'s watch of ``abandoned_rebuilds``), and this node waits for the swap (the
        checkpoint names no rebuild any more), looking every ``LEASE_POLL_SECONDS``."""
        if not self.on_postgres:
            return self.writer().rebuild_step(names)
        engine = self.writer()
        held = [n for n in names if engine.lease(n)]
        waiting = [n for n in names if n not in held]
        position, head, done = engine.rebuild_step(held) if held else (None, engine.head(), True)
        if waiting:
            checkpoints = engine.checkpoints()
            rebuilds = {n: cp.rebuild for n, cp in checkpoints.items() if cp.rebuild is not None}
            pending = [n for n in waiting if n in rebuilds]
            if pending:
                reached = min(rebuilds[n].position or 0 for n in pending)
                position = reached if position is None else min(position, reached)
                done = False
                if not held:
                    time.sleep(LEASE_POLL_SECONDS)
        return RebuildStep(head if position is None else position, head, done)


#: seconds a command that reads waits for a projection's write lock that another process (a
#: running ``timeline serve``'s projector, whose batch may hold it for tens of seconds) holds
READ_LOCK_WAIT_SECONDS = 1.0


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _projected(settings: Settings) -> TimelineService | None:
    """A read-only service over the store, when the store is at this code's schema and every
    projection is set up (holds a checkpoint); else None."""
    try:
        service = TimelineService(settings.model_copy(update={"read_only": True}))
    except ReadOnlyNode:  # no store yet, or one not migrated to this version
        return None
    if {s.name for s in service.queries.projections()} != set(service.projection_names):
        service.close()
        return None
    return service


def _lag(service: TimelineService) -> int:
    """Events the slowest projection is behind the store's head."""
    return max((s.lag for s in service.queries.projections()), default=0)


def open_for_reading(settings: Settings, say: Callable[[str], None]) -> TimelineService:
    """The service of a command that reads the projections (``timeline show``, ``export``).

    It reads as a read-only node does (docs/read-only.md): the store and projections opened so
    that they cannot be written, so it never waits for the writer's locks. When the projections
    are behind the store's head it first catches them up, as a writer whose write transactions
    wait ``READ_LOCK_WAIT_SECONDS`` for another process's lock: with no writer running it reads
    at the head; when a running writer holds a projection's lock (its projector in a batch) it
    reads what is projected and ``say``s how far behind that is. Only a store whose projections
    are not set up waits for such a lock (saying so once): there is nothing to read before."""
    if settings.read_only:  # a read-only node reads what the writer projected
        return TimelineService(settings)
    waiting = False
    while True:
        reader = _projected(settings)
        try:
            if reader is None or _lag(reader) > 0:
                writer = TimelineService(settings, lock_wait=READ_LOCK_WAIT_SECONDS)  # sets the projections up
                try:
                    writer.project()  # on PostgreSQL, not the projections whose lease a running node holds
                finally:
                    writer.close()
        except Exception as exc:
            if not _locked(exc):
                if reader is not None:
                    reader.close()
                raise
            if reader is None:
                if not waiting:
                    say("waiting for the projections to be set up: another process (a running `timeline serve`"
                        " say) holds their write lock")
                    waiting = True
                continue
        if reader is None:
            reader = TimelineService(settings.model_copy(update={"read_only": True}))
        lag = _lag(reader)
        if lag > 0:
            say(f"reading what is projected: {lag} events behind the store's head (another process, a running"
                " `timeline serve` say, is projecting them)")
        return reader


def _served_store(settings: Settings) -> EventStore:
    """The store a read-only node serves: it must exist and be at this code's schema (a
    read-only node migrates nothing: the writer of its version does, when it opens the store)."""
    from events.migrations import pending

    if is_postgres(settings.db):
        return _served_pg_store(settings)
    if not settings.db.is_file():
        raise ReadOnlyNode(
            f"no store at {settings.db}: a read-only node serves the store another process writes;"
            " start `timeline serve` (the writer) on it first"
        )
    store = EventStore(settings.db, read_only=True)
    try:
        missing = pending(store.conn)
    except BaseException:
        store.close()
        raise
    if missing:
        store.close()
        raise ReadOnlyNode(
            f"the store at {settings.db} lacks migrations {', '.join(missing)}: a read-only node migrates"
            " nothing; start `timeline serve` (the writer) of this version on it first"
        )
    return store


def _served_pg_store(settings: Settings) -> Any:
    """``_served_store`` on PostgreSQL: a reader's connection whose transactions cannot write,
    on a schema the writer of this version has brought forward."""
    from events.pg.connect import redact
    from events.pg.migrations import pending
    from events.pg.store import PgEventStore

    store = PgEventStore(str(settings.db), reader=True)
    try:
        raw = store.conn.raw
        raw.execute("SET default_transaction_read_only = on")
        missing = pending(raw)
    except BaseException:
        store.close()
        raise
    if missing:
        store.close()
        raise ReadOnlyNode(
            f"the store at {redact(str(settings.db))} lacks migrations"
            f" {', '.join(missing)}: a read-only node migrates nothing; start `timeline serve` (the writer) of this"
            " version on it first"
        )
    return store
