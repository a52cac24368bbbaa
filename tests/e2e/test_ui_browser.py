"""The web page (docs/ui.md) in a real Chromium (Debian's, driven by Playwright) against a real
``timeline serve`` on a real Redis: it shows what the API answers, follows changes live, finds
entities, stays on its host, logs no error, treats text as text, and works by keyboard and on a phone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, expect, sync_playwright

from e2e_support import Server, all_pages

pytestmark = [pytest.mark.e2e,
              pytest.mark.xdist_group("chromium")]  # under `-n`: one worker runs them all, one browser, one install

CHROMIUM = os.environ.get("TIMELINE_CHROMIUM", "/usr/bin/chromium")
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
HOSTILE = '<img src=x onerror="window.__xss=1">Hostile <b>headline</b>'
HOSTILE_NAME = "<img src=y onerror=window.__xss=2> Gang"
MUSK = {"id": "elon-musk", "name": "Elon Musk", "type": "person", "role": "subject"}
X = {"id": "x", "name": "X", "type": "organization", "role": "mentioned"}


def _news(event_id: str, occurred_at: str, headline: str, **extra: Any) -> dict[str, Any]:
    return {"id": event_id, "kind": "report", "occurred_at": occurred_at, "headline": headline,
            "entities": [MUSK, X], **extra}


BASE_EVENTS = [
    _news("ui-month", "2015-09", "Something all through September 2015"),
    {"id": "ui-range", "kind": "political_move", "occurred_at": "2025-01-20", "ended_at": "2025-05-30",
     "headline": "Musk runs the cost-cutting office", "entities": [{**MUSK, "role": "actor"}],
     "details": {"actor": "elon-musk", "action": "appointment"}},
    {"id": "ui-instant", "kind": "statement", "occurred_at": "2025-05-24T18:05Z",
     "headline": "Musk: failover should have worked", "entities": [MUSK],
     "details": {"speaker": "elon-musk", "quote": "should have worked"}},
    {"id": "ui-outage", "kind": "outage", "occurred_at": "2025-05-24", "headline": "X is down for two hours",
     "entities": [{**X, "role": "subject"}, {**MUSK, "role": "mentioned"}], "details": {"service": "X"}},
    _news("ui-corrected", "2025-05-21", "Musk meets the president"),
    _news("ui-retracted", "2025-05-22", "Musk buys the moon"),
    _news("ui-xss", "2025-05-23", HOSTILE,
          entities=[MUSK, {"name": HOSTILE_NAME, "type": "group", "role": "mentioned"}]),
    {"id": "ui-societe", "kind": "report", "occurred_at": "2024-03", "headline": "A French bank reports",
     "entities": [{"name": "Société Générale", "type": "organization", "role": "subject"}]},
    {"id": "ui-twitter", "kind": "report", "occurred_at": "2022-10", "headline": "Musk buys Twitter",
     "entities": [MUSK, {"id": "twitter", "name": "Twitter", "type": "organization", "role": "target"}]},
    {"kind": "entity_alias", "occurred_at": "2023-07-24", "details": {"alias": "twitter", "canonical": "x"}},
]
EDITS = [
    {"id": "ui-fix", "kind": "correction", "occurred_at": "2025-05-26",
     "details": {"corrects": "ui-corrected", "changes": {"headline": "Musk reportedly joins the president's meeting"},
                 "reason": "his attendance is reported, not confirmed"}},
    {"id": "ui-pull", "kind": "retraction", "occurred_at": "2025-05-26",
     "details": {"retracts": "ui-retracted", "reason": "the report was a hoax"}},
]


def publish(server: Server, events: list[dict[str, Any]]) -> None:
    with server.client() as http:
        answer = http.post("/events", params={"wait": "true"}, json=events)
        assert answer.status_code == 201, answer.text


def serving_base_events(serve: Callable[..., Server]) -> Server:
    """A real ``timeline serve`` holding BASE_EVENTS, then EDITS stored later."""
    started = serve()
    publish(started, BASE_EVENTS)
    time.sleep(0.01)  # the edits' recording time is later: as_of can fall between
    publish(started, EDITS)
    return started


@pytest.fixture(scope="module")
def server(serve_module: Callable[..., Server]) -> Server:
    """BASE_EVENTS then EDITS, on one server that the tests which only read share."""
    return serving_base_events(serve_module)


@pytest.fixture
def own_server(serve: Callable[..., Server]) -> Server:
    """BASE_EVENTS then EDITS, on a server of the test's own (for a test that publishes more)."""
    return serving_base_events(serve)


