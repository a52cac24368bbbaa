"""The news event of docs/contract.md §1, as pydantic v2 models, and the one function that parses it.

``parse_event`` turns a JSON value into a ``ParsedEvent``: the validated model, the event's id
(given, or derived from its content), its content hash, and its *normalised body* (entity ids
derived, defaults filled in) that projections read. Every rule violation raises
``EventRejected`` whose message names the field.
"""

from __future__ import annotations

import json
import logging
import math
import re
import reprlib
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticSerializationError

from .dates import DateFormError, PartialDate, parse_partial
from .ids import EVENT_ID_PATTERN, content_hash, derived_event_id, is_slug, slugify

NEWS_KINDS = ("outage", "statement", "political_move", "report")
EDITORIAL_KINDS = ("correction", "retraction", "entity_alias")
KINDS = NEWS_KINDS + EDITORIAL_KINDS
ENTITY_TYPES = ("person", "organization", "group", "place", "product", "other")
ROLES = ("subject", "actor", "target", "mentioned")
ACTIONS = ("contribution", "meeting", "appointment", "resignation", "scale_back", "endorsement", "policy", "other")
CHANGEABLE = ("headline", "summary", "occurred_at", "ended_at", "entities", "sources", "details")

MAX_EVENT_BYTES = 256 * 1024
#: how deep a correction's free-form ``changes.details`` may nest (arrays and objects): far more
#: than any kind's details (two levels) that it must fit once its target is known
MAX_FREE_DEPTH = 64
MAX_ERROR_CHARS = 2000

log = logging.getLogger("events.models")


class EventRejected(ValueError):
    """An event that breaks a rule of the contract: ``reason`` as in docs/contract.md §3.

    ``error`` is always writable text (UTF-8, for a dead letter, an HTTP answer or a terminal):
    a lone surrogate that an event's key or value brought into the message is written as its
    escape, and a message that quotes hostile input at length is cut short.
    """

    def __init__(self, reason: str, error: str) -> None:
        error = writable(error)
        if len(error) > MAX_ERROR_CHARS:
            error = error[: MAX_ERROR_CHARS - 1] + "…"
        super().__init__(error)
        self.reason = reason
        self.error = error


