"""``timeline import FILE|-``: JSON Lines of events straight into the store, with the stream's rules.

Each line is judged exactly as the consumer judges a stream entry's ``event`` field: the same
function (``timeline.service.classify_flat``: ``too_large``, ``bad_json``, ``schema``, in that
order), then the same append (``TimelineService.append`` → ``EventStore.append``: idempotency by
id, ``id_conflict``, corrections that wait for their target, alias cycles) in file order. Only
the transactions are larger (``TRANSACTION_EVENTS``) and the validation runs on every core: a
pool of processes takes chunks of lines (validation is pure), and this process appends their
results in file order while the pool validates the next chunks. Memory stays bounded: a few
chunks in flight, one transaction in hand, and a line over ``LINE_LIMIT`` is never held whole.

Lines are stripped of surrounding white space and blank lines skipped, as ``timeline publish``
does, so a file imported and the same file published store the same bytes. A rejected line goes
to the rejects file (``{"line", "reason", "error", "event"}``, ``event`` the line as it was),
never dropped.

The projections: into an empty store they are rebuilt beside the import (``Follower``: each
committed transaction's events go into the rebuild's tables on a thread of its own, and the
rebuild finishes, sorted and deferred work done once, when every line is stored); into a store
that holds events, rebuilt after the import when it left them behind by at least half the
store, otherwise caught up as live batches are.

Where the CPU goes (docs/performance.md): the pool starts only for more than a chunk of lines,
and this process validates while it starts; neither this process nor the pool runs the cyclic
garbage collector's automatic passes while storing (nothing the import makes holds a cycle, and
those passes over the objects in flight cost a fifth of validation's CPU).
"""

from __future__ import annotations

import codecs
import gc
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from events.models import MAX_EVENT_BYTES
from projections.backend import Engine
from projections.engine import RebuildError

from .service import Flat, Prepared, TimelineService, classify_flat, restore_flat

TRANSACTION_EVENTS = 20_000  # events appended in one transaction (the writer lock held ~0.5 s)
CHUNK_LINES = 1_000  # lines a validating process takes at a time
CHUNK_BYTES = 4 * 1024 * 1024  # … or fewer, so that a chunk holds at most this many bytes
LINE_LIMIT = 1024 * 1024  # longer lines are rejected (too_large) without being held whole
REBUILD_SHARE = 0.5  # projections behind by this share of the store: rebuilt, not caught up

log = logging.getLogger("timeline.importer")

Line = tuple[int, bytes]  # (line number, counted from 1; the stripped line)


# --- reading -----------------------------------------------------------------------------------


def read_lines(source: IO[bytes], overlong: Callable[[int, bytes, Iterator[bytes]], None]) -> Iterator[Line]:
    """The non-blank lines of ``source``, numbered from 1. A line over ``LINE_LIMIT`` bytes is
    handed to ``overlong(number, first part, the rest in pieces)`` instead, never held whole."""
    number = 0
    while True:
        piece = source.readline(LINE_LIMIT)
        if not piece:
            return
        number += 1
        if len(piece) == LINE_LIMIT and not piece.endswith(b"\n"):
            overlong(number, piece.lstrip(), _rest_of_line(source))
            continue
        line = piece.strip()
        if number == 1:  # a byte order mark is the file's (Notepad, PowerShell), not its first event's
            line = line.removeprefix(codecs.BOM_UTF8).strip()
        if line:
            yield number, line


def _rest_of_line(source: IO[bytes]) -> Iterator[bytes]:
    while True:
        piece = source.readline(LINE_LIMIT)
        if not piece:
            return
        if piece.endswith(b"\n"):
            yield piece.rstrip()  # (trailing white space of a too-long line: dropped, as strip would)
            return
        yield piece


def chunks(lines: Iterator[Line]) -> Iterator[list[Line]]:
    chunk: list[Line] = []
    size = 0
    for line in lines:
        chunk.append(line)
        size += len(line[1])
        if len(chunk) >= CHUNK_LINES or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def validate_chunk(chunk: list[Line]) -> list[Flat]:
    """The consumer's validation of each line, as if it were a stream entry's ``event`` field."""
    return classify_flat([(str(number).encode(), {b"event": line}) for number, line in chunk])


