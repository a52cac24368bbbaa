"""The consumer group's backlog, for ``/health``, without reading a single stream entry.

The backlog is what the stream holds that is not stored yet: the entries the group was given
and has not acknowledged (XINFO GROUPS ``pending``) plus those not given to it yet. Redis 7
keeps the second number (the group's ``lag``); Redis 6.2 (the embedded server) does not, and
counting the entries after the group's ``last-delivered-id`` means reading them (a 102,000-entry
backlog took 0.6-0.9 s a call, and 20 concurrent calls grew Redis by 1.8 GB). So on any version
the entries not yet given are known from counts kept in a hash beside the stream,
``<stream>:counts``:

- ``trimmed``: the entries the trimmer removed (``timeline.trimming`` adds them in the same
  script as its XTRIM). The stream was given ``XLEN + trimmed`` entries in all.
- ``delivered:<group>``: the entries the group was given, added by the consumer for each batch
  it reads (new entries only; entries claimed from another consumer were given before).
- ``anchor:<group>``: the ``last-delivered-id`` at which ``delivered`` was last set to the exact
  number. The consumer counts only entries after it, so a batch read before the anchor was
  set (and counted in it) is not counted twice.

Entries not given = ``XLEN + trimmed - delivered`` (clamped to what the stream can hold). When
the group has been given the stream's last entry, that number is 0 whatever the counts say:
the backlog is the pending count, and the counts are anchored anew (checked by ``/health`` and
after each batch the consumer counts). A consumer that died
between reading a batch and counting it leaves ``delivered`` short by that batch, so the backlog
reads high by it until the group next catches up, which corrects it. While a batch is between
its read and its count, it is counted twice (pending and not given) for that moment. A group
created elsewhere (not by the consumer) has no anchor until it first catches up: until then the
backlog is the stream's length, an upper bound (``exact`` false).

Each step is one Lua script (atomic: nothing moves between XLEN, the group's info and the
counts) of XINFO GROUPS, XINFO STREAM, XLEN and hash commands; never XRANGE. Also exact on Redis 7
with ``lag`` (used when Redis has it).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from .trimming import ID_ORDER_LUA

__all__ = ["StreamBacklog", "counts_key"]


def counts_key(stream: str) -> str:
    """The hash beside ``stream`` that keeps its backlog counts."""
    return f"{stream}:counts"


# Lua shared by the scripts below: the group's XINFO GROUPS entry (nil when there is no such
# group), and anchoring the counts when the group has been given the stream's last entry.
_GROUP_LUA = ID_ORDER_LUA + """
local function group_info(key, name)
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local info = {}
    for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
    if info['name'] == name then return info end
  end
  return nil
end
local function anchored_if_caught_up(key, counts, name, group)
  local reply = redis.call('XINFO', 'STREAM', key)
  local stream = {}
  for i = 1, #reply, 2 do stream[reply[i]] = reply[i + 1] end
  local last = group['last-delivered-id']
  if less(last, stream['last-generated-id']) then return false end
  local trimmed = tonumber(redis.call('HGET', counts, 'trimmed') or '0')
  redis.call('HSET', counts, 'delivered:' .. name, redis.call('XLEN', key) + trimmed, 'anchor:' .. name, last)
  return true
end
"""

# KEYS[1]: the stream, KEYS[2]: its counts. ARGV[1]: the group. Creates the group at 0 (and the
# stream) unless it exists; a group it creates is anchored: nothing given yet. Returns 1 when
# it created the group.
CREATE_GROUP_SCRIPT = """
local reply = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if type(reply) == 'table' and reply.err then
  if string.find(reply.err, 'BUSYGROUP') then return 0 end
  return redis.error_reply(reply.err)
