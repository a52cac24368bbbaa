"""Dead letters an operator can work with: read them a page at a time, export them, publish them
again (edited, or unchanged after a code fix) and remove each once its event is stored, or drop
them after a decision (docs/dead-letters.md).

Everything here pages: a page of the dead-letter stream is read with ``XRANGE … COUNT``, and
republishing goes a window at a time (publish the window, wait until the consumer has settled
it, remove what was stored, read the next window), so memory stays flat whatever the stream
holds. A dead letter is removed only once its event is in the store (``Publisher.wait``): two
operators at once, or a command killed half-way, can publish an event twice but never lose a
dead letter, and the store's idempotency (the same id, or for an event without one the same
content and so the same derived id) makes the second copy a no-op.

Every removal is written to the audit stream (``<dead-letter stream>:audit``) in the same Lua
script as the ``XDEL``, and only when that ``XDEL`` removed the entry: a removal is audited once.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from .entries import repeats_event

if TYPE_CHECKING:
    import redis

# ``redis`` and ``.publisher`` (which imports it, and ``opentelemetry`` through it: ~0.3 s) are
# imported by what talks to Redis (``Mender``), not with this module: ``timeline.cli`` imports
# it for its reasons, and a command that uses no Redis (``timeline import`` into SQLite) does not
# load them (docs/performance.md, Session 11).

__all__ = [
    "REASONS",
    "BadLine",
    "DeadLetter",
    "Mender",
    "Outcome",
    "Page",
    "Reason",
    "audit_stream",
    "drop",
    "event_bytes",
    "fetch",
    "last_id",
    "not_replayed",
    "pages",
    "parse_cursor",
    "read_page",
]

Reason = Literal["no_event", "too_large", "bad_json", "schema", "id_conflict"]  # docs/contract.md §3
REASONS: tuple[str, ...] = get_args(Reason)
CHUNK = 100  # entries read a round trip while a page is filled
SCAN_BUDGET = 10_000  # entries examined for one page at most (a filter that matches few)
BYTE_BUDGET = 8 * 1024 * 1024  # event bytes in one page at most (one letter at least)
WINDOW = 1000  # dead letters published, waited for and removed together
_ENTRY_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_PART = 2**64 - 1
_LAST_ID = f"{_MAX_PART}-{_MAX_PART}"


def audit_stream(dead_stream: str) -> str:
    return f"{dead_stream}:audit"


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def parse_cursor(text: str) -> str:
    """A dead-letter stream id (``1733380000000-0``), or ValueError naming what is wrong."""
    match = _ENTRY_ID.fullmatch(text)
    if match is None or int(match[1]) > _MAX_PART or int(match[2]) > _MAX_PART:
        raise ValueError("cursor: not a cursor this endpoint gave (a dead-letter id such as 1733380000000-0)")
    return text


def _is_id(text: str) -> bool:
    try:
        parse_cursor(text)
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class DeadLetter:
    """One entry of the dead-letter stream: the fields of docs/contract.md §3, and any other."""

    id: str
    reason: str | None
    error: str | None
    source_id: str | None
    event: bytes | None
    other: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_entry(cls, entry_id: Any, fields: dict[bytes, bytes]) -> DeadLetter:
        known = {b"reason", b"error", b"source_id", b"event"}
        return cls(
            id=_text(entry_id) or "",
            reason=_text(fields.get(b"reason")),
            error=_text(fields.get(b"error")),
            source_id=_text(fields.get(b"source_id")),
            event=fields.get(b"event"),
            other={_text(k) or "": _text(v) or "" for k, v in fields.items() if k not in known},
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``event`` is the original bytes as text when they are UTF-8; when they are
        not, ``event`` is null and ``event_base64`` holds them (null otherwise)."""
        text, b64 = None, None
        if self.event is not None:
            try:
                text = self.event.decode("utf-8")
            except UnicodeDecodeError:
                b64 = base64.b64encode(self.event).decode("ascii")
        return {
            **self.other, "id": self.id, "reason": self.reason, "error": self.error, "source_id": self.source_id,
            "event": text, "event_base64": b64,
        }


def not_replayed(letter: DeadLetter) -> str | None:
    """Why a dead letter's ``event`` is not an event to publish again as it is (None: it is):
    a ``no_event`` letter's, and one of an entry with several ``event`` fields (both hold the
    entry's fields as a JSON object; picking one value would be a guess)."""
    if letter.reason == "no_event":
        return "the entry had no event to publish again: resubmit it with one, or drop it"
    count = repeats_event(letter.reason, letter.error)
    if count:
        return (
            f"the entry had {count} 'event' fields, not one event to publish again:"
            " resubmit it with the one meant, or drop it"
        )
    return None


@dataclass(slots=True)
class Page:
    dead_letters: list[DeadLetter]
    next_cursor: str | None  # None: the stream's end was reached


