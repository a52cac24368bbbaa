"""Partial dates (docs/contract.md §1, ``occurred_at``): the written form is the precision."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from events.dates import DateFormError, parse_instant, parse_partial, to_key

# --------------------------------------------------------------------------------------------
# Accepted forms
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "precision", "start_key", "end_key"),
    [
        # year
        ("2025", "year", "2025-01-01T00:00:00.000000Z", "2025-12-31T23:59:59.999999Z"),
        # month, including February in leap and common years
        ("2025-05", "month", "2025-05-01T00:00:00.000000Z", "2025-05-31T23:59:59.999999Z"),
        ("2025-04", "month", "2025-04-01T00:00:00.000000Z", "2025-04-30T23:59:59.999999Z"),
        ("2024-02", "month", "2024-02-01T00:00:00.000000Z", "2024-02-29T23:59:59.999999Z"),
        ("2025-02", "month", "2025-02-01T00:00:00.000000Z", "2025-02-28T23:59:59.999999Z"),
        ("2000-02", "month", "2000-02-01T00:00:00.000000Z", "2000-02-29T23:59:59.999999Z"),
        ("1900-02", "month", "1900-02-01T00:00:00.000000Z", "1900-02-28T23:59:59.999999Z"),
        ("2025-12", "month", "2025-12-01T00:00:00.000000Z", "2025-12-31T23:59:59.999999Z"),
        # day
        ("2025-05-24", "day", "2025-05-24T00:00:00.000000Z", "2025-05-24T23:59:59.999999Z"),
        ("2024-02-29", "day", "2024-02-29T00:00:00.000000Z", "2024-02-29T23:59:59.999999Z"),
        ("2025-12-31", "day", "2025-12-31T00:00:00.000000Z", "2025-12-31T23:59:59.999999Z"),
        # instants: Z, +hh:mm, +hhmm, negative offsets, fractional seconds
        ("2025-05-24T14:30Z", "instant", "2025-05-24T14:30:00.000000Z", "2025-05-24T14:30:00.000000Z"),
        ("2025-05-24T14:30:45Z", "instant", "2025-05-24T14:30:45.000000Z", "2025-05-24T14:30:45.000000Z"),
        ("2025-05-24T14:30:00+02:00", "instant", "2025-05-24T12:30:00.000000Z", "2025-05-24T12:30:00.000000Z"),
        ("2025-05-24T14:30:00+0200", "instant", "2025-05-24T12:30:00.000000Z", "2025-05-24T12:30:00.000000Z"),
        ("2025-05-24T14:30+02:00", "instant", "2025-05-24T12:30:00.000000Z", "2025-05-24T12:30:00.000000Z"),
        ("2025-05-24T01:30:00-03:30", "instant", "2025-05-24T05:00:00.000000Z", "2025-05-24T05:00:00.000000Z"),
        ("2025-05-24T00:30:00+02:00", "instant", "2025-05-23T22:30:00.000000Z", "2025-05-23T22:30:00.000000Z"),
        ("2025-12-31T23:30:00-01:00", "instant", "2026-01-01T00:30:00.000000Z", "2026-01-01T00:30:00.000000Z"),
        ("2025-05-24T14:30:15.5Z", "instant", "2025-05-24T14:30:15.500000Z", "2025-05-24T14:30:15.500000Z"),
        ("2025-05-24T14:30:15.123Z", "instant", "2025-05-24T14:30:15.123000Z", "2025-05-24T14:30:15.123000Z"),
        (
            "2025-05-24T14:30:15.123456+02:00",
            "instant",
            "2025-05-24T12:30:15.123456Z",
            "2025-05-24T12:30:15.123456Z",
        ),
    ],
)
def test_form_gives_precision_and_interval(text: str, precision: str, start_key: str, end_key: str) -> None:
    parsed = parse_partial(text)
    assert parsed.precision == precision
    assert parsed.start_key == start_key
    assert parsed.end_key == end_key
    # the written form is kept as written, for display
    assert parsed.text == text
    assert str(parsed) == text


@pytest.mark.parametrize("text", ["2025", "2025-05", "2025-05-24", "2025-05-24T14:30:00+02:00"])
def test_interval_ends_are_aware_utc_datetimes(text: str) -> None:
    parsed = parse_partial(text)
    for moment in (parsed.start, parsed.end):
        assert moment.tzinfo is not None
        assert moment.utcoffset() == timedelta(0)
    assert parsed.start <= parsed.end


def test_day_interval_is_one_day_long_to_the_microsecond() -> None:
    parsed = parse_partial("2025-05-24")
    assert parsed.end - parsed.start == timedelta(days=1) - timedelta(microseconds=1)


def test_instant_is_a_point() -> None:
    parsed = parse_partial("2025-05-24T14:30:00+02:00")
    assert parsed.start == parsed.end == datetime(2025, 5, 24, 12, 30, tzinfo=timezone.utc)


def test_offset_with_and_without_colon_are_the_same_instant() -> None:
    assert parse_partial("2025-05-24T14:30:00+02:00").start == parse_partial("2025-05-24T14:30:00+0200").start
    assert parse_partial("2025-05-24T14:30:00+02:00").start == parse_partial("2025-05-24T12:30Z").start


# --------------------------------------------------------------------------------------------
# Rejected forms
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2025-05-24T14:30", id="time-without-offset"),
        pytest.param("2025-05-24T14:30:00", id="seconds-without-offset"),
        pytest.param("2025-05-24T14:30:00.5", id="fraction-without-offset"),
        pytest.param("2025-13", id="month-13"),
        pytest.param("2025-00", id="month-0"),
        pytest.param("2025-02-30", id="feb-30"),
        pytest.param("2025-02-29", id="feb-29-common-year"),
        pytest.param("2025-04-31", id="apr-31"),
        pytest.param("2025-05-00", id="day-0"),
        pytest.param("2025/05/24", id="slashes"),
        pytest.param("25-05-24", id="two-digit-year"),
        pytest.param("2025-5", id="one-digit-month"),
        pytest.param("2025-05-4", id="one-digit-day"),
        pytest.param("20250524", id="basic-format"),
        pytest.param("2025-05-24 14:30Z", id="space-instead-of-T"),
        pytest.param("2025-05-24T25:00Z", id="hour-25"),
        pytest.param("2025-05-24T14:60Z", id="minute-60"),
        pytest.param("2025-05-24T14:30+25:00", id="offset-out-of-range"),
        pytest.param("2025-05-24T14:30+02", id="offset-hours-only"),
        pytest.param("May 2025", id="words"),
        pytest.param("0000", id="year-zero"),
        pytest.param("", id="empty"),
        pytest.param(" 2025", id="leading-space"),
        pytest.param("2025 ", id="trailing-space"),
    ],
)
def test_rejected_forms(text: str) -> None:
    with pytest.raises(DateFormError):
        parse_partial(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2025\n", id="trailing-newline"),
        pytest.param("2025-05-24\n", id="day-trailing-newline"),
        pytest.param("\uff12\uff10\uff12\uff15", id="fullwidth-digits"),
        pytest.param("\u0662\u0660\u0662\u0665-\u0660\u0665", id="arabic-indic-digits"),
    ],
)
def test_rejects_what_is_not_an_iso_8601_form(text: str) -> None:
    """docs/contract.md §1: occurred_at is ISO 8601 in one of the listed forms (ASCII digits, nothing after)."""
    with pytest.raises(DateFormError):
        parse_partial(text)


@pytest.mark.parametrize("value", [None, 2025, 2025.0, ["2025"], b"2025", {"year": 2025}])
def test_non_string_is_rejected(value: object) -> None:
    with pytest.raises(DateFormError):
        parse_partial(value)  # type: ignore[arg-type]


def test_date_form_error_is_a_value_error_with_a_helpful_message() -> None:
    with pytest.raises(ValueError, match="offset"):
        parse_partial("2025-05-24T14:30")


# --------------------------------------------------------------------------------------------
# parse_instant
# --------------------------------------------------------------------------------------------


def test_parse_instant_accepts_an_instant_as_utc() -> None:
    assert parse_instant("2025-05-25T08:00:00.25+01:00") == datetime(2025, 5, 25, 7, 0, 0, 250000, tzinfo=timezone.utc)


@pytest.mark.parametrize("text", ["2025", "2025-05", "2025-05-25", "2025-05-25T08:00:00"])
def test_parse_instant_rejects_other_forms(text: str) -> None:
    with pytest.raises(DateFormError):
        parse_instant(text)


# --------------------------------------------------------------------------------------------
# Keys: fixed width, sort in time order
# --------------------------------------------------------------------------------------------


def test_to_key_converts_to_utc() -> None:
    moment = datetime(2025, 5, 24, 14, 30, 0, 1, tzinfo=timezone(timedelta(hours=2)))
    assert to_key(moment) == "2025-05-24T12:30:00.000001Z"


def test_start_keys_sort_in_time_order() -> None:
    in_time_order = [
        "2024",
        "2024-12-31T23:59:59.999999Z",
        "2025",  # 2025-01-01T00:00Z
        "2025-05",  # 2025-05-01T00:00Z
        "2025-05-23T23:00Z",
        "2025-05-24T01:30:00+02:00",  # 2025-05-23T23:30Z: before the 24th although written on it
        "2025-05-24",  # 2025-05-24T00:00Z
        "2025-05-24T00:00:00.000001Z",
        "2025-05-24T12:30Z",
        "2025-05-24T14:30:00.5+02:00",  # 12:30:00.5Z
        "2025-05-24T12:31Z",
        "2025-05-25",
        "2025-06",
        "2026",
    ]
    keys = [parse_partial(text).start_key for text in in_time_order]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    starts = [parse_partial(text).start for text in in_time_order]
    assert starts == sorted(starts)


def test_end_keys_sort_in_time_order() -> None:
    in_time_order = ["2025-05-24T10:00Z", "2025-05-24", "2025-05", "2025-06-01", "2025", "2026-01-01T00:00Z"]
    keys = [parse_partial(text).end_key for text in in_time_order]
    assert keys == sorted(keys)


def test_same_start_for_coarser_and_finer_forms() -> None:
    assert (
        parse_partial("2025").start_key
        == parse_partial("2025-01").start_key
        == parse_partial("2025-01-01").start_key
        == parse_partial("2025-01-01T00:00Z").start_key
        == parse_partial("2025-01-01T01:00+01:00").start_key
    )


@pytest.mark.parametrize("text", ["2025", "2025-05", "2025-05-24", "2025-05-24T14:30Z", "1999-12-31T23:59:59.9-05:00"])
def test_keys_are_fixed_width(text: str) -> None:
    parsed = parse_partial(text)
    assert len(parsed.start_key) == len(parsed.end_key) == len("2025-05-24T00:00:00.000000Z")


@pytest.mark.parametrize(
    ("text", "start_key"),
    [
        ("0999", "0999-01-01T00:00:00.000000Z"),
        ("0500-05-24", "0500-05-24T00:00:00.000000Z"),
        ("0001", "0001-01-01T00:00:00.000000Z"),
    ],
)
def test_keys_of_years_before_1000_are_zero_padded(text: str, start_key: str) -> None:
    """Years 0001–0999 are accepted forms, so their keys must still sort in time order."""
    assert parse_partial(text).start_key == start_key


def test_keys_of_years_before_1000_sort_before_later_years() -> None:
    keys = [parse_partial(text).start_key for text in ["0999", "1000", "2025"]]
    assert keys == sorted(keys)
