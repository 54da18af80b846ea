"""Stored timestamps are naive UTC: they must read as UTC on a host whose zone is not UTC."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from usage_orchestration.core.dates import as_utc, aware_utc, iso_utc, naive_utc


@pytest.fixture
def host_in_new_york() -> Iterator[None]:
    before = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.mark.usefixtures("host_in_new_york")
def test_a_naive_timestamp_is_utc_whatever_the_host_zone() -> None:
    stored = datetime(2026, 3, 1, 0, 0)  # as the warehouse returns it
    assert iso_utc(stored) == "2026-03-01T00:00:00Z"  # FOCUS CSV, request windows
    assert as_utc(stored) == datetime(2026, 3, 1, tzinfo=UTC)
    assert naive_utc(as_utc(stored)) == stored


@pytest.mark.usefixtures("host_in_new_york")
def test_an_aware_timestamp_is_converted() -> None:
    berlin = datetime(2026, 3, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    assert iso_utc(berlin) == "2026-03-01T00:00:00Z"
    assert aware_utc(berlin) == datetime(2026, 3, 1, tzinfo=UTC)
    assert aware_utc(None) is None
