"""The shapes of the HTTP API's bodies and answers, for its OpenAPI description (docs/contract.md §4).

The handlers write their answers as JSON text straight from the read side (no per-field
re-encoding on the hot path), so these models describe the answers rather than build them; the
schemathesis test checks every answer of the real server against them. The request body of
``POST /events`` is described by the event models themselves (``events.models``), so the spec a
client reads is the validator the service runs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from events.models import (
    ENTITY_TYPES,
    KINDS,
    ROLES,
    CorrectionEvent,
    EntityAliasEvent,
    OutageEvent,
    PoliticalMoveEvent,
    ReportEvent,
    RetractionEvent,
    Source,
    StatementEvent,
)

Kind = Literal[KINDS]  # type: ignore[valid-type]
Role = Literal[ROLES]  # type: ignore[valid-type]
EntityType = Literal[ENTITY_TYPES]  # type: ignore[valid-type]
Status = Literal["active", "corrected", "retracted"]

AnyEvent = Annotated[
    Union[
        OutageEvent, StatementEvent, ReportEvent, PoliticalMoveEvent, CorrectionEvent, RetractionEvent, EntityAliasEvent
    ],
    Field(discriminator="kind"),
]


def event_body_schema(max_events: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON schema of ``POST /events``' body (one event, or an array of up to ``max_events``)
    and the definitions it refers to, to go into the spec's ``components/schemas``."""
    ref = "#/components/schemas/{model}"
    one = TypeAdapter(AnyEvent).json_schema(ref_template=ref, mode="validation")
    defs = one.pop("$defs", {})
    defs["NewsEvent"] = one
    body = {
        "description": "One news event (docs/contract.md §1), or an array of up to 1,000",
        "oneOf": [
            {"$ref": "#/components/schemas/NewsEvent"},
            {"type": "array", "items": {"$ref": "#/components/schemas/NewsEvent"}, "maxItems": max_events},
        ],
    }
    return body, defs


class Rejection(BaseModel):
    index: int = Field(description="the event's place in the body (0 for a single event)")
    reason: str = Field(description="schema, id_conflict, ... (docs/contract.md §3)")
    error: str = Field(description="the human message, naming the field")


class Published(BaseModel):
    accepted: list[str] = Field(
        description="ids of the events published to the stream, not yet stored (with wait=true and 201: each"
        " stored and projected; with 202, those in pending are not settled yet)"
    )
    rejected: list[Rejection]
    pending: list[str] | None = Field(
        None, description="with wait=true: accepted ids not yet settled when the wait timed out"
    )


class EntityCard(BaseModel):
    id: str
    name: str
    type: EntityType
    aliases: list[str]
    event_count: int
    first_at: str | None
    last_at: str | None


class EntityList(BaseModel):
    entities: list[EntityCard]
    next_cursor: str | None = Field(description="pass back as cursor= (same q and type) for the next page")


class EntryEntity(BaseModel):
    id: str = Field(description="the canonical id (aliases resolved, as of the page's snapshot)")
    name: str = Field(description="the name the directory shows for the entity (GET /entities/{id})")
    role: Role = Field(description="its role in the event (the best one, when several of its ids are named)")


class TimelineEntry(BaseModel):
    event_id: str
    kind: Kind
    occurred_at: str = Field(description="as written: its form is its precision")
    ended_at: str | None = None
    headline: str
    summary: str | None = None
    role: Role | None = Field(None, description="the entity's role (per-entity timelines only)")
    entities: list[EntryEntity] = Field(
        description="the event's entities as in force (corrections applied), by role then id"
    )
    sources: list[Source]
    details: dict[str, Any]
    position: int
    recorded_at: str
    status: Status


class TimelinePage(BaseModel):
    entity: EntityCard | None = Field(None, description="the entity (per-entity timelines only)")
    entries: list[TimelineEntry]
    next_cursor: str | None


