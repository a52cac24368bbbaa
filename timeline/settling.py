"""Settling a batch of stream entries: dead letters written and the batch acknowledged at once.

docs/contract.md §3: each rejected entry gets exactly one dead letter, written atomically with
the acknowledgement of the original. A batch can be handled twice: the claimer takes over entries
that stayed pending past the idle time while their first handling was still under way (a slow
store, a loaded machine), or another consumer took them over from one that was only slow. The
store makes a second append of an event a no-op; a dead letter is made once by writing it only
if this call's ``XACK`` is the one that acknowledged its entry. One Lua script does that for the
whole batch, so nothing can come between the check and the write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["SETTLE_SCRIPT", "settle"]

T = TypeVar("T")

# KEYS[1]: the stream, KEYS[2]: the dead-letter stream. ARGV[1]: the group, ARGV[2]: the number
# of dead letters d, then for each its source id, event, reason and error (4 × d), then the ids
# of the other entries of the batch. Returns the (1-based) indexes of the dead letters written.
SETTLE_SCRIPT = """
local stream, dead, group = KEYS[1], KEYS[2], ARGV[1]
local d = tonumber(ARGV[2])
local written = {}
for i = 0, d - 1 do
  local at = 3 + i * 4
  local source = ARGV[at]
  if redis.call('XACK', stream, group, source) == 1 then
    redis.call('XADD', dead, '*', 'event', ARGV[at + 1], 'reason', ARGV[at + 2], 'error', ARGV[at + 3],
               'source_id', source)
    written[#written + 1] = i + 1
  end
end
local first = 3 + d * 4
local chunk = {}
for i = first, #ARGV do
  chunk[#chunk + 1] = ARGV[i]
  if #chunk == 500 then
    redis.call('XACK', stream, group, unpack(chunk))
    chunk = {}
  end
end
if #chunk > 0 then redis.call('XACK', stream, group, unpack(chunk)) end
return written
"""


async def settle(
    script: Any, stream: str, dead_stream: str, group: str, ids: Sequence[bytes], dead: Sequence[T]
) -> list[T]:
    """Run :data:`SETTLE_SCRIPT` (registered on a ``redis.asyncio`` client) for a batch: ``ids``
    all its entries, ``dead`` its ``DeadLetter``s. Returns the dead letters written (fewer than
    ``dead`` when another handling of the same entries wrote theirs first)."""
    dead_ids = {d.source_id for d in dead}
    args: list[Any] = [group, len(dead)]
    for letter in dead:
        fields = letter.fields()
        args += [fields["source_id"], fields["event"], fields["reason"], fields["error"]]
    args += [entry_id for entry_id in ids if entry_id not in dead_ids]
    written = await script(keys=[stream, dead_stream], args=args)
    return [dead[int(index) - 1] for index in written]
