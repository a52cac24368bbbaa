"""Identifiers (docs/contract.md §1): entity slugs, canonical JSON, content hashes, derived event ids."""

from __future__ import annotations

import copy
import json
import re

import pytest

from events.ids import (
    EVENT_ID_PATTERN,
    canonical_json,
    content_hash,
    derived_event_id,
    fold,
    is_slug,
    slugify,
)
from events.models import parse_event

ID_CHARSET = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # docs/contract.md §1, `id`

# --------------------------------------------------------------------------------------------
# slugify / fold
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        # the contract's own examples
        ("Elon Musk", "elon-musk"),
        ("Société Générale", "societe-generale"),
        ("Владимир Путин", "владимир-путин"),
        # case folding
        ("X", "x"),
        ("NASA", "nasa"),
        ("Straße", "strasse"),
        # accents dropped (NFKD + combining marks)
        ("Ångström", "angstrom"),
        ("Zoë Kravitz", "zoe-kravitz"),
        ("Łódź", "łodz"),  # Ł has no decomposition: kept as a letter
        # NFKD compatibility forms
        ("ＡＢＣ", "abc"),
        ("ﬁnance", "finance"),
        # each run of non-alphanumerics becomes one '-'
        ("AT&T, Inc.", "at-t-inc"),
        ("O'Brien", "o-brien"),
        ("C-3PO", "c-3po"),
        ("foo   bar", "foo-bar"),
        ("foo -- bar", "foo-bar"),
        ("snake_case_name", "snake-case-name"),
        ("a.b/c\\d", "a-b-c-d"),
        # trimmed
        ("  --Hello__World--  ", "hello-world"),
        ("(Reuters)", "reuters"),
        ("...X...", "x"),
        # digits and other scripts kept
        ("Area 51", "area-51"),
        ("東京", "東京"),
        ("İstanbul", "istanbul"),
        # nothing alphanumeric
        ("!!!", ""),
        ("", ""),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


def test_slugify_drops_every_combining_mark() -> None:
    """docs/contract.md §1: "combining marks dropped". Devanagari vowel signs and the anusvara are
    combining marks (Unicode general category Mn/Mc) of combining class 0; they must be dropped
    like any other mark, not turned into '-' in the middle of a word."""
    assert slugify("नरेंद्र मोदी") == "नरदर-मद"


@pytest.mark.parametrize("name", ["Elon Musk", "Société Générale", "Владимир Путин", "AT&T, Inc.", "東京"])
def test_slugify_is_idempotent_and_gives_a_slug(name: str) -> None:
    slug = slugify(name)
    assert slugify(slug) == slug
    assert is_slug(slug)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("elon-musk", True),
        ("x", True),
        ("area-51", True),
        ("владимир-путин", True),
        ("Elon-Musk", False),
        ("elon musk", False),
        ("elon_musk", False),
        ("-elon", False),
        ("elon-", False),
        ("elon--musk", False),
        ("société", False),
        ("", False),
    ],
)
def test_is_slug(value: str, expected: bool) -> None:
    assert is_slug(value) is expected


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Société Générale", "societe generale"),
        ("ÉLON", "elon"),
        ("Straße", "strasse"),
        ("Путин", "putin"),
        ("Børge Brende", "borge brende"),
        ("Łódź", "lodz"),
        ("Đorđe Balašević", "dorde balasevic"),
        ("Ærøskøbing", "aeroskobing"),
        ("Œuvre", "oeuvre"),
        ("Þór", "thor"),
        ("x\ue000", "x\ue000"),  # no spelling in the table: kept
    ],
)
def test_fold(text: str, folded: str) -> None:
    """Search folding transliterates; each character on its own, so substrings stay substrings."""
    assert fold(text) == folded
    assert fold(text[1:3]) in fold(text)


@pytest.mark.parametrize(("name", "slug"), [("Børge Brende", "børge-brende"), ("Łódź", "łodz"), ("Путин", "путин")])
def test_slugs_keep_the_contract_rule_not_the_search_folding(name: str, slug: str) -> None:
    assert slugify(name) == slug


# --------------------------------------------------------------------------------------------
# canonical JSON
# --------------------------------------------------------------------------------------------


