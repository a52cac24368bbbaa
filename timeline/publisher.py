"""Publishing events onto the stream, from Python: a scraper's three lines.

    from timeline.publisher import Publisher
    with Publisher("redis://localhost:6379/0") as pub:
        report = pub.publish([{"kind": "outage", ...}, ...])

Each event is validated here first (a rejected one is reported, not sent), then written as a
plain ``XADD <stream> * event <json>`` entry, many per round trip (pipelined). The consumer
reads these entries exactly as it reads a ``redis-cli XADD`` from any other language.

Published is not stored: ``Publisher.wait(report.entry_ids)`` waits until the service's
consumer group has settled each entry (stored, or dead-lettered with a reason), and
``Publisher.nobody_reading()`` says when no consumer group reads the stream at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from events.models import EventRejected, parse_event, parse_event_bytes

DEFAULT_STREAM = "news:events"
GROUP = "store"  # the service's consumer group (timeline.settings.GROUP)
PIPELINE = 1000
PAGE = 1000


def reconnecting() -> dict[str, Any]:
    """Client options: a lost connection is retried with exponential backoff (about a minute
    in all) instead of failing the call. A retried XADD may add an entry twice; the event id
    makes the second a no-op in the store."""
    return {
        "retry": Retry(ExponentialWithJitterBackoff(cap=3.0, base=0.05), retries=25),
        "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError],
        "health_check_interval": 30,
        "socket_keepalive": True,
    }


@dataclass(slots=True)
class Rejected:
    index: int
    reason: str
    error: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "reason": self.reason, "error": self.error}


@dataclass(slots=True)
class PublishReport:
    accepted: list[str] = field(default_factory=list)  # event ids, in order
    entry_ids: list[str] = field(default_factory=list)  # stream entry ids, aligned with accepted
    rejected: list[Rejected] = field(default_factory=list)


@dataclass(slots=True)
class Settlement:
    """What became of published entries (stream entry ids), as ``Publisher.wait`` found it."""

    stored: list[str] = field(default_factory=list)  # acknowledged without a dead letter
    dead: dict[str, tuple[str, str]] = field(default_factory=dict)  # entry id -> (reason, error)
    dead_letters: dict[str, str] = field(default_factory=dict)  # entry id -> its dead letter's id
    unsettled: list[str] = field(default_factory=list)  # not settled when the wait ended


def _key(entry_id: str | bytes) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def encode(event: Any) -> tuple[str, bytes]:
    """Validate one event (a dict, or JSON text/bytes) and return its id and entry bytes."""
    if isinstance(event, (bytes, str)):
        parsed = parse_event_bytes(event)
        data = event.encode() if isinstance(event, str) else event
    else:
        try:
            text = json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise EventRejected("bad_json", f"event: cannot be written as JSON: {exc}") from None
        try:
            data = text.encode()
        except UnicodeEncodeError:  # a lone surrogate: escaped, as the stream would get it (and refuse it)
            data = json.dumps(event, separators=(",", ":"), allow_nan=False).encode()
        parsed = parse_event_bytes(data) if len(data) > 256 * 1024 else parse_event(event)
    return parsed.id, data


def prepare(
    events: Iterable[Any], start: int = 0, refused: dict[int, EventRejected] | None = None
) -> tuple[list[tuple[int, str, bytes]], list[Rejected]]:
    """Validate each event: the valid ones as (index, id, bytes), the others as ``Rejected``.

    ``refused``: events already judged by index (by the caller, who read their text). Whatever
    judging one event raises rejects that event alone, never the others."""
    valid: list[tuple[int, str, bytes]] = []
    rejected: list[Rejected] = []
    for index, event in enumerate(events, start):
        try:
            if refused and index in refused:
                raise refused[index]
            event_id, data = encode(event)
        except EventRejected as exc:
            rejected.append(Rejected(index, exc.reason, exc.error))
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - parse_event rejects rather than raise; belt and braces
            error = EventRejected("schema", f"event: cannot be validated ({type(exc).__name__}: {exc})")
            rejected.append(Rejected(index, error.reason, error.error))
        else:
            valid.append((index, event_id, data))
    return valid, rejected


class Publisher:
    """Synchronous publisher (redis-py); safe to keep open for a scraper's lifetime."""

    def __init__(self, url: str, stream: str = DEFAULT_STREAM, *, client: redis.Redis | None = None) -> None:
        self.stream = stream
        self.client = client or redis.Redis.from_url(url, **reconnecting())

    def publish(
        self, events: Iterable[Any], *, progress: Callable[[int], None] | None = None
    ) -> PublishReport:
        report = PublishReport()
        batch: list[Any] = []
        offset = 0
        for event in events:
            batch.append(event)
            if len(batch) == PIPELINE:
                self._send(batch, offset, report, progress)
                offset += len(batch)
                batch = []
        if batch:
            self._send(batch, offset, report, progress)
        return report

    def publish_one(self, event: Any) -> str:
        report = self.publish([event])
        if report.rejected:
            raise EventRejected(report.rejected[0].reason, report.rejected[0].error)
        return report.accepted[0]

    def _send(
        self, batch: list[Any], offset: int, report: PublishReport, progress: Callable[[int], None] | None
    ) -> None:
        valid, rejected = prepare(batch, offset)
        report.rejected.extend(rejected)
        if valid:
            with self.client.pipeline(transaction=False) as pipe:
                for _, _, data in valid:
                    pipe.xadd(self.stream, {"event": data})
                ids = pipe.execute()
            report.accepted.extend(event_id for _, event_id, _ in valid)
            report.entry_ids.extend(i.decode() if isinstance(i, bytes) else i for i in ids)
        if progress:
            progress(len(batch))

    def nobody_reading(self, group: str = GROUP) -> str | None:
        """Why no consumer will read the stream's entries for now (no group ``store``, or one
        that never had a consumer), or None when a group with consumers exists. Whether those
        consumers still run cannot be told from Redis: ``wait`` then times out."""
        try:
            groups = self.client.xinfo_groups(self.stream)
        except redis.ResponseError:  # no such stream yet
            groups = []
        found = next((g for g in groups if _text(g.get("name")) == group), None)
        if found is None:
            return f"stream {self.stream!r} has no consumer group {group!r}: no `timeline serve` has read it yet"
        if int(found.get("consumers") or 0) == 0:
            return f"consumer group {group!r} of stream {self.stream!r} has no consumers: no `timeline serve` reads it"
        return None

    def wait(
        self, entry_ids: list[str], *, timeout: float = 60.0, group: str = GROUP, poll: float = 0.1
    ) -> Settlement:
        """Wait (at most ``timeout`` seconds) until the consumer group has settled each entry.

        An entry is settled once the group has delivered it (at or before its last-delivered
        id) and it is no longer pending: the consumer acknowledges an entry only after storing
        it, or in the same script that writes its dead letter (``<stream>:dead``, field
        ``source_id``), so a settled entry without a dead letter is stored."""
        dead_stream = f"{self.stream}:dead"
        open_ = sorted(set(entry_ids), key=_key)
        settled: set[str] = set()
        letters: dict[str, tuple[str, str, str]] = {}
        cursor = f"{_key(open_[0])[0]}-0" if open_ else "-"  # a dead letter is written after its entry
        deadline = time.monotonic() + timeout
        while open_:
            last = self._last_delivered(group)
            delivered = [e for e in open_ if last is not None and _key(e) <= last]
            if delivered:
                pending = self._pending(group, delivered[0], delivered[-1])
                done = {e for e in delivered if e not in pending}
                if done:  # their dead letters, if any, were written with the acknowledgement
                    cursor = self._read_dead(dead_stream, cursor, letters)
                    settled |= done
                    open_ = [e for e in open_ if e not in done]
            if not open_ or time.monotonic() >= deadline:
                break
            time.sleep(poll)
        return Settlement(
            stored=[e for e in entry_ids if e in settled and e not in letters],
            dead={e: letters[e][:2] for e in entry_ids if e in settled and e in letters},
            dead_letters={e: letters[e][2] for e in entry_ids if e in settled and e in letters},
            unsettled=[e for e in entry_ids if e not in settled],
        )

    def _last_delivered(self, group: str) -> tuple[int, int] | None:
        try:
            groups = self.client.xinfo_groups(self.stream)
        except redis.ResponseError:
            return None
        for g in groups:
            if _text(g.get("name")) == group:
                return _key(g.get("last-delivered-id") or "0-0")
        return None

    def _pending(self, group: str, low: str, high: str) -> set[str]:
        """The group's pending entry ids between ``low`` and ``high`` (inclusive)."""
        found: set[str] = set()
        start = low
        while True:
            page = self.client.xpending_range(self.stream, group, min=start, max=high, count=PAGE)
            found.update(_text(p["message_id"]) for p in page)
            if len(page) < PAGE:
                return found
            start = "(" + _text(page[-1]["message_id"])

    def _read_dead(self, dead_stream: str, cursor: str, letters: dict[str, tuple[str, str, str]]) -> str:
        """Read the dead-letter stream from ``cursor`` to its end into ``letters`` (source id ->
        reason, error, dead letter id); the new cursor."""
        while True:
            page = self.client.xrange(dead_stream, min=cursor, max="+", count=PAGE)
            for entry_id, raw in page:
                fields = {_text(k): _text(v) for k, v in raw.items() if _text(k) != "event"}
                letters[fields.get("source_id", "")] = (fields.get("reason", ""), fields.get("error", ""), _text(entry_id))
                cursor = "(" + _text(entry_id)
            if len(page) < PAGE:
                return cursor

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPublisher:
    """The same, for asyncio scrapers (redis.asyncio)."""

    def __init__(self, url: str, stream: str = DEFAULT_STREAM, *, client: redis.asyncio.Redis | None = None) -> None:
        self.stream = stream
        options = reconnecting()
        options["retry"] = AsyncRetry(ExponentialWithJitterBackoff(cap=3.0, base=0.05), retries=25)
        self.client = client or redis.asyncio.Redis.from_url(url, **options)

    async def publish(self, events: Iterable[Any]) -> PublishReport:
        report = PublishReport()
        events = list(events)
        for offset in range(0, len(events), PIPELINE):
            valid, rejected = prepare(events[offset : offset + PIPELINE], offset)
            report.rejected.extend(rejected)
            if not valid:
                continue
            report.entry_ids.extend(await self.send([data for _, _, data in valid]))
            report.accepted.extend(event_id for _, event_id, _ in valid)
        return report

    async def send(self, entries: list[bytes], fields: dict[str, str] | None = None) -> list[str]:
        """XADD already validated event bytes, one entry each, in one round trip; the entry ids.
        ``fields`` go on every entry beside ``event`` (the API's ``traceparent``, say)."""
        if not entries:
            return []
        extra = fields or {}
        async with self.client.pipeline(transaction=False) as pipe:
            for data in entries:
                pipe.xadd(self.stream, {"event": data, **extra})
            ids = await pipe.execute()
        return [i.decode() if isinstance(i, bytes) else i for i in ids]

    async def publish_one(self, event: Any) -> str:
        report = await self.publish([event])
        if report.rejected:
            raise EventRejected(report.rejected[0].reason, report.rejected[0].error)
        return report.accepted[0]

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> "AsyncPublisher":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
