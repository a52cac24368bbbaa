"""Exports of a timeline (docs/exports.md): TimelineJS JSON, Atom, CSV and NDJSON, written page by
page as the entries are read, so that an export of any length takes the memory of one page.

A ``Writer`` turns pages of the timeline (``Queries.timeline(..., render=True, updated=True)``)
into text: ``head()``, then ``page(page)`` for each page in order, then ``tail()``; ``failed()``
is what it writes when a read fails part-way (an export is never silently cut short: see
``docs/exports.md``). ``Export`` says which pages to read; the API (``timeline.api``) and the
CLI (``timeline export``) run the same loop, the one asynchronously on the reader threads, the
other on the store directly.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree as ET

from events.dates import parse_partial
from projections.queries import TimelineQuery, as_of_key

FORMATS = ("timelinejs", "atom", "csv", "ndjson")
PAGE = 500  # entries read at a time: the largest page the API serves
ATOM = "http://www.w3.org/2005/Atom"
TOMBSTONES = "http://purl.org/atompub/tombstones/1.0"  # RFC 6721
TAG = "tag:news-timeline.invalid,2025:"  # the Atom ids' prefix (RFC 4151; .invalid: owned by no one)

# What XML 1.0 cannot carry (control characters other than tab, newline and carriage return, lone
# surrogates, U+FFFE and U+FFFF): each is written as U+FFFD in Atom (docs/exports.md).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# A cell a spreadsheet would read as a formula (OWASP's list): written with a leading apostrophe.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Export:
    """Which pages an export reads: ``query`` (its ``limit`` ignored) from its cursor, if any, on,
    up to ``limit`` entries in all (None: the whole timeline)."""

    entity_id: str | None
    query: TimelineQuery
    limit: int | None = None

    def first(self) -> TimelineQuery:
        return replace(self.query, limit=self._size(0))

    def next(self, page: dict[str, Any], sent: int) -> TimelineQuery | None:
        """The query of the page after ``page`` (``sent`` entries so far), or None at the end."""
        if page["next_cursor"] is None or (self.limit is not None and sent >= self.limit):
            return None
        return replace(self.query, cursor=page["next_cursor"], limit=self._size(sent))

    def _size(self, sent: int) -> int:
        return PAGE if self.limit is None else max(1, min(PAGE, self.limit - sent))

    def take(self, page: dict[str, Any], sent: int) -> dict[str, Any]:
        """``page`` cut to what ``limit`` leaves."""
        if self.limit is None or sent + len(page["entries"]) <= self.limit:
            return page
        keep = self.limit - sent
        return {**page, "entries": page["entries"][:keep], "updated": page["updated"][:keep]}


def pages(plan: Export, read: Callable[[TimelineQuery], dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The pages of an export, each read by ``read`` (a direct read of the store: the CLI's)."""
    page, sent = read(plan.first()), 0
    while True:
        page = plan.take(page, sent)
        yield page
        sent += len(page["entries"])
        following = plan.next(page, sent)
        if following is None:
            return
        page = read(following)


def sanitize_xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def defuse(cell: str) -> str:
    """A CSV cell that a spreadsheet will show as text, never evaluate."""
    return "'" + cell if cell.startswith(_FORMULA) else cell


def entry_id(event_id: str) -> str:
    """An entry's Atom id: a tag URI (RFC 4151) that carries the event id."""
    return f"{TAG}event:{quote(event_id, safe='')}"