end
local trimmed = tonumber(redis.call('HGET', KEYS[2], 'trimmed') or '0')
redis.call('HSET', KEYS[2], 'delivered:' .. ARGV[1], trimmed, 'anchor:' .. ARGV[1], '0-0')
return 1
"""

# KEYS[1]: the stream, KEYS[2]: its counts. ARGV[1]: the group, ARGV[2]: the first id of a batch
# of new entries read by the group, ARGV[3]: their number. XREADGROUP moves last-delivered-id
# to a batch's last id at once, so a batch is wholly after the anchor (read since: counted) or
# wholly at or before it (already counted in the anchor). A group that has been given the last
# entry is anchored anew. Returns the number counted.
COUNT_DELIVERED_SCRIPT = _GROUP_LUA + """
local key, counts, name = KEYS[1], KEYS[2], ARGV[1]
local anchor = redis.call('HGET', counts, 'anchor:' .. name)
local n = 0
if anchor and less(anchor, ARGV[2]) then
  n = tonumber(ARGV[3])
  redis.call('HINCRBY', counts, 'delivered:' .. name, n)
end
local group = group_info(key, name)
if group then anchored_if_caught_up(key, counts, name, group) end
return n
"""

# KEYS[1]: the stream, KEYS[2]: its counts. ARGV[1]: the group. Returns {pending, not yet given,
# exact (1/0), the group's last-delivered-id}: the backlog is the first two together.
BACKLOG_SCRIPT = _GROUP_LUA + """
local key, counts, name = KEYS[1], KEYS[2], ARGV[1]
if redis.call('EXISTS', key) == 0 then return {0, 0, 1, '0-0'} end
local length = redis.call('XLEN', key)
local group = group_info(key, name)
if group == nil then return {0, length, 1, '0-0'} end  -- nothing given to it: the whole stream
local pending = tonumber(group['pending'])
local last = group['last-delivered-id']
if anchored_if_caught_up(key, counts, name, group) then return {pending, 0, 1, last} end
if group['lag'] then return {pending, tonumber(group['lag']), 1, last} end  -- Redis 7 keeps it
if not redis.call('HGET', counts, 'anchor:' .. name) then return {pending, length - pending, 0, last} end  -- at most
local trimmed = tonumber(redis.call('HGET', counts, 'trimmed') or '0')
local delivered = tonumber(redis.call('HGET', counts, 'delivered:' .. name) or '0')
local waiting = math.max(0, math.min(length + trimmed - delivered, length - pending))
return {pending, waiting, 1, last}
"""


class StreamBacklog:
    """The backlog counts of one consumer group of one stream, on a ``redis.asyncio`` client."""

    def __init__(self, redis: Redis, stream: str, group: str) -> None:
        self.stream, self.group, self.counts = stream, group, counts_key(stream)
        self._create = redis.register_script(CREATE_GROUP_SCRIPT)
        self._count = redis.register_script(COUNT_DELIVERED_SCRIPT)
        self._measure = redis.register_script(BACKLOG_SCRIPT)

    async def ensure_group(self) -> bool:
        """Create the group at ``0`` (and the stream) unless it exists, so nothing published
        before is skipped; True when this call created it."""
        return bool(await self._create(keys=[self.stream, self.counts], args=[self.group]))

    async def delivered(self, ids: list[Any]) -> int:
        """Count a batch of new entries the group was given (XREADGROUP ``>``), in stream order."""
        if not ids:
            return 0
        first = ids[0].decode() if isinstance(ids[0], bytes) else str(ids[0])
        return int(await self._count(keys=[self.stream, self.counts], args=[self.group, first, len(ids)]))

    async def measure(self) -> tuple[int, bool]:
        """(entries not yet stored, whether that is exact; otherwise an upper bound)."""
        pending, waiting, exact, _ = await self.parts()
        return pending + waiting, exact

    async def parts(self) -> tuple[int, int, bool, str]:
        """(entries pending in the group, entries not yet given to it, whether that is exact,
        the group's last-delivered-id)."""
        pending, waiting, exact, last = await self._measure(keys=[self.stream, self.counts], args=[self.group])
        return int(pending), int(waiting), bool(exact), last.decode() if isinstance(last, bytes) else str(last)
