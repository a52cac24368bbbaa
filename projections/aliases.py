"""Entity aliases for the read side: ``events.aliases.AliasIndex``, kept by each reader process
and refreshed from the store's declarations before each read (only the new ones are read).

Aliases are resolved when reading, retroactively by construction and as of any position; the
index answers "the canonical id of X as of P" in at most log2(aliases) steps and "the ids that
resolve to C as of P" in time in their number, whatever the chains' lengths (docs/entities.md).
"""

from __future__ import annotations

from events.aliases import AliasIndex

__all__ = ["AliasIndex"]