def read_page(
    client: redis.Redis, dead_stream: str, *, reason: str | None = None, limit: int = 50, cursor: str | None = None,
    upto: str = "+", scan_budget: int = SCAN_BUDGET, byte_budget: int = BYTE_BUDGET,
) -> Page:
    """Up to ``limit`` dead letters after ``cursor`` (of ``reason`` when given), oldest first.

    The work is bounded: at most ``scan_budget`` entries examined and about ``byte_budget`` event
    bytes kept, so a page can be short while ``next_cursor`` still says there is more."""
    found: list[DeadLetter] = []
    after, scanned, size = cursor, 0, 0
    if cursor == _LAST_ID:  # nothing can come after it (and Redis refuses the interval)
        return Page(found, None)
    while True:
        count = min(CHUNK, max(limit - len(found), 1)) if reason is None else CHUNK
        start = f"({after}" if after else "-"
        entries = client.xrange(dead_stream, min=start, max=upto, count=count)
        for entry_id, fields in entries:
            after, scanned = _text(entry_id), scanned + 1
            if reason is None or fields.get(b"reason") == reason.encode():
                letter = DeadLetter.from_entry(entry_id, fields)
                found.append(letter)
                size += len(letter.event or b"")
            if len(found) >= limit or scanned >= scan_budget or size >= byte_budget:
                return Page(found, after)
        if len(entries) < count:
            return Page(found, None)


def pages(
    client: redis.Redis, dead_stream: str, *, reason: str | None = None, size: int = WINDOW, upto: str | None = None
) -> Iterator[list[DeadLetter]]:
    """The dead letters (of ``reason``) a page at a time, up to ``upto`` (default: the last one
    there is now, so what a replay dead-letters again is not read again)."""
    end = upto or last_id(client, dead_stream)
    if end is None:
        return
    cursor: str | None = None
    while True:
        page = read_page(client, dead_stream, reason=reason, limit=size, cursor=cursor, upto=end)
        if page.dead_letters:
            yield page.dead_letters
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def last_id(client: redis.Redis, dead_stream: str) -> str | None:
    newest = client.xrevrange(dead_stream, count=1)
    return _text(newest[0][0]) if newest else None


def fetch(client: redis.Redis, dead_stream: str, ids: list[str]) -> dict[str, DeadLetter]:
    """The dead letters of these ids that exist (one round trip); a text that is no id is none."""
    ids = [i for i in ids if _is_id(i)]
    with client.pipeline(transaction=False) as pipe:
        for letter_id in ids:
            pipe.xrange(dead_stream, min=letter_id, max=letter_id, count=1)
        found = pipe.execute()
    return {i: DeadLetter.from_entry(e[0][0], e[0][1]) for i, e in zip(ids, found) if e}


class BadLine(ValueError):
    """A line of a resubmit file that cannot be read: the message names the field."""


def event_bytes(line: dict[str, Any]) -> bytes:
    """What a resubmit line publishes: ``event`` as text (UTF-8, sent as it is), or as a JSON
    value (written compactly); ``event_base64`` when ``event`` is null."""
    event = line.get("event")
    if isinstance(event, str):
        try:
            return event.encode("utf-8")
        except UnicodeEncodeError:
            raise BadLine("event: holds a lone surrogate; write the event as a JSON value, or in event_base64") from None
    if isinstance(event, (dict, list)):
        return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8", "surrogatepass")
    if event is None and isinstance(line.get("event_base64"), str):
        try:
            return base64.b64decode(line["event_base64"], validate=True)
        except (binascii.Error, ValueError):
            raise BadLine("event_base64: not base64") from None
    raise BadLine("event: missing (give the event as text or a JSON object, or event_base64)")


# --- removing, with the audit record -------------------------------------------------------

# KEYS[1]: the dead-letter stream, KEYS[2]: the audit stream. ARGV: one JSON array each, the
# audit record's fields and values in turn, the first pair `dead_letter` and the id to remove.
# Returns the ids this call removed.
REMOVE_SCRIPT = """
local removed = {}
for i = 1, #ARGV do
  local fields = cjson.decode(ARGV[i])
  if redis.call('XDEL', KEYS[1], fields[2]) == 1 then
    redis.call('XADD', KEYS[2], '*', unpack(fields))
    removed[#removed + 1] = fields[2]
  end
end
return removed
"""


def operator() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def remove(client: redis.Redis, dead_stream: str, records: list[dict[str, str]]) -> set[str]:
    """XDEL each record's ``dead_letter`` and audit it, atomically; the ids removed by this call
    (another operator's call may have removed some first)."""
    if not records:
        return set()
    script = client.register_script(REMOVE_SCRIPT)
    who = operator()
    args = [
        json.dumps([part for pair in {**record, "operator": who}.items() for part in pair], ensure_ascii=False)
        for record in records
    ]
    removed = script(keys=[dead_stream, audit_stream(dead_stream)], args=args)
    return {_text(r) or "" for r in removed}