# --- the browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    ensure_chromium()
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: apt-get install -y chromium (or set TIMELINE_CHROMIUM)"
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


def ensure_chromium() -> None:
    """Debian's Chromium, installed the first time when it is missing and this runs as root with
    apt-get (a fresh machine: the README's test command sets up everything it needs; Playwright's
    own browser download cannot work without the internet). Elsewhere the assertion above says
    what to install."""
    if Path(CHROMIUM).is_file() or CHROMIUM != "/usr/bin/chromium":
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:  # a stale package list
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        subprocess.run(install, env=env, capture_output=True)


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM)


class Watched:
    """A browser context that refuses and records every request to another host, and records errors."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.elsewhere: list[str] = []
        self.errors: list[str] = []
        context.route(lambda url: urlsplit(url).hostname not in LOCAL_HOSTS, self._refuse)
        context.on("request", self._seen)
        context.on("console", self._console)
        context.on("weberror", lambda error: self.errors.append(f"uncaught: {error.error}"))

    def _refuse(self, route: Any) -> None:
        self.elsewhere.append(route.request.url)
        route.abort()

    def _seen(self, request: Any) -> None:
        if urlsplit(request.url).hostname not in LOCAL_HOSTS and request.url not in self.elsewhere:
            self.elsewhere.append(request.url)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "assert"):
            self.errors.append(f"{message.text} at {message.location}")

    def page(self) -> Page:
        return self.context.new_page()


@pytest.fixture
def browser(chromium: Browser) -> Iterator[Watched]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    try:
        yield Watched(context)
    finally:
        context.close()


def shown_ids(page: Page) -> list[str]:
    return page.eval_on_selector_all("#entries > li[data-event-id]", "nodes => nodes.map(n => n.dataset.eventId)")


def api_ids(server: Server, path: str, **params: Any) -> list[str]:
    with server.client() as http:
        return [entry["event_id"] for entry in all_pages(http, path, **params)]


def open_entity(page: Page, server: Server, entity: str, query: str = "") -> None:
    page.goto(f"{server.base_url}/ui/entities/{entity}{query}")
    expect(page.locator("#entries-count")).to_contain_text("entr")


# --- the tests ---------------------------------------------------------------------------------


def test_search_finds_entities_ignoring_case_and_accents(server: Server, browser: Watched) -> None:
    page = browser.page()
    page.goto(server.base_url + "/")
    search = page.locator('input[type="search"]')
    expect(search).to_be_focused()
    for typed, found in (("Musk", "elon-musk"), ("musk", "elon-musk"), ("societe", "societe-generale"),
                         ("SOCIÉTÉ gén", "societe-generale"), ("twitter", "x")):
        search.fill(typed)
        expect(page.locator("#results a").first).to_have_attribute("href", f"/ui/entities/{found}")
    with server.client() as http:
        name = http.get("/entities/x").json()["name"]
    expect(page.locator("#results a").first).to_have_text(name)
    page.locator("#results a").first.click()
    expect(page).to_have_url(f"{server.base_url}/ui/entities/x")
    expect(page.locator("h1")).to_have_text(name)


def test_the_page_shows_the_same_entries_as_the_api(server: Server, browser: Watched) -> None:
    page = browser.page()
    path = "/entities/elon-musk/timeline"
    for query, params in (
        ("", {}),
        ("?kind=statement&kind=political_move", {"kind": ["statement", "political_move"]}),
        ("?role=actor", {"role": "actor"}),
        ("?since=2025-05&until=2025-05-23", {"since": "2025-05", "until": "2025-05-23"}),
        ("?q=president", {"q": "president"}),
        ("?include_retracted=true", {"include_retracted": "true"}),
    ):
        open_entity(page, server, "elon-musk", query)
        expected = api_ids(server, path, **params)
        assert expected, query
        assert shown_ids(page) == expected, query
    # the entities each entry names (when the API gives them), but the page's own, as links
    open_entity(page, server, "elon-musk")
    with server.client() as http:
        for entry in all_pages(http, path):
            others = [e["name"] for e in entry.get("entities", []) if e["id"] != "elon-musk"]
            shown = page.locator(f'#entries > li[data-event-id="{entry["event_id"]}"] .involved a')
            assert shown.all_inner_texts() == others, entry["event_id"]
    # the same through the form: fill, tick, submit
    open_entity(page, server, "elon-musk")
    page.get_by_label("statement").check()
    page.get_by_label("outage").check()
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"kind=outage&kind=statement"))
    expect(page.locator("#entries > li")).to_have_count(2)
    assert shown_ids(page) == api_ids(server, path, kind=["outage", "statement"])


def test_more_than_a_page_is_loaded_on_request(serve: Callable[..., Server], browser: Watched) -> None:
    started = serve()
    publish(started, [_news(f"ui-many-{i}", f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}", f"Item {i}") for i in range(620)])
    page = browser.page()
    open_entity(page, started, "elon-musk")
    expect(page.locator("#entries-count")).to_have_text("500 entries shown, more to load")
    page.get_by_role("button", name="Load more").click()
    expect(page.locator("#entries-count")).to_have_text("620 entries")
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    assert shown_ids(page) == api_ids(started, "/entities/elon-musk/timeline")


def test_imprecise_dates_are_drawn_as_the_spans_they_are(server: Server, browser: Watched) -> None:
    page = browser.page()
    open_entity(page, server, "elon-musk", "?since=2015&until=2015")
    month = page.locator('#axis .vis-item[data-id="ui-month"]')
    expect(month).to_have_class(re.compile(r"\bvis-range\b"))
    open_entity(page, server, "elon-musk", "?since=2025-05-20&until=2025-05-25")
    day, instant = (page.locator(f'#axis .vis-item[data-id="{i}"]') for i in ("ui-outage", "ui-instant"))
    expect(day).to_have_class(re.compile(r"\bvis-range\b"))
    expect(instant).to_have_class(re.compile(r"\bvis-point\b"))
    expect(page.locator('#axis .vis-item[data-id="ui-range"]')).to_have_class(re.compile(r"\bvis-range\b"))
    # on the same axis, a month is about thirty times as wide as a day
    open_entity(page, server, "elon-musk", "?since=2025-05&until=2025-05")
    page.evaluate("() => window.scrollTo(0, 0)")
    days = page.locator('#axis .vis-item[data-id="ui-outage"]').bounding_box()
    whole = page.locator('#axis .vis-item[data-id="ui-range"]').bounding_box()
    assert days and whole and whole["width"] > 20 * days["width"], (days, whole)


def test_a_corrected_entry_is_marked_and_its_history_is_one_click_away(server: Server, browser: Watched) -> None:
    page = browser.page()
    open_entity(page, server, "elon-musk")
    entry = page.locator('#entries > li[data-event-id="ui-corrected"]')
    expect(entry.locator("h3")).to_have_text("Musk reportedly joins the president's meeting")
    expect(entry.locator(".tag.status")).to_have_text("corrected")
    entry.get_by_text("History").click()
    expect(entry.locator(".history-body")).to_contain_text("his attendance is reported, not confirmed")
    expect(entry.locator(".history-body")).to_contain_text("Musk reportedly joins the president's meeting")
    assert page.locator('#entries > li[data-event-id="ui-instant"] details').count() == 0  # never corrected


def test_retracted_entries_are_hidden_unless_asked_for(server: Server, browser: Watched) -> None:
    page = browser.page()
    open_entity(page, server, "elon-musk")
    assert "ui-retracted" not in shown_ids(page)
    page.get_by_label("show retracted").check()
    page.get_by_role("button", name="Apply").click()
    retracted = page.locator('#entries > li[data-event-id="ui-retracted"]')
    expect(retracted.locator(".tag.status")).to_have_text("retracted")
    retracted.get_by_text("History").click()
    expect(retracted.locator(".history-body")).to_contain_text("the report was a hoax")


def test_as_of_shows_the_timeline_as_known_then(server: Server, browser: Watched) -> None:
    with server.client() as http:
        known = http.get("/events/ui-corrected").json()["recorded_at"]  # before the edits were stored
    page = browser.page()
    open_entity(page, server, "elon-musk")
    page.get_by_label("As known at").fill(known)
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#entries-count")).to_contain_text(f"as known at {known}")
    entry = page.locator('#entries > li[data-event-id="ui-corrected"]')
    expect(entry.locator("h3")).to_have_text("Musk meets the president")
    assert entry.locator(".tag.status").count() == 0
    assert "ui-retracted" in shown_ids(page)  # not yet retracted then
    assert shown_ids(page) == api_ids(server, "/entities/elon-musk/timeline", as_of=known)
    expect(page.locator("#live-status")).to_contain_text("live updates are off")


def test_aliases_and_related_entities_are_linked(server: Server, browser: Watched) -> None:
    page = browser.page()
    open_entity(page, server, "twitter")
    with server.client() as http:
        expect(page.locator("h1")).to_have_text(http.get("/entities/x").json()["name"])
    expect(page).to_have_url(f"{server.base_url}/ui/entities/x")
    expect(page.locator("#entity-aliases a")).to_have_attribute("href", "/ui/entities/twitter")
    related = page.locator("#related-list a", has_text="Elon Musk")
    expect(related).to_have_attribute("href", "/ui/entities/elon-musk")
    related.click()
    expect(page.locator("h1")).to_have_text("Elon Musk")


def test_hostile_text_is_shown_as_text(server: Server, browser: Watched) -> None:
    page = browser.page()
    open_entity(page, server, "elon-musk")
    entry = page.locator('#entries > li[data-event-id="ui-xss"]')
    expect(entry.locator("h3")).to_have_text(HOSTILE)
    expect(page.locator('#axis .vis-item[data-id="ui-xss"]')).to_contain_text("<img src=x")
    expect(page.locator("#related-list")).to_contain_text(HOSTILE_NAME)
    page.goto(server.base_url + "/?q=gang")
    expect(page.locator("#results a").first).to_have_text(HOSTILE_NAME)
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("main img").count() == 0


def test_no_request_leaves_the_host_and_nothing_is_logged_as_an_error(server: Server, browser: Watched) -> None:
    page = browser.page()
    page.goto(server.base_url + "/?q=musk")
    page.locator("#results a").first.click()
    expect(page.locator("#live-status")).to_contain_text("Live: ")
    page.locator('#entries > li[data-event-id="ui-corrected"]').get_by_text("History").click()
    expect(page.locator(".history-body").first).to_contain_text("reported")
    open_entity(page, server, "x", "?include_retracted=true&as_of=2030")
    page.wait_for_timeout(500)
    assert browser.elsewhere == []
    assert browser.errors == []


def test_a_published_event_appears_without_reload(own_server: Server, browser: Watched) -> None:
    server = own_server
    plain, narrowed = browser.page(), browser.page()
    open_entity(plain, server, "elon-musk")
    open_entity(narrowed, server, "elon-musk", "?kind=report&include_retracted=true&since=2025")
    for page in (plain, narrowed):
        expect(page.locator("#live-status")).to_contain_text("Live: ")
        page.evaluate("() => { window.__sameDocument = true; }")

    def entry(page: Page) -> Any:
        return page.locator('#entries > li[data-event-id="ui-live"]')

    publish(server, [_news("ui-live", "2025-05-25", "Breaking: it happened live"),
                     {"id": "ui-live-said", "kind": "statement", "occurred_at": "2025-05-25T09:00Z",
                      "headline": "Musk said something live", "entities": [MUSK],
                      "details": {"speaker": "elon-musk", "quote": "live"}}])
    for page in (plain, narrowed):
        expect(entry(page).locator("h3")).to_have_text("Breaking: it happened live")
    expect(plain.locator('#entries > li[data-event-id="ui-live-said"]')).to_have_count(1)
    publish(server, [{"kind": "correction", "occurred_at": "2025-05-26",
                      "details": {"corrects": "ui-live", "changes": {"headline": "It happened, corrected"}}}])
    for page in (plain, narrowed):
        expect(entry(page).locator("h3")).to_have_text("It happened, corrected")
        expect(entry(page).locator(".tag.status")).to_have_text("corrected")
    publish(server, [{"kind": "retraction", "occurred_at": "2025-05-27",
                      "details": {"retracts": "ui-live", "reason": "it did not happen"}}])
    expect(entry(plain)).to_have_count(0)
    expect(entry(narrowed).locator(".tag.status")).to_have_text("retracted")
    for page in (plain, narrowed):
        assert page.evaluate("() => window.__sameDocument") is True  # never reloaded
    assert shown_ids(plain) == api_ids(server, "/entities/elon-musk/timeline")
    assert "ui-live-said" not in shown_ids(narrowed)  # not a report
    assert shown_ids(narrowed) == api_ids(
        server, "/entities/elon-musk/timeline", kind="report", include_retracted="true", since="2025")


def test_it_fits_a_phone(server: Server, browser: Watched) -> None:
    page = browser.page()
    page.set_viewport_size({"width": 375, "height": 740})
    for path in ("/", "/ui/entities/elon-musk"):
        page.goto(server.base_url + path)
        page.wait_for_load_state("networkidle") if path == "/" else expect(page.locator("#entries > li").first).to_be_visible()
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 375, path
    box = page.locator("#axis").bounding_box()
    assert box and box["width"] <= 375 and box["height"] > 100
    first = page.locator("#entries > li").first.bounding_box()
    assert first and first["x"] >= 0 and first["x"] + first["width"] <= 375


def test_it_works_with_a_keyboard(server: Server, browser: Watched) -> None:
    page = browser.page()
    open_entity(page, server, "elon-musk")
    order = []
    for _ in range(40):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => { const e = document.activeElement; return [e.tagName, e.dataset.eventId || e.name || e.id || e.textContent.trim().slice(0, 20), getComputedStyle(e).outlineStyle]; }"
        )
        order.append(focused)
        if focused[0] == "LI":
            break
    assert order[0][1] == "Skip to the entries"
    names = [name for _, name, _ in order]
    assert names.index("q") < names.index("kind") < names.index("role") < names.index("as_of")  # the filters in order
    tag, first_entry, outline = order[-1]
    assert tag == "LI" and first_entry == shown_ids(page)[0], order
    assert outline != "none"  # focus is visible
    page.keyboard.press("Enter")  # shows the entry on the axis
    expect(page.locator(f'#axis .vis-item[data-id="{first_entry}"]')).to_have_class(re.compile(r"\bvis-selected\b"))
    page.keyboard.press("ArrowDown")
    assert page.evaluate("() => document.activeElement.dataset.eventId") == shown_ids(page)[1]
    # the skip link jumps over the filters and the axis
    open_entity(page, server, "elon-musk")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.dataset.eventId") == shown_ids(page)[0]
