"""From stored events to state changes: what every projection applies.

A stored news event makes its event appear (``old`` is None). A correction or retraction of
a known event changes it (``old`` and ``new`` both set); one whose target has not arrived yet
changes nothing now, and is folded into the target when the target arrives. Aliases change no
rows: they are resolved when reading. All states come from ``events.history``, kept by the
store as it appends (``EventStore.folded``), so an incremental run, a rebuild and
``GET /events/{id}`` agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from events.dates import parse_partial
from events.history import EventState
from events.models import NEWS_KINDS
from events.store import EventStore, StoredEvent

RANK = {"subject": 0, "actor": 1, "target": 2, "mentioned": 3}


@dataclass(frozen=True, slots=True)
class Version:
    """One event's state, flattened for the projections' rows."""

    event_id: str
    position: int  # the event's own store position
    recorded_at: str
    kind: str
    status: str
    body: dict[str, Any]
    start_key: str
    end_key: str
    since: int  # the store position of the change that made this version (its ``valid_from``)
    corrected: bool  # a correction was applied: ``body`` is no longer the event as stored
    # Where its entities were stated: the event's position, or that of the latest applied
    # correction that set ``entities`` if later (names follow the latest statement in force).
    said_at: int

    @property
    def entities(self) -> list[dict[str, Any]]:
        return self.body["entities"]

    @property
    def counted(self) -> bool:
        return self.status != "retracted"


@dataclass(frozen=True, slots=True)
class Change:
    position: int  # where the change happens in the store
    recorded_at: str
    old: Version | None
    new: Version | None


def version(event: StoredEvent, state: EventState, since: int) -> Version:
    body = state.body
    start = parse_partial(body["occurred_at"])
    end = parse_partial(body["ended_at"]) if body.get("ended_at") else start
    return Version(
        event.event_id, event.position, event.recorded_at, event.kind, state.status, body, start.start_key,
        end.end_key, since, state.corrected, max(event.position, state.entities_at),
    )


def compute_changes(store: EventStore, batch: list[StoredEvent]) -> list[Change]:
    if not batch:
        return []
    # Which news events of this batch already have corrections waiting (a rare case).
    news_ids = [e.event_id for e in batch if e.kind in NEWS_KINDS]
    waited_for = store.targeted(news_ids, upto=batch[-1].position) if news_ids else set()
    changes: list[Change] = []
    for event in batch:
        if event.kind in NEWS_KINDS:
            if event.event_id in waited_for:
                _, state = store.folded(event, upto=event.position)  # what waited, folded in
            else:
                state = EventState(event.body, "active")
            changes.append(Change(event.position, event.recorded_at, None, version(event, state, event.position)))
        elif event.target_id is not None:
            target = store.get(event.target_id or "", upto=event.position)
            if target is None or target.kind not in NEWS_KINDS:
                continue  # waits for its target
            # The states before and after this change, as the store kept them (not folded again
            # from every earlier change): the n-th correction of an event costs what the first did.
            # The version this change closes began with the target or with the latest change to it
            # after it (earlier ones waited for the target and are folded into its first version).
            since, before = store.folded(target, upto=event.position - 1)
            _, after = store.folded(target, upto=event.position)
            changes.append(
                Change(
                    event.position, event.recorded_at, version(target, before, since),
                    version(target, after, event.position),
                )
            )
    return changes
