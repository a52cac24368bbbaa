"""Erasure across the service (docs/erasure.md): the store, the projections, and Redis.

``erase_stored`` erases in the store (``events.erasure``) and takes the event out of every
projection (``projections.erasure``); it runs in the service (``POST /events/{id}/erase``) or
in ``timeline erase`` beside a running service: the store's writer lock orders it with the
appends, each projection file's with the projector's batches.

``scrub_redis`` then removes the stream entries and dead letters that carry an erased id
(the stream written again without them: ``XDEL`` would leave their bytes in place), and has
Redis rewrite what it keeps on disk: the append-only file
(``BGREWRITEAOF``, waited for) and, when RDB snapshots are configured, the snapshot
(``BGSAVE``, waited for).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from events.erasure import Erasure
from events.models import EventRejected, parse_event_bytes
from projections.erasure import Erased, capture

from .entries import RepeatedFields, keep_repeated_fields
from .service import TimelineService
from .settings import Settings

SCAN_CHUNK = 1000  # stream entries read per XRANGE
PERSIST_TIMEOUT = 120.0  # seconds to wait for Redis to rewrite its files


def cli_user() -> str:
    """Who erases from the command line: the operating-system user."""
    try:
        return f"os-user:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container, say)
        import os

        return f"os-uid:{os.getuid()}"


def token_name(settings: Settings) -> str:
    """Who erases through the API. The API has one token and tokens have no names, so the name is
    ``TIMELINE_API_TOKEN_NAME`` when set, else the first 12 hex digits of the token's SHA-256
    (which names the token without revealing it)."""
    if settings.api_token_name:
        return f"api-token:{settings.api_token_name}"
    token = settings.token or ""
    return f"api-token:sha256:{hashlib.sha256(token.encode()).hexdigest()[:12]}"


def erase_stored(service: TimelineService, event_id: str, reason: str, who: str) -> tuple[Erasure, bool]:
    """Erase in the store, then in every projection (raises ``events.erasure.ErasureRefused``);
    return the erasure and whether it had been made before (then nothing is erased again: the
    files are scrubbed again and the caller scrubs Redis again: for a log that readers kept busy,
    or an entry a consumer had in hand during the first scrub)."""
    existing = service.store.erasure_of(event_id)
    if existing is not None:  # the files are scrubbed again
        with service.append_lock:
            service.store.scrub()
        service.engine.remove(None)
        return existing, True
    gone: list[Erased | None] = []
    with service.append_lock:  # the writer's connection is the consumer's too
        erasure = service.store.erase(event_id, reason, who, before=lambda store: gone.append(capture(store, event_id)))
    if gone and gone[0] is not None:
        service.engine.remove(gone[0])
    return erasure, False


@dataclass
class RedisScrub:
    """What ``scrub_redis`` did: entries deleted per stream, and the files Redis rewrote."""

    deleted: dict[str, int] = field(default_factory=dict)
    rewritten: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"deleted": self.deleted, "rewritten": self.rewritten, "notes": self.notes}


def scrub_redis(client: redis.Redis, streams: Iterable[str], ids: set[str]) -> RedisScrub:
    """Delete every entry of these streams that carries one of these event ids, then have Redis
    rewrite its append-only file and its snapshot (each waited for)."""
    result = RedisScrub()
    keep_repeated_fields(client)  # an entry naming ``event`` twice is read with both values
    for stream in streams:
        result.deleted[stream] = _delete_entries(client, stream, ids)
    _rewrite_files(client, result)
    return result


def carried_ids(fields: dict[bytes, bytes]) -> set[str]:
    """The event ids an entry carries: its ``event`` field's id (given, or derived from a valid
    event's content), and for a dead letter of an entry without one, the ids in its fields. An
    entry naming ``event`` more than once (``RepeatedFields``) carries each value's; so does
    the dead letter of one (its ``event``: the entry's fields, ``event`` named as often)."""
    if isinstance(fields, RepeatedFields):
        raws = [value for name, value in fields.pairs if name == b"event"]
    else:
        raws = [fields[b"event"]] if b"event" in fields else []
    out: set[str] = set()
    for raw in raws:
        out |= _ids_in(raw)
    return out


class _Members(list):  # type: ignore[type-arg]
    """A JSON object's members, in order, a repeated name as often as it is written."""


def _ids_in(raw: bytes) -> set[str]:
    out: set[str] = set()
    try:
        out.add(parse_event_bytes(raw).id)
    except EventRejected:
        pass
    try:
        value = json.loads(raw, object_pairs_hook=_Members)
    except (ValueError, RecursionError):
        return out
    if isinstance(value, _Members):
        for name, member in value:
            if name == "id" and isinstance(member, str):
                out.add(member)
            elif name == "event" and isinstance(member, str):  # a dead letter's entry fields
                try:
                    inner = json.loads(member, object_pairs_hook=_Members)
                except (ValueError, RecursionError):
                    continue
                if isinstance(inner, _Members):
                    out.update(v for k, v in inner if k == "id" and isinstance(v, str))
    return out


def _delete_entries(client: redis.Redis, stream: str, ids: set[str]) -> int:
    doomed: list[bytes] = []
    start = "-"
    while True:
        entries = client.xrange(stream, min=start, count=SCAN_CHUNK)
        doomed += [entry_id for entry_id, fields in entries if carried_ids(fields) & ids]
        if len(entries) < SCAN_CHUNK:
            break
        start = "(" + entries[-1][0].decode()
    if doomed:
        client.eval(WITHOUT_ENTRIES, 1, stream, *doomed)
    return len(doomed)


# XDEL only flags an entry as deleted inside its node: its bytes stay in memory, in DUMP and in
# the snapshot and append-only file Redis writes, until every entry of the node is deleted. So
# the stream is written again without the doomed entries, atomically (one script): its entries,
# last id, consumer groups (last delivered id), consumers and pending entries (owner, idle time,
# delivery count: XCLAIM ... FORCE) as they were.
WITHOUT_ENTRIES = """
local key = KEYS[1]
local doomed = {}
for _, id in ipairs(ARGV) do doomed[id] = true end
if redis.call('EXISTS', key) == 0 then return 0 end
local function map(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local last = map(redis.call('XINFO', 'STREAM', key))['last-generated-id']
local entries = redis.call('XRANGE', key, '-', '+')
local groups = {}
for _, flat in ipairs(redis.call('XINFO', 'GROUPS', key)) do
  local g = map(flat)
  local consumers = {}
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', key, g['name'])) do
    consumers[#consumers + 1] = map(c)['name']
  end
  local pending = {}
  if g['pending'] > 0 then pending = redis.call('XPENDING', key, g['name'], '-', '+', g['pending']) end
  groups[#groups + 1] = {g['name'], g['last-delivered-id'], consumers, pending}
end
redis.call('DEL', key)
for _, e in ipairs(entries) do
  if not doomed[e[1]] then redis.call('XADD', key, e[1], unpack(e[2])) end
end
for _, g in ipairs(groups) do
  redis.call('XGROUP', 'CREATE', key, g[1], g[2], 'MKSTREAM')
  for _, name in ipairs(g[3]) do redis.call('XGROUP', 'CREATECONSUMER', key, g[1], name) end
  for _, p in ipairs(g[4]) do
    if not doomed[p[1]] then
      redis.call('XCLAIM', key, g[1], p[2], 0, p[1], 'IDLE', p[3], 'RETRYCOUNT', p[4], 'FORCE', 'JUSTID')
    end
  end
end
if redis.call('EXISTS', key) == 1 then redis.call('XSETID', key, last) end
return #ARGV
"""


def _rewrite_files(client: redis.Redis, result: RedisScrub) -> None:
    """BGREWRITEAOF, then BGSAVE when snapshots are configured, each waited for. A rewrite asked
    for while another runs is scheduled after it (Redis starts it in the same step that ends the
    wait for it), so "none running and none scheduled" means ours has run, on Redis 6 and 7 alike."""
    info = client.info("persistence")
    if info.get("aof_enabled"):
        client.bgrewriteaof()
        _wait(client, lambda i: not i.get("aof_rewrite_in_progress") and not i.get("aof_rewrite_scheduled"),
              "the append-only file's rewrite")
        result.rewritten.append("append-only file (BGREWRITEAOF)")
    try:
        save = client.config_get("save").get("save", "")
    except redis.ResponseError:  # CONFIG is disabled (a managed Redis)
        result.notes.append("CONFIG GET save refused: whether Redis keeps RDB snapshots is unknown")
        return
    if save.strip():
        before = client.lastsave()
        try:
            client.bgsave(schedule=True)
        except redis.ResponseError as exc:
            result.notes.append(f"BGSAVE: {exc}")
            return
        _wait(client, lambda i: not i.get("rdb_bgsave_in_progress") and client.lastsave() > before,
              "the snapshot (BGSAVE)")
        result.rewritten.append("snapshot (BGSAVE)")


def _wait(client: redis.Redis, done: Any, what: str) -> None:
    deadline = time.monotonic() + PERSIST_TIMEOUT
    while not done(client.info("persistence")):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis did not finish {what} within {PERSIST_TIMEOUT:g} s")
        time.sleep(0.05)
