"""Dates whose written form is their precision.

``2025`` is a year, ``2025-05`` a month, ``2025-05-24`` a day (each a calendar interval in
UTC) and ``2025-05-24T14:30Z`` an instant. Every form maps to the interval ``[start, end]``
(both inclusive, microsecond resolution), and both ends are rendered as fixed-width UTC
strings (``2025-05-24T00:00:00.000000Z``) that sort lexicographically in time order: those
keys are what timelines sort and filter on, while the written form is kept for display.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timedelta, timezone
from typing import Literal

Precision = Literal["year", "month", "day", "instant"]

_FORM = re.compile(
    r"(?P<year>[0-9]{4})"
    r"(?:-(?P<month>[0-9]{2})"
    r"(?:-(?P<day>[0-9]{2})"
    r"(?:T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})(?::(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]{1,9}))?)?"
    r"(?P<offset>Z|[+-][0-9]{2}:?[0-9]{2})?)?)?)?"
)

MIN_KEY = "0000-01-01T00:00:00.000000Z"
MAX_KEY = "9999-12-31T23:59:59.999999Z"


class DateFormError(ValueError):
    """A date that is not one of the accepted ISO 8601 forms."""


def to_key(moment: datetime) -> str:
    """A UTC instant as a fixed-width, sortable key (years zero-padded: ``0999-…``)."""
    m = moment.astimezone(timezone.utc)
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}Z"
    )


@dataclass(frozen=True, slots=True)
class PartialDate:
    """A date as written, with the UTC interval that its form stands for."""

    text: str
    precision: Precision
    start: datetime
    end: datetime

    @property
    def start_key(self) -> str:
        return to_key(self.start)

    @property
    def end_key(self) -> str:
        return to_key(self.end)

    def __str__(self) -> str:
        return self.text


def parse_partial(text: str) -> PartialDate:
    """Parse ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or an instant with an offset or ``Z``."""
    if not isinstance(text, str):
        raise DateFormError("must be a string such as '2025', '2025-05', '2025-05-24' or '2025-05-24T14:30Z'")
    return _parse_partial(text)


@lru_cache(maxsize=8192)  # news repeats its dates; a PartialDate is immutable (an error is not cached)
def _parse_partial(text: str) -> PartialDate:
    m = _FORM.fullmatch(text)
    if not m:
        raise DateFormError(
            f"{text!r} is not an accepted date form: use '2025', '2025-05', '2025-05-24' "
            "or an instant with an offset such as '2025-05-24T14:30Z' or '2025-05-24T14:30:00+02:00'"
        )
    g = m.groupdict()
    year = int(g["year"])
    if year < 1:
        raise DateFormError(f"{text!r}: year 0000 does not exist")
    try:
        if g["month"] is None:
            start = datetime(year, 1, 1, tzinfo=timezone.utc)
            end = datetime(year, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
            return PartialDate(text, "year", start, end)
        month = int(g["month"])
        if g["day"] is None:
            start = datetime(year, month, 1, tzinfo=timezone.utc)
            last = calendar.monthrange(year, month)[1]
            end = datetime(year, month, last, 23, 59, 59, 999999, tzinfo=timezone.utc)
            return PartialDate(text, "month", start, end)
        day = int(g["day"])
        if g["hour"] is None:
            start = datetime(year, month, day, tzinfo=timezone.utc)
            end = datetime(year, month, day, 23, 59, 59, 999999, tzinfo=timezone.utc)  # 9999-12-31 too
            return PartialDate(text, "day", start, end)
        if g["offset"] is None:
            raise DateFormError(
                f"{text!r}: a time needs an offset or 'Z' (e.g. '{text}Z'); a time without one is ambiguous"
            )
        fraction = (g["fraction"] or "").ljust(6, "0")[:6]
        offset = g["offset"]
        if offset == "Z":
            tz = timezone.utc
        else:
            sign = 1 if offset[0] == "+" else -1
            digits = offset[1:].replace(":", "")
            hours, minutes = int(digits[:2]), int(digits[2:])
            if hours > 23 or minutes > 59:
                raise DateFormError(f"{text!r}: offset {offset} is out of range")
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        moment = datetime(
            year, month, day, int(g["hour"]), int(g["minute"]), int(g["second"] or 0), int(fraction), tzinfo=tz
        ).astimezone(timezone.utc)
        return PartialDate(text, "instant", moment, moment)
    except OverflowError:  # an offset that moves the instant out of years 0001-9999 in UTC
        raise DateFormError(f"{text!r} is out of range: in UTC it must fall within the years 0001-9999") from None
    except ValueError as exc:
        if isinstance(exc, DateFormError):
            raise
        raise DateFormError(f"{text!r} is not a real date: {exc}") from None


def parse_instant(text: str) -> datetime:
    """An instant (with offset or ``Z``; fractional seconds allowed), as an aware UTC datetime."""
    parsed = parse_partial(text)
    if parsed.precision != "instant":
        raise DateFormError(f"{text!r} must be an instant with a time and an offset, e.g. '2025-05-25T08:00:00Z'")
    return parsed.start


def utc_now_key() -> str:
    return to_key(datetime.now(timezone.utc))