class RelatedEntity(BaseModel):
    id: str
    name: str
    type: EntityType
    count: int = Field(description="events shared with the entity asked about")
    last_at: str | None


class RelatedList(BaseModel):
    entities: list[RelatedEntity]
    next_cursor: str | None = Field(description="pass back as cursor= for the next page")


class HistoryItem(BaseModel):
    event_id: str
    kind: Literal["correction", "retraction"]
    occurred_at: str
    position: int
    recorded_at: str
    reason: str | None = None
    changes: dict[str, Any] | None = None
    applied: bool
    error: str | None = None


class StoredEventAnswer(BaseModel):
    """The event as it stands (its fields as in docs/contract.md §1, corrections applied)."""

    id: str
    kind: Kind
    occurred_at: str
    position: int
    recorded_at: str
    status: Status
    history: list[HistoryItem]


class ProjectionFailing(BaseModel):
    """A projection whose batches fail (on the node that advances it); the others go on."""

    error: str
    since: str = Field(description="UTC instant of the first failure of this run")
    attempts: int
    retry_in_seconds: float = Field(description="until the next attempt (the delay doubles, up to 30 s)")


class ProjectionStatus(BaseModel):
    name: str
    version: int
    position: int
    head: int
    lag: int
    state: Literal["live", "rebuilding"]
    failing: ProjectionFailing | None = Field(None, description="present while its batches fail")


class RebuildStarted(BaseModel):
    name: str
    state: Literal["rebuilding"]


Progress = Literal["caught_up", "lagging", "stuck"]


class StreamProgress(BaseModel):
    pending: int = Field(description="entries delivered to the consumer group, not yet acknowledged")
    undelivered: int = Field(description="entries not yet delivered to the group")
    seconds: float = Field(description="age of the oldest entry not yet stored (0 when none)")
    progress: Progress = Field(
        description="lagging: behind and moving; stuck: behind, not moved for TIMELINE_STUCK_SECONDS"
    )
    still_seconds: float = Field(description="how long it has been behind without settling an entry")


class ProjectionProgress(BaseModel):
    position: int
    lag_events: int = Field(description="store events not yet applied")
    seconds: float = Field(description="age of the oldest event not yet applied (0 when none)")
    progress: Progress
    still_seconds: float = Field(description="how long it has been behind without moving")


class Lag(BaseModel):
    stream: StreamProgress | None = Field(description="null without a consumer or when Redis cannot be read")
    projections: dict[str, ProjectionProgress]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    backlog: int | None = Field(description="stream entries not yet stored (null when Redis cannot be read)")
    backlog_exact: bool = Field(True, description="false: backlog is a lower bound (Redis 6.2, a large backlog)")
    checks: dict[str, str] = Field(description="each part: 'ok' or what is wrong")
    lag: Lag | None = Field(
        None, description="how far behind the stream and each projection are (absent when the store cannot be read)"
    )
    stuck: list[str] | None = Field(None, description="the parts that are stuck: 'stream', 'projection:<name>'")
    error: str | None = None
    failing: list[str] | None = None


class ErasureRequest(BaseModel):
    """``POST /events/{id}/erase``: why (kept in the erasure record)."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


class ErasureRecord(BaseModel):
    """One erasure, as recorded (docs/erasure.md)."""

    seq: int
    event_id: str
    position: int
    kind: Kind
    erased_at: str
    reason: str
    who: str
    erased_with: list[str]


class ErasureDone(ErasureRecord):
    already_erased: bool  # erased before: the record of then; Redis was scrubbed again
    redis: dict[str, Any]


class ErasureList(BaseModel):
    erasures: list[ErasureRecord]


class Tombstone(BaseModel):
    """``GET /events/{id}`` of an erased event (410): what is left of it."""

    error: str
    id: str
    kind: Kind
    position: int
    recorded_at: str
    status: Literal["erased"]
    erased_at: str
    reason: str
