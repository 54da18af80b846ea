"""Phala coverage means what it says: an app whose answer holds no record at all for the window
is unavailable (a live app is billed storage every minute); a day without records after the app's
first record day is unavailable too (a gap or the provider's lag, not zero usage); the days before
it are complete with zero rows (the app did not exist yet)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from usage_orchestration.providers.phala import PhalaClient
from usage_orchestration.providers.records import DayCoverage
from usage_orchestration.sandbox.phala import phala_records
from usage_orchestration.settings import load_settings
from usage_orchestration.warehouse.provider_load import store_fetch
from usage_orchestration.warehouse.schema import provider_coverage, provider_usage
from usage_orchestration.warehouse.store import Warehouse
from usage_orchestration_tests.test_phala_hostile import (
    APP,
    DAYS,
    PAGE,
    fetch,
    good_records,
    page_of,
)

OTHER = "0fedcba9876543210fedcba9876543210fedcba9"


def per_app(req: httpx.Request) -> httpx.Response:
    records = good_records() if APP in req.url.path else []
    return httpx.Response(200, json=page_of(records))


def test_an_app_without_any_record_is_unavailable_not_zero(db_url: str, tmp_path: Path) -> None:
    result = fetch(per_app, apps=[APP, OTHER])
    cov = {(c.account_id, c.usage_date): c for c in result.coverage}
    for d in DAYS:
        assert cov[(APP, d)].status == "complete" and cov[(APP, d)].row_count > 0
        empty = cov[(OTHER, d)]
        assert empty.status == "unavailable" and empty.row_count == 0
        assert f"no usage record for app {OTHER} in 2026-11-01..2026-11-02" in (empty.reason or "")
    settings = load_settings(warehouse_url=db_url, state_dir=str(tmp_path / "state"))
    wh = Warehouse(db_url)
    store_fetch(wh, "phala", DAYS, result, settings, "load-1")
    with wh.engine.connect() as conn:
        stored = {
            (r.account_id, r.usage_date): r.status for r in conn.execute(select(provider_coverage))
        }
        resources = {r[0] for r in conn.execute(select(provider_usage.c.resource_id))}
    assert stored == {(APP, d): "complete" for d in DAYS} | {
        (OTHER, d): "unavailable" for d in DAYS
    }
    assert resources == {APP}


SPAN = [date(2026, 11, 1) + timedelta(days=i) for i in range(6)]


def fetch_span(record_days: list[date]) -> dict[date, DayCoverage]:
    """Coverage of SPAN from an answer holding APP's records of ``record_days`` only."""
    records = [r for d in record_days for r in phala_records(7, APP, d)]
    transport = httpx.MockTransport(lambda _req: httpx.Response(200, json=page_of(records)))
    with PhalaClient("http://phala.test", "key", page_size=PAGE, transport=transport) as c:
        result = c.fetch_days([APP], SPAN)
    assert {r.usage_date for r in result.rows} == set(record_days)
    return {c.usage_date: c for c in result.coverage}


@pytest.mark.parametrize(
    ("record_days", "complete_empty", "missing"),
    [
        # created mid-range: the days before it existed are zero; the rest answered
        pytest.param(SPAN[2:], SPAN[:2], [], id="leading"),
        pytest.param([*SPAN[:2], *SPAN[3:]], [], [SPAN[2]], id="middle-gap"),
        # the classic lag: the provider has not loaded the last days yet
        pytest.param(SPAN[:4], [], SPAN[4:], id="trailing-lag"),
        pytest.param([SPAN[2], SPAN[4]], SPAN[:2], [SPAN[3], SPAN[5]], id="all-three"),
    ],
)
def test_a_day_without_records_after_the_apps_first_record_day_is_unavailable(
    record_days: list[date], complete_empty: list[date], missing: list[date]
) -> None:
    cov = fetch_span(record_days)
    for d in SPAN:
        c = cov[d]
        if d in record_days:
            assert (c.status, c.reason) == ("complete", None) and c.row_count > 0
        elif d in complete_empty:
            assert (c.status, c.row_count, c.reason) == ("complete", 0, None)
        else:
            assert d in missing
            assert (c.status, c.row_count) == ("unavailable", 0)
            reason = c.reason or ""
            assert f"app {APP} on {d.isoformat()}" in reason, reason
            assert "none is not zero usage" in reason, reason
