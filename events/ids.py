"""Identifiers: entity slugs, canonical JSON, content hashes and derived event ids."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

import orjson
from anyascii import anyascii

EVENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_NON_ALNUM_RUN = re.compile(r"[\W_]+", re.UNICODE)


def _unaccent(text: str) -> str:
    """Unicode NFKD, combining marks (category M) dropped, case-folded: the slug rule's folding."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.category(ch).startswith("M"))
    return stripped.casefold()


def fold(text: str) -> str:
    """How names are searched: accents dropped and case-folded, then transliterated to ASCII.

    NFKD leaves letters such as ø, ł, æ, đ, þ and œ whole, and other scripts as they are; the
    transliteration (anyascii, a maintained table) writes them as people type them on a Latin
    keyboard: "Børge" → ``borge``, "Łódź" → ``lodz``, "Ærøskøbing" → ``aeroskobing``,
    "Путин" → ``putin``. Each character maps on its own, so a name's substring folds to a
    substring of the folded name; a character the table has no spelling for is kept as is.
    Entity ids are not derived from this (``slugify`` keeps the contract's rule).

    U+0000 folds as U+FFFD does (``?``): PostgreSQL's text keeps it as U+FFFD
    (``events.pg.connect.pg_text``), and SQLite's LIKE would end a pattern there.
    """
    folded = _unaccent(text.replace("\x00", "\ufffd"))
    if folded.isascii():
        return folded
    return "".join(anyascii(ch) or ch for ch in folded).lower()


def slugify(name: str) -> str:
    """The entity id derived from a name: "Société Générale" → ``societe-generale``.

    NFKD, combining marks dropped, case-folded, each run of non-alphanumerics becomes ``-``,
    and leading or trailing ``-`` trimmed. Letters of every script are kept.
    """
    return _NON_ALNUM_RUN.sub("-", _unaccent(name)).strip("-")


_ASCII_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def is_slug(value: str) -> bool:
    if _ASCII_SLUG.fullmatch(value):  # the common case, without the Unicode work
        return True
    return bool(value) and slugify(value) == value


def canonical_bytes(value: Any, *, plain: bool = False) -> bytes:
    """The canonical JSON text in UTF-8: keys sorted, no white space, non-ASCII as is.

    ``plain``: the value holds no floats. orjson then writes it, byte for byte the text of
    ``canonical_json``, ~10× faster (it writes floats in another notation: 1e-05 as 0.00001).
    """
    if plain:
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # an integer over 64 bits, a lone surrogate, a str subclass…
            pass
    return canonical_json(value).encode("utf-8")


def compact_json(value: Any, *, plain: bool = False) -> str:
    """JSON text in the value's own key order, no white space, non-ASCII as is."""
    if plain:
        try:
            return orjson.dumps(value).decode("utf-8")
        except TypeError:
            pass
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def canonical_json(value: Any) -> str:
    """The same JSON value always gives the same text, whatever the key order or white space."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_hash(raw: dict[str, Any], *, plain: bool = False) -> str:
    """Hash of an event's content: its JSON value without ``id`` (``plain``: see ``canonical_bytes``)."""
    body = {k: v for k, v in raw.items() if k != "id"}
    return hashlib.sha256(canonical_bytes(body, plain=plain)).hexdigest()


def derived_event_id(raw: dict[str, Any], digest: str | None = None) -> str:
    """The id of an event published without one: deterministic in its content.

    ``digest``: its ``content_hash``, when already computed.
    """
    return f"{raw.get('kind', 'event')}-{(digest or content_hash(raw))[:32]}"
