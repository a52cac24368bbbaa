"""The export writers (timeline.exports), on pages as ``Queries.timeline`` renders them: TimelineJS
dates keep only the parts their precision has, Atom parses in feedparser whatever the text
holds, CSV cells never read as formulas, NDJSON is the page's entries line by line."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import feedparser
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.queries import TimelineQuery
from timeline.exports import (
    CSV_COLUMNS, Export, TOMBSTONES, defuse, entry_id, filename, pages, timelinejs_date, writer,
)


def entry(event_id: str = "e1", *, headline: str = "X is down", summary: str | None = "for two hours",
          occurred_at: str = "2025-05-24", ended_at: str | None = None, status: str = "active",
          kind: str = "outage") -> dict[str, Any]:
    return {
        "event_id": event_id, "kind": kind, "occurred_at": occurred_at, "ended_at": ended_at,
        "headline": headline, "summary": summary, "role": "subject",
        "entities": [{"id": "x", "name": "X", "role": "subject"}, {"id": "elon-musk", "name": "Elon Musk", "role": "actor"}],
        "sources": [], "details": {}, "position": 7, "recorded_at": "2025-05-24T15:00:00.000000Z", "status": status,
    }


def page(*entries: dict[str, Any], updated: str = "2025-05-25T09:00:00.000000Z", cursor: str | None = None) -> dict[str, Any]:
    return {
        "entries": [json.dumps(e, ensure_ascii=False, separators=(",", ":")) for e in entries],
        "updated": [updated] * len(entries), "next_cursor": cursor,
    }


def export(fmt: str, *pages_: dict[str, Any], entity: str | None = "x") -> str:
    out = writer(fmt, entity, as_of=None, base_url="http://example.test/")
    return out.head() + "".join(out.page(p) for p in pages_) + out.tail()


# --- TimelineJS ------------------------------------------------------------------------

@pytest.mark.parametrize(("written", "parts"), [
    ("2015", {"year": 2015}),
    ("2015-09", {"year": 2015, "month": 9}),
    ("2015-09-03", {"year": 2015, "month": 9, "day": 3}),
    ("2025-05-24T14:30+02:00", {"year": 2025, "month": 5, "day": 24, "hour": 12, "minute": 30, "second": 0,
                                "millisecond": 0, "display_date": "2025-05-24T14:30+02:00"}),
    ("2025-05-24T23:59:59.999Z", {"year": 2025, "month": 5, "day": 24, "hour": 23, "minute": 59, "second": 59,
                                  "millisecond": 999, "display_date": "2025-05-24T23:59:59.999Z"}),
])
def test_timelinejs_dates_hold_only_the_parts_their_precision_has(written: str, parts: dict[str, Any]) -> None:
    assert timelinejs_date(written) == parts


def test_timelinejs_slides_leave_out_retracted_entries_and_group_by_kind() -> None:
    text = export("timelinejs", page(entry("a", occurred_at="2015-09", ended_at="2016"), entry("b", status="retracted")),
                  page(entry("c", kind="statement", summary=None)))
    data = json.loads(text)
    assert data["title"]["text"]["headline"] == "Timeline of x"
    assert [s["unique_id"] for s in data["events"]] == ["a", "c"]
    first, second = data["events"]
    assert first["start_date"] == {"year": 2015, "month": 9} and first["end_date"] == {"year": 2016}
    assert first["text"] == {"headline": "X is down", "text": "for two hours"}
    assert (first["group"], second["group"], second["text"]["text"]) == ("outage", "statement", "")
    assert "end_date" not in second


def test_an_empty_export_is_a_valid_document_in_every_format() -> None:
    assert json.loads(export("timelinejs"))["events"] == []
    assert export("ndjson") == ""
    assert list(csv.reader(io.StringIO(export("csv")))) == [list(CSV_COLUMNS)]
    feed = feedparser.parse(export("atom").encode())
    assert not feed.bozo and feed.entries == []


# --- Atom ------------------------------------------------------------------------------

def test_atom_entries_carry_the_event_id_and_retractions_are_tombstones() -> None:
    text = export("atom", page(entry("a"), entry("b/c d"), entry("r", status="retracted"),
                               updated="2025-06-01T10:00:00.000000Z"))
    feed = feedparser.parse(text.encode())
    assert not feed.bozo, feed.bozo_exception
    assert [e.id for e in feed.entries] == [entry_id("a"), entry_id("b/c d")]
    assert entry_id("b/c d") == "tag:news-timeline.invalid,2025:event:b%2Fc%20d"
    first = feed.entries[0]
    assert (first.title, first.summary, first.updated, first.published) == (
        "X is down", "for two hours", "2025-06-01T10:00:00.000000Z", "2025-05-24T15:00:00.000000Z")
    assert first.tags[0].term == "outage"
    assert [(link.rel, link.href) for link in first.links] == [("alternate", "http://example.test/events/a")]
    assert feed.feed.id == "tag:news-timeline.invalid,2025:timeline:entity:x"
    # feedparser keeps no tombstones: read them as XML (RFC 6721: ref is the entry's id, when the time)
    from xml.etree import ElementTree as ET

    root = ET.fromstring(text.encode())
    tombstones = root.findall(f"{{{TOMBSTONES}}}deleted-entry")
    assert [(t.get("ref"), t.get("when")) for t in tombstones] == [(entry_id("r"), "2025-06-01T10:00:00.000000Z")]


HOSTILE = [
    "a \x00 b \x01 \x08 \x0b \x0c \x1f \x7f end",  # controls XML 1.0 cannot carry (bar \x7f, which it can)
    "lone \ud800 and \udfff surrogates",
    "]]> <![CDATA[ x ]]> & <b>bold</b> \"quoted\" 'single'",
    "\ufffe\uffff non-characters",
    "H" * 100_000,  # a very long headline
    "emoji 🙂 and RTL \u202e text",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_atom_carries_hostile_text_as_a_parseable_feed(text: str) -> None:
    feed = feedparser.parse(export("atom", page(entry("a", headline=text, summary=text))).encode("utf-8"))
    assert not feed.bozo, feed.bozo_exception
    (got,) = feed.entries
    allowed = "".join(c if c in "\t\n\r" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd") or c > "\uffff"
                      else "\ufffd" for c in text)
    assert got.title == allowed.strip() or got.title == allowed  # feedparser strips titles' ends


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200))
def test_atom_parses_whatever_the_headline_and_summary_hold(headline: str, summary: str) -> None:
    feed = feedparser.parse(export("atom", page(entry("a", headline=headline or "h", summary=summary))).encode())
    assert not feed.bozo, feed.bozo_exception
    assert len(feed.entries) == 1


def test_a_failed_atom_export_is_not_a_whole_feed() -> None:
    out = writer("atom", "x")
    text = out.head() + out.page(page(entry("a"))) + out.failed("the read was stopped -- at its limit")
    assert feedparser.parse(text.encode()).bozo


# --- CSV -------------------------------------------------------------------------------

def test_csv_has_a_header_and_a_row_per_entry_in_order() -> None:
    text = export("csv", page(entry("a", occurred_at="2015-09", ended_at="2015-10-02"), entry("r", status="retracted")),
                  page(entry("b", occurred_at="2025-05-24T14:30Z", summary=None)))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [r["event_id"] for r in rows] == ["a", "r", "b"]
    a, _, b = rows
    assert (a["occurred_at"], a["precision"], a["ended_at"], a["ended_precision"]) == ("2015-09", "month", "2015-10-02", "day")
    assert (b["precision"], b["ended_at"], b["summary"]) == ("instant", "", "")
    assert json.loads(a["entities"]) == entry()["entities"]
    assert a["entity_names"] == "X (subject); Elon Musk (actor)"
    assert (a["kind"], a["role"], a["status"], a["position"], a["updated_at"]) == (
        "outage", "subject", "active", "7", "2025-05-25T09:00:00.000000Z")


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "=HYPERLINK(\"http://e.test\")"])
def test_csv_cells_never_read_as_formulas(cell: str) -> None:
    assert defuse(cell) == "'" + cell
    rows = list(csv.DictReader(io.StringIO(export("csv", page(entry("a", headline=cell, summary=cell))))))
    assert rows[0]["headline"] == "'" + cell and rows[0]["summary"] == "'" + cell


def test_csv_keeps_commas_quotes_and_newlines_in_cells() -> None:
    text = 'a, "b"\nc\r\nd'
    rows = list(csv.DictReader(io.StringIO(export("csv", page(entry("a", headline=text))), newline="")))
    assert rows[0]["headline"] == text


def test_a_failed_csv_export_ends_with_an_error_row() -> None:
    out = writer("csv", "x")
    text = out.head() + out.page(page(entry("a"))) + out.failed("stopped")
    assert list(csv.reader(io.StringIO(text)))[-1] == ["#error: stopped"]


# --- NDJSON ----------------------------------------------------------------------------

def test_ndjson_is_each_entry_as_the_page_renders_it() -> None:
    first = page(entry("a"), entry("b"))
    text = export("ndjson", first, page(entry("c")))
    assert text.splitlines()[:2] == first["entries"]
    assert [json.loads(line)["event_id"] for line in text.splitlines()] == ["a", "b", "c"]
    assert json.loads(writer("ndjson", "x").failed("stopped")) == {"error": "stopped"}


# --- paging ----------------------------------------------------------------------------

def _reader(total: int, size: int) -> Any:
    asked: list[TimelineQuery] = []

    def read(query: TimelineQuery) -> dict[str, Any]:
        asked.append(query)
        start = int(query.cursor or 0)
        n = min(query.limit, total - start)
        more = start + n < total
        return {"entries": [str(i) for i in range(start, start + n)], "updated": ["u"] * n,
                "next_cursor": str(start + n) if more else None}

    return read, asked


@pytest.mark.parametrize(("total", "limit", "expected"), [(1200, None, 1200), (1200, 700, 700), (3, 500, 3), (0, None, 0),
                                                           (1000, 1000, 1000), (1000, 1, 1)])
def test_an_export_reads_every_page_up_to_its_limit(total: int, limit: int | None, expected: int) -> None:
    read, asked = _reader(total, 500)
    got = [e for p in pages(Export("x", TimelineQuery(), limit), read) for e in p["entries"]]
    assert got == [str(i) for i in range(expected)]
    assert all(q.limit <= 500 for q in asked)


def test_filenames_are_safe() -> None:
    assert filename("x", "csv", "csv") == "x.csv"
    assert filename(None, "atom", "atom") == "timeline.atom"
    assert filename('a"b/../c\r\n', "ndjson", "ndjson") == "a_b_.._c.ndjson"
    assert filename("..", "csv", "csv") == "timeline.csv"
    assert filename("x", "timelinejs", "json") == "x.timelinejs.json"


@pytest.mark.parametrize(("args", "message"), [
    (["export", "x", "--format", "pdf"], "--format: 'pdf' is not one of"),
    (["export", "--format", "csv"], "give ENTITY or --all"),
    (["export", "x", "--all", "--format", "csv"], "give ENTITY or --all"),
    (["export", "x", "--kind", "rumour"], "--kind: the kinds are"),
    (["export", "x", "--role", "hero"], "--role: the roles are"),
    (["export", "x", "--order", "sideways"], "--order: asc, desc or relevance"),
])
def test_the_export_command_refuses_bad_options_naming_them(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from timeline.cli import app

    result = CliRunner().invoke(app, args, env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_titled_export_names_the_entity_by_its_display_name() -> None:
    """The feed's and the document's title: the entity's name when the first page knows it."""
    from timeline.exports import entity_name, writer

    assert entity_name({"entity": {"id": "elon-musk", "name": "Elon Musk"}, "entries": []}) == "Elon Musk"
    assert entity_name({"entries": []}) is None  # the global timeline's pages have no entity
    js = writer("timelinejs", "elon-musk", name="Elon Musk")
    assert json.loads(js.head() + js.tail())["title"]["text"]["headline"] == "Timeline of Elon Musk"
    atom = writer("atom", "elon-musk", name="Elon Musk <CEO>", as_of="2025-05-24")
    assert "<title>Timeline of Elon Musk &lt;CEO&gt;</title>" in atom.head()
    assert json.loads(writer("timelinejs", None).head() + "]}")["title"]["text"]["headline"] == "Timeline of all entities"