def writable(text: str) -> str:
    """The text with each lone surrogate (not encodable as UTF-8) written as its ``\\udXXX`` escape."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


_echo = reprlib.Repr()  # input quoted in a message: bounded in length and depth, never recursing
_echo.maxstring = _echo.maxother = 120
_echo.maxlevel = 3


def _text(min_length: int, max_length: int) -> Any:
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length)]


EventId = Annotated[str, StringConstraints(pattern=EVENT_ID_PATTERN)]
Headline = _text(1, 300)
Summary = _text(0, 5000)
ShortText = _text(1, 500)


def _check_slug(value: str) -> str:
    if not is_slug(value):
        raise ValueError(
            f"{value!r} is not an entity id: ids are slugs such as 'elon-musk' "
            f"(lower case, words joined by '-'); this one would be {slugify(value)!r}"
        )
    return value


def _check_date(value: str) -> str:
    try:
        parse_partial(value)
    except DateFormError as exc:
        raise ValueError(str(exc)) from None
    return value


def _check_instant(value: str) -> str:
    _check_date(value)
    if parse_partial(value).precision != "instant":
        raise ValueError(f"{value!r} must be an instant with a time and an offset, e.g. '2025-05-25T08:00:00Z'")
    return value


ENTITY_ID_MAX = 200
EntityId = Annotated[str, StringConstraints(min_length=1, max_length=ENTITY_ID_MAX)]
DateText = Annotated[str, StringConstraints(min_length=4, max_length=64)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class Entity(Strict):
    id: EntityId | None = None
    name: _text(1, 200)
    type: Literal[ENTITY_TYPES] = "other"  # type: ignore[valid-type]
    role: Literal[ROLES] = "mentioned"  # type: ignore[valid-type]
    wikidata: Annotated[str, StringConstraints(pattern=r"^Q[1-9][0-9]{0,11}$")] | None = None

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str | None) -> str | None:
        return None if value is None else _check_slug(value)

    @model_validator(mode="after")
    def _derive_id(self) -> "Entity":
        if self.id is None:
            derived = slugify(self.name)
            if not derived:
                raise ValueError(f"name: {self.name!r} has no letter or digit to derive an id from: give an id")
            if len(derived) > ENTITY_ID_MAX:  # NFKD and case folding lengthen some names (ﷺ: 18 characters)
                raise ValueError(
                    f"name: derives an id of {len(derived)} characters, over the {ENTITY_ID_MAX} an id may have: give an id"
                )
            object.__setattr__(self, "id", derived)
        return self


# An http(s) URL whose host part holds nothing urlsplit could object to (no brackets, ASCII).
_PLAIN_HTTP_URL = re.compile(r"(?i)https?://[a-z0-9.-]+(?::[0-9]{1,5})?(?:[/?#][\x21-\x7e]*)?\Z")


class Source(Strict):
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    publisher: ShortText | None = None
    title: ShortText | None = None
    published_at: DateText | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if _PLAIN_HTTP_URL.match(value):  # the common case, without urlsplit's work
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http or https URL")
        return value

    @field_validator("published_at")
    @classmethod
    def _instant(cls, value: str | None) -> str | None:
        return None if value is None else _check_instant(value)


class Amount(Strict):
    value: Annotated[int | float, Field(ge=0)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


# --- details by kind -------------------------------------------------------------------------


class OutageDetails(Strict):
    service: _text(1, 200)
    duration_minutes: Annotated[int, Field(ge=0)] | None = None
    cause: ShortText | None = None
    claimed_by: EntityId | None = None


class StatementDetails(Strict):
    speaker: EntityId
    quote: _text(1, 2000)
    medium: ShortText | None = None


class ReportDetails(Strict):
    category: _text(1, 100) | None = None


class PoliticalMoveDetails(Strict):
    actor: EntityId
    action: Literal[ACTIONS]  # type: ignore[valid-type]
    counterpart: EntityId | None = None
    amount: Amount | None = None


def check_free_json(value: Any) -> None:
    """A free-form JSON value that can be written as JSON text in UTF-8 and read back: nested
    at most ``MAX_FREE_DEPTH`` deep, finite numbers, Unicode text in keys and strings.
    Raises ``ValueError`` naming the path of the first part that breaks this."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if _not_text(item):
                raise ValueError(f"{path or 'value'}: holds a lone surrogate, which is not Unicode text")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{path or 'value'}: {item!r} is not a finite number")
        elif isinstance(item, (dict, list)):
            if depth >= MAX_FREE_DEPTH:
                raise ValueError(f"{path or 'value'}: nested deeper than {MAX_FREE_DEPTH} levels of arrays and objects")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                where = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and _not_text(key):  # (pydantic takes only text in a message)
                    raise ValueError(f"{writable(where)}: the key holds a lone surrogate, which is not Unicode text")
                stack.append((child, where, depth + 1))


