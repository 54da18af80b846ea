"""Neon coverage means what it says: a day is complete only when Neon's answer covered it, per
configured project (or for the whole organization when none is configured)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from usage_orchestration.providers.http import RetryPolicy
from usage_orchestration.providers.neon import NeonClient
from usage_orchestration.providers.records import DayCoverage
from usage_orchestration.providers.registry import NEON
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.settings import load_settings
from usage_orchestration.settings.neon import DEMO_PROJECTS
from usage_orchestration.warehouse.provider_load import store_fetch
from usage_orchestration.warehouse.schema import provider_coverage, provider_usage
from usage_orchestration.warehouse.store import Warehouse
from usage_orchestration_tests.test_neon_hostile import (
    DAYS,
    METRICS,
    NOW,
    ORG,
    P1,
    P2,
    fetch,
    frame,
    project,
    serve,
)

D1, D2 = DAYS


def by_key(coverage: list[DayCoverage]) -> dict[tuple[str, date], DayCoverage]:
    return {(c.account_id, c.usage_date): c for c in coverage}


def test_a_configured_project_absent_from_the_answer_is_unavailable_and_written_so(
    db_url: str, tmp_path: Path
) -> None:
    result = fetch(serve({"projects": [project(P1)], "pagination": {}}))
    cov = by_key(result.coverage)
    assert sorted(cov) == sorted((p, d) for p in (P1, P2) for d in DAYS)
    for d in DAYS:
        assert cov[(P1, d)].status == "complete" and cov[(P1, d)].row_count == len(METRICS)
        gone = cov[(P2, d)]
        assert gone.status == "unavailable" and gone.row_count == 0
        assert f"project {P2} absent from Neon's answer for org {ORG}" in (gone.reason or "")
    assert {r.resource_id for r in result.rows} == {P1}

    settings = load_settings(warehouse_url=db_url, state_dir=str(tmp_path / "state"))
    wh = Warehouse(db_url)
    store_fetch(wh, "neon", DAYS, result, settings, "load-1")
    with wh.engine.connect() as conn:
        stored = {
            (r.account_id, r.usage_date): r.status for r in conn.execute(select(provider_coverage))
        }
        resources = {r[0] for r in conn.execute(select(provider_usage.c.resource_id))}
    assert stored == {(P1, d): "complete" for d in DAYS} | {(P2, d): "unavailable" for d in DAYS}
    assert resources == {P1}  # never zero rows for the absent project


def test_a_project_in_the_answer_without_any_timeframe_is_unavailable() -> None:
    result = fetch(serve({"projects": [project(P1), {"project_id": P2, "periods": []}]}))
    cov = by_key(result.coverage)
    assert all(cov[(P1, d)].status == "complete" for d in DAYS)
    for d in DAYS:
        assert cov[(P2, d)].status == "unavailable"
        assert "has no consumption timeframe" in (cov[(P2, d)].reason or "")


def test_a_day_without_a_timeframe_while_the_org_has_history_that_day_is_complete() -> None:
    # P1 has only the 1st (created or deleted within the range), P2 both days: P1's 2nd is a
    # day Neon answered for, with no consumption, so complete with zero rows
    result = fetch(serve({"projects": [project(P1, [frame(1)]), project(P2)]}))
    cov = by_key(result.coverage)
    assert (cov[(P1, D2)].status, cov[(P1, D2)].row_count) == ("complete", 0)
    assert not [r for r in result.rows if r.resource_id == P1 and r.usage_date == D2]


def test_a_day_no_project_has_a_timeframe_for_is_unavailable() -> None:
    # history starts when the org upgraded to an eligible plan: before that no project has
    # figures, and such a day is not a day of zero usage
    result = fetch(serve({"projects": [project(P1, [frame(2)]), project(P2, [frame(2)])]}))
    cov = by_key(result.coverage)
    for p in (P1, P2):
        assert cov[(p, D1)].status == "unavailable"
        assert "history starts" in (cov[(p, D1)].reason or "")
        assert cov[(p, D2)].status == "complete"


def test_whole_org_mode_reports_the_org_and_its_gaps() -> None:
    result = fetch(
        serve({"projects": [project(P1, [frame(2)]), project(P2, [frame(2)])]}), project_ids=()
    )
    cov = by_key(result.coverage)
    assert sorted(cov) == [(ORG, D1), (ORG, D2)]
    assert cov[(ORG, D1)].status == "unavailable" and cov[(ORG, D1)].row_count == 0
    assert cov[(ORG, D2)].status == "complete"
    assert cov[(ORG, D2)].row_count == 2 * len(METRICS) == len(result.rows)

    empty = fetch(serve({"projects": [], "pagination": {}}), project_ids=())
    assert [c.status for c in empty.coverage] == ["unavailable", "unavailable"]
    assert all("lists no project" in (c.reason or "") for c in empty.coverage)
    assert empty.rows == []


def test_a_non_contiguous_set_of_days_skips_the_days_between() -> None:
    seen: list[httpx.Request] = []
    body = {
        "projects": [
            project(P1, [frame(1), frame(2), frame(3)]),
            project(P2, [frame(1), frame(2), frame(3)]),
        ]
    }

    def spy(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, content=json.dumps(body).encode())

    days = [date(2026, 3, 1), date(2026, 3, 3)]
    with NeonClient(
        "http://neon.test",
        "key",
        ORG,
        metrics=METRICS,
        project_ids=[P1, P2],
        transport=httpx.MockTransport(spy),
        now=lambda: NOW,
        retry=RetryPolicy(max_attempts=1),
    ) as c:
        result = c.fetch_days(days)
    assert len(seen) == 1 and seen[0].url.params["to"] == "2026-03-04T00:00:00Z"
    assert {r.usage_date for r in result.rows} == set(days)
    assert {c.usage_date for c in result.coverage} == set(days)


@pytest.mark.parametrize(
    "neon",
    [
        {},  # whole organization
        {"project_ids": [*DEMO_PROJECTS[:2], "not-in-this-org-1"]},
    ],
    ids=["whole-org", "configured-projects"],
)
def test_coverage_accounts_are_exactly_the_registry_accounts(neon: dict[str, Any]) -> None:
    """Reconciliation looks coverage up by the registry's account ids: every configured account
    gets a row per day, and a project the org does not have is unavailable, not zero."""
    sb = Sandbox(seed=7, now=NOW)
    settings = load_settings(neon=neon)
    with NeonClient(
        "http://sandbox/neon",
        Sandbox.API_KEYS["neon"],
        settings.neon.org_id,
        metrics=METRICS,
        project_ids=settings.neon.project_ids,
        transport=sb.transport(),
        now=sb.now,
    ) as c:
        result = c.fetch_days(DAYS)
    accounts = {a.account_id for a in NEON.configured_accounts(settings)}
    assert {c.account_id for c in result.coverage} == accounts
    assert len(result.coverage) == len(accounts) * len(DAYS)
    for c in result.coverage:
        if c.account_id == "not-in-this-org-1":
            assert c.status == "unavailable" and "absent from Neon's answer" in (c.reason or "")
        else:
            assert c.status == "complete" and c.row_count > 0