def _ready() -> bool:
    return True


def _may_fork() -> bool:
    """Whether the validating processes may be forked from this one: on Linux, while it runs no
    other thread. A forked process starts at once, with the validation imported (a spawned one
    imports it first: ~0.4 s of CPU each); it copies only the forking thread, so a lock another
    thread held at that moment would stay held in it for ever: with other threads, spawn. The
    forked processes touch nothing of this one's but the validation (not its SQLite
    connections: they leave by ``os._exit``, closing nothing)."""
    return sys.platform == "linux" and threading.active_count() == 1


COLLECT_EVERY = 10  # chunks (in a validating process), transactions (importing): a collection


def _validating_process() -> None:
    """In a validating process: no automatic cyclic garbage collection (``_validate_pooled``
    collects every ``COLLECT_EVERY`` chunks instead). Validating creates a dozen container
    objects an event, and the collector's passes over them cost a fifth of the validation's
    CPU time; the events hold no reference cycles, so those passes free nothing."""
    gc.disable()


_validated = 0


def _validate_pooled(chunk: list[Line]) -> list[Flat]:
    global _validated
    try:
        return validate_chunk(chunk)
    finally:
        _validated += 1
        if _validated % COLLECT_EVERY == 0:
            gc.collect()  # what cycles there may be (in a rejection's traceback, say): still freed


# --- rejects -----------------------------------------------------------------------------------