def drop(client: redis.Redis, dead_stream: str, ids: list[str]) -> tuple[list[DeadLetter], list[str]]:
    """Remove these dead letters after an operator's decision: (the ones removed, the ids not found)."""
    found = fetch(client, dead_stream, ids)
    records = [_record("dropped", "drop", letter) for letter in found.values()]
    removed = remove(client, dead_stream, records)
    return [found[i] for i in ids if i in removed], [i for i in ids if i not in removed]


def _record(action: str, command: str, letter: DeadLetter, **more: str) -> dict[str, str]:
    return {
        "dead_letter": letter.id, "action": action, "command": command, "reason": letter.reason or "",
        "source_id": letter.source_id or "", **more,
    }


# --- publishing again ----------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What became of one dead letter published again."""

    dead_letter: str
    status: str  # stored, dead (again), unsettled, missing (gone already), skipped (nothing to send)
    reason: str = ""
    error: str = ""
    now: str = ""  # stored: the new stream entry; dead: the dead letter that replaces this one


class Mender:
    """Publishes dead letters' events again, a window at a time, and removes each dead letter
    once its event is stored. One dead-lettered again is replaced by its new dead letter (which
    holds the bytes just sent and the new reason; the audit record links the two)."""

    def __init__(self, client: redis.Redis, stream: str, command: str, *, timeout: float = 60.0) -> None:
        self.client = client
        self.stream = stream
        self.dead_stream = f"{stream}:dead"
        self.command = command
        self.timeout = timeout
        from .publisher import GROUP, Publisher

        self.publisher = Publisher("", stream, client=client)
        self.group = GROUP
        self.stopped = False  # the last run stopped early: a window was not settled at all

    def nobody_reading(self) -> str | None:
        """Why nothing would store what is published (no consumer group: no ``timeline serve``
        ever read the stream), or None. A group whose consumers have stopped cannot be told from
        one that is idle: then a window is not settled in time and the run stops there."""
        import redis

        try:
            groups = self.client.xinfo_groups(self.stream)
        except redis.ResponseError:  # no such stream
            groups = []
        if any(_text(g.get("name")) == self.group for g in groups):
            return None
        return f"stream {self.stream!r} has no consumer group {self.group!r}: no `timeline serve` has read it yet"

    def run(self, items: Iterable[tuple[DeadLetter, bytes | None]]) -> Iterator[Outcome]:
        """Each (dead letter, bytes to publish; None: nothing to send), settled a window at a
        time. A window of which nothing settled in time ends the run (``stopped`` says so): the
        rest is not published while nothing stores it."""
        self.stopped = False
        window: list[tuple[DeadLetter, bytes | None]] = []
        for item in items:
            window.append(item)
            if len(window) >= WINDOW:
                yield from self._settle_or_stop(window)
                if self.stopped:
                    return
                window = []
        if window:
            yield from self._settle_or_stop(window)

    def _settle_or_stop(self, window: list[tuple[DeadLetter, bytes | None]]) -> list[Outcome]:
        outcomes = self._settle(window)
        sent = [o for o in outcomes if o.status not in ("missing", "skipped")]
        self.stopped = bool(sent) and all(o.status == "unsettled" for o in sent)
        return outcomes

    def _settle(self, window: list[tuple[DeadLetter, bytes | None]]) -> list[Outcome]:
        present = fetch(self.client, self.dead_stream, [letter.id for letter, _ in window])
        outcomes: dict[str, Outcome] = {}
        sending: list[tuple[DeadLetter, bytes]] = []
        for letter, data in window:
            if letter.id not in present:
                outcomes[letter.id] = Outcome(letter.id, "missing")
            elif data is None:
                outcomes[letter.id] = Outcome(
                    letter.id, "skipped", present[letter.id].reason or "",
                    not_replayed(present[letter.id]) or "the dead letter has no event to publish again",
                )
            else:
                sending.append((present[letter.id], data))
        entries = self._publish([data for _, data in sending])
        settlement = self.publisher.wait(entries, timeout=self.timeout, group=self.group)
        stored, records = set(settlement.stored), []
        for (letter, _), entry in zip(sending, entries):
            if entry in stored:
                records.append(_record("stored", self.command, letter, entry=entry))
                outcomes[letter.id] = Outcome(letter.id, "stored", now=entry)
            elif entry in settlement.dead:
                reason, error = settlement.dead[entry]
                now = settlement.dead_letters[entry]
                records.append(_record("replaced", self.command, letter, entry=entry, replaced_by=now, new_reason=reason))
                outcomes[letter.id] = Outcome(letter.id, "dead", reason, error, now)
            else:
                outcomes[letter.id] = Outcome(letter.id, "unsettled", now=entry)
        remove(self.client, self.dead_stream, records)
        return [outcomes[letter.id] for letter, _ in window]

    def _publish(self, datas: list[bytes]) -> list[str]:
        if not datas:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for data in datas:
                pipe.xadd(self.stream, {"event": data})
            return [_text(i) or "" for i in pipe.execute()]