class Changes(Strict):
    headline: Headline | None = None
    summary: Summary | None = None
    occurred_at: DateText | None = None
    ended_at: DateText | None = None
    entities: Annotated[list[Entity], Field(min_length=1, max_length=50)] | None = None
    sources: Annotated[list[Source], Field(max_length=20)] | None = None
    details: dict[str, Any] | None = None

    @field_validator("occurred_at", "ended_at")
    @classmethod
    def _date(cls, value: str | None) -> str | None:
        return None if value is None else _check_date(value)

    @field_validator("details")
    @classmethod
    def _free(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_free_json(value)
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> "Changes":
        if not self.model_fields_set:
            raise ValueError(f"must name at least one of: {', '.join(CHANGEABLE)}")
        for required in ("headline", "occurred_at", "entities"):
            if required in self.model_fields_set and getattr(self, required) is None:
                raise ValueError(f"{required}: cannot be null, the field is required")
        if self.entities is not None:
            _unique_entities(self.entities, "entities")
        return self


class CorrectionDetails(Strict):
    corrects: EventId
    changes: Changes
    reason: _text(1, 2000) | None = None


class RetractionDetails(Strict):
    retracts: EventId
    reason: _text(1, 2000)


class EntityAliasDetails(Strict):
    alias: EntityId
    canonical: EntityId
    name: _text(1, 200) | None = None

    @field_validator("alias", "canonical")
    @classmethod
    def _slug(cls, value: str) -> str:
        return _check_slug(value)

    @model_validator(mode="after")
    def _not_itself(self) -> "EntityAliasDetails":
        if self.alias == self.canonical:
            raise ValueError(f"alias: {self.alias!r} cannot be an alias of itself")
        return self


# --- events ----------------------------------------------------------------------------------


def _unique_entities(entities: list[Entity], where: str) -> None:
    seen: set[str] = set()
    for i, entity in enumerate(entities):
        if entity.id in seen:
            raise ValueError(f"{where}.{i}.id: entity {entity.id!r} appears more than once in this event")
        seen.add(entity.id)  # type: ignore[arg-type]


class _Dated(Strict):
    id: EventId | None = None
    occurred_at: DateText
    sources: Annotated[list[Source], Field(max_length=20)] = []

    @field_validator("occurred_at")
    @classmethod
    def _date(cls, value: str) -> str:
        return _check_date(value)


class _News(_Dated):
    ended_at: DateText | None = None
    headline: Headline
    summary: Summary | None = None
    entities: Annotated[list[Entity], Field(min_length=1, max_length=50)]

    @field_validator("ended_at")
    @classmethod
    def _end(cls, value: str | None) -> str | None:
        return None if value is None else _check_date(value)

    @model_validator(mode="after")
    def _consistent(self) -> "_News":
        check_news_consistency(self)
        return self


def check_news_consistency(event: Any) -> None:
    """Rules that span fields: the end not before the start, unique entities, references."""
    if event.ended_at is not None:
        if parse_partial(event.ended_at).end < parse_partial(event.occurred_at).start:
            raise ValueError(
                f"ended_at: {event.ended_at!r} ends before occurred_at {event.occurred_at!r} starts"
            )
    _unique_entities(event.entities, "entities")
    ids = {e.id for e in event.entities}
    fields = event.details.__dict__  # a missing attribute costs pydantic an exception per name
    for name in ("speaker", "actor", "counterpart", "claimed_by"):
        ref = fields.get(name)
        if ref is not None and ref not in ids:
            raise ValueError(
                f"details.{name}: {ref!r} must be the id of one of the event's entities "
                f"({', '.join(sorted(i for i in ids if i))})"
            )


class OutageEvent(_News):
    kind: Literal["outage"]
    details: OutageDetails


class StatementEvent(_News):
    kind: Literal["statement"]
    details: StatementDetails


class ReportEvent(_News):
    kind: Literal["report"]
    details: ReportDetails = ReportDetails()


class PoliticalMoveEvent(_News):
    kind: Literal["political_move"]
    details: PoliticalMoveDetails


class CorrectionEvent(_Dated):
    kind: Literal["correction"]
    details: CorrectionDetails


class RetractionEvent(_Dated):
    kind: Literal["retraction"]
    details: RetractionDetails


class EntityAliasEvent(_Dated):
    kind: Literal["entity_alias"]
    details: EntityAliasDetails


Event = Union[
    OutageEvent, StatementEvent, ReportEvent, PoliticalMoveEvent, CorrectionEvent, RetractionEvent, EntityAliasEvent
]
MODELS: dict[str, type[BaseModel]] = {
    "outage": OutageEvent,
    "statement": StatementEvent,
    "report": ReportEvent,
    "political_move": PoliticalMoveEvent,
    "correction": CorrectionEvent,
    "retraction": RetractionEvent,
    "entity_alias": EntityAliasEvent,
}
DETAILS_MODELS: dict[str, type[BaseModel]] = {
    "outage": OutageDetails,
    "statement": StatementDetails,
    "report": ReportDetails,
    "political_move": PoliticalMoveDetails,
}


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    """A valid event: its id, kind, content hash and normalised body (a plain JSON dict)."""

    id: str
    kind: str
    content_hash: str
    #: None only for a news event that a validating process sent back without it (see
    #: ``events.store.Candidate.restore``; ``Candidate.body`` reads it back from its JSON text)
    body: dict[str, Any]
    #: the event holds no floats: orjson writes its JSON (see ``events.ids.canonical_bytes``)
    plain: bool = False

    @property
    def target(self) -> str | None:
        """The event a correction or retraction is about (None for other kinds, without reading
        the body: a news candidate sent by a validating process carries none)."""
        if self.kind == "correction":
            return self.body["details"]["corrects"]
        if self.kind == "retraction":
            return self.body["details"]["retracts"]
        return None

    @property
    def occurred(self) -> PartialDate:
        return parse_partial(self.body["occurred_at"])


_NAMES_FIELD = re.compile(r"^[\w.]+: ")


def format_errors(exc: ValidationError, prefix: str = "") -> str:
    """One clause per broken rule, each starting with the field's dotted path."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"])
        msg = err["msg"]
        if err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
            if _NAMES_FIELD.match(msg):  # the message names a field, relative to where it was raised
                lines.append(f"{prefix}{loc}.{msg}" if loc else prefix + msg)
                continue
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "literal_error":
            msg = f"{msg}, got {_echo.repr(err['input'])}"
        where = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "event"
        lines.append(f"{where}: {msg}")
    return "; ".join(lines)


def dump_body(model: BaseModel) -> dict[str, Any]:
    """The normalised JSON body: derived entity ids and defaults filled in, nulls left out."""
    body = model.model_dump(mode="json", exclude_none=True)
    if body.get("kind") == "correction":
        changes: Changes = model.details.changes  # type: ignore[attr-defined]
        full = changes.model_dump(mode="json", exclude_none=True)
        # A field named in the changes is kept even when null: null removes an optional field.
        body["details"]["changes"] = {key: full.get(key) for key in changes.model_fields_set}
    return body


def may_hold_floats(kind: str, raw: dict[str, Any]) -> bool:
    """Whether a valid event may hold a float, or a number orjson reads otherwise than ``json``.

    Strict validation admits floats, and any JSON value, in two places only: a political move's
    ``details.amount.value`` and a correction's ``details.changes.details``
    (tests/unit/test_fast_json.py checks the models' schemas for others).
    """
    if kind == "political_move":
        amount = raw["details"].get("amount")
        return amount is not None and type(amount["value"]) is not int
    if kind == "correction":
        return "details" in raw["details"]["changes"]
    return False


def _not_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _lone_surrogate(value: Any) -> str | None:
    """The path of the first string (or key) holding a lone surrogate (no recursion: the value
    may nest as deep as a JSON reader allows)."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _not_text(item):
                return path or "event"
            continue
        items = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        children = []
        for key, child in items:
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _not_text(key):
                return where
            children.append((child, where))
        stack.extend(reversed(children))
    return None


def parse_event(raw: Any) -> ParsedEvent:
    """Validate a decoded JSON value as an event; raise ``EventRejected('schema', ...)``.

    Nothing else escapes: whatever else judging one event raises (a bug, a library's limit
    that no rule foresaw) rejects that event as ``schema`` with the exception named, and is
    logged, rather than failing its batch."""
    try:
        return _parse_event(raw)
    except (EventRejected, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("an event could not be judged: %s: %s", type(exc).__name__, exc, exc_info=True)
        raise EventRejected("schema", f"event: cannot be validated ({type(exc).__name__}: {exc})") from None


def _parse_event(raw: Any) -> ParsedEvent:
    if not isinstance(raw, dict):
        raise EventRejected("schema", f"event: must be a JSON object, got {type(raw).__name__}")
    kind = raw.get("kind")
    if kind is None:
        raise EventRejected("schema", "kind: field required")
    if not isinstance(kind, str) or kind not in MODELS:
        raise EventRejected("schema", f"kind: must be one of {', '.join(KINDS)}, got {_echo.repr(kind)}")
    try:
        model = MODELS[kind].model_validate(raw, strict=True)
    except ValidationError as exc:
        if any(err["type"] == "string_unicode" for err in exc.errors(include_url=False)):
            where = _lone_surrogate(raw)  # pydantic cannot name a key it cannot read
            if where is not None:
                raise EventRejected("schema", f"{where}: holds a lone surrogate, which is not Unicode text") from None
        raise EventRejected("schema", format_errors(exc)) from None
    plain = not may_hold_floats(kind, raw)
    try:
        body = dump_body(model)
        digest = content_hash(raw, plain=plain)
    except (UnicodeEncodeError, PydanticSerializationError):  # "\ud800" in a free-form field
        # (typed text fields refuse it in validation)
        where = _lone_surrogate(raw) or "event"
        raise EventRejected("schema", f"{where}: holds a lone surrogate, which is not Unicode text") from None
    event_id = body.get("id") or derived_event_id(raw, digest)
    body["id"] = event_id
    parsed = ParsedEvent(id=event_id, kind=kind, content_hash=digest, body=body, plain=plain)
    if parsed.target == event_id:
        field = "details.corrects" if kind == "correction" else "details.retracts"
        verb = "correct" if kind == "correction" else "retract"
        raise EventRejected("schema", f"{field}: {event_id!r} is this {kind}'s own id; an event cannot {verb} itself")
    return parsed


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range (beyond ±1.8e308, a 64-bit float)")
    return value


class _RepeatedKeys(dict):  # type: ignore[type-arg]
    """A JSON object whose text names ``key`` more than once (the last value kept, as json does)."""

    __slots__ = ("key",)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            break
        seen.add(key)
    marked = _RepeatedKeys(obj)
    marked.key = key
    return marked


def decode_json(data: bytes | str) -> Any:
    """Strict JSON in UTF-8 (no NaN or Infinity, no number beyond a 64-bit float's range);
    raise ``EventRejected('bad_json', ...)``. See ``repeated_keys`` for keys named twice."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    except UnicodeDecodeError as exc:
        raise EventRejected("bad_json", f"event: not UTF-8: {exc}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except ValueError as exc:
        raise EventRejected("bad_json", f"event: not valid JSON: {exc}") from None
    except RecursionError:
        raise EventRejected("bad_json", "event: not valid JSON: nested too deeply") from None


def repeated_keys(data: bytes | str, value: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """The objects of JSON text that name a key more than once, as (path in ``value``, key), in
    text order; ``value`` is the text as read (any reader: each keeps one value per key).

    Readers disagree on which value of a repeated key counts (json and orjson keep the last,
    others the first or both), so an event holding one is refused: the bytes an auditor reads
    must say what the store took. Cheap when there is none: the value written back out by
    orjson (which holds each key once) is most often the text itself, byte for byte. Else:
    every key is followed by exactly one ':' in the text, and a ':' elsewhere is inside a
    string, where it is read as it is written unless escaped as ``\\u003a``; so without that
    escape, the text and the value written back out hold as many ':' as each other exactly
    when no key was dropped. Only otherwise is the text read again, key by key.
    """
    if _surely_unique_keys(data, value):
        return []
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    try:
        marked = json.loads(text, object_pairs_hook=_pairs, parse_float=_finite_float)
    except (ValueError, RecursionError):  # the text was read once already: cannot happen
        return []
    found: list[tuple[tuple[str | int, ...], str]] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(marked, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, _RepeatedKeys):
            found.append((path, item.key))
        children = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        stack.extend(reversed([(child, (*path, key)) for key, child in children]))
    return found


def _surely_unique_keys(data: bytes | str, value: Any) -> bool:
    """True when no object of the text names a key twice (see ``repeated_keys``); False when
    it may (then ask ``repeated_keys``)."""
    try:
        written = orjson.dumps(value)
    except orjson.JSONEncodeError:  # an integer over 64 bits, a lone surrogate, deep nesting
        return False
    if isinstance(data, str):
        return "\\u003" not in data and written.count(b":") == data.count(":")
    # The text is the value's own compact writing (the common case: what orjson, the publisher
    # or json.dumps with separators=(",", ":") write) and holds nothing more: a comparison.
    return written == data or (b"\\u003" not in data and written.count(b":") == data.count(b":"))


def repeated_key_error(path: tuple[str | int, ...], key: str) -> str:
    where = ".".join(str(part) for part in (*path, key))
    return (
        f"{where}: the key {key!r} appears more than once in one object; readers disagree on "
        "which value counts, so it is refused"
    )


def parse_event_bytes(data: bytes | str) -> ParsedEvent:
    """The checks of docs/contract.md §3 in order: ``too_large``, ``bad_json``, then ``schema`` (the
    first of which: no key named twice in one object)."""
    try:
        size = len(data.encode("utf-8") if isinstance(data, str) else data)
    except UnicodeEncodeError as exc:
        raise EventRejected("bad_json", f"event: not UTF-8: {exc}") from None
    if size > MAX_EVENT_BYTES:
        raise EventRejected("too_large", f"event: {size} bytes is over the limit of {MAX_EVENT_BYTES} bytes (256 KiB)")
    if isinstance(data, bytes):
        fast = _parse_fast(data)
        if fast is not None:
            return fast
    raw = decode_json(data)
    repeated = repeated_keys(data, raw)
    if repeated:
        raise EventRejected("schema", repeated_key_error(*repeated[0]))
    return parse_event(raw)


def _parse_fast(data: bytes) -> ParsedEvent | None:
    """The event read by orjson (~3× faster), when that gives what ``json`` would; else None.

    orjson reads big integers (over 64 bits) as floats, and nests deeper; any other value it
    reads as ``json`` does. A valid event without floats (``may_hold_floats``) therefore holds
    none of those, and is the same event either way. Everything else (floats, errors,
    rejections and what may repeat a key) is read again the standard way, so it reads exactly
    as it always has.
    """
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    try:
        parsed = parse_event(raw)
    except EventRejected:
        return None
    return parsed if parsed.plain and _surely_unique_keys(data, raw) else None


def apply_changes(kind: str, body: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A news event's body with a correction's ``changes`` applied, validated again.

    Each named field replaces the old value whole; ``None`` removes an optional field.
    Raises ``EventRejected('schema', ...)`` when the result breaks a rule.
    """
    merged = {k: v for k, v in body.items()}
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    event_id = merged.pop("id", None)
    try:
        model = MODELS[kind].model_validate(merged, strict=True)
    except ValidationError as exc:
        raise EventRejected("schema", format_errors(exc, prefix="details.changes.")) from None
    result = dump_body(model)
    result["id"] = event_id
    return result
