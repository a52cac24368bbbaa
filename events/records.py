"""The store's typed records, shared by both backends (events.backend): what goes in
(``Candidate``) and what comes out (``StoredEvent``, ``AppendResult``, ``EventHash``,
``AliasDeclaration``, ``AppendDone`` for observers). Nothing here knows a database."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .ids import compact_json
from .integrity import digests
from .models import NEWS_KINDS, ParsedEvent


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    event_id: str
    kind: str
    target_id: str | None
    recorded_at: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What became of one event of a batch: ``stored``, ``duplicate`` or ``rejected``."""

    status: str
    event_id: str
    position: int | None = None
    reason: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AppendDone:
    """One committed append, as the store's observers see it (metrics, tracing): when it
    started (``time.time_ns()``), how long it took, the batch's size and what it stored."""

    started_ns: int
    seconds: float
    batch: int
    stored: int


AppendObserver = Callable[[AppendDone], None]


#: what the store's per-event rows take from a body: occurred_at, ended_at and, for a news
#: event, its entities as (id, name, type, role)
Facts = tuple[str, "str | None", tuple[tuple[str, str, str, str], ...]]


def event_facts(event: ParsedEvent) -> Facts:
    body = event.body
    entities: tuple[tuple[str, str, str, str], ...] = ()
    if event.kind in NEWS_KINDS:
        entities = tuple((e["id"], e["name"], e["type"], e["role"]) for e in body["entities"])
    return body["occurred_at"], body.get("ended_at"), entities


@dataclass(frozen=True, slots=True)
class Candidate:
    """An event to append: the parsed event and the exact bytes it arrived as.

    What the row needs that does not depend on the store (the body's JSON text, the digests
    the hash chain takes, the facts of the per-event rows) is computed here, by whoever builds
    the candidate, before the store's write lock is taken: a validating process, say, which
    sends news events back without their body (``restore``; ``body`` reads it back if needed).
    """

    event: ParsedEvent
    raw: bytes
    body_json: str = field(init=False)
    digests: tuple[bytes, bytes] = field(init=False)
    facts: Facts = field(init=False)

    def __post_init__(self) -> None:
        body_json = compact_json(self.event.body, plain=self.event.plain)
        object.__setattr__(self, "body_json", body_json)
        object.__setattr__(self, "digests", digests(self.raw, body_json))
        object.__setattr__(self, "facts", event_facts(self.event))

    @classmethod
    def restore(
        cls, event: ParsedEvent, raw: bytes, body_json: str, row_digests: tuple[bytes, bytes], facts: Facts
    ) -> "Candidate":
        """A candidate computed elsewhere, from its parts (nothing recomputed). ``event.body`` may
        be None for a news event: what the store needs of it is in ``facts`` and ``body_json``."""
        candidate = object.__new__(cls)
        object.__setattr__(candidate, "event", event)
        object.__setattr__(candidate, "raw", raw)
        object.__setattr__(candidate, "body_json", body_json)
        object.__setattr__(candidate, "digests", row_digests)
        object.__setattr__(candidate, "facts", facts)
        return candidate

    @property
    def body(self) -> dict[str, Any]:
        """The normalised body (read back from its JSON text when the event came without it)."""
        if self.event.body is not None:
            return self.event.body
        return orjson.loads(self.body_json) if self.event.plain else json.loads(self.body_json)



@dataclass(frozen=True, slots=True)
class EventHash:
    """What the store knows of a stored id without reading its body (``Store.hashes``): its
    position, its content hash (idempotency) and whether it was erased."""

    position: int
    content_hash: str
    erased: bool


@dataclass(frozen=True, slots=True)
class AliasDeclaration:
    """An ``entity_alias`` event as the alias index reads it (``Store.aliases``)."""

    position: int
    alias: str
    canonical: str
    name: str | None