def _entries(page: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    for text, updated in zip(page["entries"], page["updated"]):
        yield json.loads(text), updated


class Writer:
    media_type = "application/octet-stream"
    extension = "txt"

    def head(self) -> str:
        return ""

    def page(self, page: dict[str, Any]) -> str:
        raise NotImplementedError

    def tail(self) -> str:
        return ""

    def failed(self, message: str) -> str:
        """What ends an export whose read failed: nothing that a parser would take as an end."""
        return ""


class NdjsonWriter(Writer):
    """One entry a line, exactly as the JSON page shows it; a failure is an ``{"error": ...}`` line."""

    media_type = "application/x-ndjson"
    extension = "ndjson"

    def page(self, page: dict[str, Any]) -> str:
        return "".join(f"{text}\n" for text in page["entries"])

    def failed(self, message: str) -> str:
        return json.dumps({"error": message}) + "\n"


CSV_COLUMNS = (
    "event_id", "occurred_at", "precision", "ended_at", "ended_precision", "kind", "headline", "summary",
    "role", "entities", "entity_names", "status", "position", "recorded_at", "updated_at",
)


class CsvWriter(Writer):
    """A header, then a row per entry; ``entities`` the entry's array as JSON text, ``entity_names``
    "Name (role); ..." for reading. A failure is a last row whose first cell starts ``#error``."""

    media_type = "text/csv; charset=utf-8"
    extension = "csv"

    def _rows(self, rows: list[list[str]]) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerows([[defuse(c) for c in row] for row in rows])
        return out.getvalue()

    def head(self) -> str:
        return self._rows([list(CSV_COLUMNS)])

    def page(self, page: dict[str, Any]) -> str:
        return self._rows([self._row(entry, updated) for entry, updated in _entries(page)])

    @staticmethod
    def _row(entry: dict[str, Any], updated: str) -> list[str]:
        ended = entry.get("ended_at")
        return [
            entry["event_id"], entry["occurred_at"], parse_partial(entry["occurred_at"]).precision,
            ended or "", parse_partial(ended).precision if ended else "", entry["kind"], entry["headline"],
            entry.get("summary") or "", entry.get("role") or "",
            json.dumps(entry["entities"], ensure_ascii=False, separators=(",", ":")),
            "; ".join(f"{e['name']} ({e['role']})" for e in entry["entities"]),
            entry["status"], str(entry["position"]), entry["recorded_at"], updated,
        ]

    def failed(self, message: str) -> str:
        return self._rows([[f"#error: {message}"]])


def timelinejs_date(text: str) -> dict[str, Any]:
    """A TimelineJS date object with only the parts the written date has (numbers, as its docs
    give them); an instant in UTC, with its written form as ``display_date``."""
    date = parse_partial(text)
    if date.precision != "instant":
        parts = dict(zip(("year", "month", "day"), (int(p) for p in text.split("-"))))
        return parts
    moment = date.start.astimezone(timezone.utc)
    return {
        "year": moment.year, "month": moment.month, "day": moment.day, "hour": moment.hour,
        "minute": moment.minute, "second": moment.second, "millisecond": moment.microsecond // 1000,
        "display_date": text,
    }


class TimelineJsWriter(Writer):
    """``{"events": [...]}`` for TimelineJS: a slide per entry, retracted entries left out."""

    media_type = "application/json"
    extension = "json"

    def __init__(self, title: str | None = None) -> None:
        self.title = title
        self.first = True

    def head(self) -> str:
        title = f'"title":{json.dumps({"text": {"headline": self.title}})},' if self.title else ""
        return "{" + title + '"events":['

    def page(self, page: dict[str, Any]) -> str:
        out = []
        for entry, _ in _entries(page):
            if entry["status"] == "retracted":
                continue
            out.append(("" if self.first else ",") + json.dumps(self.slide(entry), ensure_ascii=False))
            self.first = False
        return "".join(out)

    @staticmethod
    def slide(entry: dict[str, Any]) -> dict[str, Any]:
        slide: dict[str, Any] = {"start_date": timelinejs_date(entry["occurred_at"])}
        if entry.get("ended_at"):
            slide["end_date"] = timelinejs_date(entry["ended_at"])
        slide["text"] = {"headline": entry["headline"], "text": entry.get("summary") or ""}
        slide["group"] = entry["kind"]
        slide["unique_id"] = entry["event_id"]
        return slide

    def tail(self) -> str:
        return "]}"


class AtomWriter(Writer):
    """An Atom 1.0 feed (RFC 4287): an entry per timeline entry, a retracted one as an RFC 6721
    ``at:deleted-entry`` tombstone. Each element is built and escaped by ``xml.etree`` (feedgen,
    the maintained Atom writer, builds the whole feed in memory before writing any of it)."""

    media_type = "application/atom+xml; charset=utf-8"
    extension = "atom"

    def __init__(self, feed_id: str, title: str, updated: str, link: str | None = None,
                 event_url: str | None = None) -> None:
        self.feed_id, self.title, self.updated, self.link, self.event_url = feed_id, title, updated, link, event_url

    def head(self) -> str:
        parts = [
            _element("id", self.feed_id), _element("title", self.title), _element("updated", self.updated),
            _xml(_author()),
        ]
        if self.link:
            parts.append(_xml(ET.Element("link", rel="self", href=sanitize_xml(self.link))))
        return (
            f'<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="{ATOM}" xmlns:at="{TOMBSTONES}">'
            + "".join(parts)
        )

    def page(self, page: dict[str, Any]) -> str:
        return "".join(
            _xml(self.tombstone(entry, updated) if entry["status"] == "retracted" else self.entry(entry, updated))
            for entry, updated in _entries(page)
        )

    def entry(self, entry: dict[str, Any], updated: str) -> ET.Element:
        element = ET.Element("entry")
        for name, value in (("id", entry_id(entry["event_id"])), ("title", entry["headline"]),
                            ("updated", updated), ("published", entry["recorded_at"])):
            ET.SubElement(element, name).text = sanitize_xml(value)
        if entry.get("summary"):
            ET.SubElement(element, "summary").text = sanitize_xml(entry["summary"])
        ET.SubElement(element, "category", term=entry["kind"])
        if self.event_url:
            ET.SubElement(element, "link", rel="alternate", type="application/json",
                          href=sanitize_xml(self.event_url + quote(entry["event_id"], safe="")))
        return element

    @staticmethod
    def tombstone(entry: dict[str, Any], updated: str) -> ET.Element:
        return ET.Element("at:deleted-entry", ref=entry_id(entry["event_id"]), when=updated)

    def tail(self) -> str:
        return "</feed>\n"

    def failed(self, message: str) -> str:  # the feed is left open: no parser takes it as whole
        return f"\n<!-- export failed: {sanitize_xml(message).replace('--', '- -')} -->\n"


def _author() -> ET.Element:
    author = ET.Element("author")
    ET.SubElement(author, "name").text = "News timeline"
    return author


def _element(name: str, text: str) -> str:
    element = ET.Element(name)
    element.text = sanitize_xml(text)
    return _xml(element)


def _xml(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")


def writer(fmt: str, entity_id: str | None, *, as_of: str | None = None, base_url: str | None = None,
           link: str | None = None, name: str | None = None) -> Writer:
    """The writer of a format for an entity's timeline (``entity_id``, its display ``name`` when
    known: the title of a TimelineJS document or an Atom feed) or the global one (None)."""
    title = f"Timeline of {name or entity_id}" if entity_id is not None else "Timeline of all entities"
    if fmt == "ndjson":
        return NdjsonWriter()
    if fmt == "csv":
        return CsvWriter()
    if fmt == "timelinejs":
        return TimelineJsWriter(title)
    if fmt == "atom":
        scope = f"entity:{quote(entity_id, safe='')}" if entity_id is not None else "all"
        updated = as_of_key(as_of) if as_of else datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        event_url = f"{base_url.rstrip('/')}/events/" if base_url else None
        return AtomWriter(f"{TAG}timeline:{scope}", title, updated, link, event_url)
    raise ValueError(f"format: must be one of {', '.join(FORMATS)}")


def entity_name(page: dict[str, Any]) -> str | None:
    """The display name of the entity a timeline page is of (None for the global timeline)."""
    entity = page.get("entity")
    return entity.get("name") if isinstance(entity, dict) else None


def reads_retracted(fmt: str, include_retracted: bool) -> bool:
    """Whether an export reads retracted entries: Atom always (as tombstones), TimelineJS never."""
    return {"atom": True, "timelinejs": False}.get(fmt, include_retracted)


def filename(entity_id: str | None, fmt: str, extension: str) -> str:
    """The name an export is saved under (``Content-Disposition``): safe in any file system."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", entity_id)[:100].strip("._") if entity_id is not None else ""
    return f"{stem or 'timeline'}.{fmt}.{extension}" if fmt == "timelinejs" else f"{stem or 'timeline'}.{extension}"
