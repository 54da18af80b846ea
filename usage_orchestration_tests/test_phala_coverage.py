"""Phala coverage means what it says: an app whose answer holds no record at all for the window
is unavailable (a live app is billed storage every minute); a day without records while the app
has records on other days is complete with zero rows (the app did not exist yet, or was deleted)."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import select

from usage_orchestration.settings import load_settings
from usage_orchestration.warehouse.provider_load import store_fetch
from usage_orchestration.warehouse.schema import provider_coverage, provider_usage
from usage_orchestration.warehouse.store import Warehouse
from usage_orchestration_tests.test_phala_hostile import APP, DAYS, fetch, good_records, page_of

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


def test_a_day_without_records_while_the_app_has_others_is_complete_with_zero_rows() -> None:
    first_day_only = [r for r in good_records() if r["billing_day"] == DAYS[0].isoformat()]
    result = fetch(lambda _req: httpx.Response(200, json=page_of(first_day_only)))
    cov = {c.usage_date: c for c in result.coverage}
    assert (cov[DAYS[0]].status, cov[DAYS[0]].row_count) == ("complete", len(first_day_only))
    assert (cov[DAYS[1]].status, cov[DAYS[1]].row_count, cov[DAYS[1]].reason) == (
        "complete",
        0,
        None,
    )
    assert {r.usage_date for r in result.rows} == {DAYS[0]}
