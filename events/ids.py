"""Identifiers: entity slugs, canonical JSON, content hashes and derived event ids."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

EVENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_NON_ALNUM_RUN = re.compile(r"[\W_]+", re.UNICODE)


def fold(text: str) -> str:
    """Unicode NFKD, combining marks (category M) dropped, case-folded: how names are compared."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.category(ch).startswith("M"))
    return stripped.casefold()


def slugify(name: str) -> str:
    """The entity id derived from a name: "Société Générale" → ``societe-generale``.

    NFKD, combining marks dropped, case-folded, each run of non-alphanumerics becomes ``-``,
    and leading or trailing ``-`` trimmed. Letters of every script are kept.
    """
    return _NON_ALNUM_RUN.sub("-", fold(name)).strip("-")


_ASCII_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def is_slug(value: str) -> bool:
    if _ASCII_SLUG.fullmatch(value):  # the common case, without the Unicode work
        return True
    return bool(value) and slugify(value) == value


def canonical_json(value: Any) -> str:
    """The same JSON value always gives the same text, whatever the key order or white space."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_hash(raw: dict[str, Any]) -> str:
    """Hash of an event's content: its JSON value without ``id``."""
    body = {k: v for k, v in raw.items() if k != "id"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def derived_event_id(raw: dict[str, Any]) -> str:
    """The id of an event published without one: deterministic in its content."""
    return f"{raw.get('kind', 'event')}-{content_hash(raw)[:32]}"