def _json_text(text: str) -> bytes:
    """``text`` as a JSON string: UTF-8 where it can be, escapes for what is not (bytes that were
    not UTF-8 are read with ``surrogateescape``: ``.encode("utf-8", "surrogateescape")`` of the
    string read back gives them again)."""
    try:
        return json.dumps(text, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(text).encode("ascii")


class RejectsFile:
    """The rejected lines, one JSON object a line: ``line``, ``reason``, ``error``, ``event`` (the
    line as read). Written to ``PATH.partial`` and renamed at the end; with nothing rejected, no
    file is left (an older one at PATH, from an earlier import, is removed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = Path(f"{path}.partial")
        self._file: IO[bytes] | None = None
        self.count = 0

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self._file = open(self.partial, "wb")  # noqa: SIM115 - closed in ``close``
        return self._file

    def _head(self, number: int, reason: str, error: str) -> bytes:
        self.count += 1
        return (
            b'{"line": ' + str(number).encode() + b', "reason": ' + _json_text(reason)
            + b', "error": ' + _json_text(error) + b', "event": '
        )

    def add(self, number: int, reason: str, error: str, raw: bytes) -> None:
        out = self._open()
        out.write(self._head(number, reason, error))
        out.write(_json_text(raw.decode("utf-8", "surrogateescape")) + b"}\n")

    def add_overlong(self, number: int, first: bytes, rest: Iterator[bytes]) -> None:
        """A line too long to hold: its text goes through a spool file piece by piece (the
        error, written first, names its size), so that the whole line is kept."""
        decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        size = 0
        with tempfile.TemporaryFile() as spool:
            for piece in _chain(first, rest):
                size += len(piece)
                spool.write(_json_text(decoder.decode(piece))[1:-1])
            spool.write(_json_text(decoder.decode(b"", final=True))[1:-1])
            error = f"event: {size} bytes is over the limit of {MAX_EVENT_BYTES} bytes (256 KiB)"
            out = self._open()
            out.write(self._head(number, "too_large", error) + b'"')
            spool.seek(0)
            while block := spool.read(1024 * 1024):
                out.write(block)
        out.write(b'"}\n')

    def close(self) -> None:
        """Rename the rejects into place (or remove a stale file when there were none)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            os.replace(self.partial, self.path)
        elif self.path.exists():
            self.path.unlink()

    def abandon(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.partial.unlink(missing_ok=True)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


# --- importing ---------------------------------------------------------------------------------


@dataclass
class ImportReport:
    lines: int = 0  # non-blank lines read (and too-long ones)
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    first_position: int | None = None
    last_position: int | None = None
    store_seconds: float = 0.0  # reading, validating and appending
    project_seconds: float = 0.0
    projected_by: str = ""  # "rebuild" or "catch-up"
    projected_while_storing: int = 0  # the position the rebuild beside the import had reached by then
    pool_start: str = ""  # how the validating processes were started: "fork", "spawn" ("": none)
    chunks_here: int = 0  # chunks of lines validated by the importing process
    chunks_pooled: int = 0  # … by its validating processes (one that died: validated here again)
    reasons: dict[str, int] = field(default_factory=dict)


#: ``("store", lines settled, 0)`` after each transaction; ``("project", position, head)``
Progress = Callable[[str, int, int], None]


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Importer:
    """Validate lines on a pool of processes, append their events in file order, then project."""

    def __init__(
        self,
        service: TimelineService,
        rejects: RejectsFile,
        *,
        workers: int | None = None,
        transaction_events: int = TRANSACTION_EVENTS,
        progress: Progress | None = None,
        local_start: bool = True,
        follow: bool = True,
    ) -> None:
        self.service = service
        #: validate here while the pool's processes start, rather than wait for them
        self.local_start = local_start
        #: into an empty store, rebuild the projections beside the appends (``Follower``)
        self.follow = follow
        self.rejects = rejects
        self.workers = default_workers() if workers is None else workers
        self.transaction_events = transaction_events
        self.progress = progress or (lambda phase, done, total: None)
        self.report = ImportReport()
        self._batch = Prepared(ids=[])
        self._pool: ProcessPoolExecutor | None = None
        self._follower: Follower | None = None
        self._flushes = 0
        self.pool_ready: Future[bool] | None = None  # done once a validating process is up

    # the whole import

    def run(self, source: IO[bytes]) -> ImportReport:
        started = time.perf_counter()
        follower: Follower | None = None
        try:
            if self.workers > 0 and _may_fork():
                self._start_pool(fork=True)  # before this import starts a thread of its own
            follower = Follower.start(self.service.writer()) if self.follow else None
            self._store(source, follower)
            self.report.store_seconds = time.perf_counter() - started
            started = time.perf_counter()
            if follower is not None:
                self.report.projected_while_storing = min(follower.reached.values(), default=0)
            if follower is None or not follower.finish(self.progress):
                self._project()
            else:
                self.report.projected_by = "rebuild"
            # the tables just filled: their statistics (PostgreSQL; a rebuild analyzed its own)
            self.service.store.analyze()
            if self.report.projected_by != "rebuild":
                self.service.writer().analyze()
        finally:
            if follower is not None:
                follower.stop()
            self._close_pool()
        self.report.project_seconds = time.perf_counter() - started
        return self.report

    # storing

    def _store(self, source: IO[bytes], follower: "Follower | None" = None) -> None:
        lines = read_lines(source, self._overlong)
        if not self.local_start:
            self._start_pool()
        self._follower = follower
        # Enough chunks in flight that the pool keeps validating while a transaction is appended.
        in_flight = max(1, self.transaction_events // CHUNK_LINES) + 4 * max(1, self.workers)
        pending: deque[tuple[list[Line], Future[list[Flat]] | None]] = deque()
        # No automatic cyclic garbage collection while storing: the chunks in flight and the
        # transaction in hand are hundreds of thousands of container objects (none in a cycle),
        # which the collector would walk again and again; ``_flush`` collects the young
        # generations every ``COLLECT_EVERY`` transactions instead.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for number, chunk in enumerate(chunks(lines)):
                if number == 1:  # more than a chunk: worth the processes' start
                    self._start_pool()
                # Until the pool's processes are up (they take a second or so to import the
                # validation), this process validates the chunks itself rather than wait.
                ready = self.pool_ready
                local = self._pool is None or ready is None or (self.local_start and not ready.done())
                pending.append((chunk, None if local else self._submit(chunk)))
                while len(pending) >= in_flight or (pending and pending[0][1] is None):
                    self._take(*pending.popleft())
            while pending:
                self._take(*pending.popleft())
            self._flush()
        finally:
            if collecting:
                gc.enable()
            self._close_pool()

    def _start_pool(self, *, fork: bool = False) -> None:
        if self.workers <= 0 or self.pool_ready is not None:
            return
        context = multiprocessing.get_context("fork" if fork else "spawn")
        self.report.pool_start = context.get_start_method()
        self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_validating_process)
        started = [self._pool.submit(_ready) for _ in range(self.workers)]  # each starts a process
        self.pool_ready = started[0]

    def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, chunk: list[Line]) -> Future[list[Flat]] | None:
        """The chunk's validation on the pool; None (validated here when taken) without one."""
        if self._pool is None:
            return None
        try:
            return self._pool.submit(_validate_pooled, chunk)
        except BrokenProcessPool:  # a validating process was killed: validate here from now on
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            return None

    def _take(self, chunk: list[Line], future: Future[list[Flat]] | None) -> None:
        flat: list[Flat]
        if future is None:
            flat = validate_chunk(chunk)
            self.report.chunks_here += 1
        else:
            try:
                flat = future.result()
                self.report.chunks_pooled += 1
            except Exception:  # noqa: BLE001 - a validating process died, say: the same answer, here
                flat = validate_chunk(chunk)
                self.report.chunks_here += 1
        prepared = restore_flat([str(number).encode() for number, _ in chunk], flat, [line for _, line in chunk])
        batch = self._batch
        batch.candidates += prepared.candidates
        batch.sources += prepared.sources
        batch.dead += prepared.dead
        self.report.lines += len(chunk)
        if len(batch.candidates) >= self.transaction_events:
            self._flush()

    def _flush(self) -> None:
        batch, self._batch = self._batch, Prepared(ids=[])
        outcome = self.service.append(batch)  # the consumer's append: one transaction, file order
        report = self.report
        report.stored += outcome.stored
        report.duplicates += outcome.duplicates
        if outcome.stored:
            first = outcome.last_position - outcome.stored + 1  # one transaction: consecutive positions
            report.first_position = report.first_position or first
            report.last_position = outcome.last_position
        for dead in sorted(outcome.dead, key=lambda d: int(d.source_id)):
            self._reject(int(dead.source_id), dead.reason, dead.error, dead.event)
        if outcome.stored and self._follower is not None:
            self._follower.stored(outcome.last_position)
        self._flushes += 1
        if self._flushes % COLLECT_EVERY == 0:
            gc.collect(1)  # (a pass over the objects in flight: 70 ms for 20,000 events' worth)
        self.progress("store", report.lines, 0)

    def _reject(self, number: int, reason: str, error: str, raw: bytes) -> None:
        self.rejects.add(number, reason, error, raw)
        self.report.rejected += 1
        self.report.reasons[reason] = self.report.reasons.get(reason, 0) + 1

    def _overlong(self, number: int, first: bytes, rest: Iterator[bytes]) -> None:
        self.rejects.add_overlong(number, first, rest)
        self.report.lines += 1
        self.report.rejected += 1
        self.report.reasons["too_large"] = self.report.reasons.get("too_large", 0) + 1

    # projecting

    def _project(self) -> None:
        """Rebuild (sorted, deferred work) when the projections are far behind; else catch up."""
        engine = self.service.writer()
        head, lowest = engine.head(), engine.lowest()
        if head and head - lowest >= REBUILD_SHARE * head:
            try:
                engine.rebuild(None, lambda position, top: self.progress("project", position, top))
                self.report.projected_by = "rebuild"
                return
            except RebuildError:  # another process rebuilds them: it takes the new events too
                pass
        self.progress("project", lowest, head)
        self.service.project()
        self.progress("project", head, head)
        self.report.projected_by = "catch-up"


class Follower:
    """The projections' rebuild, run beside the import into an empty store: each committed
    transaction's events go into the rebuild's tables (the deferred work of a rebuild, in
    ``Engine.rebuild_step`` batches) on a thread of its own while the next
    transaction is validated and appended, so that projecting overlaps storing. Once every line
    is stored, ``finish`` brings the rebuild to the head and lets it finish as a rebuild does
    (the deferred rows, the read-side indexes, the swap): the same tables as a rebuild started
    after the import.

    Started only when the store is empty (the import is then all of it, which is when the
    import would rebuild the projections anyway) and the rebuild can be started here; a step
    that fails stops the following (``finish`` then answers False and the importer projects as
    it does without one)."""

    def __init__(self, engine: Engine, names: list[str]) -> None:
        self.engine = engine
        self.names = names
        self.reached = dict.fromkeys(names, 0)  # each rebuild's position
        self._target = 0  # the last committed position
        self._closing = False
        self.failed: BaseException | None = None
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._follow, name="import-rebuild", daemon=True)

    @classmethod
    def start(cls, engine: Engine) -> "Follower | None":
        if engine.head() != 0:
            return None
        try:
            names = engine.start_rebuild(None)
        except RebuildError:  # another process rebuilds them
            return None
        follower = cls(engine, names)
        follower._thread.start()
        return follower

    def stored(self, position: int) -> None:
        """Events up to ``position`` are committed."""
        with self._wake:
            self._target = max(self._target, position)
            self._wake.notify()

    def _follow(self) -> None:
        while True:
            with self._wake:
                while not self._closing and all(p >= self._target for p in self.reached.values()):
                    self._wake.wait()
                if self._closing:
                    return
                target = self._target
            try:
                for name in self.names:
                    # Only while behind the committed head: a rebuild step at the head would
                    # finish the rebuild (indexes built, deferred rows written) before the import
                    # has stored everything. This thread is the only one that steps it.
                    while self.reached[name] < target:
                        self.reached[name], _, _ = self.engine.rebuild_step([name])
            except BaseException as exc:  # noqa: BLE001 - reported by ``finish``: projected the usual way
                self.failed = exc
                return

    def stop(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()

    def finish(self, progress: Progress) -> bool:
        """Bring the rebuild to the head, finish and swap it in; False if it cannot be (then
        nothing of it counts: the importer projects as it does without one)."""
        self.stop()
        if self.failed is not None:
            log.warning("the rebuild beside the import stopped (%s: %s); projecting after it",
                        type(self.failed).__name__, self.failed)
            return False
        # (The rebuild's positions are at the head already, its finish is not: the phase is
        # reported done only once swapped in.)
        head = max(self._target, 1)
        progress("project", min(min(self.reached.values(), default=0), head - 1), head)
        try:
            while True:
                position, head, done = self.engine.rebuild_step(self.names)
                progress("project", position if done else min(position, head - 1), head)
                if done:
                    return True
        except RebuildError:  # taken over or cancelled by another process: it takes our events too
            return False


def import_events(
    service: TimelineService, source: IO[bytes], rejects_path: Path, *, workers: int | None = None,
    transaction_events: int = TRANSACTION_EVENTS, progress: Progress | None = None, local_start: bool = True,
    follow: bool = True,
) -> ImportReport:
    """Import JSON Lines from ``source`` into the service's store; rejects to ``rejects_path``."""
    rejects = RejectsFile(rejects_path)
    importer = Importer(service, rejects, workers=workers, transaction_events=transaction_events, progress=progress,
                        local_start=local_start, follow=follow)
    try:
        report = importer.run(source)
    except BaseException:
        rejects.abandon()
        raise
    rejects.close()
    return report


def rejects_path_for(source: str, override: str | None) -> Path:
    """``FILE.rejected.jsonl`` beside the file, ``./stdin.rejected.jsonl`` for ``-``, or the override."""
    if override:
        return Path(override)
    if source == "-":
        return Path("stdin.rejected.jsonl")
    return Path(f"{source}.rejected.jsonl")
