"""Days, months and UTC timestamps: the one place the project turns dates into times and back.

Every partition is a UTC day; a day D covers [D 00:00 UTC, D+1 00:00 UTC). Stored timestamps are
naive UTC (the same on SQLite and PostgreSQL).
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta


def utc_midnight(day: date) -> datetime:
    """The start of ``day`` in UTC."""
    return datetime.combine(day, time(0), tzinfo=UTC)


def day_bounds(start: date, end_inclusive: date) -> tuple[datetime, datetime]:
    """[start 00:00 UTC, end+1 00:00 UTC): the half-open range covering the days."""
    return utc_midnight(start), utc_midnight(end_inclusive + timedelta(days=1))


def as_utc(dt: datetime) -> datetime:
    """``dt`` in UTC; a naive one is taken as UTC already (as stored), never as local time,
    which ``astimezone`` would assume on a host whose zone is not UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def iso_utc(dt: datetime) -> str:
    """``2026-03-01T00:00:00Z``: RFC 3339 in UTC, to the second (naive: UTC)."""
    return as_utc(dt).strftime("%Y-%m-%dT%H:%M:%SZ")


def aware_utc(dt: datetime | None) -> datetime | None:
    """``as_utc``, passing None through."""
    return None if dt is None else as_utc(dt)


def naive_utc(dt: datetime) -> datetime:
    """How timestamps are stored: UTC without a zone."""
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


def month_of(day: date) -> str:
    """``YYYY-MM``."""
    return f"{day.year:04d}-{day.month:02d}"


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    """The first day of the month after ``day``'s."""
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def days_in_month(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def month_end(day: date) -> date:
    return day.replace(day=days_in_month(day))
