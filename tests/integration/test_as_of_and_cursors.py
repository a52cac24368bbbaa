"""``as_of`` and cursors on real SQLite files (issue 15, point 5; issue 14, point 2): an entity's
card as of an instant, as_of's partial forms, cursors bound to the query that gave them out,
and parameters out of range answered as errors naming them."""

from __future__ import annotations

import base64
import json
import random

import pytest

from events.store import EventStore
from helpers import alias, append_batches, correction, ent, news, retraction
from projections import open_queries
from projections.queries import NotFound, QueryError, TimelineQuery

ENTITIES = ("alpha", "beta", "gamma")


def tl(queries, entity_id=None, **params):
    return queries.timeline(entity_id, TimelineQuery(**params))


def card_from_entries(q, entity_id, as_of):
    """What the card must say: counted from the timeline as of that instant, every entry."""
    entries = tl(q, entity_id, as_of=as_of, limit=500)["entries"]
    assert len(entries) < 500
    return (
        len(entries),
        entries[0]["occurred_at"] if entries else None,
        entries[-1]["occurred_at"] if entries else None,
    )


def random_batches(seed: int, batches: int = 8) -> list[list[dict]]:
    """News about three entities, then corrections (dates, entities), retractions, an alias."""
    rng = random.Random(seed)
    out: list[list[dict]] = []
    alive: list[str] = []
    n = 0
    for b in range(batches):
        batch = []
        for _ in range(rng.randint(2, 6)):
            n += 1
            filed = rng.sample(ENTITIES, rng.randint(1, 2))
            date = f"20{rng.randint(20, 26)}-{rng.randint(1, 12):02d}" + (f"-{rng.randint(1, 28):02d}" if rng.random() < 0.5 else "")
            batch.append(news(f"n{n}", date, [ent(e, name=f"{e.title()} {b}") for e in filed]))
            alive.append(f"n{n}")
        for _ in range(rng.randint(0, 3)):
            if not alive:
                break
            n += 1
            target = rng.choice(alive)
            roll = rng.random()
            if roll < 0.4:
                batch.append(correction(f"c{n}", target, occurred_at=f"20{rng.randint(10, 30)}"))
            elif roll < 0.75:
                batch.append(correction(f"c{n}", target, entities=[ent(rng.choice(ENTITIES))]))
            else:
                batch.append(retraction(f"r{n}", target))
                alive.remove(target)
        if b == batches // 2:
            batch.append(alias(f"al{n}", "gamma", "alpha", name="Alpha Merged"))
        out.append(batch)
    return out


@pytest.mark.parametrize("seed", range(1, 9))
def test_the_entity_card_as_of_each_instant_is_what_the_timeline_then_holds(q, db, seed):
    results = append_batches(db, *random_batches(seed))
    with EventStore(db) as store:
        instants = [store.get(batch[-1].event_id).recorded_at for batch in results]
    assert instants == sorted(set(instants))
    checked = 0
    for when in instants:
        for entity in ENTITIES:
            try:
                card = q.entity(entity, as_of=when)
            except NotFound:
                assert card_from_entries(q, entity, when) == (0, None, None)  # unknown then
                continue
            expected = card_from_entries(q, card["id"], when)
            assert (card["event_count"], card["first_at"], card["last_at"]) == expected, (seed, when, entity)
            in_page = tl(q, entity, as_of=when, limit=1)["entity"]
            assert in_page == card, (seed, when, entity)
            checked += 1
    assert checked > 10
    # now, without as_of, and as_of now agree
    for entity in ("alpha", "beta"):
        assert q.entity(entity, as_of=instants[-1]) == q.entity(entity)


def test_the_card_as_of_gives_the_name_and_aliases_of_then(q, db):
    r1, r2, r3 = append_batches(
        db,
        [news("a1", "2025-05-01", [ent("acme", name="Acme")])],
        [news("a2", "2025-06-01", [ent("acme", name="Acme Corporation")]), news("o1", "2025-07-01", ("old-acme",))],
        [alias("al", "old-acme", "acme")],
    )
    with EventStore(db) as store:
        t1, t2, t3 = (store.get(r[-1].event_id).recorded_at for r in (r1, r2, r3))
    first = q.entity("acme", as_of=t1)
    assert (first["name"], first["event_count"], first["aliases"], first["last_at"]) == ("Acme", 1, [], "2025-05-01")
    second = q.entity("acme", as_of=t2)
    assert (second["name"], second["event_count"], second["aliases"]) == ("Acme Corporation", 2, [])
    third = q.entity("old-acme", as_of=t3)  # the alias answers with its entity
    assert (third["id"], third["event_count"], third["aliases"], third["last_at"]) == ("acme", 3, ["old-acme"], "2025-07-01")
    with pytest.raises(NotFound, match="as of"):
        q.entity("acme", as_of="2000-01-01T00:00Z")
    # a timeline as of a time before the entity: no entries, a card that counts none
    early = tl(q, "acme", as_of="2000-01-01")
    assert early["entries"] == [] and early["entity"]["event_count"] == 0


