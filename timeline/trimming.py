"""Trimming the events stream once its entries are acknowledged by every consumer group.

The store is the record; the stream is transport. An entry can go once every group of the
stream has acknowledged it: not only ``store`` (another group reading the same stream must not
lose what it has not read yet). For each group, the first entry it still needs is its oldest
pending entry (delivered, not acknowledged; the XPENDING summary's smallest id), or, with none
pending, the entry after its ``last-delivered-id``. The stream is trimmed with ``XTRIM MINID ~``
below the smallest of these over all groups, minus a margin of ``keep`` acknowledged entries.

Everything runs in one Lua script, so no group can be created, deliver or claim entries between
reading the groups and trimming: Redis runs a script atomically. The ``~`` lets Redis drop only
whole internal nodes of the stream, which is cheap and never removes an entry at or above the
bound. A stream without groups is never trimmed (nobody has read anything yet). Works on Redis
6.2 (XTRIM MINID, exclusive ranges) and later; 6.2's XINFO GROUPS has no ``lag``, which is why
the bound comes from ``last-delivered-id`` and XPENDING.

The dead-letter stream is never trimmed here: its entries stay until an operator removes them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TRIM_SCRIPT", "trim_acknowledged"]

# KEYS[1]: the stream. ARGV[1]: acknowledged entries to keep. Returns {entries removed, the
# bound (the first id some group still needs) or false when nothing may be trimmed}.
TRIM_SCRIPT = """
local key = KEYS[1]
local keep = tonumber(ARGV[1])
if redis.call('EXISTS', key) == 0 then return {0, false} end
local groups = redis.call('XINFO', 'GROUPS', key)
if #groups == 0 then return {0, false} end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a_ms, a_seq, b_ms, b_seq)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end
local bound_ms, bound_seq = nil, nil
for _, group in ipairs(groups) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local ms, seq
  if tonumber(info['pending']) > 0 then
    local summary = redis.call('XPENDING', key, info['name'])
    ms, seq = parse(summary[2])  -- the oldest entry delivered and not acknowledged
  else
    ms, seq = parse(info['last-delivered-id'])
    -- the entry after the last delivered one; at the largest exact sequence number, keep it
    if seq < 9007199254740991 then seq = seq + 1 end
  end
  if bound_ms == nil or less(ms, seq, bound_ms, bound_seq) then bound_ms, bound_seq = ms, seq end
end
local bound = string.format('%.0f-%.0f', bound_ms, bound_seq)
-- Nothing below the bound, or no more than the margin in the whole stream: nothing to do (and
-- XREVRANGE from a bound before the first entry would walk the stream).
local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
if #first == 0 or redis.call('XLEN', key) <= keep then return {0, bound} end
local first_ms, first_seq = parse(first[1][1])
if not less(first_ms, first_seq, bound_ms, bound_seq) then return {0, bound} end
local minid = bound
if keep > 0 then
  local kept = redis.call('XREVRANGE', key, '(' .. bound, '-', 'COUNT', keep)
  if #kept < keep then return {0, bound} end
  minid = kept[#kept][1]
end
return {redis.call('XTRIM', key, 'MINID', '~', minid), bound}
"""


async def trim_acknowledged(script: Any, stream: str, keep: int) -> tuple[int, str | None]:
    """Run :data:`TRIM_SCRIPT` (registered on a ``redis.asyncio`` client with
    ``register_script``); returns (entries removed, the first id some group still needs)."""
    removed, bound = await script(keys=[stream], args=[keep])
    if isinstance(bound, bytes):
        bound = bound.decode()
    return int(removed), bound or None
