"""The one service object that the stream consumer, the HTTP API and the CLI share.

It owns the store's writer connection, the projection engine (a file and a connection per
projection) and the readers. Appends happen on one thread at a time (``_append_lock``), each
projection's batches on one thread at a time (the engine's locks); appends and projection
batches run side by side. Reads run on any thread, each with its own connection.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

from events.models import EventRejected, parse_event_bytes
from events.store import Candidate, EventStore
from projections import ProjectionEngine, default_projections
from projections.queries import Queries

from .settings import Settings


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A stream entry that cannot be stored, with the fields of CONTRACT §3."""

    source_id: bytes
    event: bytes
    reason: str
    error: str

    def fields(self) -> dict[str, bytes]:
        return {
            "event": self.event,
            "reason": self.reason.encode(),
            "error": self.error.encode(),
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


def _fields_as_json(fields: dict[bytes, bytes]) -> bytes:
    def text(value: bytes) -> str:
        return value.decode("utf-8", errors="backslashreplace")

    return json.dumps({text(k): text(v) for k, v in fields.items()}, ensure_ascii=False).encode()


def classify(entry_id: bytes, fields: dict[bytes, bytes] | None) -> Candidate | DeadLetter:
    """One stream entry: an event to append, or a dead letter (``no_event`` … ``schema``)."""
    if not fields or b"event" not in fields:
        return DeadLetter(
            entry_id, _fields_as_json(fields or {}), "no_event", "event: the entry has no 'event' field"
        )
    raw = fields[b"event"]
    try:
        return Candidate(parse_event_bytes(raw), raw)
    except EventRejected as exc:
        return DeadLetter(entry_id, raw, exc.reason, exc.error)


class TimelineService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = EventStore(settings.db)
        # Live catch-up batches of up to 20,000 events: under load, the projector takes what was
        # stored meanwhile in one transaction (a page of a projection table is written once per
        # batch, so the cost per event falls as batches grow: 110 µs at 1,000, 35 µs at 20,000).
        self.engine = ProjectionEngine(self.store, default_projections(), batch_size=20_000)
        #: projections whose code version differs from their tables': rebuilt in the background
        self.outdated = self.engine.setup()
        self.queries = Queries(str(settings.db), names=list(self.engine.projections))
        self._append_lock = threading.Lock()

    def close(self) -> None:
        self.queries.close()
        self.engine.close()
        self.store.close()

    def prepare(self, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> Prepared:
        """Validate a batch of stream entries (no lock: runs beside another batch's append)."""
        prepared = Prepared(ids=[entry_id for entry_id, _ in entries])
        for entry_id, fields in entries:
            item = classify(entry_id, fields)
            if isinstance(item, DeadLetter):
                prepared.dead.append(item)
            else:
                prepared.candidates.append(item)
                prepared.sources.append(entry_id)
        return prepared

    def append(self, prepared: Prepared) -> IngestOutcome:
        """Append a prepared batch in one transaction; what was stored, duplicated or refused."""
        outcome = IngestOutcome(dead=list(prepared.dead))
        with self._append_lock:
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
        return self.engine.catch_up()

    def project_step(self) -> tuple[int, int]:
        """One batch (up to the engine's batch size) for each projection behind, side by side;
        return the lowest checkpoint and the store's head. Under load the caller lets the store
        get a full batch ahead between steps: a batch costs less per event the larger it is."""
        self.engine.step()
        return self.engine.lowest(), self.engine.head()

    def start_rebuild(self, names: list[str] | None = None, *, force: bool = False) -> list[str]:
        return self.engine.start_rebuild(names, force=force)

    def rebuild_step(self, names: list[str]) -> tuple[int, int, bool]:
        """One committed batch of each rebuild, between live batches."""
        return self.engine.rebuild_step(names)
