"""Trimming the events stream once its entries are acknowledged by every consumer group.

The store is the record; the stream is transport. An entry can go once every group of the
stream has acknowledged it: not only ``store`` (another group reading the same stream must not
lose what it has not read yet). For each group, the first entry it still needs is its oldest
pending entry (delivered, not acknowledged; the XPENDING summary's smallest id), or, with none
pending, the first entry after its ``last-delivered-id``. The stream is trimmed with
``XTRIM MINID ~`` below the smallest of these over all groups, minus a margin of ``keep``
acknowledged entries (``XTRIM MAXLEN ~ keep`` when no group needs any entry of the stream).

Everything runs in one Lua script, so no group can be created, deliver or claim entries between
reading the groups and trimming: Redis runs a script atomically. The ``~`` lets Redis drop only
whole internal nodes of the stream, which is cheap and never removes an entry at or above the
bound. A stream without groups is never trimmed (nobody has read anything yet). Works on Redis
6.2 (XTRIM MINID, exclusive ranges) and later; 6.2's XINFO GROUPS has no ``lag``, which is why
the bound comes from ``last-delivered-id`` and XPENDING.

Each trim adds the entries it removed to the stream's ``trimmed`` count in the same script, so
that ``/health`` knows how many entries the stream was ever given (see ``timeline.backlog``).

The dead-letter stream is never trimmed here: its entries stay until an operator removes them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ID_ORDER_LUA", "TRIM_SCRIPT", "trim_acknowledged"]

ID_ORDER_LUA = """
-- Ids are compared as the decimal strings they are (exact at any size; Lua numbers are not).
local function num_less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function less(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if a_ms ~= b_ms then return num_less(a_ms, b_ms) end
  return num_less(a_seq, b_seq)
end
"""

# KEYS[1]: the stream, KEYS[2]: its counts (timeline.backlog; `trimmed` grows by what is removed).
# ARGV[1]: acknowledged entries to keep. Returns {entries removed, the bound (the first id some
# group still needs), or false when there are no groups or every group has acknowledged every
# entry (then the stream is trimmed to its margin, XTRIM MAXLEN ~)}.
TRIM_SCRIPT = """
local key = KEYS[1]
local keep = tonumber(ARGV[1])
local function counted(removed)  -- what was trimmed, counted with the trim (the backlog's counter)
  if removed > 0 then redis.call('HINCRBY', KEYS[2], 'trimmed', removed) end
  return removed
end
if redis.call('EXISTS', key) == 0 then return {0, false} end
local groups = redis.call('XINFO', 'GROUPS', key)
if #groups == 0 then return {0, false} end
""" + ID_ORDER_LUA + """
local bound = nil  -- the first entry some group still needs; nil: no group needs any entry there is
for _, group in ipairs(groups) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local need = nil
  if tonumber(info['pending']) > 0 then
    need = redis.call('XPENDING', key, info['name'])[2]  -- its oldest entry delivered, not acknowledged
  else
    local after = redis.call('XRANGE', key, '(' .. info['last-delivered-id'], '+', 'COUNT', 1)
    if #after > 0 then need = after[1][1] end  -- the first entry it has not been given
  end
  if need and (bound == nil or less(need, bound)) then bound = need end
end
-- Nothing below the bound, or no more than the margin in the whole stream: nothing to do (and
-- XREVRANGE from a bound before the first entry would walk the stream).
if redis.call('XLEN', key) <= keep then return {0, bound or false} end
if bound == nil then  -- every group acknowledged every entry
  return {counted(redis.call('XTRIM', key, 'MAXLEN', '~', keep)), false}
end
local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
if not less(first[1][1], bound) then return {0, bound} end
local minid = bound
if keep > 0 then
  local kept = redis.call('XREVRANGE', key, '(' .. bound, '-', 'COUNT', keep)
  if #kept < keep then return {0, bound} end
  minid = kept[#kept][1]
end
return {counted(redis.call('XTRIM', key, 'MINID', '~', minid)), bound}
"""


async def trim_acknowledged(script: Any, stream: str, keep: int, counts: str) -> tuple[int, str | None]:
    """Run :data:`TRIM_SCRIPT` (registered on a ``redis.asyncio`` client with
    ``register_script``), counting what it removes in the hash ``counts``; returns (entries
    removed, the first id some group still needs)."""
    removed, bound = await script(keys=[stream, counts], args=[keep])
    if isinstance(bound, bytes):
        bound = bound.decode()
    return int(removed), bound or None
