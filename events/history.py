"""An event as it stands: its corrections and retraction applied, in store order.

``advance`` applies one correction or retraction to a state; ``fold`` is ``advance`` over a
list. They are the one definition of "the event now": the store applies each editorial event
with ``advance`` as it appends it and keeps the result (``event_states``), so that the n-th
correction of an event costs what the first did, and ``GET /events/{id}``, every projection
and ``timeline verify`` (which folds again from scratch and compares) agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .ids import compact_json
from .models import NEWS_KINDS, EventRejected, apply_changes

if TYPE_CHECKING:
    from .store import StoredEvent


@dataclass(slots=True)
class EventState:
    body: dict[str, Any]
    status: str  # active, corrected, retracted
    history: list[dict[str, Any]] = field(default_factory=list)
    corrected: bool = False  # a correction was applied: ``body`` is no longer the event as stored
    # the position of the latest applied correction that set ``entities`` (0: none did): where the
    # event's entities were last stated
    entities_at: int = 0


def entry(item: "StoredEvent") -> dict[str, Any]:
    """An editorial event's history entry, without what applying it gave (``applied``, ``error``)."""
    details = item.body["details"]
    out: dict[str, Any] = {
        "event_id": item.event_id,
        "kind": item.kind,
        "occurred_at": item.body["occurred_at"],
        "position": item.position,
        "recorded_at": item.recorded_at,
    }
    if details.get("reason") is not None:
        out["reason"] = details["reason"]
    if item.kind == "correction":
        out["changes"] = details["changes"]
    return out


def advance(kind: str, state: EventState, item: "StoredEvent") -> dict[str, Any]:
    """Apply one correction or retraction to ``state`` (of a news event of ``kind``), in place;
    append its history entry to ``state.history`` and return it."""
    out = entry(item)
    if kind not in NEWS_KINDS:
        # one that waited for an id which came as an editorial event: the store refuses it when the
        # target is known first (``only news events change``); arrived first, it is history that
        # did not apply, and the target stays as it was
        field = "details.corrects" if item.kind == "correction" else "details.retracts"
        out["applied"] = False
        out["error"] = f"{field}: {item.target_id!r} is a {kind}, not a news event; only news events change"
    elif item.kind == "correction":
        try:
            state.body = apply_changes(kind, state.body, item.body["details"]["changes"])
            out["applied"] = True
            state.corrected = True
            if "entities" in item.body["details"]["changes"]:
                state.entities_at = item.position
            if state.status == "active":
                state.status = "corrected"
        except EventRejected as exc:
            out["applied"] = False
            out["error"] = exc.error
    elif item.kind == "retraction":
        state.status = "retracted"
        out["applied"] = True
    state.history.append(out)
    return out


def fold(event: "StoredEvent", editorial: list["StoredEvent"]) -> EventState:
    """Apply corrections and retractions (already in store order) to a news event."""
    state = EventState(body=event.body, status="active")
    for item in editorial:
        advance(event.kind, state, item)
    return state


#: the store's ``event_states`` row: a news event's state once one correction or retraction of it
#: is applied, kept so that the next one starts from it instead of folding all earlier ones again
STATE_COLUMNS = "position, target_id, applied, error, status, corrected, entities_at, body"


def state_row(position: int, target_id: str, state: EventState, outcome: dict[str, Any]) -> tuple[Any, ...]:
    """The ``event_states`` row of the editorial event at ``position`` (``outcome``: its entry)."""
    return (
        position, target_id, int(outcome["applied"]), outcome.get("error"), state.status, int(state.corrected),
        state.entities_at, compact_json(state.body),
    )