def test_a_timeline_as_of_before_the_entity_resolves_its_aliases_as_they_were_then(backend):
    """docs/api-parameters.md: before an entity was known its timeline is an empty page whose card
    counts 0 with today's name, and "an alias resolves as it did then". The card of that page
    (the fallback in ``Queries.timeline``) resolved the id as of *now*: asking for ``old-acme``
    as of a time before anything answered with ``acme`` and listed ``old-acme`` as its alias, an
    alias declared years later, while ``GET /entities/old-acme?as_of=`` said 404."""
    append_batches(
        backend,
        [news("a1", "2025-05-01", [ent("acme", name="Acme")]), news("o1", "2025-07-01", ("old-acme",))],
        [alias("al", "old-acme", "acme")],
    )
    q = open_queries(backend)
    try:
        for asked in ("old-acme", "acme"):
            with pytest.raises(NotFound, match="as of"):
                q.entity(asked, as_of="2000-01-01T00:00Z")
            early = tl(q, asked, as_of="2000-01-01")
            assert early["entries"] == [] and early["entity"]["event_count"] == 0
            assert (early["entity"]["id"], early["entity"]["aliases"]) == (asked, []), early["entity"]
        now = tl(q, "old-acme")["entity"]  # and now: the alias answers with its entity
        assert (now["id"], now["aliases"], now["event_count"]) == ("acme", ["old-acme"], 2)
    finally:
        q.close()


def test_as_of_takes_a_year_month_or_day_as_the_end_of_it(q, db):
    append_batches(db, [news("d1", "2025-05-01", ("x",))])
    now = q.event("d1")["recorded_at"]
    day, month, year = now[:10], now[:7], now[:4]
    for form in (day, month, year):
        assert [e["event_id"] for e in tl(q, "x", as_of=form)["entries"]] == ["d1"], form
        assert q.entity("x", as_of=form)["event_count"] == 1
        assert q.event("d1", as_of=form)["id"] == "d1"
    # the day before: the event was not recorded yet
    before = f"{int(year) - 1}"
    assert tl(q, "x", as_of=before)["entries"] == []
    with pytest.raises(NotFound):
        q.event("d1", as_of=before)


# --- cursors ----------------------------------------------------------------------------------


@pytest.fixture
def paged(q, db):
    events = [news(f"p{i}", f"2025-05-{1 + i:02d}", ("x", "y")) for i in range(6)]
    events += [news(f"z{i}", f"2025-05-{1 + i:02d}", ("z",)) for i in range(6)]
    events.append(alias("al", "twitter", "x"))
    append_batches(db, events)
    return q


def refused(queries, entity_id, field, **params):
    with pytest.raises(QueryError) as info:
        tl(queries, entity_id, **params)
    assert info.value.field == "cursor", info.value
    assert field in str(info.value), str(info.value)
    return info.value


def test_a_cursor_goes_on_only_with_the_query_that_gave_it(paged):
    q = paged
    cursor = tl(q, "x", limit=2)["next_cursor"]
    assert [e["event_id"] for e in tl(q, "x", limit=2, cursor=cursor)["entries"]] == ["p2", "p3"]
    assert tl(q, "x", limit=5, cursor=cursor)["entries"][0]["event_id"] == "p2"  # any page size goes on
    # an alias is the same entity, the same timeline: its cursor goes on
    assert [e["event_id"] for e in tl(q, "twitter", limit=2, cursor=cursor)["entries"]] == ["p2", "p3"]
    refused(q, "y", "another entity's timeline", limit=2, cursor=cursor)
    refused(q, "z", "another entity's timeline", limit=2, cursor=cursor)
    refused(q, None, "not for /timeline", limit=2, cursor=cursor)
    global_cursor = tl(q, None, limit=2)["next_cursor"]
    refused(q, "x", "for /timeline, not for an entity's", limit=2, cursor=global_cursor)
    for params, name in [
        ({"since": "2025-05-02"}, "since"), ({"until": "2025-06"}, "until"), ({"kinds": ("report",)}, "kind"),
        ({"role": "subject"}, "role"), ({"q": "headline"}, "q"), ({"order": "desc"}, "order"),
        ({"as_of": "2099-01-01T00:00Z"}, "as_of"), ({"include_retracted": True}, "include_retracted"),
    ]:
        error = refused(q, "x", name, limit=2, cursor=cursor, **params)
        assert error.detail["differs"] == [name]
    # a cursor given with filters goes on with the same filters, written another way or not
    filtered = tl(q, "x", limit=2, since="2025-05-01", kinds=("report", "report"))["next_cursor"]
    assert tl(q, "x", limit=2, since="2025-05-01T00:00Z", kinds=("report",), cursor=filtered)["entries"]
    error = refused(q, "x", "since, kind", limit=2, cursor=filtered)
    assert error.detail["differs"] == ["since", "kind"]


