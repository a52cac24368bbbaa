"""What the reads raise, and ``render_json``: the answer as the API sends it."""

from __future__ import annotations

from typing import Any

from events.ids import compact_json


class QueryError(ValueError):
    """A parameter that breaks the rules: names the parameter (answered with 422)."""

    def __init__(self, field: str, message: str, **detail: Any) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = {"field": field, **detail}


class NotFound(LookupError):
    pass


class ReadTimeout(RuntimeError):
    """A read stopped at its time limit, or not started before it (``Queries.time_limit``)."""


class StoreUnreachable(RuntimeError):
    """A read could not reach the store's server (PostgreSQL down, restarting, or cut off by the
    network): the reader's connection is replaced at its next read (``Queries.time_limit``)."""


class ConnectionLost(StoreUnreachable):
    """A read found its connection, open when it started, lost (the server restarted, ended the
    session, or the network dropped): not the store down, nor a statement stopped at its time
    limit. ``timeline.readers.Readers`` reads once more, on a new connection."""


class RawJson(str):
    """A value already rendered as JSON text (see ``render_json``)."""


def render_json(value: Any) -> str:
    """JSON text of a value, ``RawJson`` spliced in as it is: the value itself, a list's items, or
    a dict's values and its list values' items (the shapes of the API's answers)."""
    if isinstance(value, RawJson):
        return value
    if isinstance(value, dict) and any(_holds_raw(v) for v in value.values()):
        return "{" + ",".join(f"{compact_json(str(k))}:{render_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list) and any(isinstance(v, RawJson) for v in value):
        return "[" + ",".join(render_json(v) for v in value) + "]"
    return compact_json(value)  # nothing pre-rendered inside: one call


def _holds_raw(value: Any) -> bool:
    return isinstance(value, RawJson) or (isinstance(value, list) and any(isinstance(v, RawJson) for v in value))
