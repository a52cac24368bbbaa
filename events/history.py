"""An event as it stands: its corrections and retraction applied, in store order.

This fold is the one definition of "the event now" used by ``GET /events/{id}`` and by every
projection, so that an incremental projection, a rebuild and a direct read always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .models import EventRejected, apply_changes

if TYPE_CHECKING:
    from .store import StoredEvent


@dataclass(slots=True)
class EventState:
    body: dict[str, Any]
    status: str  # active, corrected, retracted
    history: list[dict[str, Any]] = field(default_factory=list)


def fold(event: "StoredEvent", editorial: list["StoredEvent"]) -> EventState:
    """Apply corrections and retractions (already in store order) to a news event."""
    state = EventState(body=event.body, status="active")
    for item in editorial:
        details = item.body["details"]
        entry: dict[str, Any] = {
            "event_id": item.event_id,
            "kind": item.kind,
            "occurred_at": item.body["occurred_at"],
            "position": item.position,
            "recorded_at": item.recorded_at,
        }
        if details.get("reason") is not None:
            entry["reason"] = details["reason"]
        if item.kind == "correction":
            entry["changes"] = details["changes"]
            try:
                state.body = apply_changes(event.kind, state.body, details["changes"])
                entry["applied"] = True
                if state.status == "active":
                    state.status = "corrected"
            except EventRejected as exc:
                entry["applied"] = False
                entry["error"] = exc.error
        elif item.kind == "retraction":
            state.status = "retracted"
            entry["applied"] = True
        state.history.append(entry)
    return state