def forge(*payload) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(payload)).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor", "é", "====", forge(1, 2), forge("2025"),
        forge("2025-05-01T00:00:00.000000Z", 2**63, 1, "asc"),  # the format before cursors were bound
        forge("2025-05-01T00:00:00.000000Z", 1, 2**63, "asc"),
        forge("", 2**63, 1, "relevance"),
        forge(2, "2025-05-01T00:00:00.000000Z", 2**63, 1, {}),
        forge(2, "2025-05-01T00:00:00.000000Z", 1, 2**64, {}),
        forge(2, "2025-05-01T00:00:00.000000Z", -1, 1, {}),
        forge(2, "2025-05-01T00:00:00.000000Z", True, 1, {}),
        forge(2, "2025-05-01T00:00:00.000000Z", 1.5, 1, {}),
        forge(2, "yesterday", 1, 1, {}),
        forge(2, "2025-05-01T00:00:00.000000Z", 1, 1, {"colour": "x"}),
        forge(2, "2025-05-01T00:00:00.000000Z", 1, 1, []),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b"[" * 400).decode(),
    ],
)
def test_a_forged_cursor_is_a_cursor_error(paged, cursor):
    for entity in ("x", None):
        for order in ("asc", "relevance"):
            params = {"q": "headline"} if order == "relevance" else {}
            with pytest.raises(QueryError) as info:
                tl(paged, entity, cursor=cursor, order=order, **params)
            assert info.value.field == "cursor"


def test_a_well_formed_cursor_with_a_far_snapshot_reads_what_is_there(paged):
    q = paged
    cursor = tl(q, "x", limit=2)["next_cursor"]
    version, key, position, _, bound = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    far = forge(version, key, position, 2**62, bound)
    assert [e["event_id"] for e in tl(q, "x", limit=2, cursor=far)["entries"]] == ["p2", "p3"]
    ranked = tl(q, "z", q="headline", order="relevance", limit=2)["next_cursor"]
    version, key, _, snapshot, bound = json.loads(base64.urlsafe_b64decode(ranked + "=" * (-len(ranked) % 4)))
    assert tl(q, "z", q="headline", order="relevance", cursor=forge(version, key, 2**62, snapshot, bound))["entries"] == []


@pytest.mark.parametrize("field", ["as_of", "since", "until"])
@pytest.mark.parametrize(
    "value",
    ["0001-01-01T00:00+00:01", "9999-12-31T23:59:59.999999-00:01", "0000", "2025-02-30", "10000", "2025-05-24T24:00Z"],
)
def test_dates_out_of_range_are_errors_naming_the_parameter(paged, field, value):
    with pytest.raises(QueryError) as info:
        tl(paged, "x", **{field: value})
    assert info.value.field == field
    if field == "as_of":
        with pytest.raises(QueryError):
            paged.entity("x", as_of=value)
        with pytest.raises(QueryError):
            paged.event("p1", as_of=value)


def test_dates_at_the_ends_of_the_range_are_answered(paged):
    for value in ("0001-01-01T00:00-00:01", "9999-12-31", "9999-12-31T23:59:59.999999Z", "0001", "9999"):
        assert tl(paged, "x", since=value)["entity"]["id"] == "x"
        assert tl(paged, "x", until=value)["entity"]["id"] == "x"
        as_of = tl(paged, None, as_of=value)["entries"]
        assert len(as_of) == (0 if value.startswith("0001") else 12), value


@pytest.mark.parametrize(
    "entity_id, params",
    [
        ("x", {}), ("twitter", {"q": "headline", "order": "relevance"}), (None, {"since": "2025-05-03"}),
        ("z", {"until": "2025-05-02", "order": "desc"}), (None, {"kinds": ("outage",)}), ("x", {"role": "subject"}),
    ],
)
def test_total_is_every_page_of_the_same_query(paged, entity_id, params):
    first = tl(paged, entity_id, limit=2, **params)
    entries, cursor = list(first["entries"]), first["next_cursor"]
    while cursor:
        page = tl(paged, entity_id, limit=2, cursor=cursor, **params)
        entries += page["entries"]
        cursor = page["next_cursor"]
    counted = paged.timeline(entity_id, TimelineQuery(limit=2, **params), total=True)["total"]
    assert counted == len(entries) == len({e["event_id"] for e in entries})
