"""Stream entries read with every field they hold, a repeated field name included.

Redis keeps an entry's fields as the list of pairs it was given: ``XADD s * event A event B``
stores both values. redis-py reads them into a dict (``pairs_to_dict``), where the last value of
a name wins, so ``A`` would never reach the consumer: neither stored nor dead-lettered, its bytes
lost. ``keep_repeated_fields`` has a client read entries (``XREADGROUP``, ``XAUTOCLAIM``,
``XRANGE``, …) as redis-py does, except that an entry naming a field more than once comes as a
``RepeatedFields``: the same dict, and every pair in order (``pairs``), for the consumer to
dead-letter with all its bytes (docs/contract.md §3, docs/dead-letters.md).

What it costs: the dict is built as redis-py builds it, and its length compared with the
number of pairs (one comparison an entry; a repeated name is the only way they differ).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["RepeatedFields", "keep_repeated_fields", "read_entries", "repeated_event", "repeats_event"]


def repeated_event(count: int) -> str:
    """The ``error`` of the dead letter of an entry with ``count`` (more than one) ``event`` fields."""
    return f"event: the entry has {count} 'event' fields; publish one event per entry"


_REPEATED_EVENT = re.compile(r"event: the entry has ([0-9]+) 'event' fields; publish one event per entry")


def repeats_event(reason: str | None, error: str | None) -> int:
    """How many ``event`` fields the entry of a dead letter of this reason and error held, when
    more than one (its ``event`` is then the entry's fields, not an event); else 0."""
    match = _REPEATED_EVENT.fullmatch(error or "") if reason == "schema" else None
    return int(match[1]) if match else 0


class RepeatedFields(dict[bytes, bytes]):
    """The fields of an entry that names one more than once: as a dict, what redis-py reads (the
    last value of each name); ``pairs``: every (name, value) in the entry's order."""

    def __init__(self, fields: dict[bytes, bytes], pairs: Sequence[bytes]) -> None:
        super().__init__(fields)
        it = iter(pairs)
        self.pairs: list[tuple[bytes, bytes]] = list(zip(it, it))

    def count(self, name: bytes) -> int:
        """How many fields of this name the entry holds."""
        return sum(1 for key, _ in self.pairs if key == name)


def _fields(pairs: Sequence[bytes] | None) -> dict[bytes, bytes]:
    if pairs is None:  # an entry deleted while pending (XREADGROUP from 0 answers it so)
        return {}
    it = iter(pairs)
    fields = dict(zip(it, it))
    if 2 * len(fields) != len(pairs):
        return RepeatedFields(fields, pairs)
    return fields


def read_entries(response: Any, **options: Any) -> Any:
    """``redis._parsers.helpers.parse_stream_list``, keeping a repeated field (XRANGE, XREVRANGE)."""
    if response is None:
        return None
    claim = "claim_min_idle_time" in options  # XREADGROUP … CLAIM: two more items an entry
    out: list[tuple[Any, ...]] = []
    for entry in response:
        if entry is None:
            out.append((None, None))
        elif claim:
            out.append((entry[0], _fields(entry[1]), *entry[2:]))
        else:
            out.append((entry[0], _fields(entry[1])))
    return out


def _read_streams(response: Any, **options: Any) -> Any:
    """XREAD, XREADGROUP: ``[[stream, entries], …]`` whichever protocol answered (RESP2: a list,
    RESP3: a map), the shape redis-py's default (legacy) callbacks give and FastStream reads."""
    if not response:
        return []
    streams = response.items() if isinstance(response, dict) else response
    return [[stream, read_entries(entries, **options)] for stream, entries in streams]


def _autoclaim(response: Any, **options: Any) -> Any:
    """XAUTOCLAIM (``redis._parsers.helpers.parse_xautoclaim``)."""
    if options.get("parse_justid", False):
        return response[1]
    response[1] = read_entries(response[1])
    return response


def _claim(response: Any, **options: Any) -> Any:
    """XCLAIM (``redis._parsers.helpers.parse_xclaim``)."""
    if options.get("parse_justid", False):
        return response
    return read_entries(response)


CALLBACKS = {
    "XREAD": _read_streams, "XREADGROUP": _read_streams, "XAUTOCLAIM": _autoclaim, "XCLAIM": _claim,
    "XRANGE": read_entries, "XREVRANGE": read_entries,
}

Client = TypeVar("Client")


def keep_repeated_fields(client: Client) -> Client:
    """Have this redis-py client (sync or asyncio) read stream entries with ``RepeatedFields``;
    every other answer, and an entry whose names are distinct, reads as before."""
    for command, callback in CALLBACKS.items():
        client.set_response_callback(command, callback)  # type: ignore[attr-defined]
    return client
