"""How far behind the consumer and each projection are, and whether they are moving.

A part is ``caught_up`` (nothing behind it), ``lagging`` (behind, and it moved within the last
``TIMELINE_STUCK_SECONDS``) or ``stuck`` (behind, and neither moved nor caught up for that long).
Moving is judged from successive looks at the part's position (a projection's checkpoint, the
number of entries the consumer has settled): ``Progress`` remembers each position and since when
it has not changed, bounded by how long the part has been behind (its lag in seconds). The
runtime looks once at start; /health and /metrics look again at each call. Lag in seconds is the age of the oldest entry or
event not yet settled or projected: the stream's from the entry's id (its time), a projection's
from the ``recorded_at`` of the first event after its checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

CAUGHT_UP, LAGGING, STUCK = "caught_up", "lagging", "stuck"


@dataclass(frozen=True, slots=True)
class Judged:
    state: str  # CAUGHT_UP, LAGGING or STUCK
    still_seconds: float  # how long the position has not moved (0 when it just did)


class Progress:
    """Tells lagging from stuck, from successive looks at each part's position."""

    def __init__(self, stuck_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stuck_seconds = stuck_seconds
        self._clock = clock
        self._seen: dict[str, tuple[int, float]] = {}  # part -> (position, since when unchanged)

    def judge(self, part: str, position: int, behind: bool, behind_seconds: float) -> Judged:
        """``part`` is at ``position``; ``behind`` anything, the oldest of it ``behind_seconds``
        old. Still is the time since the position last moved, or since the part fell behind
        (the oldest waiting item's age) if that is shorter: a part idle while caught up is not
        stuck the moment something arrives."""
        now = self._clock()
        seen = self._seen.get(part)
        if seen is None or seen[0] != position or not behind:
            self._seen[part] = (position, now)
        if not behind:
            return Judged(CAUGHT_UP, 0.0)
        still = min(now - self._seen[part][1], behind_seconds)
        return Judged(STUCK if still >= self.stuck_seconds else LAGGING, still)


@dataclass(frozen=True, slots=True)
class Backlog:
    """The stream's entries not yet stored (``StreamConsumer.backlog``)."""

    pending: int  # delivered to the group, not yet acknowledged
    undelivered: int  # not yet delivered to the group
    exact: bool  # False: ``undelivered`` is a lower bound (Redis 6.2, a large backlog)
    oldest_ms: int | None  # when the oldest of them was added (Unix ms), None when there is none

    @property
    def total(self) -> int:
        return self.pending + self.undelivered

    @property
    def seconds(self) -> float:
        return age_seconds(self.oldest_ms)


@dataclass(frozen=True, slots=True)
class ProjectionLag:
    """One projection's place against the store's head (``projection_lags``)."""

    name: str
    position: int
    head: int
    lag_seconds: float  # age of the oldest event it has not applied (0 when caught up)
    rebuild_position: int | None  # where its rebuild is, while one runs

    @property
    def lag_events(self) -> int:
        return self.head - self.position

    @property
    def rebuild_progress(self) -> float:
        """The share of the store a running rebuild has applied; 1 when none runs."""
        if self.rebuild_position is None:
            return 1.0
        return self.rebuild_position / self.head if self.head else 1.0


def projection_lags(queries: Any, now: datetime | None = None) -> list[ProjectionLag]:
    """Every projection's checkpoint, lag and rebuild, read from the checkpoints and one row of
    the store per projection behind (on a thread that may read: ``Queries`` is per thread)."""
    now = now or datetime.now(timezone.utc)
    out = []
    for status in queries.projections():
        cp, seconds = status.checkpoint, 0.0
        if status.lag > 0:
            recorded = queries.store.recorded_at(cp.position + 1)
            if recorded is not None:
                seconds = max(0.0, (now - datetime.fromisoformat(recorded)).total_seconds())
        rebuild = cp.rebuild.position if cp.rebuild is not None else None
        out.append(ProjectionLag(cp.name, cp.position, status.head, seconds, rebuild))
    return out


def age_seconds(unix_ms: int | None, now: float | None = None) -> float:
    """Seconds since a Unix time in milliseconds (a stream entry id's first part); 0 for None."""
    if unix_ms is None:
        return 0.0
    return max(0.0, (now if now is not None else time.time()) - unix_ms / 1000)


@dataclass(frozen=True, slots=True)
class Observation:
    """One look at the stream and the projections (``Runtime.observe``): what /health reports
    under ``lag`` and what /metrics exposes as gauges."""

    backlog: Backlog | None  # None: no consumer, or Redis could not be read
    stream: Judged | None
    projections: list[tuple[ProjectionLag, Judged]]

    def stuck(self) -> list[str]:
        """The parts that are stuck: ``stream`` and ``projection:<name>``."""
        parts = ["stream"] if self.stream is not None and self.stream.state == STUCK else []
        return parts + [f"projection:{lag.name}" for lag, judged in self.projections if judged.state == STUCK]

    def report(self) -> dict[str, Any]:
        """/health's ``lag``: the stream's and each projection's, in entries and seconds."""
        out: dict[str, Any] = {"stream": None, "projections": {}}
        if self.backlog is not None and self.stream is not None:
            out["stream"] = {
                "pending": self.backlog.pending, "undelivered": self.backlog.undelivered,
                "seconds": round(self.backlog.seconds, 3), "progress": self.stream.state,
                "still_seconds": round(self.stream.still_seconds, 3),
            }
        for lag, judged in self.projections:
            out["projections"][lag.name] = {
                "position": lag.position, "lag_events": lag.lag_events, "seconds": round(lag.lag_seconds, 3),
                "progress": judged.state, "still_seconds": round(judged.still_seconds, 3),
            }
        return out