def test_canonical_json_ignores_key_order_and_white_space() -> None:
    a = json.loads('{"b": 1, "a": {"y": [1, 2, {"q": null, "p": true}], "x": "é"}}')
    b = json.loads('{ "a" :{"x":"é",\n\t"y":[1,2,{"p":true,"q":null}]},"b":1 }')
    assert canonical_json(a) == canonical_json(b)
    assert canonical_json(a) == '{"a":{"x":"é","y":[1,2,{"p":true,"q":null}]},"b":1}'


def test_canonical_json_keeps_list_order() -> None:
    assert canonical_json([1, 2]) != canonical_json([2, 1])


def test_canonical_json_distinguishes_values() -> None:
    assert canonical_json({"a": "1"}) != canonical_json({"a": 1})
    assert canonical_json({"a": None}) != canonical_json({})


def test_canonical_json_keeps_non_ascii_text() -> None:
    assert canonical_json({"name": "Владимир"}) == '{"name":"Владимир"}'


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_canonical_json_refuses_non_json_numbers(value: float) -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": value})


# --------------------------------------------------------------------------------------------
# content hash and derived ids
# --------------------------------------------------------------------------------------------

OUTAGE = {
    "kind": "outage",
    "occurred_at": "2025-05-24",
    "headline": "X is down for about two hours worldwide",
    "entities": [{"id": "x", "name": "X", "type": "organization", "role": "subject"}],
    "details": {"service": "X", "duration_minutes": 120, "cause": "unknown"},
}


def reordered(value: object) -> object:
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(v) for v in value]
    return value


def test_content_hash_is_sha256_hex() -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", content_hash(OUTAGE))


def test_content_hash_excludes_id() -> None:
    with_id = {"id": "x-outage-2025-05-24", **OUTAGE}
    other_id = {"id": "something-else", **OUTAGE}
    assert content_hash(with_id) == content_hash(OUTAGE) == content_hash(other_id)


def test_content_hash_ignores_key_order() -> None:
    assert content_hash(reordered(OUTAGE)) == content_hash(OUTAGE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e.update(headline=e["headline"] + "!"),
        lambda e: e["details"].update(duration_minutes=121),
        lambda e: e["entities"][0].update(role="mentioned"),
        lambda e: e.update(summary="more"),
        lambda e: e.update(occurred_at="2025-05"),
    ],
)
def test_content_hash_changes_with_content(change) -> None:  # type: ignore[no-untyped-def]
    other = copy.deepcopy(OUTAGE)
    change(other)
    assert content_hash(other) != content_hash(OUTAGE)
    assert derived_event_id(other) != derived_event_id(OUTAGE)


def test_derived_id_is_deterministic_and_matches_the_id_charset() -> None:
    first = derived_event_id(copy.deepcopy(OUTAGE))
    second = derived_event_id(copy.deepcopy(OUTAGE))
    assert first == second
    assert ID_CHARSET.fullmatch(first)
    assert re.fullmatch(EVENT_ID_PATTERN, first)


def test_derived_id_same_for_other_key_order() -> None:
    assert derived_event_id(reordered(OUTAGE)) == derived_event_id(OUTAGE)  # type: ignore[arg-type]


def test_parse_event_derives_the_same_id_from_the_same_content_in_any_form() -> None:
    text_a = json.dumps(OUTAGE)
    text_b = json.dumps(reordered(OUTAGE), indent=4, ensure_ascii=True)
    a = parse_event(json.loads(text_a))
    b = parse_event(json.loads(text_b))
    assert a.id == b.id
    assert a.content_hash == b.content_hash
    assert ID_CHARSET.fullmatch(a.id)


def test_parse_event_derives_a_different_id_for_other_content() -> None:
    other = copy.deepcopy(OUTAGE)
    other["headline"] = "X is down again"
    assert parse_event(other).id != parse_event(copy.deepcopy(OUTAGE)).id


def test_given_id_is_kept_and_does_not_change_the_content_hash() -> None:
    given = parse_event({"id": "x-outage-2025-05-24", **copy.deepcopy(OUTAGE)})
    derived = parse_event(copy.deepcopy(OUTAGE))
    assert given.id == "x-outage-2025-05-24"
    assert derived.id != given.id
    assert given.content_hash == derived.content_hash
